"""Ternary and multi-level spikes in ``remat="spikes"``: exact bit-plane packing, and the training step of
the ``shakespeare`` LM preset's architecture (ternary neurons, hybrid attention) at a tiny size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from spikejax.nn import SpikingLMConfig
from spikejax.packing import level_bits, pack_levels, pack_ternary, unpack_levels, unpack_ternary


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ternary_planes_rebuild_a_times_s_bit_for_bit(dtype):
    """``unpack_ternary(pack_ternary(a·S), a) == a·S`` bit for bit (the neuron's ``(S·a).astype(dtype)``)
    for per-channel amplitudes of both signs, zeros included; 2 bits a spike."""
    rng = np.random.default_rng(0)
    S = jnp.asarray(rng.integers(-1, 2, (3, 5, 70)), dtype)
    for a in (np.float32(0.7), rng.normal(size=70).astype(np.float32), np.zeros(70, np.float32)):
        y = (S * jnp.asarray(a)).astype(dtype)
        packed = pack_ternary(y)
        assert packed.shape == (2, 3, 5, 3) and packed.dtype == jnp.uint32
        z = unpack_ternary(packed, 70, amplitude=a, dtype=dtype)
        bits = np.uint16 if dtype == jnp.bfloat16 else np.uint32
        np.testing.assert_array_equal(np.asarray(z).view(bits), np.asarray(y).view(bits))
    with pytest.raises(TypeError, match="spikes"):
        pack_ternary(jnp.ones((4,), jnp.int32))


def test_level_planes_rebuild_counts():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 5, (4, 33)).astype(np.float32)
    packed = pack_levels(counts, 4, axis=0)
    assert packed.shape == (level_bits(4), 1, 33) == (3, 1, 33)
    np.testing.assert_array_equal(np.asarray(unpack_levels(packed, 4, axis=0)), counts)
    assert [level_bits(n) for n in (1, 3, 4, 7, 8)] == [1, 2, 3, 3, 4]
    with pytest.raises(ValueError, match="levels"):
        level_bits(0)


def _shakespeare_like(remat: str, neuron: str = "ternary") -> SpikingLMConfig:
    """The preset's architecture (hybrid attention with a softmax window, MLP 3.5x, ternary neurons with
    learned amplitudes, dropout) at a tiny size."""
    return SpikingLMConfig(vocab_size=65, d_model=32, num_heads=2, num_layers=2, time_steps=4, max_len=16,
                           mlp_ratio=3.5, attention="hybrid", attention_kwargs={"window": 8, "softmax": True,
                                                                                 "eps": 1.0},
                           neuron=neuron, neuron_kwargs={"beta": 0.5, "threshold": 0.5}, dropout=0.1, remat=remat)


def test_shakespeare_architecture_spikes_temp_memory_and_gradients():
    """Compiled temp memory of the LM training step (loss and gradients): ``spikes`` below ``block`` and
    at most 0.6x of ``none`` (measured: none 2.35, block 1.31, spikes 0.56 MiB), the same loss bit for bit and the same
    gradients (amplitudes included) to float32 rounding: a value read by several stretches (the block
    input's LayerNorm feeds q, k and v) gets its cotangent summed after each stretch's VJP rather than
    before one, so reductions round differently (measured max |diff| 3e-8)."""
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(rng.integers(0, 65, (2, 17)), jnp.int32)
    key = jax.random.key(int(rng.integers(1 << 30)))
    temp, out = {}, {}
    for mode in ("none", "block", "spikes"):
        model = _shakespeare_like(mode).build(seed=0)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(params, key, graphdef=graphdef, rest=rest):
            logits = nnx.merge(graphdef, params, rest)(tokens[:, :-1], dropout_key=key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        compiled = jax.jit(jax.value_and_grad(loss)).lower(params, key).compile()
        temp[mode] = compiled.memory_analysis().temp_size_in_bytes
        out[mode] = compiled(params, key)
    assert temp["spikes"] < temp["block"] and temp["spikes"] <= 0.6 * temp["none"], temp
    np.testing.assert_array_equal(np.asarray(out["spikes"][0]), np.asarray(out["none"][0]))
    amps = [g for p, g in jax.tree_util.tree_leaves_with_path(out["none"][1]) if "amplitude" in jax.tree_util.keystr(p)]
    assert amps and any(float(jnp.abs(g).max()) > 0 for g in amps)
    for (path, g), ref in zip(jax.tree_util.tree_leaves_with_path(out["spikes"][1]), jax.tree.leaves(out["none"][1]),
                              strict=True):
        ref = np.asarray(ref)
        np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-4, atol=1e-6 * float(np.abs(ref).max()) + 1e-12,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("neuron", ["multilevel", "none"])
def test_other_neurons_keep_their_values(neuron):
    """Multi-level counts (packed in bit planes) and the ANN twin's relu (not spikes: never packed) give the
    same logits in ``spikes`` mode as in ``none``."""
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 65, (2, 9)), jnp.int32)
    kw = {"neuron_kwargs": {"threshold": 0.5}} if neuron == "none" else {}
    ref = _shakespeare_like("none", neuron)
    ref = SpikingLMConfig(**{**ref.__dict__, **kw}) if kw else ref
    cfg = SpikingLMConfig(**{**ref.__dict__, "remat": "spikes"})
    forward = nnx.jit(lambda model, tokens: model(tokens))
    np.testing.assert_array_equal(np.asarray(forward(cfg.build(seed=0), tokens)),
                                  np.asarray(forward(ref.build(seed=0), tokens)))


def test_spikes_block_keeps_only_packed_ternary_words():
    """A ``spikes`` block (the preset's: hybrid attention, ternary neurons) keeps, besides its arguments
    (parameters, input), only the 2-plane packed words of its neurons for the backward pass."""
    import contextlib
    import io

    import spikejax
    from spikejax.packing import PACKED_SPIKES
    from spikejax.remat import remat_call

    block = spikejax.nn.SpikingTransformerBlock(
        32, 2, attention="hybrid", mlp_ratio=3.5, norm="pre", shortcut="spike", causal=True,
        attention_kwargs={"window": 8, "softmax": True, "eps": 1.0}, neuron="ternary",
        neuron_kwargs={"beta": 0.5, "threshold": 0.5}, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(block)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(4, 2, 16, 32)), jnp.float32)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        jax.ad_checkpoint.print_saved_residuals(lambda s, x: remat_call("spikes", nnx.merge(graphdef, s), x).sum(),
                                                state, x)
    inner = [ln for ln in buf.getvalue().splitlines() if ln.strip() and "from the argument" not in ln]
    assert len(inner) >= 6, inner  # q, k, v, attention, its output, the MLP's hidden and output neurons
    assert all(ln.startswith("u32[2,4,2,16,") and PACKED_SPIKES in ln for ln in inner), inner
