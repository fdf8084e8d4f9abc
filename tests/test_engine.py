"""The generic engine (``pallas_kernels.engine``) on user-defined step functions, against the
``lax.scan`` of the same step (``backend="xla"``): values, the state trajectories and every gradient
(input, initial state, scalar and per-channel parameters, a learnable surrogate's α) on fresh random
inputs; jit / vmap / lax.scan composition; and the errors a step the kernels cannot run gets.
On CPU the kernels run in the Pallas interpreter; ``-m gpu`` runs them compiled."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spikejax as sj
from spikejax import surrogate as sg

BACKENDS = ["pallas_interpret", pytest.param("pallas", marks=pytest.mark.gpu),
            pytest.param("pallas_mosaic", marks=pytest.mark.gpu)]

_seed = [0]


def _key():
    _seed[0] += 1
    return jax.random.key(7000 + _seed[0])


def cuba(params, state, x_t):
    i, v = state
    i = params["alpha"] * i + x_t
    h = params["beta"] * v + i
    s = params["surrogate"](h - params["threshold"])
    return s, (i, h - s * params["threshold"])


def quadratic_if(params, state, x_t):
    """A QIF-like step with a custom surrogate, a power and a hard reset."""
    (v,) = state
    h = v + params["dt"] * (v * v + x_t)
    s = sg.custom(lambda u: 1.0 / (1.0 + 4.0 * jnp.abs(u)) ** 2)(h - params["threshold"])
    return s, (h * (1.0 - jax.lax.stop_gradient(s)),)


def _cases():
    C = 7
    u = lambda lo, hi, shape=(C,): lo + (hi - lo) * jax.random.uniform(_key(), shape)  # noqa: E731
    return {
        "cuba_scalar": (cuba, {"alpha": 0.8, "beta": 0.9, "threshold": 1.0, "surrogate": sg.atan()}),
        "cuba_per_channel_learnable": (cuba, {"alpha": u(0.3, 0.9), "beta": u(0.5, 0.95), "threshold": u(0.6, 1.4),
                                              "surrogate": sg.learnable("sigmoid", alpha_init=u(2.0, 5.0))}),
        "qif_custom_surrogate": (quadratic_if, {"dt": 0.3, "threshold": u(0.8, 1.2)}),
    }


def _grads(neuron, backend, x, params, state0):
    def loss(x, params, state0):
        s, final, states = neuron(x, params, state0, backend=backend, return_states=True)
        w = jnp.cos(3 * x).astype(s.dtype)
        return ((s * w).sum().astype(jnp.float32) + sum((f**2).sum() for f in final)
                + sum((q * jnp.sin(q)).sum() for q in states))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, params, state0)


def _assert_close(a, b, tol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * max(1.0, float(np.abs(v).max())))


@pytest.mark.parametrize("case, shape", [("cuba_scalar", (9, 3, 7)), ("cuba_per_channel_learnable", (13, 2, 2, 7)),
                                         ("cuba_per_channel_learnable", (1, 7)), ("qif_custom_surrogate", (11, 3, 7))])
@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_step_matches_xla(case, backend, shape):
    step, params = _cases()[case]
    neuron = sj.custom_neuron(step)
    x = jax.random.normal(_key(), shape) * 1.2 + 0.4
    n = neuron.num_states or (2 if step is cuba else 1)
    state0 = tuple(jax.random.normal(_key(), shape[1:]) * 0.3 for _ in range(n))
    ref = neuron(x, params, state0, backend="xla", return_states=True)
    got = neuron(x, params, state0, backend=backend, return_states=True)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]))
    _assert_close(got[1:], ref[1:], 1e-5)
    _assert_close(_grads(neuron, backend, x, params, state0), _grads(neuron, "xla", x, params, state0), 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_input_f32_state(backend):
    neuron = sj.custom_neuron(cuba)
    params = _cases()["cuba_scalar"][1]
    x = (jax.random.normal(_key(), (8, 5, 33)) + 0.5).astype(jnp.bfloat16)
    ref, got = (neuron(x, params, backend=b) for b in ("xla", backend))
    assert got[0].dtype == jnp.bfloat16 and got[1][0].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got[0], np.float32), np.asarray(ref[0], np.float32))
    g = lambda b: jax.grad(lambda x: neuron(x, params, backend=b)[0].astype(jnp.float32).sum())(x)  # noqa: E731
    np.testing.assert_allclose(np.asarray(g(backend), np.float32), np.asarray(g("xla"), np.float32), atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_and_lax_scan_compose(backend):
    neuron = sj.custom_neuron(cuba)
    _, params = _cases()["cuba_per_channel_learnable"]
    xs = jax.random.normal(_key(), (3, 6, 4, 7)) + 0.3

    def f(b):
        def run(x):
            return neuron(x, params, backend=b)[0].sum()

        def layer(carry, x):  # the neuron inside a lax.scan over layers
            s, st = neuron(x + carry, params, backend=b)
            return carry + st[1].mean(), s.sum()

        return jax.vmap(jax.grad(run))(xs), jax.grad(lambda x: jax.lax.scan(layer, 0.0, x)[1].sum())(xs)

    _assert_close(f(backend), f("xla"), 1e-4)


def test_builtin_neurons_through_custom_neuron_match():
    """The built-in LIF step, run as a custom neuron, is sj.lif exactly (one definition)."""
    from spikejax.neurons.steps import ScanParams, ScanSpec, builtin_step

    step = builtin_step(ScanSpec(decay_input=True))
    neuron = sj.custom_neuron(step, num_states=1)
    x = jax.random.normal(_key(), (10, 2, 5))
    p = ScanParams(0.5, 1.0, None, None, 2.0)
    s, (v,) = neuron(x, p, backend="pallas_interpret")
    s_ref, st = sj.lif(x, tau=2.0)
    np.testing.assert_array_equal(np.asarray(s), np.asarray(s_ref))
    np.testing.assert_allclose(np.asarray(v), np.asarray(st.v), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_dynamics_neuron_matches_xla(backend):
    """Every neuron model registered in spikejax.neurons.dynamics, through the engine."""
    dynamics = pytest.importorskip("spikejax.neurons.dynamics")
    registry = getattr(dynamics, "DYNAMICS", {})
    if not registry:
        pytest.skip("no dynamics registered")
    failures = {}
    for name, (step, params, n) in sorted(registry.items()):
        neuron = sj.custom_neuron(step, num_states=n)
        x = jax.random.normal(_key(), (6, 5)) * 2.0 + 1.0  # small: one interpreted kernel per neuron
        try:  # every neuron is checked; the failures are reported together, by name
            ref = neuron(x, params, backend="xla", return_states=True)
            got = neuron(x, params, backend=backend, return_states=True)
            if np.isin(np.asarray(ref[0]), (0.0, 1.0)).all():  # spikes: equal
                np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]), err_msg=name)
            else:  # a non-spiking model (cuba_li) outputs its membrane: float rounding (FMA contraction)
                _assert_close(got[0], ref[0], 1e-5)
            _assert_close(got[1:], ref[1:], 1e-5)
            gx = lambda b: jax.grad(lambda x: (neuron(x, params, backend=b)[0] * jnp.cos(x)).sum())(x)  # noqa: E731,B023
            _assert_close(gx(backend), gx("xla"), 1e-4)
        except Exception as err:  # noqa: BLE001 - collected, then failed below
            failures[name] = f"{type(err).__name__}: {str(err)[:300]}"
    assert not failures, failures


# --- errors -------------------------------------------------------------------------------------


def _bad_structure(params, state, x_t):
    return x_t, state[0]  # the new state is not a tuple


def _reduces(params, state, x_t):
    (v,) = state
    h = v + x_t
    return sg.atan()(h - 1.0), (h - jnp.mean(h),)  # not elementwise: the mean couples neurons


_CAPTURED = jnp.arange(5.0)


def _captures(params, state, x_t):
    (v,) = state
    h = v + x_t * _CAPTURED
    return sg.atan()(h - 1.0), (h,)


def _erf_step(params, state, x_t):
    (v,) = state
    h = v + jax.lax.erf(x_t)  # erf has no Pallas Triton lowering
    return sg.atan()(h - 1.0), (h,)


@pytest.mark.parametrize("step, match", [
    (_bad_structure, "_bad_structure.*new_state a tuple"),
    (_captures, "_captures.*closes over an array of shape \\(5,\\)"),
    (_erf_step, "_erf_step.*erf.*backend='xla'"),
])
def test_step_errors_name_the_step(step, match):
    x = jnp.ones((4, 5))
    with pytest.raises(ValueError, match=match):
        sj.custom_neuron(step, num_states=1)(x, {}, backend="pallas_interpret")


def test_non_elementwise_step_is_refused_by_the_kernel_but_runs_on_xla():
    x = jax.random.normal(_key(), (4, 2, 5))
    neuron = sj.custom_neuron(_reduces, num_states=1)
    neuron(x, backend="xla")  # the reference runs any step
    with pytest.raises(ValueError, match="_reduces.*reduce_sum.*not elementwise.*backend='xla'"):
        neuron(x, backend="pallas_interpret")


def test_errors_for_arguments():
    neuron = sj.custom_neuron(cuba)
    params = _cases()["cuba_scalar"][1]
    with pytest.raises(ValueError, match="x: expected rank >= 2"):
        neuron(jnp.ones(5), params)
    with pytest.raises(ValueError, match=r"params\['beta'\]: shape \(3,\) is not broadcastable"):
        neuron(jnp.ones((4, 5)), {**params, "beta": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"params\['threshold'\]: expected finite"):
        neuron(jnp.ones((4, 5)), {**params, "threshold": float("nan")})
    with pytest.raises(ValueError, match="state: .* has 2 state variables, got 1"):
        neuron(jnp.ones((4, 5)), params, (jnp.zeros(5),))
    with pytest.raises(ValueError, match="backend='triton'.*pallas"):
        neuron(jnp.ones((4, 5)), params, backend="triton")
    with pytest.raises(ValueError, match="backend: unknown backend 'cuda'"):
        neuron(jnp.ones((4, 5)), params, backend="cuda")


def test_custom_surrogate_backward_is_the_given_derivative():
    d = lambda u: jnp.exp(-u * u)  # noqa: E731
    spike = sg.custom(d, name="gauss")
    u = jax.random.normal(_key(), (50,))
    np.testing.assert_array_equal(np.asarray(spike(u)), np.asarray(u >= 0, np.float32))
    w = jax.random.normal(_key(), (50,))
    np.testing.assert_allclose(np.asarray(jax.grad(lambda u: (spike(u) * w).sum())(u)), np.asarray(d(u) * w),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="derivative: expected an elementwise"):
        sg.custom(lambda u: u.sum())
    # a built-in neuron takes it too, on the engine
    x = jax.random.normal(_key(), (6, 9)) + 0.5
    g = lambda b: jax.grad(lambda x: sj.lif(x, beta=0.8, surrogate=spike, backend=b)[0].sum())(x)  # noqa: E731
    _assert_close(g("pallas_interpret"), g("xla"), 1e-5)


def test_parameters_known_at_trace_time_are_constants_of_the_step():
    """A Python-number parameter cannot be differentiated, so it becomes a constant of the step (no kernel
    input, no gradient computed); a traced one stays an input and keeps its gradient."""
    from spikejax.backends import StepWithConstants, with_constants
    from spikejax.neurons.custom import flat_param

    params = {"alpha": 0.8, "beta": 0.9, "threshold": 1.0, "surrogate": sg.atan(alpha=3.0)}
    known = jax.tree.map(lambda v: flat_param("p", v, (5,)), params)
    assert all(isinstance(v, np.float32) for v in jax.tree.leaves(known))
    bound, treedef, inputs = with_constants(cuba, known)
    assert isinstance(bound, StepWithConstants) and inputs == () and bound.__name__ == "cuba"
    assert with_constants(cuba, dict(known))[0] == bound  # equal constants: one compiled kernel
    x, st = jax.random.normal(_key(), (5,)), (jax.random.normal(_key(), (5,)), jax.random.normal(_key(), (5,)))
    np.testing.assert_array_equal(np.asarray(bound((), st, x)[1][1]), np.asarray(cuba(known, st, x)[1][1]))

    traced = jax.jit(lambda a: with_constants(cuba, {**known, "alpha": flat_param("alpha", a, (5,))})[2])(0.8)
    assert len(traced) == 1  # only the traced alpha is an input
    neuron = sj.custom_neuron(cuba)
    xs = jax.random.normal(_key(), (7, 5)) + 0.5
    g = lambda b: jax.grad(lambda a: neuron(xs, {**known, "alpha": a}, backend=b)[0].sum())(0.8)  # noqa: E731
    np.testing.assert_allclose(float(g("pallas_interpret")), float(g("xla")), rtol=1e-5)
