"""Surrogate gradients: Heaviside forward, documented derivative backward, learnable α."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikejax import surrogate as sg

SHAPES = sorted(sg.SURROGATES)

# Independent float64 numpy versions of the relaxations σ_α(x) in the module's table.
NUMPY_RELAXATIONS = {
    "atan": lambda x, a: np.arctan(np.pi / 2 * a * x) / np.pi + 0.5,
    "sigmoid": lambda x, a: 1 / (1 + np.exp(-a * x)),
    "fast_sigmoid": lambda x, a: 0.5 + x / (1 + a * np.abs(x)),
    "triangular": lambda x, a: np.where(
        a * np.abs(x) < 1, 0.5 + np.sign(x) * (a * np.abs(x) - 0.5 * (a * x) ** 2), (x >= 0) * 1.0
    ),
    "rectangular": lambda x, a: np.clip(a * x + 0.5, 0, 1),
}


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.key(7), (257,)) * 1.5


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_is_heaviside(shape, xs):
    s = sg.get(shape)(xs)
    np.testing.assert_array_equal(np.asarray(s), (np.asarray(xs) >= 0).astype(np.float32))
    assert sg.get(shape)(jnp.zeros(())) == 1.0  # Θ(0) = 1 (SpikingJelly's convention)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_is_derivative_of_relaxation(shape, xs):
    """The custom_vjp's d/dx equals autodiff of the smooth relaxation σ_α (an independent path)."""
    surr = sg.get(shape)
    g = jax.grad(lambda x: (surr(x) * jnp.arange(x.size)).sum())(xs)
    ref = jax.vmap(jax.grad(surr.relaxation))(xs) * jnp.arange(xs.size)
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_alpha_gradient_matches_finite_difference_of_relaxation(shape, xs):
    surr = sg.learnable(shape)
    w = jax.random.uniform(jax.random.key(1), xs.shape)
    ga = jax.grad(lambda s: (s(xs) * w).sum())(surr).alpha
    eps = 1e-4
    a0 = float(surr.alpha)
    x64, w64 = np.asarray(xs, np.float64), np.asarray(w, np.float64)
    f = lambda a: float(np.sum(NUMPY_RELAXATIONS[shape](x64, a) * w64))
    fd = (f(a0 + eps) - f(a0 - eps)) / (2 * eps)  # central difference in float64
    np.testing.assert_allclose(float(ga), fd, rtol=2e-3, atol=1e-4)


def test_per_channel_alpha_gradient_shape():
    surr = sg.learnable("sigmoid", alpha_init=jnp.full((4,), 3.0))
    x = jax.random.normal(jax.random.key(0), (5, 4))
    ga = jax.grad(lambda s: s(x).sum())(surr).alpha
    assert ga.shape == (4,)
    ref = jnp.sum(x * jax.nn.sigmoid(3 * x) * (1 - jax.nn.sigmoid(3 * x)), axis=0)
    np.testing.assert_allclose(ga, ref, rtol=1e-5)


def test_known_peak_values():
    x0 = jnp.zeros(())
    assert float(jax.grad(sg.atan(2.0))(x0)) == pytest.approx(1.0)  # α/2
    assert float(jax.grad(sg.sigmoid(4.0))(x0)) == pytest.approx(1.0)  # α/4
    assert float(jax.grad(sg.fast_sigmoid(25.0))(x0)) == pytest.approx(1.0)
    assert float(jax.grad(sg.triangular(1.0))(x0)) == pytest.approx(1.0)
    assert float(jax.grad(sg.rectangular(1.0))(jnp.array(0.49))) == pytest.approx(1.0)
    assert float(jax.grad(sg.rectangular(1.0))(jnp.array(0.51))) == 0.0


def test_aliases_and_errors():
    assert sg.get("superspike").shape == "fast_sigmoid"
    assert sg.get("ste").shape == "rectangular"
    with pytest.raises(ValueError, match="surrogate: unknown shape 'gauss'"):
        sg.get("gauss")
    with pytest.raises(TypeError, match="surrogate"):
        sg.get(3.0)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name,alpha", [("atan", 2.0), ("sigmoid", 4.0), ("atan", 3.5)])
def test_matches_spikingjelly_surrogates(name, alpha):
    sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    cls = {"atan": sj_surrogate.ATan, "sigmoid": sj_surrogate.Sigmoid}[name]
    x = np.random.default_rng(0).normal(size=300).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    cls(alpha=alpha)(xt).sum().backward()
    g = jax.grad(lambda v: sg.Surrogate(name, alpha)(v).sum())(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,alpha", [("atan", 2.0), ("fast_sigmoid", 25.0), ("sigmoid", 25.0)])
def test_matches_snntorch_surrogates(name, alpha):
    snn_surrogate = pytest.importorskip("snntorch.surrogate")
    fn = {
        "atan": lambda: snn_surrogate.atan(alpha=alpha),
        "fast_sigmoid": lambda: snn_surrogate.fast_sigmoid(slope=alpha),
        "sigmoid": lambda: snn_surrogate.sigmoid(slope=alpha),
    }[name]()
    x = np.random.default_rng(1).normal(size=300).astype(np.float32) * 0.3
    xt = torch.tensor(x, requires_grad=True)
    fn(xt).sum().backward()
    g = jax.grad(lambda v: sg.Surrogate(name, alpha)(v).sum())(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), rtol=1e-3, atol=1e-5)  # f32 rounding differs
