"""spikejax.encoding (and the spikejax.nn encoder modules) against numpy references."""

import jax
import numpy as np
import pytest

from spikejax import encoding
from spikejax import nn as snn


def test_direct_repeats_and_is_differentiable():
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    out = encoding.direct(x, 4)
    assert out.shape == (4, 3, 5)
    np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(x, (4, 3, 5)))
    g = jax.grad(lambda x: encoding.direct(x, 4).sum())(x)
    np.testing.assert_allclose(np.asarray(g), 4.0)
    np.testing.assert_array_equal(np.asarray(snn.DirectEncoder(4)(x)), np.asarray(out))


def test_rate_statistics_and_key_determinism():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(64,)).astype(np.float32)
    key = jax.random.key(3)
    s = np.asarray(encoding.rate(key, p, 4000))
    assert s.shape == (4000, 64)
    assert set(np.unique(s)) <= {0.0, 1.0}
    np.testing.assert_allclose(s.mean(0), p, atol=0.04)
    np.testing.assert_array_equal(s, np.asarray(encoding.rate(key, p, 4000)))
    assert not np.array_equal(s, np.asarray(encoding.rate(jax.random.key(4), p, 4000)))
    # gain and clipping
    s2 = np.asarray(encoding.rate(key, np.array([0.3, -1.0, 2.0], np.float32), 3000, gain=2.0))
    np.testing.assert_allclose(s2.mean(0), [0.6, 0.0, 1.0], atol=0.04)
    np.testing.assert_array_equal(np.asarray(snn.RateEncoder(4000)(p, key=key)), s)


@pytest.mark.parametrize("method", ["linear", "log"])
def test_latency_one_spike_at_the_reference_time(method):
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.2, 1.2, size=(6, 7)).astype(np.float32)
    T, tau, thr = 9, 2.0, 0.05
    out = np.asarray(encoding.latency(x, T, method=method, tau=tau, threshold=thr))
    ref = np.zeros((T,) + x.shape, np.float32)
    for idx in np.ndindex(x.shape):
        xv = min(max(float(x[idx]), 0.0), 1.0)
        if xv < thr:
            continue
        t = round((1 - xv) * (T - 1)) if method == "linear" else min(T - 1, round(tau * np.log(1 / xv)))
        ref[(t,) + idx] = 1.0
    np.testing.assert_array_equal(out, ref)
    mod = snn.LatencyEncoder(T, method=method, tau=tau, threshold=thr)
    np.testing.assert_array_equal(np.asarray(mod(x)), ref)


@pytest.mark.parametrize("initial", ["zero", "first"])
@pytest.mark.parametrize("off", [True, False])
def test_delta_matches_loop(initial, off):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 4, 3)).astype(np.float32)
    thr = 0.4
    out = np.asarray(encoding.delta(x, threshold=thr, off_spikes=off, initial=initial))
    ref = np.zeros_like(x)
    prev = np.zeros_like(x[0]) if initial == "zero" else x[0]
    for t in range(x.shape[0]):
        d = x[t] - prev
        ref[t] = (d >= thr).astype(np.float32) - (off * (d <= -thr)).astype(np.float32)
        prev = x[t]
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(
        np.asarray(snn.DeltaEncoder(threshold=thr, off_spikes=off, initial=initial)(x)), ref)


def test_population_gaussian_fields():
    x = np.random.default_rng(4).uniform(-1, 2, size=(5, 2)).astype(np.float32)
    out = np.asarray(encoding.population(x, 6, low=-1.0, high=2.0))
    mu = np.linspace(-1.0, 2.0, 6)
    sigma = 3.0 / 5
    ref = np.exp(-((x[..., None] - mu) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(snn.PopulationEncoder(6, low=-1, high=2)(x)), ref, rtol=1e-5, atol=1e-6)


def test_encoding_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_steps"):
        encoding.direct(np.ones(3), 0)
    with pytest.raises(ValueError, match="method"):
        encoding.latency(np.ones(3), 4, method="exp")
    with pytest.raises(ValueError, match="num_neurons"):
        encoding.population(np.ones(3), 1)
    with pytest.raises(ValueError, match="initial"):
        encoding.delta(np.ones((3, 2)), initial="last")
