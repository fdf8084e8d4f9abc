"""The PyTorch mirror honours every option: every config field, every neuron and attention keyword.

Each case builds a spikejax model (or neuron layer) with options away from their defaults, exports its
state dict, loads it ``strict=True`` into the mirror built from the same config (or arguments) and
compares the outputs on random inputs (spikejax on backend="xla" is the reference). The option lists
are read from the config dataclasses and constructor signatures, so a new field or keyword without
a case here fails :func:`test_every_option_has_a_case`.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

import spikejax.nn as snn  # noqa: E402
from spikejax.interop import to_torch_state_dict  # noqa: E402
from spikejax.interop import torch_modules as tm  # noqa: E402
from spikejax.nn import attention as jattn  # noqa: E402

torch.set_num_threads(1)

# options that choose how spikejax computes, not what: the mirror builds with them and computes in float32
RUN_TIME_FIELDS = {"backend", "dtype", "remat", "dropout"}
NEURON_RUN_TIME = {"backend", "num_channels"}  # num_channels: set by the model / the test itself
ATTENTION_SET_BY_BLOCK = {"d_model", "num_heads", "causal", "neuron", "neuron_kwargs", "norm", "input_neuron",
                          "output_neuron", "backend", "dtype", "rngs", "mixer"}

LM_BASE = dict(vocab_size=11, d_model=8, num_heads=2, num_layers=1, mlp_ratio=2.0, time_steps=2, max_len=8)
LM_CASES = [
    dict(attention="linear", vocab_size=7, max_len=16,
         attention_kwargs={"feature_map": "elu1", "normalize": False, "scale": 0.3, "chunk_size": 2,
                           "mix_norm": "layer"},
         neuron="lif", neuron_kwargs={"tau": 3.0, "threshold": 0.6, "surrogate": "sigmoid", "surrogate_alpha": 3.0}),
    dict(attention="sliding", num_heads=4, pos_embedding=False, attention_kwargs={"window": 2, "softmax": True,
                                                                                   "scale": 0.4},
         neuron="alif", neuron_kwargs={"beta": 0.7, "decay_input": True, "adapt_scale": 0.5, "adapt_decay": 0.8,
                                       "reset": "zero", "threshold": 0.5}),
    dict(attention="hybrid", num_layers=2, d_model=12, mlp_ratio=1.5,
         attention_kwargs={"window": 3, "softmax": True, "feature_map": "relu", "eps": 0.5, "chunk_size": 2,
                           "attn_threshold": 0.3},
         neuron="plif", neuron_kwargs={"init_tau": 3.0, "learn_threshold": False, "threshold": 0.5,
                                       "detach_reset": True, "reset_delay": True}),
    dict(attention="ssa", norm="bn", shortcut="spike", time_steps=3, attention_kwargs={"use_bias": False,
                                                                                       "scale": 0.4},
         neuron="ternary", neuron_kwargs={"amplitude": 0.7, "learn_amplitude": False, "learnable_surrogate": True,
                                          "threshold": 0.5}),
    dict(attention="sdsa", attention_kwargs={"kv_threshold": 0.3, "scale": 0.5}, dropout=0.1, remat="block",
         neuron="multilevel", neuron_kwargs={"levels": 2, "tau": 2.0, "threshold": 0.5}),
    dict(neuron="if", neuron_kwargs={"threshold": 0.5, "reset": "none"}, dtype="bfloat16",
         backend="pallas_interpret"),
]
SPIKFORMER_BASE = dict(image_size=8, in_channels=2, patch_size=4, num_classes=5, d_model=8, num_heads=2,
                       num_layers=1, mlp_ratio=2.0, time_steps=2)
SPIKFORMER_CASES = [
    dict(neuron_kwargs={"threshold": 0.5}),
    dict(image_size=6, patch_size=3, in_channels=3, num_classes=4, norm="pre", shortcut="membrane", attention="sdsa",
         neuron="plif", num_layers=2, d_model=12, num_heads=4, mlp_ratio=1.5, time_steps=3,
         attention_kwargs={"kv_threshold": 0.4}, neuron_kwargs={"threshold": 0.6}),
    dict(attention="hybrid", attention_kwargs={"window": 2}, dtype="bfloat16", backend="pallas_interpret",
         remat="block", neuron_kwargs={"beta": 0.6, "threshold": 0.5}),
]

NEURON_CASES = {
    "if": [dict(threshold=0.7, reset="zero", detach_reset=True, reset_delay=True, surrogate="fast_sigmoid",
                surrogate_alpha=5.0, learnable_surrogate=True, stateful=True)],
    "lif": [dict(tau=3.0, decay_input=False, threshold=0.8, reset="none", detach_reset=True, reset_delay=True,
                 surrogate="triangular"),
            dict(beta=0.7, stateful=True, surrogate_alpha=1.5, learnable_surrogate=True)],
    "alif": [dict(tau=3.0, decay_input=False, threshold=0.8, adapt_scale=0.4, adapt_decay=0.7, reset="zero",
                  detach_reset=True, learnable_surrogate=True),
             dict(beta=0.8, stateful=True, surrogate="atan", surrogate_alpha=3.0)],
    "plif": [dict(init_tau=3.0, threshold=0.8, learn_threshold=False, decay_input=False, reset="zero",
                  detach_reset=True, reset_delay=True, surrogate="rectangular", surrogate_alpha=0.5),
             dict(learnable_surrogate=True, stateful=True)],
    "ternary": [dict(tau=3.0, decay_input=False, threshold=0.8, amplitude=0.6, learn_amplitude=False, reset="zero",
                     detach_reset=True, reset_delay=True),
                dict(beta=0.7, surrogate="sigmoid", stateful=True, surrogate_alpha=3.0, learnable_surrogate=True)],
    "multilevel": [dict(levels=2, tau=3.0, decay_input=False, threshold=0.6, reset="zero", detach_reset=True,
                        reset_delay=True),
                   dict(beta=0.9, learnable_surrogate=True, stateful=True, surrogate="fast_sigmoid",
                        surrogate_alpha=10.0)],
}


def _keywords(cls) -> set[str]:
    """Keyword arguments of an NNX class's constructor, through ``**kwargs`` to its bases'."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is nnx.Module:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _changed(cases: list[dict], base: dict, config_class) -> set[str]:
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(config_class)}
    return {k for case in cases for k, v in {**base, **case}.items() if v != defaults[k]}


def test_every_option_has_a_case():
    for cls, base, cases in ((snn.SpikingLMConfig, LM_BASE, LM_CASES),
                             (snn.SpikformerConfig, SPIKFORMER_BASE, SPIKFORMER_CASES)):
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = fields - _changed(cases, base, cls)
        assert not missing, f"{cls.__name__} fields without a mirror case: {sorted(missing)}"
    for kind, cls in snn.NEURONS.items():
        used = {k for case in NEURON_CASES.get(kind, []) for k in case}
        missing = _keywords(cls) - NEURON_RUN_TIME - used
        assert not missing, f"neuron {kind!r}: keywords without a mirror case: {sorted(missing)}"
    used = {k for case in LM_CASES + SPIKFORMER_CASES for k in case.get("attention_kwargs", {})}
    every = set().union(*(_keywords(c) for c in snn.ATTENTIONS.values())) - ATTENTION_SET_BY_BLOCK
    assert not every - used, f"attention keywords without a mirror case: {sorted(every - used)}"
    assert set(tm.NEURONS) == set(snn.NEURONS) and set(tm.ATTENTIONS) == set(snn.ATTENTIONS)


def _random_weights(model, seed: int):
    """Random weights that make the neurons fire: positive thresholds / scales / variances near 1,
    O(1) biases and embeddings, kernels ~ 1.5 / sqrt(fan in)."""
    rng = np.random.default_rng(seed)
    positive = {"threshold", "amplitude", "surrogate_alpha", "var", "scale"}
    for path, var in nnx.iter_graph(model):
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            shape = var.get_value().shape
            if path[-1] in positive:
                value = rng.uniform(0.6, 1.4, shape)
            elif path[-1] == "kernel":
                value = rng.standard_normal(shape) * 1.5 / np.sqrt(np.prod(shape[:-1]))
            else:
                value = 0.5 * rng.standard_normal(shape) + (0.3 if path[-1] == "bias" else 0.0)
            var.set_value(jnp.asarray(value, var.get_value().dtype))
    return model


def _compare(config, inputs: np.ndarray, seed: int):
    """The mirror built from ``config`` (its dict, as an export holds it) loads the state dict of the
    spikejax model of ``config`` (computing in float32 on backend xla) strict, and its logits equal
    that model's."""
    reference = dataclasses.replace(config, dtype="float32", backend="xla").build(seed=seed)
    reference = _random_weights(reference, seed)
    state = {k: torch.from_numpy(v.copy()) for k, v in to_torch_state_dict(reference).items()}
    tmodel = tm.build_model(type(reference).__name__, config.to_dict())
    tmodel.load_state_dict(state, strict=True)
    reference.eval()
    tmodel.eval()
    jl = np.asarray(nnx.jit(lambda model, x: model(x))(reference, jnp.asarray(inputs)))
    with torch.no_grad():
        tl = tmodel(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(tl, jl, rtol=1e-4, atol=1e-4 * max(np.abs(jl).max(), 1e-6))
    assert np.abs(jl).max() > 0
    return tmodel


@pytest.mark.parametrize("case", LM_CASES, ids=[f'{c.get("attention", "linear")}-{c["neuron"]}' for c in LM_CASES])
def test_spiking_lm_mirror_honours_config(case):
    cfg = snn.SpikingLMConfig(**{**LM_BASE, **case})
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 5))
    tmodel = _compare(cfg, tokens, seed=2)
    assert tmodel.config == cfg.to_dict()


@pytest.mark.parametrize("case", SPIKFORMER_CASES, ids=[f'{c.get("attention", "ssa")}-{i}'
                                                        for i, c in enumerate(SPIKFORMER_CASES)])
def test_spikformer_mirror_honours_config(case):
    cfg = snn.SpikformerConfig(**{**SPIKFORMER_BASE, **case})
    images = np.random.default_rng(3).standard_normal((2, cfg.image_size, cfg.image_size, cfg.in_channels))
    _compare(cfg, images.astype(np.float32), seed=4)


@pytest.mark.parametrize("kind,kwargs", [(k, kw) for k, cases in NEURON_CASES.items() for kw in cases],
                         ids=[f"{k}-{i}" for k, cases in NEURON_CASES.items() for i in range(len(cases))])
def test_neuron_mirror_honours_every_keyword(kind, kwargs):
    C = 5
    jlayer = _random_weights(snn.make_neuron(kind, num_channels=C, **kwargs), 5)
    tlayer = tm.make_neuron(kind, num_channels=C, **kwargs)
    tlayer.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in to_torch_state_dict(jlayer).items()},
                           strict=True)
    x = (1.2 * np.random.default_rng(6).standard_normal((6, 3, C)) + 0.4).astype(np.float32)
    chunks = (x[:4], x[4:]) if kwargs.get("stateful") else (x,)
    for chunk in chunks:  # a stateful layer carries its state from one chunk to the next
        js = np.asarray(jlayer(jnp.asarray(chunk)))
        with torch.no_grad():
            ts = tlayer(torch.from_numpy(chunk)).numpy()
        np.testing.assert_array_equal(ts, js)
    assert 0.02 < np.abs(js).mean() < 0.98, "the input should make the neuron fire sometimes"


def test_mirror_starts_from_spikejax_seed_0_and_refuses_unmirrored_modules():
    cfg = snn.SpikingLMConfig(**LM_BASE, neuron="plif")
    tmodel = tm.SpikingLM(cfg)
    exported = to_torch_state_dict(cfg.build(seed=0))
    assert set(tmodel.state_dict()) == set(exported)
    for k, v in tmodel.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), exported[k], err_msg=k)
    with pytest.raises(ValueError, match="unknown .*fields"):
        tm.SpikingLM({**cfg.to_dict(), "d_modle": 8})
    with pytest.raises(TypeError, match="CubaLIF has no PyTorch mirror"):
        tm.mirror(snn.CubaLIF(alpha=0.8, beta=0.9))
    attn = tm.make_attention("hybrid", 8, 2, window=3)
    assert isinstance(attn, tm.HybridSpikeAttention) and isinstance(attn.mixer, jattn.Concat)
    assert attn.out_proj.in_features == 16 and attn.window == 3
