"""The one neuron layer: every kind built by name keeps its channel shape (and refuses another channel
count), constructors keep their attributes, parameter names and errors, and out-of-range values are
refused when concrete and caught under ``spikejax.checks.checked`` when traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax as sj
from spikejax import nn as snn
from spikejax.neurons import dynamics as D
from spikejax.nn.neurons import KINDS

T, B, C = 5, 2, 8


def _x(seed, shape=(T, B, C), scale=1.5, shift=0.5):
    return jax.random.normal(jax.random.key(seed), shape) * scale + shift


def test_make_neuron_lif_keeps_the_channel_shape_and_checks_it():
    layer = snn.make_neuron("lif", num_channels=C, tau=3.0)
    assert isinstance(layer, snn.LIF) and layer.channel_shape == (C,) and layer.num_channels == C
    x = _x(0)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(sj.lif(x, tau=3.0)[0]))
    with pytest.raises(ValueError, match=f"x: last axis has {C - 1} channels but this LIF layer was built with "
                                         f"num_channels={C}"):
        layer(_x(1, shape=(T, B, C - 1)))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_by_name_keeps_the_channel_shape(kind):
    layer = snn.make_neuron(kind, num_channels=C, learnable_surrogate=True)
    assert isinstance(layer, KINDS[kind]) and layer.channel_shape == (C,)
    assert layer.surrogate_alpha[...].shape == (C,)
    assert layer(_x(2)).shape == (T, B, C)
    with pytest.raises(ValueError, match="channels"):
        layer(_x(3, shape=(T, B, C + 1)))
    assert snn.make_neuron(kind).channel_shape == ()


def _param_names(layer) -> set[str]:
    return {str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(layer, nnx.Param))}


@pytest.mark.parametrize("make, attrs, params", [
    (lambda: snn.IF(threshold=0.8, reset="zero"),
     dict(threshold=0.8, reset="zero", detach_reset=False, reset_delay=False), set()),
    (lambda: snn.LIF(tau=3.0, detach_reset=True),
     dict(tau=3.0, beta=None, decay_input=None, threshold=1.0, reset="subtract", detach_reset=True), set()),
    (lambda: snn.LIF(beta=0.8, reset_delay=True), dict(tau=None, beta=0.8, reset_delay=True), set()),
    (lambda: snn.ALIF(beta=0.7, adapt_scale=0.5), dict(beta=0.7, adapt_scale=0.5, adapt_decay=0.9, reset="subtract"),
     set()),
    (lambda: snn.PLIF(C, init_tau=3.0), dict(learn_threshold=True, decay_input=True, reset_delay=False),
     {"decay_logit", "threshold"}),
    (lambda: snn.PLIF(C, learn_threshold=False, threshold=0.5), dict(threshold=0.5), {"decay_logit"}),
    (lambda: snn.Ternary(C, amplitude=0.7), dict(learn_amplitude=True, tau=None, beta=None), {"amplitude"}),
    (lambda: snn.Ternary(amplitude=0.7, learn_amplitude=False), dict(amplitude=0.7), set()),
    (lambda: snn.MultiLevel(levels=3, threshold=0.5), dict(levels=3, threshold=0.5, beta=None), set()),
    (lambda: snn.CubaLIF(alpha=0.7, reset_delay=True), dict(alpha=0.7, beta=0.75, reset="subtract", reset_delay=True,
                                                             detach_reset=False), set()),
    (lambda: snn.AdLIF(learn=("a", "b"), num_channels=C), dict(alpha=0.9, beta=0.95), {"a", "b"}),
    (lambda: snn.Alpha(), dict(alpha=0.9, beta=0.8, reset="zero"), set()),
    (lambda: snn.RefractoryLIF(refractory=2.0), dict(refractory=2.0, v_reset=0.0), set()),
    (lambda: snn.Izhikevich(tau=2.5, learn="tau"), dict(v_c=0.8, reset="zero"), {"tau"}),
    (lambda: snn.EIF(theta_rh=0.6), dict(theta_rh=0.6, v_reset=-0.1), set()),
    (lambda: snn.AdEx(tau_w=8.0), dict(tau_w=8.0, tau=10.0), set()),
    (lambda: snn.QIF(v_c=0.6), dict(v_c=0.6, a0=1.0), set()),
])
def test_constructors_keep_attributes_and_parameter_names(make, attrs, params):
    layer = make()
    for name, want in attrs.items():
        got = getattr(layer, name)
        if isinstance(got, nnx.Param):
            got = float(np.unique(np.asarray(got[...]))[0])
        assert got == want and type(got) is type(want), (name, got, want)
    assert _param_names(layer) == params
    assert "surrogate_alpha" in _param_names(type(layer)(learnable_surrogate=True))


@pytest.mark.parametrize("make, match", [
    (lambda: snn.LIF(tau=2.0, beta=0.5), "beta, tau: give one"),
    (lambda: snn.LIF(threshold=-1.0), "threshold: expected values > 0"),
    (lambda: snn.LIF(tau=0.5), "tau: expected values >= 1"),
    (lambda: snn.ALIF(adapt_decay=1.5), "adapt_decay: expected values <= 1"),
    (lambda: snn.Ternary(4, amplitude=np.ones(3)), "amplitude"),
    (lambda: snn.IF(reset="soft"), "reset: unknown reset 'soft'"),
    (lambda: snn.MultiLevel(levels=0), "levels: expected an integer >= 1"),
    (lambda: snn.PLIF(4, init_tau=1.0), "init_tau: expected values > 1"),
    (lambda: snn.PLIF(4, threshold=0.0), "threshold: expected values > 0"),
    (lambda: snn.LIF(surrogate_alpha=-2.0), "surrogate_alpha: expected values > 0"),
    (lambda: snn.LIF(num_channels=0), "num_channels"),
    (lambda: snn.CubaLIF(beta=1.5), "beta: expected values <= 1"),
    (lambda: snn.Alpha(alpha=0.5, beta=0.7), "alpha, beta: alpha_neuron needs alpha > beta"),
    (lambda: snn.AdLIF(learn=("gamma",)), "learn"),
    (lambda: snn.EIF(reset="soft"), "reset: unknown reset 'soft'"),
    (lambda: snn.CubaLI(alpha=2.0), "alpha: expected values <= 1"),
    (lambda: snn.CubaLI(backend="cuda"), "backend: unknown backend 'cuda'"),
])
def test_constructors_refuse_what_the_functional_neuron_refuses(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_traced_dynamics_parameter_is_caught_in_checked_mode():
    x = _x(4)
    fire = lambda beta: D.cuba_lif(x, beta=beta)[0].mean()  # noqa: E731
    assert np.isfinite(float(jax.jit(fire)(1.5)))  # documented: a traced value is not checked by default
    np.testing.assert_allclose(float(sj.checks.checked(fire)(0.5)), float(fire(0.5)))
    with pytest.raises(ValueError, match="beta: expected values <= 1.0, got max 1.5"):
        sj.checks.checked(fire)(1.5)
    with pytest.raises(ValueError, match="alpha, beta: alpha_neuron needs alpha > beta"):
        sj.checks.checked(lambda a: D.alpha_neuron(x, alpha=a, beta=0.8)[0])(0.7)
    with pytest.raises(ValueError, match="tau: expected values > 0"):  # concrete at trace time: refused while tracing
        jax.jit(lambda x: D.eif(x, tau=-1.0)[0])(x)


def test_traced_learned_layer_parameter_is_caught_in_checked_mode():
    x = _x(5)
    layer = snn.AdLIF(learn=("alpha",), num_channels=C)
    graphdef, state = nnx.split(layer)
    fire = sj.checks.checked(lambda st: nnx.merge(graphdef, st)(x))
    np.testing.assert_array_equal(np.asarray(fire(state)), np.asarray(layer(x)))
    layer.alpha[...] = jnp.full((C,), 1.25)
    with pytest.raises(ValueError, match="alpha: expected values <= 1.0, got max 1.25"):
        fire(nnx.state(layer))
    plif = snn.PLIF(C)
    plif.threshold[...] = -jnp.ones((C,))
    graphdef, state = nnx.split(plif)
    with pytest.raises(ValueError, match="threshold: expected values > 0.0"):
        sj.checks.checked(lambda st: nnx.merge(graphdef, st)(x))(state)


def test_traced_custom_neuron_parameter_is_checked_finite_in_checked_mode():
    def step(p, state, x_t):
        (v,) = state
        h = p["beta"] * v + x_t
        s = sj.surrogate.atan(alpha=2.0)(h - p["threshold"])
        return s, (h - s * p["threshold"],)

    neuron = sj.custom_neuron(step)
    x = _x(6)
    fire = sj.checks.checked(lambda thr: neuron(x, {"beta": 0.5, "threshold": thr}, backend="xla")[0])
    np.testing.assert_array_equal(np.asarray(fire(1.0)), np.asarray(neuron(x, {"beta": 0.5, "threshold": 1.0},
                                                                             backend="xla")[0]))
    with pytest.raises(ValueError, match=r"params\['threshold'\]: expected finite"):
        fire(jnp.nan)
