"""spikejax.nn neuron layers: equal to the functional core, streaming = one call, parameters learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax
from spikejax import nn as snn

T, B, C = 6, 3, 5


def _x(seed=0, shape=(T, B, C), scale=1.5):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale)


CASES = [
    (lambda: snn.IF(threshold=0.8, reset="zero"),
     lambda x, s: spikejax.if_(x, state=s, threshold=0.8, reset="zero")),
    (lambda: snn.LIF(tau=3.0, threshold=0.7, detach_reset=True),
     lambda x, s: spikejax.lif(x, state=s, tau=3.0, threshold=0.7, detach_reset=True)),
    (lambda: snn.LIF(beta=0.8, reset_delay=True),
     lambda x, s: spikejax.lif(x, state=s, beta=0.8, reset_delay=True)),
    (lambda: snn.ALIF(tau=2.5, adapt_scale=0.5, adapt_decay=0.8),
     lambda x, s: spikejax.alif(x, state=s, tau=2.5, adapt_scale=0.5, adapt_decay=0.8)),
    (lambda: snn.PLIF(C, init_tau=3.0, threshold=0.9),
     lambda x, s: spikejax.plif(x, state=s, decay_logit=-np.log(2.0), threshold=0.9)),
    (lambda: snn.Ternary(C, tau=2.0, amplitude=0.7),
     lambda x, s: spikejax.ternary(x, state=s, tau=2.0, amplitude=0.7)),
    (lambda: snn.MultiLevel(levels=3, threshold=0.5),
     lambda x, s: spikejax.multilevel(x, state=s, levels=3, threshold=0.5)),
]


@pytest.mark.parametrize("make, ref", CASES)
def test_layer_equals_functional_core(make, ref):
    x = _x(1)
    layer = make()
    s_ref, st_ref = ref(x, None)
    s, st = layer(x, return_state=True)
    np.testing.assert_allclose(np.asarray(s), np.asarray(s_ref), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(st.v), np.asarray(st_ref.v), rtol=1e-6, atol=1e-6)
    assert 0.0 < float(jnp.abs(s).mean()) < 1.0 * max(1, getattr(layer, "levels", 1))
    # with an explicit initial state
    s0 = jax.tree.map(lambda a: a + 0.3, st_ref)
    np.testing.assert_allclose(np.asarray(layer(x, state=s0)), np.asarray(ref(x, s0)[0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make, ref", CASES)
def test_streaming_chunks_equal_one_call(make, ref):
    x = _x(2, shape=(9, B, C))
    layer = make()
    whole = layer(x)
    stream = make()
    stream.stateful = True
    parts = [stream(x[:2]), stream(x[2:3]), stream(x[3:])]
    np.testing.assert_allclose(np.asarray(jnp.concatenate(parts)), np.asarray(whole), rtol=1e-6, atol=1e-6)
    stream.reset_state()
    np.testing.assert_allclose(np.asarray(stream(x)), np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_streaming_under_jit_and_reset_states():
    model = snn.LIF(tau=2.0, stateful=True)
    x = _x(3, shape=(8, B, C))
    step = nnx.jit(lambda m, x: m(x))
    out = jnp.concatenate([step(model, x[:4]), step(model, x[4:])])
    np.testing.assert_allclose(np.asarray(out), np.asarray(spikejax.lif(x, tau=2.0)[0]))
    snn.reset_states(model)
    assert model.v.get_value() is None
    with pytest.raises(ValueError, match="state"):
        model(x, state=spikejax.NeuronState(jnp.zeros((B, C))))
    model(x[:2])
    with pytest.raises(ValueError, match="x: neuron shape"):
        model(_x(4, shape=(2, B + 1, C)))


def test_plif_ternary_params_and_learnable_surrogate_get_gradients():
    rng = np.random.default_rng(5)
    x = _x(6)
    plif = snn.PLIF(C, init_tau=2.0, learnable_surrogate=True, surrogate="sigmoid", surrogate_alpha=3.0)
    plif.decay_logit[...] = jnp.asarray(rng.normal(size=C).astype(np.float32))
    plif.threshold[...] = jnp.asarray(rng.uniform(0.5, 1.5, size=C).astype(np.float32))
    assert plif.decay_logit[...].shape == (C,) and plif.threshold[...].shape == (C,)
    assert plif.surrogate_alpha[...].shape == (C,)
    ref = spikejax.plif(x, decay_logit=plif.decay_logit[...], threshold=plif.threshold[...],
                        surrogate=spikejax.surrogate.learnable("sigmoid", jnp.full((C,), 3.0)))[0]
    np.testing.assert_allclose(np.asarray(plif(x)), np.asarray(ref))

    def loss(m):
        return jnp.sum(m(x) * jnp.arange(T * B * C, dtype=jnp.float32).reshape(T, B, C) / 100)

    grads = nnx.grad(loss)(plif)
    for name in ("decay_logit", "threshold", "surrogate_alpha"):
        g = np.asarray(getattr(grads, name)[...]) if hasattr(grads, name) else np.asarray(grads[name][...])
        assert g.shape == (C,) and np.all(np.isfinite(g)) and np.any(g != 0), name
    # the functional core's gradient for the same loss
    g_ref = jax.grad(lambda w: jnp.sum(spikejax.plif(x, decay_logit=w, threshold=plif.threshold[...],
                     surrogate=spikejax.surrogate.learnable("sigmoid", jnp.full((C,), 3.0)))[0]
                     * jnp.arange(T * B * C, dtype=jnp.float32).reshape(T, B, C) / 100))(plif.decay_logit[...])
    np.testing.assert_allclose(np.asarray(grads["decay_logit"][...]), np.asarray(g_ref), rtol=1e-5, atol=1e-6)

    tern = snn.Ternary(C, amplitude=0.5)
    gt = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(tern)
    assert np.all(np.asarray(gt["amplitude"][...]) != 0)


def test_make_neuron_and_errors_name_the_argument():
    assert isinstance(snn.make_neuron("plif", num_channels=4), snn.PLIF)
    assert isinstance(snn.make_neuron("lif", num_channels=4, tau=3.0), snn.LIF)
    with pytest.raises(ValueError, match="neuron"):
        snn.make_neuron("hh")
    with pytest.raises(ValueError, match="backend"):
        snn.LIF(backend="cuda")
    with pytest.raises(ValueError, match="surrogate"):
        snn.LIF(surrogate="nope")
    with pytest.raises(ValueError, match="num_channels=4"):
        snn.PLIF(4)(_x(0, shape=(T, B, 3)))
    with pytest.raises(ValueError, match="x: expected rank >= 2"):
        snn.LIF()(jnp.ones(3))
    with pytest.raises(ValueError, match="init_tau"):
        snn.PLIF(4, init_tau=1.0)
    with pytest.raises(ValueError, match="levels"):
        snn.MultiLevel(levels=0)
