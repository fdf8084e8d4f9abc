"""Train-step throughput of the spiking LM at T time steps vs the same model with ReLU at T=1.

    python benchmarks/train_lm.py                         # the TinyShakespeare preset (10.8M params, T=4)
    python benchmarks/train_lm.py --dtype bfloat16 --backends xla,pallas   # as the preset is trained on a GPU
    python benchmarks/train_lm.py --d-model 64 --layers 2 --seq-len 64 --batch-size 8   # CPU smoke test

"The same model with ReLU": every spiking neuron layer is replaced by ``relu`` of its input current
(same weights, same attention, same optimizer step), run once (T=1). The target is
``t_spiking(T) <= 2 · T · t_relu`` (the T time steps are the unavoidable cost). One JSON line per
measurement is printed; the last line is the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import jax
import jax.numpy as jnp


@contextlib.contextmanager
def relu_neurons():
    """Inside the block every :class:`spikejax.nn.SpikingNeuron` computes ``relu(x)``."""
    from spikejax.nn.neurons import SpikingNeuron

    orig = SpikingNeuron.__call__

    def call(self, x, *, state=None, return_state=False):
        y = jax.nn.relu(x)
        return (y, state) if return_state else y

    SpikingNeuron.__call__ = call
    try:
        yield
    finally:
        SpikingNeuron.__call__ = orig


def measure(args, time_steps: int, relu: bool, backend: str) -> dict:
    """Median seconds per jit-compiled train step (AdamW, clipping) after warm-up."""
    from spikejax.train.commands import NEURON_DEFAULTS, lm_task, neuron_kwargs
    from spikejax.train.data import CharDataset
    from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

    ds = CharDataset("".join(chr(32 + i % 64) for i in range(20000)))
    task = lm_task(ds, d_model=args.d_model, layers=args.layers, heads=args.heads, time_steps=time_steps,
                   seq_len=args.seq_len, attention=args.attention, mlp_ratio=args.mlp_ratio, neuron=args.neuron,
                   neuron_kwargs=neuron_kwargs(args.neuron, **NEURON_DEFAULTS),
                   backend=backend, dtype=args.dtype)
    split = ModelSplit(task.model_config.build(seed=0))
    steps = make_steps(split, make_optimizer(1e-3, 1000, warmup=10), task.loss_fn, task.eval_fn, None)
    state = steps.init()
    batch = tuple(jnp.asarray(a) for a in task.train_batch(0, 0, args.batch_size))
    ctx = relu_neurons() if relu else contextlib.nullcontext()
    with ctx:
        t0 = time.perf_counter()
        state, m = steps.train(state, batch)
        jax.block_until_ready(m["loss"])
        compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        state, m = steps.train(state, batch)
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - t0)
    times.sort()
    sec = times[len(times) // 2]
    tokens = args.batch_size * args.seq_len
    return {"model": "relu" if relu else "spiking", "T": time_steps, "backend": backend, "params": split.num_params,
            "step_ms": sec * 1e3, "tokens_per_s": tokens / sec, "compile_s": compile_s,
            "loss": float(m["loss"])}


def main(argv: list[str] | None = None) -> dict:
    from spikejax.train.commands import LM_PRESETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--attention", default="hybrid")
    p.add_argument("--mlp-ratio", type=float, default=3.5)
    p.add_argument("--time-steps", type=int, default=4)
    p.add_argument("--neuron", default=LM_PRESETS["shakespeare"]["neuron"], help="the spiking model's neuron")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--backends", default="xla", help="comma-separated neuron backends for the spiking model")
    p.add_argument("--relu-ms", type=float, help="reuse a measured ReLU step time (ms) instead of measuring it")
    args = p.parse_args(argv)
    print(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__, **vars(args)}), flush=True)
    if args.relu_ms is None:
        relu = measure(args, 1, True, "xla")
        print(json.dumps(relu), flush=True)
    else:
        relu = {"step_ms": args.relu_ms, "reused": True}
    results = []
    for backend in args.backends.split(","):
        try:
            r = measure(args, args.time_steps, False, backend)
        except Exception as e:  # a kernel backend missing on this machine
            print(json.dumps({"backend": backend, "error": f"{type(e).__name__}: {e}"[:300]}), flush=True)
            continue
        r["ratio_to_T_x_relu"] = r["step_ms"] / (args.time_steps * relu["step_ms"])
        print(json.dumps(r), flush=True)
        results.append(r)
    best = min(results, key=lambda r: r["step_ms"]) if results else None
    summary = {"summary": True, "relu_T1_step_ms": relu["step_ms"],
               "spiking_best": best, "target": "spiking(T) / (T x relu) <= 2",
               "met": bool(best and best["ratio_to_T_x_relu"] <= 2.0)}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
