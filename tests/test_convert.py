"""ANN→SNN conversion: an independent numpy simulation of the converted network, accuracy against
the ANN on sklearn digits, and errors that name the unsupported layer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from spikejax import convert as cv


def _np_if_layer(a, theta, T, levels, init):
    """Numpy IF / multi-level IF with soft reset on a constant input current ``a[B, N]``."""
    v = np.full(a.shape, init * theta)
    out = []
    for _ in range(T):
        h = v + a
        s = np.clip(np.floor(h / theta), 0, levels) if levels > 1 else (h >= theta).astype(np.float64)
        v = h - theta * s
        out.append(theta * s)
    return np.stack(out)


@pytest.mark.parametrize("method,T,L", [("rate", 6, 1), ("multilevel", 3, 4)])
def test_converted_matches_numpy_simulation(method, T, L):
    r = nnx.Rngs(0)
    ann = nnx.Sequential(nnx.Linear(5, 12, rngs=r), nnx.relu, nnx.Linear(12, 3, rngs=r))
    x = jax.random.normal(jax.random.key(1), (16, 5))
    snn = cv.convert(ann, x, method=method, time_steps=T, levels=L, percentile=95.0)
    W1, b1 = np.asarray(ann.layers[0].kernel[...], np.float64), np.asarray(ann.layers[0].bias[...], np.float64)
    W2, b2 = np.asarray(ann.layers[2].kernel[...], np.float64), np.asarray(ann.layers[2].bias[...], np.float64)
    a = np.asarray(x, np.float64) @ W1 + b1
    lam = np.percentile(np.maximum(a, 0), 95.0)
    theta = lam if method == "rate" else lam / L
    assert snn.thresholds == {"layers[1]": pytest.approx(theta, rel=1e-5)}
    s = _np_if_layer(a, theta, T, L if method == "multilevel" else 1, 0.5)
    expect = (s @ W2 + b2).mean(0)
    np.testing.assert_allclose(np.asarray(snn(x)), expect, rtol=1e-4, atol=1e-4)
    per_step = np.asarray(snn(x, per_step=True))
    assert per_step.shape == (T, 16, 3)
    np.testing.assert_allclose(per_step[-1], expect, rtol=1e-4, atol=1e-4)


def test_multilevel_one_step_is_quantized_relu():
    r = nnx.Rngs(2)
    ann = nnx.Sequential(nnx.Linear(4, 8, rngs=r), nnx.relu, nnx.Linear(8, 2, rngs=r))
    x = jax.random.normal(jax.random.key(3), (32, 4))
    snn = cv.convert(ann, x, method="multilevel", time_steps=1, levels=64, percentile=100.0)
    # uniform 64-level rounding of relu on [0, λ]: error <= θ/2 = λ/128 per hidden unit
    lam = float(jnp.max(jax.nn.relu(ann.layers[0](x))))
    bound = lam / 128 * float(jnp.abs(ann.layers[2].kernel[...]).sum(0).max()) + 1e-5
    assert float(jnp.max(jnp.abs(snn(x) - ann(x)))) <= bound


def _train_digits(activation, steps=250):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    r = nnx.Rngs(0)
    ann = nnx.Sequential(nnx.Linear(64, 96, rngs=r), activation, nnx.Linear(96, 10, rngs=r))
    opt = nnx.Optimizer(ann, optax.adam(5e-3), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt, xb, yb):
        loss, g = nnx.value_and_grad(lambda m: optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean())(m)
        opt.update(m, g)
        return loss

    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(Xtr), 128)
        step(ann, opt, jnp.asarray(Xtr[idx]), jnp.asarray(ytr[idx]))
    return ann, jnp.asarray(Xtr[:400]), jnp.asarray(Xte), yte


@pytest.mark.parametrize("activation", [jax.nn.relu, jax.nn.gelu])
def test_digits_accuracy_close_to_ann(activation):
    ann, Xcal, Xte, yte = _train_digits(activation)
    acc = lambda logits: float(np.mean(np.asarray(jnp.argmax(logits, -1)) == yte))
    a_ann = acc(ann(Xte))
    a_ml = acc(cv.convert(ann, Xcal, method="multilevel", time_steps=4, levels=4)(Xte))
    a_rate = acc(cv.convert(ann, Xcal, method="rate", time_steps=32)(Xte))
    print(f"{activation.__name__}: ANN {a_ann:.4f}, multilevel T=4 L=4 {a_ml:.4f}, rate T=32 {a_rate:.4f}")
    assert a_ann > 0.93
    assert a_ml >= a_ann - 0.03
    assert a_rate >= a_ann - 0.03


def test_conv_flatten_batchnorm_layernorm_pool():
    r = nnx.Rngs(0)
    bn = nnx.BatchNorm(4, use_running_average=True, rngs=r)
    bn.mean[...] = jnp.linspace(-0.2, 0.2, 4)
    bn.var[...] = jnp.linspace(0.5, 2.0, 4)
    ann = nnx.Sequential(nnx.LayerNorm(3, rngs=r), nnx.Conv(3, 4, (3, 3), rngs=r), bn, nnx.relu,
                         functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2)), cv.Flatten(),
                         nnx.Dropout(0.1, rngs=r), nnx.Linear(4 * 3 * 3, 5, rngs=r))
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 3))
    snn = cv.convert(ann, x, method="multilevel", time_steps=1, levels=64, percentile=100.0)
    ann.eval()
    ref = np.asarray(ann(x))
    np.testing.assert_allclose(np.asarray(snn(x)), ref, atol=0.03 * np.abs(ref).max())


def test_unsupported_layers_are_named():
    r = nnx.Rngs(0)
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"layers\[1\] \(tanh\).*negative"):
        cv.convert(nnx.Sequential(nnx.Linear(3, 3, rngs=r), jnp.tanh, nnx.Linear(3, 2, rngs=r)), x)
    with pytest.raises(ValueError, match=r"layers\[2\] \(LayerNorm\).*not linear"):
        cv.convert(nnx.Sequential(nnx.Linear(3, 3, rngs=r), nnx.relu, nnx.LayerNorm(3, rngs=r)), x)
    with pytest.raises(ValueError, match=r"layers\[1\]\[0\] \(Embed\).*not a supported layer"):
        cv.convert(nnx.Sequential(nnx.relu, nnx.Sequential(nnx.Embed(3, 3, rngs=r))), x)
    with pytest.raises(ValueError, match=r"layers\[1\] \(BatchNorm\).*training mode"):
        cv.convert(nnx.Sequential(nnx.Linear(3, 3, rngs=r), nnx.BatchNorm(3, rngs=r), nnx.relu), x)
    with pytest.raises(ValueError, match=r"layers\[1\] \(<lambda>\)"):
        cv.convert(nnx.Sequential(nnx.Linear(3, 3, rngs=r), lambda z: z * 2, nnx.relu), x)
    with pytest.raises(ValueError, match=r"max_pool"):
        cv.convert(nnx.Sequential(nnx.relu, functools.partial(nnx.max_pool, window_shape=(2,))), x)
    with pytest.raises(TypeError, match="model"):
        cv.convert(nnx.Linear(3, 3, rngs=r), x)
    with pytest.raises(ValueError, match="method"):
        cv.convert(nnx.Sequential(nnx.relu), x, method="ttfs")
    with pytest.raises(ValueError, match="no relu"):
        cv.convert(nnx.Sequential(nnx.Linear(3, 3, rngs=r)), x)


def test_converted_model_metrics_and_jit():
    from spikejax import metrics

    r = nnx.Rngs(0)
    ann = nnx.Sequential(nnx.Linear(5, 12, rngs=r), nnx.relu, nnx.Linear(12, 3, rngs=r))
    x = jax.random.normal(jax.random.key(1), (16, 5))
    snn = cv.convert(ann, x, method="rate", time_steps=8)
    stats = metrics.collect_spike_stats(snn, x)
    assert list(stats) == ["layers/1"] and 0 < stats["layers/1"].firing_rate < 1
    rep = metrics.energy_report(snn, x)
    assert rep.layers["layers/2"].spike_driven and not rep.layers["layers/0"].spike_driven
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(snn, x), snn(x), rtol=1e-6)
