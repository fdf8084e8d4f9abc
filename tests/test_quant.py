"""Quantization: channel-wise ternary spikes, TTQ (forward and every gradient against an independent
hand-written reference), regularizers, and amplitude folding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax as sj
from spikejax import quant
from spikejax.nn import Ternary


def _rand(key, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.key(key), shape)


# --- ternary spikes ---------------------------------------------------------------------------------


def test_channel_ternary_matches_functional_and_learns_amplitude_and_threshold():
    C = 6
    layer = quant.ChannelTernary(C, threshold=0.4, amplitude=0.8)
    thr = jax.random.uniform(jax.random.key(1), (C,), minval=0.2, maxval=1.0)
    amp = jax.random.uniform(jax.random.key(2), (C,), minval=0.5, maxval=2.0)
    layer.threshold[...] = thr
    layer.amplitude[...] = amp
    x = _rand(0, (7, 3, C), 1.5)
    y = layer(x)
    ref = sj.ternary(x, threshold=thr, amplitude=amp)[0]
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))
    s = np.asarray(y) / np.asarray(amp)
    assert set(np.unique(np.round(s, 5))) <= {-1.0, 0.0, 1.0}

    ct = _rand(3, y.shape)
    g = nnx.grad(lambda m: jnp.sum(m(x) * ct))(layer)
    g_ref = jax.grad(lambda t, a: jnp.sum(sj.ternary(x, threshold=t, amplitude=a)[0] * ct), argnums=(0, 1))(thr, amp)
    np.testing.assert_allclose(g["threshold"][...], g_ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g["amplitude"][...], g_ref[1], rtol=1e-5, atol=1e-6)
    # ∂/∂a_c = Σ S_c ct_c (independent of the neuron internals)
    np.testing.assert_allclose(g["amplitude"][...], np.sum(s * np.asarray(ct), axis=(0, 1)), rtol=1e-5, atol=1e-5)


def test_channel_ternary_per_layer_and_errors():
    layer = quant.ChannelTernary(per_channel=False, threshold=0.5, amplitude=2.0)
    assert layer.amplitude[...].shape == () and layer.threshold[...].shape == ()
    x = _rand(4, (3, 2, 5))
    np.testing.assert_array_equal(layer(x), sj.ternary(x, threshold=0.5, amplitude=2.0)[0])
    with pytest.raises(ValueError, match="num_channels"):
        quant.ChannelTernary(None, per_channel=True)
    with pytest.raises(ValueError, match="threshold"):
        quant.ChannelTernary(4, threshold=0.0)
    with pytest.raises(ValueError, match="x"):
        quant.ChannelTernary(4)(jnp.zeros((2, 3, 5)))


# --- TTQ -----------------------------------------------------------------------------------------------


def _ttq_reference(w, wp, wn, t, rho, g):
    """Independent numpy implementation of Zhu et al. 2017 with the chain-rule scale gradients."""
    w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
    delta = t * np.abs(w).max()
    ip, ineg = w > delta, w < -delta
    wp_b = np.broadcast_to(wp, w.shape)
    wn_b = np.broadcast_to(wn, w.shape)
    wt = np.where(ip, wp_b, 0.0) - np.where(ineg, wn_b, 0.0)
    gw = np.where(ip, wp_b * g, np.where(ineg, wn_b * g, rho * g))
    gp = np.where(ip, g, 0.0)
    gn = -np.where(ineg, g, 0.0)
    if np.ndim(wp) == 0:
        gp, gn = gp.sum(), gn.sum()
    else:
        gp, gn = gp.sum(axis=0), gn.sum(axis=0)
    return wt, gw, gp, gn


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rho", [1.0, 0.0])
def test_ttq_forward_and_gradients(per_channel, rho):
    w = _rand(10, (9, 5))
    wp = jnp.abs(_rand(11, (5,) if per_channel else ())) + 0.3
    wn = jnp.abs(_rand(12, (5,) if per_channel else ())) + 0.3
    ct = _rand(13, (9, 5))
    t = 0.3
    wt = quant.ttq_quantize(w, wp, wn, threshold_ratio=t, deadzone_grad=rho)
    ref_wt, ref_gw, ref_gp, ref_gn = _ttq_reference(w, np.asarray(wp), np.asarray(wn), t, rho, ct)
    np.testing.assert_allclose(wt, ref_wt, rtol=1e-6)
    gw, gp, gn = jax.grad(lambda a, b, c: jnp.sum(
        quant.ttq_quantize(a, b, c, threshold_ratio=t, deadzone_grad=rho) * ct), argnums=(0, 1, 2))(w, wp, wn)
    np.testing.assert_allclose(gw, ref_gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp, ref_gp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gn, ref_gn, rtol=1e-5, atol=1e-6)
    # the scale gradients are the true derivatives of the forward (finite differences in W_n, W_p)
    f = lambda b, c: float(jnp.sum(quant.ttq_quantize(w, b, c, threshold_ratio=t) * ct))
    eps = 1e-2
    fd_n = (f(wp, wn + eps) - f(wp, wn - eps)) / (2 * eps)
    np.testing.assert_allclose(fd_n, float(jnp.sum(gn)), rtol=1e-3, atol=1e-3)
    fd_p = (f(wp + eps, wn) - f(wp - eps, wn)) / (2 * eps)
    np.testing.assert_allclose(fd_p, float(jnp.sum(gp)), rtol=1e-3, atol=1e-3)


def test_ttq_deadzone_reactivation_moves_zeroed_weights():
    w = jnp.array([[0.001, 1.0, -1.0]])
    ct = jnp.ones_like(w)
    g1 = jax.grad(lambda a: jnp.sum(quant.ttq_quantize(a, 1.0, 1.0, threshold_ratio=0.1) * ct))(w)
    g0 = jax.grad(lambda a: jnp.sum(quant.ttq_quantize(a, 1.0, 1.0, threshold_ratio=0.1, deadzone_grad=0.0) * ct))(w)
    assert float(g1[0, 0]) == 1.0 and float(g0[0, 0]) == 0.0


def test_ttq_linear_trains_scales_and_is_ternary():
    layer = quant.TTQLinear(8, 4, rngs=nnx.Rngs(0), threshold_ratio=0.2)
    wt = np.asarray(layer.quantized_kernel())
    vals = set(np.unique(wt).tolist())
    assert vals <= {0.0, float(layer.w_p[...]), -float(layer.w_n[...])} and len(vals) == 3
    x = _rand(1, (5, 8))
    np.testing.assert_allclose(layer(x), np.asarray(x) @ wt + np.asarray(layer.bias[...]), rtol=1e-5, atol=1e-6)
    g = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
    for name in ("kernel", "w_p", "w_n", "bias"):
        assert float(jnp.abs(g[name][...]).sum()) > 0, name
    pc = quant.TTQLinear(8, 4, rngs=nnx.Rngs(0), per_channel=True)
    assert pc.w_p[...].shape == (4,) and pc(x).shape == (5, 4)
    with pytest.raises(ValueError, match="threshold_ratio"):
        quant.TTQLinear(8, 4, rngs=nnx.Rngs(0), threshold_ratio=1.5)
    with pytest.raises(ValueError, match="w_p"):
        quant.ttq_quantize(jnp.zeros((3, 4)), jnp.ones((3,)), 1.0)


# --- regularizers ------------------------------------------------------------------------------------------


def test_regularizers_against_direct_formulas():
    a1 = jax.random.uniform(jax.random.key(0), (6,)) + 0.5
    l1 = quant.ChannelTernary(6)
    l1.amplitude[...] = a1
    l2 = Ternary(4, amplitude=1.5)
    model = nnx.Sequential(l1, nnx.Linear(6, 4, rngs=nnx.Rngs(0)), l2)
    a1n = np.asarray(a1, np.float64)
    np.testing.assert_allclose(quant.amplitude_penalty(model), np.mean(a1n ** 2) + 1.5 ** 2, rtol=1e-6)
    np.testing.assert_allclose(quant.amplitude_penalty(model, target=1.0), np.mean((a1n - 1) ** 2) + 0.25, rtol=1e-6)
    np.testing.assert_allclose(quant.channel_amplitude_variance(model), np.var(a1n), rtol=1e-5)
    s = {"a": jnp.array([[1.0, -1.0, 0.0]]), "b": jnp.array([[0.0, 2.0]])}
    np.testing.assert_allclose(quant.sparsity_penalty(s), 2 / 3 + 1.0, rtol=1e-6)
    g = nnx.grad(lambda m: quant.channel_amplitude_variance(m))(model)
    assert float(jnp.abs(g["layers"][0]["amplitude"][...]).sum()) > 0
    with pytest.raises(ValueError, match="spikes"):
        quant.sparsity_penalty([])


# --- folding ------------------------------------------------------------------------------------------


def test_fold_amplitude_linear_identical_outputs():
    C = 10
    neuron = quant.ChannelTernary(C, threshold=0.3)
    neuron.amplitude[...] = jax.random.uniform(jax.random.key(5), (C,), minval=0.2, maxval=3.0)
    nxt = nnx.Linear(C, 7, rngs=nnx.Rngs(3))
    x = _rand(6, (5, 4, C), 2.0)
    y = nxt(neuron(x))
    n2, l2 = quant.fold_amplitude(neuron, nxt)
    s = n2(x)
    assert set(np.unique(np.asarray(s)).tolist()) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(s) * np.asarray(neuron.amplitude[...]), np.asarray(neuron(x)))
    # same terms a_c W_co S_c; only FMA rounding may differ
    np.testing.assert_allclose(np.asarray(l2(s)), np.asarray(y), rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(nxt.kernel[...] - l2.kernel[...]).max()) > 0  # original untouched, copy folded
    assert np.all(np.asarray(neuron.amplitude[...]) != 1.0)


def test_fold_amplitude_conv_and_nn_ternary_and_sequential():
    C = 4
    neuron = Ternary(C, threshold=0.5)
    neuron.amplitude[...] = jnp.array([0.5, 1.5, 2.0, 0.25])
    conv = nnx.Conv(C, 3, (3, 3), rngs=nnx.Rngs(0))
    x = _rand(7, (3, 2, 5, 5, C), 2.0)  # [T, B, H, W, C]
    s = neuron(x)
    ref = conv(s.reshape(6, 5, 5, C))
    n2, c2 = quant.fold_amplitude(neuron, conv)
    out = c2(n2(x).reshape(6, 5, 5, C))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)

    seq = nnx.Sequential(nnx.Linear(3, C, rngs=nnx.Rngs(1)), quant.ChannelTernary(C),
                         nnx.Linear(C, 2, rngs=nnx.Rngs(2)))
    seq.layers[1].amplitude[...] = jnp.array([0.3, 0.7, 1.1, 2.2])
    xin = _rand(8, (4, 2, 3), 3.0)
    folded = quant.fold_sequential(seq)
    np.testing.assert_allclose(np.asarray(folded(xin)), np.asarray(seq(xin)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"layers\[1\]"):
        quant.fold_sequential(nnx.Sequential(nnx.Linear(3, C, rngs=nnx.Rngs(1)), quant.ChannelTernary(C)))
    with pytest.raises(TypeError, match="next_layer"):
        quant.fold_amplitude(quant.ChannelTernary(C), quant.TTQLinear(C, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="next_layer"):
        quant.fold_amplitude(quant.ChannelTernary(C), nnx.Linear(C + 1, 2, rngs=nnx.Rngs(0)))
