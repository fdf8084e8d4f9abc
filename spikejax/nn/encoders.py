"""Encoders as NNX modules (parameter-free wrappers of :mod:`spikejax.encoding`).

All produce time-major ``[T, ...]`` outputs; :class:`RateEncoder` takes an explicit PRNG key per call.
"""

from __future__ import annotations

import jax
from flax import nnx

from spikejax import encoding

Array = jax.Array

__all__ = ["DirectEncoder", "RateEncoder", "LatencyEncoder", "DeltaEncoder", "PopulationEncoder"]


class DirectEncoder(nnx.Module):
    """``x[...] -> [T, ...]``, x repeated T times (:func:`spikejax.encoding.direct`)."""

    def __init__(self, num_steps: int):
        encoding._check_steps(num_steps)
        self.num_steps = num_steps

    def __call__(self, x: Array) -> Array:
        return encoding.direct(x, self.num_steps)


class RateEncoder(nnx.Module):
    """``x[...] -> {0,1}[T, ...]``, Bernoulli(clip(gain·x, 0, 1)) per step; ``encoder(x, key=key)``."""

    def __init__(self, num_steps: int, *, gain: float = 1.0):
        encoding._check_steps(num_steps)
        self.num_steps = num_steps
        self.gain = float(gain)

    def __call__(self, x: Array, *, key: Array) -> Array:
        return encoding.rate(key, x, self.num_steps, gain=self.gain)


class LatencyEncoder(nnx.Module):
    """``x[...] -> {0,1}[T, ...]``, one spike per element (:func:`spikejax.encoding.latency`)."""

    def __init__(self, num_steps: int, *, method: str = "linear", tau: float = 1.0, threshold: float = 0.01):
        encoding._check_steps(num_steps)
        if method not in ("linear", "log"):
            raise ValueError(f"method: unknown latency method {method!r}; expected 'linear' or 'log'")
        self.num_steps = num_steps
        self.method = method
        self.tau = float(tau)
        self.threshold = float(threshold)

    def __call__(self, x: Array) -> Array:
        return encoding.latency(x, self.num_steps, method=self.method, tau=self.tau, threshold=self.threshold)


class DeltaEncoder(nnx.Module):
    """``x[T, ...] -> {-1,0,1}[T, ...]`` on changes of at least θ (:func:`spikejax.encoding.delta`)."""

    def __init__(self, *, threshold: float = 0.1, off_spikes: bool = True, initial: str = "zero"):
        self.threshold = float(threshold)
        self.off_spikes = bool(off_spikes)
        self.initial = initial

    def __call__(self, x: Array) -> Array:
        return encoding.delta(x, threshold=self.threshold, off_spikes=self.off_spikes, initial=self.initial)


class PopulationEncoder(nnx.Module):
    """``x[...] -> [..., N]`` Gaussian receptive fields (:func:`spikejax.encoding.population`)."""

    def __init__(self, num_neurons: int, *, low: float = 0.0, high: float = 1.0, sigma: float | None = None):
        self.num_neurons = num_neurons
        self.low, self.high, self.sigma = float(low), float(high), sigma

    def __call__(self, x: Array) -> Array:
        return encoding.population(x, self.num_neurons, low=self.low, high=self.high, sigma=self.sigma)
