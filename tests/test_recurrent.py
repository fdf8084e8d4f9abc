"""RecurrentSpiking (x_t + s_{t-1} W_rec + b) against snnTorch RLeaky / RSynaptic with the same
weights on fresh random inputs (spikes equal, membranes 1e-5, gradients of x and W_rec equal to
torch autograd), any step function, streaming, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax.nn as snn
from spikejax.neurons import dynamics as D

T, B, F = 16, 3, 8


def _x(seed, shape=(T, B, F), scale=1.2, shift=0.3):
    return np.array(jax.random.normal(jax.random.key(seed), shape) * scale + shift, np.float32)


def _copy_weights(layer, linear):
    import torch

    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.asarray(layer.recurrent.kernel[...]).T.copy()))
        linear.bias.copy_(torch.from_numpy(np.asarray(layer.recurrent.bias[...]).copy()))


@pytest.mark.parametrize("kind", ["rleaky", "rsynaptic"])
def test_recurrent_equals_snntorch(kind):
    torch = pytest.importorskip("torch")
    snntorch = pytest.importorskip("snntorch")
    seed = 1 if kind == "rleaky" else 2
    x = _x(seed)
    alpha = 0.0 if kind == "rleaky" else 0.75
    beta, thr = 0.8, 1.0
    layer = snn.RecurrentSpiking(snn.CubaLIF(alpha=alpha, beta=beta, threshold=thr, reset_delay=True,
                                             detach_reset=True), F, use_bias=True, rngs=nnx.Rngs(seed))
    layer.recurrent.kernel.set_value(layer.recurrent.kernel[...] * 2.0)  # strong recurrence, tested for effect
    if kind == "rleaky":
        ref = snntorch.RLeaky(beta=beta, threshold=thr, linear_features=F)
    else:
        ref = snntorch.RSynaptic(alpha=alpha, beta=beta, threshold=thr, linear_features=F)
    _copy_weights(layer, ref.recurrent)
    xs = torch.tensor(x, requires_grad=True)
    spk_rec, mem_rec = [], []
    for t in range(T):
        out = ref(xs[t])
        spk_rec.append(out[0])
        mem_rec.append(out[-1])
    spk, mem = torch.stack(spk_rec), torch.stack(mem_rec)
    w = _x(seed + 100, scale=1.0, shift=0.0)
    (spk * torch.from_numpy(w)).sum().backward()

    s, ((_, v_T), s_T) = layer(jnp.asarray(x), return_state=True)
    np.testing.assert_array_equal(np.asarray(s), spk.detach().numpy())
    assert 0.05 < float(s.mean()) < 0.95
    np.testing.assert_allclose(np.asarray(v_T), mem[-1].detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(s_T), np.asarray(s[-1]))
    # the recurrence matters: without it the spikes differ
    plain = snn.CubaLIF(alpha=alpha, beta=beta, threshold=thr, reset_delay=True, detach_reset=True)
    assert np.any(np.asarray(plain(jnp.asarray(x))) != np.asarray(s))

    def loss(model, x):
        return jnp.sum(model(x) * w)

    gx = jax.grad(lambda x: loss(layer, x))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(gx), xs.grad.numpy(), atol=1e-4, rtol=1e-4)
    g_model = nnx.grad(loss)(layer, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g_model.recurrent.kernel[...]).T, ref.recurrent.weight.grad.numpy(),
                               atol=1e-3, rtol=1e-4)


def test_any_step_function_and_streaming():
    x = jnp.asarray(_x(3, scale=2.0, shift=0.5))
    step, params = D.dynamics_step("izhikevich", tau=2.5)
    by_step = snn.RecurrentSpiking(step, F, params=params, num_states=2, rngs=nnx.Rngs(3))
    by_layer = snn.RecurrentSpiking(snn.Izhikevich(tau=2.5), F, rngs=nnx.Rngs(3))
    s = by_step(x)
    np.testing.assert_array_equal(np.asarray(s), np.asarray(by_layer(x)))
    # a hand-written NumPy loop of the same recurrence and Izhikevich step
    W = np.asarray(by_step.recurrent.kernel[...], np.float64)
    p = D.DYNAMICS["izhikevich"][1] | {"tau": 2.5}
    v, wv, sp = (np.zeros((B, F)) for _ in range(3))
    out = []
    for t in range(T):
        cur = np.asarray(x[t], np.float64) + sp @ W
        h = v + (cur + p["a0"] * (v - p["v_rest"]) * (v - p["v_c"]) - wv) / p["tau"]
        sp = (h >= p["threshold"]).astype(np.float64)
        wv = wv + (p["a"] * (h - p["v_rest"]) - wv) / p["tau_w"] + p["b"] * sp
        v = sp * p["v_reset"] + (1 - sp) * h
        out.append(sp)
    np.testing.assert_array_equal(np.asarray(s), np.stack(out))
    stream = snn.RecurrentSpiking(snn.Izhikevich(tau=2.5), F, stateful=True, rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(np.asarray(jnp.concatenate([stream(x[:7]), stream(x[7:])])), np.asarray(s))
    snn.reset_states(stream)
    assert stream.carried.get_value() is None


def test_jit_bf16_and_errors():
    x = jnp.asarray(_x(4)).astype(jnp.bfloat16)
    layer = snn.RecurrentSpiking(snn.AdLIF(), F, rngs=nnx.Rngs(0))
    s = nnx.jit(lambda m, x: m(x))(layer, x)
    assert s.dtype == jnp.bfloat16 and s.shape == x.shape
    with pytest.raises(ValueError, match="features"):
        layer(jnp.ones((4, 2, F + 1)))
    with pytest.raises(ValueError, match="params, num_states"):
        snn.RecurrentSpiking(D.DYNAMICS["qif"][0], F)
    with pytest.raises(TypeError, match="neuron"):
        snn.RecurrentSpiking("lif", F)
    with pytest.raises(ValueError, match="state"):
        layer(jnp.ones((4, 2, F)), state=((jnp.zeros((2, F)),), jnp.zeros((2, F))))
