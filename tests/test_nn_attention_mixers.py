"""One spiking-attention module over a mixer: the named kinds are SpikingAttention with their mixer,
hybrid attention is a Concat of two mixers, and new compositions decode like the built-in ones."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spikejax import nn as snn
from spikejax.nn import attention as A

T, B, L, D, H = 2, 2, 6, 8, 2
COMMON = dict(neuron_kwargs={"threshold": 0.15}, attn_threshold=0.1)


def _spikes(seed, shape=(T, B, L, D)):
    return jnp.asarray((np.random.default_rng(seed).uniform(size=shape) < 0.5).astype(np.float32))


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_heads_are_split_the_numpy_way_and_merged_back():
    x = np.random.default_rng(0).standard_normal((T, B, L, D)).astype(np.float32)
    h = A.split_heads(jnp.asarray(x), H)
    np.testing.assert_array_equal(np.asarray(h), x.reshape(T, B, L, H, D // H).transpose(0, 1, 3, 2, 4))
    np.testing.assert_array_equal(np.asarray(A.merge_heads(h)), x)


def test_hybrid_is_spiking_attention_over_a_concat_of_two_mixers():
    hyb = snn.HybridSpikeAttention(D, H, window=2, chunk_size=4, **COMMON, rngs=nnx.Rngs(1))
    scale = 1 / np.sqrt(D // H)
    mixer = A.Concat((A.PerHead(A.LinearHeads(scale, chunk_size=4), H), A.PerHead(A.WindowHeads(scale, window=2), H)),
                     A.HybridState)
    assert hyb.mixer == mixer and hash(hyb.mixer) == hash(mixer)  # a value
    assert mixer.causal and not A.PerHead(A.SSAHeads(1.0), H).causal
    direct = snn.SpikingAttention(D, H, mixer, **COMMON, rngs=nnx.Rngs(1))
    assert isinstance(hyb, snn.SpikingAttention) and isinstance(hyb, snn.SpikeAttentionBase)
    sa, sd = nnx.state(hyb, nnx.Param), nnx.state(direct, nnx.Param)
    assert jax.tree_util.tree_structure(sa) == jax.tree_util.tree_structure(sd)  # same parameter paths
    _leaves_equal(sa, sd)
    x = _spikes(2)
    run = nnx.jit(lambda m, x: m(x, return_state=True))
    _leaves_equal(run(hyb, x), run(direct, x))
    with pytest.raises(dataclasses.FrozenInstanceError):
        mixer.parts = ()


def test_a_new_composition_decodes_like_its_full_forward():
    """SSA ‖ SDSA (not a built-in kind): width 2D, SDSA's kv_neuron owned by the module, and the
    position-by-position decode equals the full causal forward and its final state."""
    mixer = A.Concat((A.PerHead(A.SSAHeads(0.5, causal=True), H), A.SpikeDrivenMixer(0.5, causal=True)))
    attn = snn.SpikingAttention(D, H, mixer, **COMMON, rngs=nnx.Rngs(3))
    assert attn.mixed_dim == 2 * D and attn.out_proj.in_features == 2 * D
    assert isinstance(attn.kv_neuron, snn.SpikingNeuron) and attn.attn_neuron is not None
    ssa = snn.SpikingSelfAttention(D, H, causal=True, scale=0.5, **COMMON, rngs=nnx.Rngs(4))
    sdsa = snn.SpikeDrivenSelfAttention(D, H, causal=True, **COMMON, rngs=nnx.Rngs(5))
    x = _spikes(6)

    @nnx.jit
    def run(attn, ssa, sdsa, x):
        q, k, v = attn.qkv(x)
        parts = jnp.concatenate([ssa.mix(q, k, v), sdsa.mix(q, k, v)], -1)
        full, final = attn(x, return_state=True)

        def body(state, xi):
            y, state = attn.decode_step(xi[:, :, None], state)
            return state, y[:, :, 0]

        state, ys = jax.lax.scan(body, attn.init_state(B, T), jnp.moveaxis(x, 2, 0))
        return attn.mix(q, k, v), parts, full, final, jnp.moveaxis(ys, 0, 2), state

    mixed, parts, full, final, stepped, state = run(attn, ssa, sdsa, x)
    np.testing.assert_array_equal(np.asarray(mixed), np.asarray(parts))
    assert 0 < float(parts[..., D:].mean()) < 1  # the SDSA half fires
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), rtol=1e-5, atol=1e-5)
    assert isinstance(final, tuple) and isinstance(final[0], snn.LinearAttentionState)
    assert isinstance(final[1], snn.SDSAState)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_mixer_arguments_are_validated_by_name():
    with pytest.raises(ValueError, match="eps"):
        A.LinearHeads(1.0, eps=0.0)
    with pytest.raises(ValueError, match="feature_map"):
        A.LinearHeads(1.0, feature_map="exp")
    with pytest.raises(ValueError, match="chunk_size"):
        A.LinearHeads(1.0, chunk_size=0)
    with pytest.raises(ValueError, match="window"):
        A.WindowHeads(1.0, window=0)
    with pytest.raises(ValueError, match="parts"):
        A.Concat(())
    with pytest.raises(ValueError, match="mix_norm"):  # a mixer that ends in spikes has no attn_neuron
        snn.SpikingAttention(D, H, A.SpikeDrivenMixer(), mix_norm="layer", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_heads"):
        snn.SpikingAttention(D, 0, A.SpikeDrivenMixer(), rngs=nnx.Rngs(0))
