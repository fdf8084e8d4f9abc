"""Mixed precision (``dtype="bfloat16"``): float32 parameters, bfloat16 compute, float32 logits.

A bfloat16 model with the same parameters as a float32 one computes nearly the same function: a
spiking network is discontinuous, so bfloat16 rounding flips the few spikes whose membrane sits
within ~2^-8 of the threshold, and those flips spread through later layers (about as much as a
1e-3 relative perturbation of the parameters does). The tests compare spikes layer by layer and
logits with tolerances of that size. CPU, tiny models.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import spikejax.nn as snn
from spikejax.metrics import intercept_calls

BF16 = jnp.dtype(jnp.bfloat16)
NEURON = {"beta": 0.5, "threshold": 0.5}  # fires at initialisation (see SpikingLMConfig)


def _lm_config(attention="linear", **kw):
    akw = {"window": 4, "softmax": attention == "hybrid"} if attention in ("sliding", "hybrid") else {}
    return snn.SpikingLMConfig(vocab_size=31, d_model=16, num_heads=2, num_layers=2, mlp_ratio=2.0, time_steps=2,
                               max_len=24, attention=attention, attention_kwargs=akw, neuron_kwargs=NEURON, **kw)


def _vision_config(**kw):
    return snn.SpikformerConfig(image_size=8, in_channels=1, patch_size=2, num_classes=10, d_model=16, num_heads=2,
                                num_layers=1, mlp_ratio=2.0, time_steps=2, neuron_kwargs=NEURON, **kw)


def _pair(cfg):
    """The float32 model of ``cfg`` and its bfloat16 twin holding the same parameters."""
    m32 = cfg.build(seed=0)
    m16 = cfg.replace(dtype="bfloat16").build(seed=1)
    nnx.update(m16, nnx.state(m32))
    return m32, m16


@nnx.jit
def _run(model, x):
    """``(logits, [spikes of every neuron call])``, leaving out SDSA's kv neurons (they fire on float32
    running sums in every dtype)."""
    kv = {id(n.kv_neuron) for _, n in nnx.iter_graph(model) if isinstance(n, snn.SpikeDrivenSelfAttention)}
    spikes = []

    def record(module, args, out):
        if id(module) not in kv:
            spikes.append(out[0] if isinstance(out, tuple) else out)

    with intercept_calls(model, record, (snn.SpikingNeuron,)):
        logits = model(x)
    return logits, spikes


def _check_close(m32, m16, x):
    l32, s32 = _run(m32, x)
    l16, s16 = _run(m16, x)
    assert l32.dtype == jnp.float32 and l16.dtype == jnp.float32  # logits are float32 in both
    assert len(s32) == len(s16) > 0
    # the bfloat16 model really computes in bfloat16 (but for SDSA's kv neurons, left out here: they
    # fire on float32 running sums)
    assert all(s.dtype == BF16 for s in s16)
    assert all(s.dtype == jnp.float32 for s in s32)
    agree = [float(jnp.mean(a == b.astype(jnp.float32))) for a, b in zip(s32, s16, strict=True)]
    assert min(agree) > 0.7 and np.mean(agree) > 0.9, agree  # flips spread with depth (measured: min ~0.78)
    assert agree[0] > 0.99, agree  # the first neurons see inputs that differ by rounding only
    a, b = np.asarray(l32).ravel(), np.asarray(l16).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert np.mean(np.abs(a - b)) < 0.3 * np.std(a)


@pytest.mark.parametrize("attention", ["linear", "hybrid", "ssa", "sdsa"])
def test_bf16_lm_matches_f32_with_the_same_params(attention):
    m32, m16 = _pair(_lm_config(attention))
    for _, p in nnx.to_flat_state(nnx.state(m16, nnx.Param)):
        assert p.get_value().dtype == jnp.float32  # parameters stay float32
    tokens = jax.random.randint(jax.random.key(1), (3, 20), 0, 31)
    _check_close(m32, m16, tokens)


@pytest.mark.parametrize("norm, shortcut", [("bn", "spike"), ("pre", "membrane")])
def test_bf16_spikformer_matches_f32_with_the_same_params(norm, shortcut):
    m32, m16 = _pair(_vision_config(norm=norm, shortcut=shortcut))
    images = jax.random.uniform(jax.random.key(2), (4, 8, 8, 1))
    _check_close(m32, m16, images)


def _grads(model, loss_fn):
    grads = nnx.jit(nnx.grad(loss_fn))(model)
    return [v.get_value() for _, v in nnx.to_flat_state(nnx.state(grads, nnx.Param))]


@pytest.mark.parametrize("kind", ["lm", "vision"])
def test_bf16_gradients_are_f32_finite_and_aligned(kind):
    if kind == "lm":
        m32, m16 = _pair(_lm_config("hybrid"))
        data = jax.random.randint(jax.random.key(3), (3, 17), 0, 31)
        x, y = data[:, :-1], data[:, 1:]
    else:
        m32, m16 = _pair(_vision_config())
        x, y = jax.random.uniform(jax.random.key(3), (6, 8, 8, 1)), jnp.arange(6)

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    g32, g16 = _grads(m32, loss), _grads(m16, loss)
    assert all(g.dtype == jnp.float32 for g in g16)
    assert all(bool(jnp.isfinite(g).all()) for g in g16)
    a = np.concatenate([np.asarray(g).ravel() for g in g32])
    b = np.concatenate([np.asarray(g).ravel() for g in g16])
    assert np.linalg.norm(b) > 0
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.8  # same descent direction


@pytest.mark.parametrize("attention", ["hybrid", "sdsa"])
def test_bf16_decoding_follows_the_full_forward(attention):
    model = _lm_config(attention, dtype="bfloat16").build(seed=0)
    tokens = jax.random.randint(jax.random.key(4), (2, 12), 0, 31)
    full = nnx.jit(lambda m, t: m(t))(model, tokens)
    logits, state = nnx.jit(lambda m, t: m(t, return_state=True))(model, tokens[:, :8])
    assert all(leaf.dtype in (jnp.float32, jnp.int32, jnp.bool_) for leaf in jax.tree.leaves(state))
    step = nnx.jit(lambda m, t, st: m.decode_step(t, st))
    steps = []
    for i in range(8, 12):
        out, state = step(model, tokens[:, i], state)
        steps.append(out)
    decoded = jnp.stack(steps, axis=1)
    assert decoded.dtype == jnp.float32
    # the decoding state accumulates in float32 like the forward; only rounding-level spike flips differ
    assert float(jnp.mean(jnp.abs(decoded - full[:, 8:]))) < 0.05 * float(jnp.std(full))


def test_dtype_config_field():
    cfg = _lm_config(dtype="bfloat16")
    assert cfg.compute_dtype == BF16
    assert snn.SpikingLMConfig.from_json(cfg.to_json()) == cfg
    assert snn.SpikingLMConfig().dtype == "float32" and snn.SpikformerConfig().dtype == "float32"
    old = _lm_config().to_dict()
    del old["dtype"]  # a config written before the field existed
    assert snn.SpikingLMConfig.from_dict(old).dtype == "float32"
    assert _vision_config(dtype=jnp.bfloat16).dtype == "bfloat16"  # dtypes are stored by name
    assert snn.SpikformerConfig.from_json(_vision_config(dtype="bfloat16").to_json()).dtype == "bfloat16"
    for bad in ("float16", "bf16", jnp.float16, 3):
        with pytest.raises(ValueError, match=r"dtype: .*'float32', 'bfloat16'"):
            _lm_config(dtype=bad)
        with pytest.raises(ValueError, match=r"dtype: "):
            _vision_config(dtype=bad)


def test_default_is_float32_everywhere():
    model = _lm_config().build(seed=0)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Linear | nnx.LayerNorm):
            assert node.dtype == jnp.float32
    _, spikes = _run(model, jnp.zeros((1, 4), jnp.int32))
    assert all(s.dtype == jnp.float32 for s in spikes)


TINY = ["--steps", "8", "--batch-size", "8", "--d-model", "16", "--layers", "1", "--heads", "2", "--time-steps", "2",
        "--lr", "1e-2", "--warmup", "1", "--log-every", "0", "--eval-every", "0", "--checkpoint-every", "4",
        "--no-progress"]


def _drop_dtype_from_checkpoints(run_dir):
    """Rewrite a run's checkpoint metadata as an older spikejax wrote it (no ``model.dtype``, and no
    integrity records, which came later still)."""
    n = 0
    for root, _, files in os.walk(os.path.join(run_dir, "checkpoints")):
        for name in files:
            path = os.path.join(root, name)
            if name == "integrity.json":
                os.remove(path)
                continue
            try:
                with open(path) as f:
                    data = json.load(f)
            except (UnicodeDecodeError, json.JSONDecodeError, OSError):
                continue
            if isinstance(data, dict) and isinstance(data.get("model"), dict) and "dtype" in data["model"]:
                del data["model"]["dtype"]
                data.pop("integrity", None)
                with open(path, "w") as f:
                    json.dump(data, f)
                n += 1
    return n


def test_cli_bf16_training_step_checkpoint_and_resume(tmp_path, capsys):
    from spikejax.train.commands import load_checkpoint, load_lm, sample_main, train_main

    out = tmp_path / "lm16"
    flags = ["lm", *TINY, "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--dtype", "bfloat16"]
    summary = train_main([*flags, "--out", str(out)])
    losses = summary["losses"]
    assert len(losses) == 8 and np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
    assert json.load(open(out / "run.json"))["model"]["dtype"] == "bfloat16"
    assert all(np.asarray(v).dtype == np.float32 for v in summary["state"].params.values())

    model, meta = load_checkpoint(str(out))  # sample / export rebuild the same (bfloat16) model
    assert meta["model"]["dtype"] == "bfloat16" and model.config.dtype == "bfloat16"
    assert model.blocks[0].mlp.fc1.dtype == BF16
    lm, _ = load_lm(str(out))
    assert lm(jnp.zeros((1, 4), jnp.int32)).dtype == jnp.float32
    assert len(sample_main(["--checkpoint", str(out), "--prompt", "The ", "--chars", "3"])) == 7

    # an explicit float32 resume of the bfloat16 run is a mismatch naming the field (a bare --resume
    # takes the run's own --dtype)
    from spikejax.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="model.dtype"):
        train_main([*flags[:-2], "--dtype", "float32", "--out", str(out), "--resume"])


def test_checkpoint_without_dtype_field_still_resumes(tmp_path):
    """A run checkpointed before ``dtype`` existed resumes (the field defaults to float32)."""
    from spikejax.train.commands import load_checkpoint, train_main

    out = tmp_path / "old"
    flags = ["lm", *TINY, "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0"]
    train_main([*flags, "--out", str(out)])
    shutil.rmtree(out / "checkpoints" / "8")  # as if killed after the step-4 checkpoint
    assert _drop_dtype_from_checkpoints(out) >= 1
    model, meta = load_checkpoint(str(out))
    assert "dtype" not in meta["model"] and model.config.dtype == "float32"
    resumed = train_main([*flags, "--out", str(out), "--resume"])
    assert resumed["start_step"] == 4 and len(resumed["losses"]) == 4


def test_vision_cli_passes_dtype(monkeypatch):
    """``spikejax train vision --dtype bfloat16`` builds a bfloat16 Spikformer task (training itself is
    the same loop as the language model's, run above; the bfloat16 Spikformer is tested directly)."""
    import spikejax.train.loop as loop
    from spikejax.train.commands import train_main

    seen = []
    monkeypatch.setattr(loop, "fit", lambda task, cfg, **kw: seen.append(task.model_config))
    train_main(["vision", *TINY, "--dtype", "bfloat16"])
    train_main(["vision", *TINY])
    assert [type(c) for c in seen] == [snn.SpikformerConfig] * 2
    assert [c.dtype for c in seen] == ["bfloat16", "float32"]


def test_cli_rejects_unknown_dtype(capsys):
    from spikejax.train.commands import train_main

    with pytest.raises(SystemExit):
        train_main(["lm", "--dtype", "float16"])
    err = capsys.readouterr().err
    assert "--dtype" in err and "bfloat16" in err


def test_export_of_a_bf16_model(tmp_path):
    pytest.importorskip("safetensors")
    from spikejax.interop import export_torch, import_torch

    m32, m16 = _pair(_lm_config("linear"))
    written = export_torch(m16, tmp_path / "lm16", formats=("safetensors",))
    assert json.loads(written["json"].read_text())["config"]["dtype"] == "bfloat16"
    back = import_torch(written["safetensors"])
    assert back.config.dtype == "bfloat16"
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 31, (2, 6)))
    fwd = nnx.jit(lambda m, t: m(t))
    np.testing.assert_array_equal(np.asarray(fwd(back, tokens)), np.asarray(fwd(m16, tokens)))  # same weights

    torch = pytest.importorskip("torch")
    from spikejax.interop import torch_modules as tm

    tmodel = tm.load_model(written["safetensors"])  # the config's dtype is accepted; the mirror runs float32
    with torch.no_grad():
        t = tmodel(torch.as_tensor(np.array(tokens), dtype=torch.long)).numpy()
    with jax.default_matmul_precision("highest"):  # no TF32 on a GPU: torch here computes in float32
        ref = np.asarray(fwd(m32, tokens))
    np.testing.assert_allclose(t, ref, rtol=1e-4, atol=1e-4)
