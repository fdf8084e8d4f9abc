"""NNX layers of the further neuron models: equal to their functional wrappers, streaming in chunks
equals one call, learnable parameters get the functional gradient, snnTorch-style construction
matches snnTorch, backend pass-through, clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax as sj
import spikejax.nn as snn
from spikejax.neurons import dynamics as D

T, B, C = 12, 2, 5

LAYERS = {
    "cuba_lif": (snn.CubaLIF, dict(alpha=0.7, beta=0.85, threshold=0.9, reset="zero")),
    "alpha_neuron": (snn.Alpha, dict(alpha=0.9, beta=0.7, threshold=0.8)),
    "adlif": (snn.AdLIF, dict(alpha=0.8, beta=0.9, a=0.3, b=0.5)),
    "refractory_lif": (snn.RefractoryLIF, dict(beta=0.8, refractory=2.0)),
    "izhikevich": (snn.Izhikevich, dict(tau=2.5, a=0.2, b=0.3)),
    "eif": (snn.EIF, dict(tau=3.0, theta_rh=0.6)),
    "adex": (snn.AdEx, dict(tau=4.0, tau_w=8.0, a=0.5, b=0.25, alpha=0.5)),
    "qif": (snn.QIF, dict(tau=2.5, v_c=0.6)),
}


def _x(seed, shape=(T, B, C), scale=2.0, shift=1.0):
    return jax.random.normal(jax.random.key(seed), shape) * scale + shift


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_equals_functional_and_streams_in_chunks(name):
    cls, kw = LAYERS[name]
    x = _x(sorted(LAYERS).index(name))
    s_fn, final_fn = getattr(D, name)(x, **kw)
    layer = cls(**kw)
    s, final = layer(x, return_state=True)
    np.testing.assert_array_equal(np.asarray(s), np.asarray(s_fn))
    assert 0.0 < float(s.mean()) < 1.0, "vacuous comparison: no or only spikes"
    for a, b in zip(final, final_fn, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    stream = cls(**kw, stateful=True)
    chunks = [stream(x[:5]), stream(x[5:])]
    np.testing.assert_array_equal(np.asarray(jnp.concatenate(chunks)), np.asarray(s_fn))
    for a, b in zip(stream.carried.get_value(), final_fn, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    snn.reset_states(stream)
    assert stream.carried.get_value() is None
    np.testing.assert_array_equal(np.asarray(stream(x)), np.asarray(s_fn))


def test_learnable_per_channel_parameters_get_the_functional_gradient():
    x = _x(11)
    w = _x(12, scale=1.0, shift=0.0)
    layer = snn.AdLIF(alpha=0.8, beta=0.9, a=0.3, b=0.5, learn=("alpha", "a", "b"), num_channels=C,
                      learnable_surrogate=True)
    assert layer.alpha[...].shape == (C,) and isinstance(layer.beta, float)

    def loss(layer):
        return jnp.sum(layer(x) * w)

    grads = nnx.grad(loss)(layer)

    def ref(alpha, a, b, sa):
        s, _ = D.adlif(x, alpha=alpha, beta=0.9, a=a, b=b, surrogate=sj.surrogate.learnable("atan", sa))
        return jnp.sum(s * w)

    full = jnp.full((C,), 1.0, jnp.float32)
    g_ref = jax.grad(ref, argnums=(0, 1, 2, 3))(0.8 * full, 0.3 * full, 0.5 * full, 2.0 * full)
    for got, want in zip([grads.alpha[...], grads.a[...], grads.b[...], grads.surrogate_alpha[...]], g_ref,
                         strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert np.any(np.asarray(grads.alpha[...]) != 0)


def test_cuba_lif_layer_built_like_snntorch_synaptic_matches_it():
    torch = pytest.importorskip("torch")
    snntorch = pytest.importorskip("snntorch")
    x = np.array(_x(13, scale=1.5, shift=0.3), np.float32)
    ref = snntorch.Synaptic(alpha=0.8, beta=0.7, threshold=1.0)  # reset_delay=True, subtract
    spikes = []
    for t in range(T):
        spk, _, _ = ref(torch.from_numpy(x[t]))
        spikes.append(spk.numpy())
    layer = snn.CubaLIF(alpha=0.8, beta=0.7, threshold=1.0, reset_delay=True, detach_reset=True)
    np.testing.assert_array_equal(np.asarray(layer(jnp.asarray(x))), np.stack(spikes))


def test_jit_and_pallas_interpret_backend_pass_through():
    x = _x(14)
    layer = snn.Izhikevich(tau=2.5, backend="pallas_interpret")
    ref = snn.Izhikevich(tau=2.5)
    got = nnx.jit(lambda m, x: m(x))(layer, x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref(x)))


def test_cuba_li_readout():
    x = _x(15)
    li = snn.CubaLI(alpha=0.6, beta=np.linspace(0.5, 0.9, C, dtype=np.float32))
    v = np.asarray(li(x))
    i_ref, v_ref, out = np.zeros((B, C)), np.zeros((B, C)), []
    beta = np.linspace(0.5, 0.9, C)
    for t in range(T):
        i_ref = 0.6 * i_ref + np.asarray(x[t], np.float64)
        v_ref = beta * v_ref + i_ref
        out.append(v_ref)
    np.testing.assert_allclose(v, np.stack(out), rtol=1e-5, atol=1e-5)


def test_layer_errors_name_the_argument():
    with pytest.raises(ValueError, match="learn"):
        snn.CubaLIF(learn=("gamma",))
    with pytest.raises(ValueError, match="reset"):
        snn.EIF(reset="soft")
    with pytest.raises(ValueError, match="backend"):
        snn.QIF(backend="cuda")
    with pytest.raises(ValueError, match="channels"):
        snn.AdLIF(num_channels=3, learn=("a",))(jnp.ones((4, 2, 5)))
    layer = snn.CubaLIF(stateful=True)
    layer(jnp.ones((3, 2, 4)))
    with pytest.raises(ValueError, match="reset_state"):
        layer(jnp.ones((3, 2, 5)))


@pytest.mark.parametrize("cls,kw,learn", [(snn.AdLIF, dict(alpha=0.8, beta=0.9, a=0.3, b=0.5), ("alpha", "a", "b")),
                                          (snn.Alpha, dict(alpha=0.9, beta=0.7, threshold=0.8), ("alpha", "beta"))])
def test_per_channel_parameter_gradients_through_the_engine_equal_xla(cls, kw, learn):
    x = _x(16, shape=(6, 2, C))
    w = _x(17, shape=(6, 2, C), scale=1.0, shift=0.0)
    grads = {}
    for backend in ("xla", "pallas_interpret"):
        layer = cls(**kw, learn=learn, num_channels=C, learnable_surrogate=True, backend=backend)
        grads[backend] = nnx.grad(lambda m: jnp.sum(m(x) * w))(layer)
    for name in (*learn, "surrogate_alpha"):
        want = np.asarray(getattr(grads["xla"], name)[...])
        assert np.any(want != 0), name
        np.testing.assert_allclose(np.asarray(getattr(grads["pallas_interpret"], name)[...]), want, rtol=1e-4,
                                   atol=1e-5, err_msg=name)
