"""Bit-packed spikes: exact round trips against a numpy bit-packing reference, and the packed
spiking linear layer's values and gradients against the plain expression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spikejax.packing import (
    PackedSpikeLinear,
    pack_spikes,
    packed_bytes,
    packed_size,
    spiking_linear,
    unpack_spikes,
    use_packed_spike_linears,
)


def _np_pack(bits: np.ndarray, axis: int) -> np.ndarray:
    """Independent reference: numpy packbits (little bit order) regrouped into uint32 words."""
    b = np.moveaxis(bits != 0, axis, -1)
    n = b.shape[-1]
    pad = (-n) % 32
    b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), bool)], axis=-1)
    by = np.packbits(b, axis=-1, bitorder="little")  # 4 bytes per word, little endian
    words = by.reshape(*by.shape[:-1], -1, 4).astype(np.uint32)
    w = words[..., 0] | (words[..., 1] << 8) | (words[..., 2] << 16) | (words[..., 3] << 24)
    return np.moveaxis(w, -1, axis)


@pytest.mark.parametrize("shape,axis", [((3, 100), -1), ((5, 32, 2), 1), ((1,), 0), ((64, 7), 0), ((2, 3, 33), 2)])
def test_pack_round_trip_matches_numpy(shape, axis):
    rng = np.random.default_rng(sum(shape) + axis)
    s = (rng.random(shape) < 0.3).astype(np.float32)
    packed = pack_spikes(jnp.asarray(s), axis=axis)
    assert packed.dtype == jnp.uint32
    expect_shape = list(shape)
    expect_shape[axis] = packed_size(shape[axis])
    assert packed.shape == tuple(expect_shape)
    np.testing.assert_array_equal(np.asarray(packed), _np_pack(s, axis))
    back = unpack_spikes(packed, shape[axis], axis=axis)
    np.testing.assert_array_equal(np.asarray(back), s)
    assert packed_bytes(shape, axis) == packed.size * 4


def test_pack_all_ones_and_bool_and_jit():
    s = jnp.ones((4, 64), jnp.bool_)
    p = jax.jit(lambda x: pack_spikes(x))(s)
    assert np.all(np.asarray(p) == np.uint32(0xFFFFFFFF))
    np.testing.assert_array_equal(np.asarray(unpack_spikes(p, 64, dtype=jnp.bool_)), np.asarray(s))


def test_pack_errors_name_argument():
    with pytest.raises(ValueError, match="axis"):
        pack_spikes(jnp.zeros((3, 4)), axis=2)
    with pytest.raises(ValueError, match="length"):
        unpack_spikes(jnp.zeros((3, 2), jnp.uint32), 100)
    with pytest.raises(TypeError, match="packed"):
        unpack_spikes(jnp.zeros((3, 2), jnp.int32), 40)


def test_spiking_linear_values_and_gradients_equal_plain():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(7), 4)
    s = (jax.random.uniform(k1, (3, 5, 70)) < 0.2).astype(jnp.float32)
    w = jax.random.normal(k2, (70, 11))
    b = jax.random.normal(k3, (11,))
    ct = jax.random.normal(k4, (3, 5, 11))

    def plain(s, w, b):
        return jnp.sum((s @ w + b) * ct)

    def packed(s, w, b):
        return jnp.sum(spiking_linear(s, w, b) * ct)

    np.testing.assert_allclose(spiking_linear(s, w, b), s @ w + b, rtol=1e-6, atol=1e-6)
    g_ref = jax.grad(plain, argnums=(0, 1, 2))(s, w, b)
    g_new = jax.jit(jax.grad(packed, argnums=(0, 1, 2)))(s, w, b)
    for a, r in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-6, atol=1e-5)
    # no bias
    g0 = jax.grad(lambda s, w: jnp.sum(spiking_linear(s, w) * ct), argnums=(0, 1))(s, w)
    np.testing.assert_allclose(np.asarray(g0[1]), np.asarray(g_ref[1]), rtol=1e-6, atol=1e-5)


def test_spiking_linear_saves_packed_residuals():
    s = (jax.random.uniform(jax.random.key(0), (256, 128)) < 0.5).astype(jnp.float32)
    w = jnp.ones((128, 16))
    _, vjp = jax.vjp(spiking_linear, s, w)
    leaves = jax.tree.leaves(vjp)
    # no residual with s's f32 size; one uint32 array of 1/32 of it
    assert not any(getattr(x, "shape", None) == s.shape for x in leaves)
    assert any(getattr(x, "dtype", None) == jnp.uint32 and x.size == s.size // 32 for x in leaves)


def test_spiking_linear_shape_errors():
    with pytest.raises(ValueError, match="spikes"):
        spiking_linear(jnp.zeros((2, 5)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="kernel"):
        spiking_linear(jnp.zeros((2, 4)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="bias"):
        spiking_linear(jnp.zeros((2, 4)), jnp.zeros((4, 3)), jnp.zeros((4,)))


def test_use_packed_spike_linears_swaps_only_spike_inputs_and_keeps_gradients():
    from spikejax.nn import LIF

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc_in = nnx.Linear(6, 40, rngs=rngs)
            self.lif = LIF()
            self.fc_out = nnx.Linear(40, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc_out(self.lif(self.fc_in(x) * 3.0)).mean(0)

    x = jax.random.normal(jax.random.key(3), (4, 5, 6))
    ref = Net(nnx.Rngs(0))
    net = Net(nnx.Rngs(0))
    swapped = use_packed_spike_linears(net, x)
    assert swapped == ["fc_out"]
    assert isinstance(net.fc_out, PackedSpikeLinear) and not isinstance(net.fc_in, PackedSpikeLinear)
    loss = lambda m: jnp.sum(m(x) ** 2)
    np.testing.assert_allclose(net(x), ref(x), rtol=1e-6)
    g_ref, g_new = nnx.grad(loss)(ref), nnx.grad(loss)(net)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
