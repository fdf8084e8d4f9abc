"""PyTorch mirrors vs the JAX modules: same spikes, logits (1e-4 relative, f32) and gradients.

The JAX side is the reference (spikejax.nn on backend="xla"); weights go through the exported
PyTorch state dict and ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

import spikejax.nn as snn  # noqa: E402
from spikejax import NeuronState  # noqa: E402
from spikejax.interop import load_torch_state_dict, to_torch_state_dict  # noqa: E402
from spikejax.interop import torch_modules as tm  # noqa: E402
from spikejax.metrics import intercept_calls  # noqa: E402
from spikejax.nn import neurons as jneurons  # noqa: E402

torch.set_num_threads(1)


def _load_into_torch(jmodel, tmodel):
    sd = {k: torch.from_numpy(v.copy()) for k, v in to_torch_state_dict(jmodel).items()}
    tmodel.load_state_dict(sd, strict=True)
    return tmodel


def _randomize(model, seed: int):
    """Random weights with spiking activity: norm scales ~1, biases and embeddings O(1)."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, (nnx.Param, nnx.BatchStat)):
            continue
        name = path[-1]
        shape = var.get_value().shape
        if name in ("threshold", "amplitude", "surrogate_alpha", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "scale":
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        elif name in ("embedding", "pos_embed", "bias", "mean", "decay_logit"):
            value = 0.5 * rng.standard_normal(shape) + (0.3 if name == "bias" else 0.0)
        else:
            value = rng.standard_normal(shape) * 1.5 / np.sqrt(shape[0] if len(shape) == 2 else np.prod(shape[:-1]))
        var.set_value(jnp.asarray(value, var.get_value().dtype))
    return model


def _torch_grads(tmodel):
    return {k: (p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
            for k, p in tmodel.named_parameters()}


def _jax_grads_torch_layout(jmodel, grads):
    clone = nnx.clone(jmodel)
    nnx.update(clone, grads)
    return to_torch_state_dict(clone)


def _assert_grads_close(jg, tg, rtol=2e-3):
    assert set(jg) >= set(tg)
    for k, g in tg.items():
        scale = max(np.abs(jg[k]).max(), 1e-6)
        np.testing.assert_allclose(g, jg[k], rtol=rtol, atol=rtol * scale, err_msg=k)


# --- neurons: every kind / reset / reset_delay / surrogate ----------------------------------------

NEURON_CASES = [
    ("if", dict(reset="subtract")),
    ("if", dict(reset="zero", reset_delay=True, detach_reset=True)),
    ("lif", dict(tau=3.0, reset="subtract", surrogate="sigmoid")),
    ("lif", dict(beta=0.8, reset="zero", surrogate="fast_sigmoid")),
    ("lif", dict(beta=0.9, reset="subtract", reset_delay=True, detach_reset=True, surrogate="triangular")),
    ("lif", dict(tau=2.0, reset="none", surrogate="rectangular")),
    ("lif", dict(reset="zero", detach_reset=True, learnable_surrogate=True, surrogate="atan")),
    ("alif", dict(tau=2.0, adapt_scale=0.3, adapt_decay=0.8, reset="subtract")),
    ("alif", dict(beta=0.9, reset="zero", learnable_surrogate=True, surrogate="sigmoid")),
    ("plif", dict(init_tau=3.0, reset="subtract", surrogate="atan")),
    ("plif", dict(decay_input=False, reset="zero", reset_delay=True, learnable_surrogate=True,
                  surrogate="triangular")),
    ("ternary", dict(tau=2.0, reset="subtract", surrogate="atan")),
    ("ternary", dict(beta=0.7, reset="zero", learnable_surrogate=True, surrogate="fast_sigmoid")),
    ("multilevel", dict(levels=3, reset="subtract", surrogate="sigmoid")),
    ("multilevel", dict(levels=2, tau=2.0, reset="subtract", reset_delay=True, surrogate="rectangular")),
]


@pytest.mark.parametrize("kind,kwargs", NEURON_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(NEURON_CASES)])
def test_neuron_spikes_state_and_gradients_match(kind, kwargs):
    C = 6
    jlayer = _randomize(snn.make_neuron(kind, num_channels=C, **kwargs), 1)
    tlayer = _load_into_torch(jlayer, tm.make_neuron(kind, num_channels=C, **kwargs))
    rng = np.random.default_rng(2)
    x = (1.5 * rng.standard_normal((10, 3, C)) + 0.3).astype(np.float32)
    w = rng.standard_normal(x.shape).astype(np.float32)
    v0 = (0.3 * rng.standard_normal((3, C))).astype(np.float32)
    state = NeuronState(jnp.asarray(v0), jnp.zeros((3, C)) if kind == "alif" else None)

    graphdef, params = nnx.split(jlayer)

    def loss(params, x):
        s, final = nnx.merge(graphdef, params)(x, state=state, return_state=True)
        return (s * w).sum() + final.v.sum(), (s, final.v)

    (_, (js, jv)), (jgp, jgx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, jnp.asarray(x))

    tx = torch.from_numpy(x).requires_grad_(True)
    a0 = torch.zeros(3, C) if kind == "alif" else None
    ts, (tv, _) = tlayer(tx, state=(torch.from_numpy(v0), a0), return_state=True)
    ((ts * torch.from_numpy(w)).sum() + tv.sum()).backward()

    np.testing.assert_array_equal(ts.detach().numpy(), np.asarray(js))  # identical spike trains
    assert 0.02 < np.abs(np.asarray(js)).mean() < 0.98, "the test input should make the neuron fire sometimes"
    np.testing.assert_allclose(tv.detach().numpy(), np.asarray(jv), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tx.grad.numpy(), np.asarray(jgx), rtol=1e-4, atol=1e-5)
    jg = _jax_grads_torch_layout(jlayer, jgp)
    tg = _torch_grads(tlayer)
    assert set(tg) == {k for k in jg if not k.endswith("num_batches_tracked")}
    _assert_grads_close(jg, tg, rtol=1e-4)


@pytest.mark.parametrize("shape", ["atan", "sigmoid", "fast_sigmoid", "triangular", "rectangular"])
def test_spike_function_matches_jax_surrogate(shape):
    from spikejax import surrogate

    x = np.linspace(-2, 2, 101).astype(np.float32)
    alpha = np.float32(1.7)
    gx, ga = jax.grad(lambda x, a: surrogate.spike(shape, x, a).sum(), argnums=(0, 1))(jnp.asarray(x), alpha)
    tx = torch.from_numpy(x).requires_grad_(True)
    ta = torch.tensor(alpha, requires_grad=True)
    out = tm.spike(shape, tx, ta)
    out.sum().backward()
    np.testing.assert_array_equal(out.detach().numpy(), (x >= 0).astype(np.float32))
    np.testing.assert_allclose(tx.grad.numpy(), np.asarray(gx), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ta.grad.numpy(), np.asarray(ga), rtol=1e-5, atol=1e-6)


# --- models: logits, every spike train, every gradient ------------------------------------------------


def _record_jax_spikes(model, out: list):
    """Spikes of ``model``'s neuron layers in call order, scoped to its instances (no class patched)."""
    return intercept_calls(model, lambda m, args, o: out.append(o[0] if isinstance(o, tuple) else o),
                           (jneurons.SpikingNeuron,))


def _record_torch_spikes(tmodel, out: list):
    hooks = [m.register_forward_hook(lambda m, i, o: out.append(o[0] if isinstance(o, tuple) else o))
             for m in tmodel.modules() if isinstance(m, tm.SpikingNeuron)]
    return hooks


def _compare_model(jmodel, tmodel, inputs: np.ndarray, *, train: bool, check_grads: bool = True):
    rng = np.random.default_rng(5)
    graphdef, params = nnx.split(jmodel)

    def loss(params, inputs, r):
        spikes: list = []
        model = nnx.merge(graphdef, params)
        with _record_jax_spikes(model, spikes):
            logits = model(inputs)
        return (logits * r).sum(), (logits, spikes)

    jin = jnp.asarray(inputs)
    r = None
    tmodel.train(train)
    tspikes: list = []
    hooks = _record_torch_spikes(tmodel, tspikes)
    tlogits = tmodel(torch.from_numpy(inputs))
    for h in hooks:
        h.remove()
    r = rng.standard_normal(tlogits.shape).astype(np.float32)
    (_, (jlogits, jspikes)), jg = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, jin, jnp.asarray(r))

    jl, tl = np.asarray(jlogits), tlogits.detach().numpy()
    np.testing.assert_allclose(tl, jl, rtol=1e-4, atol=1e-4 * np.abs(jl).max())
    assert len(jspikes) == len(tspikes) > 0
    rates = []
    for i, (a, b) in enumerate(zip(jspikes, tspikes, strict=True)):
        np.testing.assert_array_equal(b.detach().numpy(), np.asarray(a), err_msg=f"spike train {i}")
        rates.append(float(np.abs(np.asarray(a)).mean()))
    active = sum(0.0 < r_ < 1.0 for r_ in rates)
    assert active >= 0.75 * len(rates), f"too many silent/saturated neuron layers: {rates}"
    if check_grads:
        (tlogits * torch.from_numpy(r)).sum().backward()
        tg = _torch_grads(tmodel)
        assert len(tg) > 10
        _assert_grads_close(_jax_grads_torch_layout(jmodel, jg), tg)


LM_CASES = [
    dict(attention="hybrid", attention_kwargs={"window": 3}, neuron="plif"),
    dict(attention="linear", attention_kwargs={"feature_map": "elu1"}),
    dict(attention="sliding", attention_kwargs={"window": 4, "softmax": True}, neuron="alif"),
    dict(attention="ssa", norm="bn", shortcut="spike", neuron_kwargs={"learnable_surrogate": True}),
    dict(attention="sdsa", neuron="ternary", neuron_kwargs={"surrogate": "sigmoid"}),
    dict(attention="hybrid", attention_kwargs={"window": 3}, neuron="ternary"),  # feature_map "auto" -> relu
    dict(attention="linear", attention_kwargs={"mix_norm": "layer"}, neuron="ternary"),
]


@pytest.mark.parametrize("kw", LM_CASES,
                         ids=[f'{c["attention"]}-{c.get("neuron", "lif")}-{i}' for i, c in enumerate(LM_CASES)])
def test_spiking_lm_matches(kw):
    cfg = snn.SpikingLMConfig(vocab_size=13, d_model=16, num_heads=2, num_layers=2, mlp_ratio=2.0, time_steps=3,
                              max_len=16, **kw)
    jmodel = _randomize(cfg.build(seed=0), 3)
    tmodel = _load_into_torch(jmodel, tm.SpikingLM(cfg))
    tokens = np.random.default_rng(4).integers(0, 13, (2, 7))
    _compare_train_and_eval(jmodel, tmodel, tokens, bn=cfg.norm == "bn")


def _compare_train_and_eval(jmodel, tmodel, inputs, *, bn: bool):
    """Training mode: outputs, spikes, gradients. With BatchNorm, gradients through the batch statistics
    are ill-conditioned on features of ~zero batch variance (1/sqrt(eps) per layer), so gradients are
    compared in eval mode (running statistics) and training mode compares outputs and spikes."""
    _compare_model(jmodel, tmodel, inputs, train=True, check_grads=not bn)
    if bn:
        jmodel.eval()
        _load_into_torch(jmodel, tmodel)  # PyTorch's training forward has moved its running statistics
        tmodel.zero_grad()
        _compare_model(jmodel, tmodel, inputs, train=False, check_grads=True)


@pytest.mark.parametrize("kw", [dict(), dict(norm="pre", shortcut="membrane", attention="sdsa")],
                         ids=["bn-spike-ssa", "pre-membrane-sdsa"])
def test_spikformer_matches(kw):
    cfg = snn.SpikformerConfig(image_size=8, in_channels=3, patch_size=4, num_classes=5, d_model=16, num_heads=2,
                               num_layers=1, mlp_ratio=2.0, time_steps=2, **kw)
    jmodel = _randomize(cfg.build(seed=0), 6)
    tmodel = _load_into_torch(jmodel, tm.Spikformer(cfg))
    images = np.random.default_rng(7).standard_normal((2, 8, 8, 3)).astype(np.float32)
    _compare_train_and_eval(jmodel, tmodel, images, bn=cfg.norm == "bn")


# (BatchNorm in eval mode, on running statistics, is compared by test_spiking_lm_matches[ssa] and
# test_spikformer_matches[bn-spike-ssa] through _compare_train_and_eval.)


def test_linear_attention_default_eps_and_gradient_match_jax():
    """Same default ε (1) as spikejax.nn, and the same bounded gradient on a query row without spikes."""
    from spikejax.nn import attention as jattn

    assert tm.LINEAR_ATTENTION_EPS == snn.LINEAR_ATTENTION_EPS == 1.0
    assert tm.LinearSpikeAttention(8, 2).eps == tm.HybridSpikeAttention(8, 2).eps == 1.0
    rng = np.random.default_rng(12)
    q, k, v = ((rng.uniform(size=(2, 2, 6, 4)) < 0.5).astype(np.float32) for _ in range(3))
    q[..., 3, :] = 0.0
    g = rng.standard_normal(q.shape).astype(np.float32)
    jy, jvjp = jax.vjp(lambda q: jattn.linear_attention_core(q, jnp.asarray(k), jnp.asarray(v), chunk_size=4),
                       jnp.asarray(q))
    tq = torch.from_numpy(q).requires_grad_(True)
    ty = tm.linear_attention_core(tq, torch.from_numpy(k), torch.from_numpy(v))
    (ty * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(ty.detach().numpy(), np.asarray(jy), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tq.grad.numpy(), np.asarray(jvjp(jnp.asarray(g))[0]), rtol=1e-5, atol=1e-6)
    assert np.abs(tq.grad.numpy()[..., 3, :]).max() < 100.0


def test_load_model_from_export_and_import_back(tmp_path):
    from spikejax.interop import export_torch, import_torch

    cfg = snn.SpikingLMConfig(vocab_size=13, d_model=16, num_heads=2, num_layers=1, mlp_ratio=2.0, time_steps=2,
                              max_len=16, attention="hybrid", attention_kwargs={"window": 2}, neuron="plif")
    jmodel = _randomize(cfg.build(seed=0), 10)
    written = export_torch(jmodel, tmp_path / "lm")
    assert set(written) == {"safetensors", "pt", "json"}
    tokens = np.random.default_rng(11).integers(0, 13, (2, 5))
    jl = np.asarray(jmodel(jnp.asarray(tokens)))
    for suffix in (".safetensors", ".pt"):
        tmodel = tm.load_model(tmp_path / ("lm" + suffix))
        tl = tmodel(torch.from_numpy(tokens)).detach().numpy()
        np.testing.assert_allclose(tl, jl, rtol=1e-4, atol=1e-4 * np.abs(jl).max())
    # .pt and .safetensors hold the same tensors
    pt = torch.load(written["pt"], weights_only=True)
    from safetensors.numpy import load_file

    st = load_file(str(written["safetensors"]))
    assert set(pt) == set(st)
    for k in st:
        np.testing.assert_array_equal(pt[k].numpy(), st[k])
    # a state dict from PyTorch (after a training step there) comes back exactly
    with torch.no_grad():
        for p in tmodel.parameters():
            p.add_(0.01 * torch.randn_like(p))
    back = load_torch_state_dict(cfg.build(seed=1), tmodel.state_dict())
    again = to_torch_state_dict(back)
    for k, v in tmodel.state_dict().items():
        np.testing.assert_array_equal(again[k], v.numpy(), err_msg=k)
    jl2 = np.asarray(back(jnp.asarray(tokens)))
    tl2 = tmodel(torch.from_numpy(tokens)).detach().numpy()
    np.testing.assert_allclose(tl2, jl2, rtol=1e-4, atol=1e-4 * np.abs(jl2).max())
    assert import_torch(tmp_path / "lm.pt") is not None


def test_torch_neuron_rejects_bad_arguments():
    with pytest.raises(ValueError, match="surrogate"):
        tm.LIF(surrogate="nope")
    with pytest.raises(ValueError, match="reset"):
        tm.IF(reset="hard")
    with pytest.raises(ValueError, match="x"):
        tm.LIF()(torch.zeros(3))
    with pytest.raises(ValueError, match="num_channels"):
        tm.PLIF(4)(torch.zeros(2, 3, 5))
