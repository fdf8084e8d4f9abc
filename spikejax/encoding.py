"""Spike encoders: turn static or analog inputs into time-major spike trains ``[T, ...]``.

All functions are pure; the only randomness (:func:`rate`) takes an explicit PRNG key.

===============  =========================================================================
encoder          output
===============  =========================================================================
:func:`direct`   ``x`` repeated T times, ``[T, ...]`` (the first layer's neurons spike)
:func:`rate`     ``S_t ~ Bernoulli(clip(gain · x, 0, 1))`` independently per step
:func:`latency`  one spike per element, earlier for larger ``x`` (time-to-first-spike)
:func:`delta`    ``+1`` / ``-1`` where an analog series ``x[T, ...]`` rises / falls by ``>= θ``
:func:`population`  Gaussian receptive fields: ``x[...] -> [..., N]`` graded responses
===============  =========================================================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["direct", "rate", "latency", "delta", "population"]


def _check_steps(num_steps: int) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an integer >= 1, got {num_steps!r}")
    return num_steps


def _floating(name: str, x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def direct(x, num_steps: int) -> Array:
    """Direct (constant-current) encoding: ``out[t] = x`` for ``t < T``.

    Args:
      x: any array ``[...]`` (e.g. an image or token embeddings), left in its floating dtype.
      num_steps: T >= 1.

    Returns:
      ``[T, ...]``; differentiable with respect to ``x`` (the gradient is the sum over T).
    """
    T = _check_steps(num_steps)
    x = _floating("x", x)
    return jnp.broadcast_to(x[None], (T, *x.shape))


def rate(key: Array, x, num_steps: int, *, gain: float = 1.0, dtype=jnp.float32) -> Array:
    """Rate (Poisson/Bernoulli) encoding: ``S_t ~ Bernoulli(p)`` i.i.d. over t, ``p = clip(gain·x, 0, 1)``.

    Args:
      key: a ``jax.random`` key (explicit, so results are reproducible).
      x: intensities ``[...]``, typically in [0, 1].
      num_steps: T >= 1.
      gain: multiplies ``x`` before clipping to a probability.

    Returns:
      ``{0, 1}`` spikes ``[T, ...]`` in ``dtype``. Not differentiable (sampling).
    """
    T = _check_steps(num_steps)
    x = _floating("x", x)
    p = jnp.clip(gain * x.astype(jnp.float32), 0.0, 1.0)
    return jax.random.bernoulli(key, p, (T, *x.shape)).astype(dtype)


def latency(x, num_steps: int, *, method: str = "linear", tau: float = 1.0, threshold: float = 0.01,
            dtype=jnp.float32) -> Array:
    """Latency (time-to-first-spike) encoding: exactly one spike per element with ``x >= threshold``.

    ``x`` is clipped to [0, 1]. The spike time is
      - ``linear``: ``t = round((1 - x) (T - 1))`` (x = 1 fires at t = 0, x = 0 at t = T - 1);
      - ``log``: ``t = min(T - 1, round(τ ln(1 / x)))`` (RC-circuit charging time, snnTorch-like).
    Elements with ``x < threshold`` never fire.

    Returns:
      ``{0, 1}`` spikes ``[T, ...]`` in ``dtype``.
    """
    T = _check_steps(num_steps)
    if method not in ("linear", "log"):
        raise ValueError(f"method: unknown latency method {method!r}; expected 'linear' or 'log'")
    if tau <= 0:
        raise ValueError(f"tau: expected > 0, got {tau}")
    x = jnp.clip(_floating("x", x).astype(jnp.float32), 0.0, 1.0)
    if method == "linear":
        t_spike = jnp.round((1.0 - x) * (T - 1))
    else:
        t_spike = jnp.minimum(T - 1, jnp.round(tau * jnp.log(1.0 / jnp.maximum(x, 1e-12))))
    fires = x >= threshold
    steps = jnp.arange(T).reshape((T,) + (1,) * x.ndim)
    return ((steps == t_spike[None]) & fires[None]).astype(dtype)


def delta(x, *, threshold: float = 0.1, off_spikes: bool = True, initial: str = "zero") -> Array:
    """Delta (change) encoding of an analog series ``x[T, ...]``.

    ``d_t = x_t - x_{t-1}``; ``S_t = Θ(d_t - θ) - Θ(-d_t - θ)`` (``off_spikes``) or ``Θ(d_t - θ)``.
    ``x_{-1}`` is 0 (``initial="zero"``) or ``x_0`` (``initial="first"``, so step 0 is silent).
    ``Θ(z) = 1[z >= 0]``.

    Returns:
      spikes ``[T, ...]`` in {-1, 0, 1} (or {0, 1}) with ``x``'s floating dtype.
    """
    x = _floating("x", x)
    if x.ndim < 1:
        raise ValueError(f"x: expected a time series [T, ...], got shape {tuple(x.shape)}")
    if initial not in ("zero", "first"):
        raise ValueError(f"initial: expected 'zero' or 'first', got {initial!r}")
    if threshold < 0:
        raise ValueError(f"threshold: expected >= 0, got {threshold}")
    prev0 = jnp.zeros_like(x[:1]) if initial == "zero" else x[:1]
    prev = jnp.concatenate([prev0, x[:-1]], axis=0)
    d = x - prev
    on = (d >= threshold) & (d != 0)
    out = on.astype(x.dtype)
    if off_spikes:
        out = out - ((-d >= threshold) & (d != 0)).astype(x.dtype)
    return out


def population(x, num_neurons: int, *, low: float = 0.0, high: float = 1.0,
               sigma: float | None = None) -> Array:
    """Population coding with Gaussian receptive fields.

    Neuron ``i`` of ``N`` has centre ``μ_i = low + i (high - low) / (N - 1)`` and responds
    ``r_i = exp(-(x - μ_i)² / (2 σ²))``, with ``σ = (high - low) / (N - 1)`` by default.

    Args:
      x: values ``[...]``.
      num_neurons: N >= 2.

    Returns:
      graded responses ``[..., N]`` in [0, 1] (feed them to :func:`direct` or :func:`rate`).
    """
    if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 2:
        raise ValueError(f"num_neurons: expected an integer >= 2, got {num_neurons!r}")
    if not high > low:
        raise ValueError(f"high: expected high > low, got low={low}, high={high}")
    x = _floating("x", x)
    spacing = (high - low) / (num_neurons - 1)
    sigma = spacing if sigma is None else sigma
    if sigma <= 0:
        raise ValueError(f"sigma: expected > 0, got {sigma}")
    centres = low + spacing * jnp.arange(num_neurons, dtype=jnp.float32)
    z = (x[..., None].astype(jnp.float32) - centres) / sigma
    return jnp.exp(-0.5 * z * z).astype(x.dtype)
