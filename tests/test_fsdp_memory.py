"""The compiled per-device memory of one train step of a ~317M-parameter SpikingLM (one wide block,
D=5120: abstract arrays only, nothing allocated) on 1, 2, 4 and 8 forced CPU devices: FSDP divides the
parameter + AdamW bytes by the device count, and the total (argument + temp) falls with it."""

from parallel_helpers import run_forced

SCRIPT = """
import json
import jax, jax.numpy as jnp, optax
from flax import nnx
from spikejax.nn import SpikingLMConfig
from spikejax.train import partition, sharding as shd
from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

cfg = SpikingLMConfig(vocab_size=256, d_model=5120, num_heads=16, num_layers=1, max_len=16, time_steps=2)
split = ModelSplit(nnx.eval_shape(lambda: cfg.build(seed=0)))
assert all(isinstance(v, jax.ShapeDtypeStruct) for v in split.params.values())

def loss_fn(model, batch, key):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean(), {}

tx = make_optimizer(1e-3, 10, warmup=1)
steps = make_steps(split, tx, loss_fn, loss_fn)
batch = (jax.ShapeDtypeStruct((8, 16), jnp.int32),) * 2
out = {"params": split.num_params}
for n, tp in [(1, 1), (2, 1), (4, 1), (8, 1), (8, 2)]:
    mesh = shd.make_mesh(jax.devices()[:n], tensor_parallel=tp)
    state = partition.abstract_state(split, tx, mesh, fsdp=n > 1)
    out[f"{n}x{tp}"] = partition.train_step_memory(steps.train, state, batch, mesh)
print("RESULT" + json.dumps(out))
"""


def test_fsdp_per_device_memory_falls_with_the_device_count():
    res = run_forced(SCRIPT)
    p = res["params"]
    assert 3.0e8 < p < 3.3e8
    one = res["1x1"]
    assert one["argument"] >= 12 * p  # float32 parameters + AdamW mu and nu
    for n in (2, 4, 8):
        fsdp = res[f"{n}x1"]
        # every parameter has a dimension divisible by n: 1/n of the state per device (within 1 %)
        assert abs(fsdp["argument"] - one["argument"] / n) < 0.01 * one["argument"] / n, (n, fsdp, one)
    totals = [res[f"{n}x1"]["total"] for n in (1, 2, 4, 8)]
    assert totals[1] < 0.7 * totals[0] and totals[2] < totals[1] and totals[3] < totals[2], totals
    both = res["8x2"]  # FSDP over 4 x tensor parallel over 2
    assert abs(both["argument"] - one["argument"] / 8) < 0.02 * one["argument"] / 8, (both, one)
    assert both["total"] < totals[1], (both, totals)
