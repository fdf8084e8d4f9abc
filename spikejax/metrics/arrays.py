"""Spike statistics of arrays: pure functions on ``spikes[T, ..., C]`` (time first) and the per-layer
:class:`SpikeStats` reduced from partial sums over one or more calls.

Per neuron layer (spikes ``s[T, ..., C]``):

- ``firing_rate``   = mean over all elements of ``1[s ≠ 0]`` (fraction of neuron-steps that spike);
- ``mean_spikes``   = mean ``|s|`` (spike count per neuron-step for multi-level neurons; amplitude
  times rate for ternary ones);
- ``dead_fraction`` = fraction of channels ``c`` (last axis) whose rate over ``T`` and all other
  axes is ``≤ dead_rate`` (default 0: never fired); ``dead_alert = dead_fraction > alert_threshold``;
- ``ttfs_mean``     = mean over neurons (elements of ``s.shape[1:]``) that fire at least once of
  the first step index ``t`` with ``s_t ≠ 0``; ``silent_fraction`` = fraction that never fire.

A layer called several times is reduced from the sums of :func:`spike_partials` over its calls, so
the statistics are those of all its spikes together (channel-wise ones need equal channel counts).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "SpikeStats",
    "as_spikes",
    "firing_rate",
    "dead_fraction",
    "time_to_first_spike",
    "spike_partials",
    "reduce_spike_stats",
]


def as_spikes(spikes, name: str = "spikes") -> Array:
    """``spikes`` as an array of rank >= 2 (``[T, ..., C]``, time first); a ``ValueError`` naming
    ``name`` otherwise."""
    spikes = jnp.asarray(spikes)
    if spikes.ndim < 2:
        raise ValueError(f"{name}: expected [T, ..., C] with time first (rank >= 2), got shape {tuple(spikes.shape)}")
    return spikes


def firing_rate(spikes: Array) -> Array:
    """Fraction of non-zero entries of ``spikes[T, ...]``: ``mean 1[s ≠ 0]`` (float32 scalar)."""
    spikes = as_spikes(spikes)
    return jnp.mean((spikes != 0).astype(jnp.float32))


def dead_fraction(spikes: Array, dead_rate: float = 0.0) -> Array:
    """Fraction of channels (last axis of ``spikes[T, ..., C]``) whose firing rate over every other
    axis is ``≤ dead_rate`` (default 0: the channel never fired)."""
    spikes = as_spikes(spikes)
    per_channel = jnp.mean((spikes != 0).astype(jnp.float32).reshape(-1, spikes.shape[-1]), axis=0)
    return jnp.mean((per_channel <= dead_rate).astype(jnp.float32))


def time_to_first_spike(spikes: Array) -> tuple[Array, Array]:
    """``spikes[T, ...] -> (first[...], fired[...])``: the first step ``t`` with ``s_t ≠ 0`` per
    neuron (``T`` where it never fires) and whether it fired at all."""
    spikes = as_spikes(spikes)
    T = spikes.shape[0]
    nz = spikes != 0
    fired = jnp.any(nz, axis=0)
    first = jnp.where(fired, jnp.argmax(nz, axis=0), T)
    return first, fired


def spike_partials(spikes: Array) -> dict[str, Array]:
    """Partial sums of one call's ``spikes[T, ..., C]`` (traceable): ``nonzero`` ``Σ 1[s ≠ 0]``,
    ``abs`` ``Σ |s|``, ``count`` ``s.size``, ``channel_nonzero[C]``, ``channel_count`` (elements per
    channel), ``ttfs_sum`` (Σ first-spike steps of the neurons that fire), ``fired`` (their number)
    and ``neurons`` (``prod s.shape[1:]``); :func:`reduce_spike_stats` turns them into :class:`SpikeStats`."""
    s = as_spikes(spikes, "spikes (a neuron layer's output)")
    nz = (s != 0).astype(jnp.float32)
    first, fired = time_to_first_spike(s)
    return {
        "nonzero": jnp.sum(nz),
        "abs": jnp.sum(jnp.abs(s).astype(jnp.float32)),
        "count": jnp.asarray(s.size, jnp.float32),
        "channel_nonzero": jnp.sum(nz.reshape(-1, s.shape[-1]), axis=0),
        "channel_count": jnp.asarray(s.size // s.shape[-1], jnp.float32),
        "ttfs_sum": jnp.sum(jnp.where(fired, first, 0).astype(jnp.float32)),
        "fired": jnp.sum(fired.astype(jnp.float32)),
        "neurons": jnp.asarray(fired.size, jnp.float32),
    }


@dataclasses.dataclass(frozen=True)
class SpikeStats:
    """Statistics of one neuron layer's spikes over one forward pass (see the module docstring)."""

    firing_rate: float
    mean_spikes: float
    dead_fraction: float
    dead_alert: bool
    ttfs_mean: float
    silent_fraction: float
    num_channels: int
    shape: tuple[int, ...]
    calls: int


def reduce_spike_stats(partials: dict[str, list[dict]], *, dead_rate: float = 0.0, alert_threshold: float = 0.5,
                       shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, SpikeStats]:
    """:class:`SpikeStats` per neuron layer from the (fetched) :func:`spike_partials` of each call
    (``{layer path: [partials per call]}``, e.g. :attr:`spikejax.metrics.LayerRecord.spikes`); a layer
    called several times is aggregated over its calls (channel-wise statistics need equal channel
    counts, else they are NaN / -1). ``shapes`` fills :attr:`SpikeStats.shape`."""
    out: dict[str, SpikeStats] = {}
    for name, parts in sorted(partials.items()):
        tot = {k: sum(float(np.sum(p[k])) for p in parts) for k in ("nonzero", "abs", "count", "ttfs_sum", "fired",
                                                                      "neurons", "channel_count")}
        chans = {np.shape(p["channel_nonzero"]) for p in parts}
        if len(chans) == 1:
            ch = sum(np.asarray(p["channel_nonzero"], np.float64) for p in parts)
            rate_c = ch / max(tot["channel_count"], 1.0)
            dead = float(np.mean(rate_c <= dead_rate))
            n_ch = int(ch.shape[0])
        else:
            dead, n_ch = float("nan"), -1
        out[name] = SpikeStats(
            firing_rate=tot["nonzero"] / tot["count"],
            mean_spikes=tot["abs"] / tot["count"],
            dead_fraction=dead,
            dead_alert=bool(dead > alert_threshold),
            ttfs_mean=tot["ttfs_sum"] / tot["fired"] if tot["fired"] else float("nan"),
            silent_fraction=1.0 - tot["fired"] / tot["neurons"],
            num_channels=n_ch,
            shape=tuple((shapes or {}).get(name, ())),
            calls=len(parts),
        )
    return out
