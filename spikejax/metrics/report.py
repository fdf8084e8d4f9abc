"""One-pass reports of a model: spike statistics, operation counts and energy, and flat log scalars.

Each collector runs ``model(*inputs, **kwargs)`` once under :func:`spikejax.metrics.record_layers`;
with ``jit=True`` (default) the pass is traced with ``jax.jit`` on a copy of the model state, so
nothing (BatchNorm statistics, streaming neuron state) is mutated.

Usage::

    stats = collect_spike_stats(model, x)            # {"blocks/0/mlp/hidden_neuron": SpikeStats, ...}
    report = energy_report(model, x)                 # EnergyReport(layers, total_macs, total_acs, energy_pj)
    log = summarize(stats, report)                   # flat {"firing_rate/blocks.0.mlp.hidden_neuron": 0.12, ...}
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from flax import nnx

from spikejax.metrics.arrays import SpikeStats, reduce_spike_stats
from spikejax.metrics.energy import E_AC_PJ, E_MAC_PJ, EnergyReport, SynOpStats, reduce_synops
from spikejax.metrics.recording import record_layers

__all__ = ["collect_spike_stats", "collect_synops", "energy_report", "summarize"]


def _collect(model: nnx.Module, inputs: tuple, kwargs: dict, *, spikes: bool, synops: bool,
             jit: bool) -> tuple[dict, dict, dict[str, tuple[int, ...]]]:
    """One forward pass under :func:`record_layers`: ``(spike partials, synop partials, spike shapes)``."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected an nnx.Module, got {type(model)!r}")
    shapes: dict[str, tuple[int, ...]] = {}

    def run(m: nnx.Module, args, kw):
        with record_layers(m, spikes=spikes, synops=synops) as rec:
            m(*args, **kw)
        shapes.update({k: tuple(out.shape) for k, (_, out) in rec.neuron_io.items()})
        return rec.spikes, rec.synops

    if jit:
        graphdef, state = nnx.split(model)
        raw = jax.jit(lambda state, args, kw: run(nnx.merge(graphdef, state), args, kw))(state, inputs, kwargs)
    else:
        raw = run(model, inputs, kwargs)
    spike_parts, synop_parts = jax.device_get(raw)
    return spike_parts, synop_parts, shapes


def collect_spike_stats(model: nnx.Module, *inputs, dead_rate: float = 0.0, alert_threshold: float = 0.5,
                        warn: bool = False, jit: bool = True, **kwargs) -> dict[str, SpikeStats]:
    """Run ``model(*inputs, **kwargs)`` once and return :class:`SpikeStats` per neuron layer.

    Args:
      model: any ``nnx.Module`` containing :class:`spikejax.nn.SpikingNeuron` layers.
      inputs, kwargs: the forward call's arguments.
      dead_rate: a channel is dead when its firing rate is ``≤ dead_rate``.
      alert_threshold: ``dead_alert`` is set when ``dead_fraction > alert_threshold``.
      warn: also emit a ``RuntimeWarning`` naming each alerted layer.
      jit: trace the forward with ``jax.jit`` on a copy of the state (no mutation of the model);
        ``False`` runs eagerly on the model itself.

    Returns:
      ``{layer path ("blocks/0/mlp/hidden_neuron"): SpikeStats}`` sorted by path; a layer called
      several times is aggregated over its calls (channel-wise statistics need equal channel counts).
    """
    if not 0.0 <= alert_threshold <= 1.0:
        raise ValueError(f"alert_threshold: expected a fraction in [0, 1], got {alert_threshold}")
    if dead_rate < 0:
        raise ValueError(f"dead_rate: expected >= 0, got {dead_rate}")
    raw, _, shapes = _collect(model, inputs, kwargs, spikes=True, synops=False, jit=jit)
    out = reduce_spike_stats(raw, dead_rate=dead_rate, alert_threshold=alert_threshold, shapes=shapes)
    if warn:
        for name, stats in out.items():
            if stats.dead_alert:
                warnings.warn(f"{name}: {stats.dead_fraction:.1%} of its {stats.num_channels} channels are dead "
                              f"(firing rate <= {dead_rate}), above the alert threshold {alert_threshold:.1%}",
                              RuntimeWarning, stacklevel=2)
    return out


def collect_synops(model: nnx.Module, *inputs, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ,
                   jit: bool = True, **kwargs) -> dict[str, SynOpStats]:
    """Run ``model(*inputs, **kwargs)`` once and count operations per ``nnx.Linear`` / ``nnx.Conv``
    (counting rules in :mod:`spikejax.metrics.energy`). Returns ``{layer path: SynOpStats}``."""
    _, raw, _ = _collect(model, inputs, kwargs, spikes=False, synops=True, jit=jit)
    return reduce_synops(raw, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj)


def energy_report(model: nnx.Module, *inputs, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ,
                  jit: bool = True, time_steps: int | None = None, samples: float = 1.0, unit: str = "forward",
                  **kwargs) -> EnergyReport:
    """Energy estimate of one forward call: ``E = e_mac · MACs + e_ac · ACs`` summed over layers
    (defaults 4.6 pJ / 0.9 pJ, 45 nm), with the per-layer :class:`SynOpStats`. ``time_steps`` (the
    model's ``T``), ``samples`` (tokens / images in ``inputs``) and their ``unit`` enable the
    per-sample comparison with the same model as an ANN (:meth:`EnergyReport.table`)."""
    if e_mac_pj < 0 or e_ac_pj < 0:
        raise ValueError(f"e_mac_pj, e_ac_pj: expected >= 0, got {e_mac_pj}, {e_ac_pj}")
    layers = collect_synops(model, *inputs, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj, jit=jit, **kwargs)
    return EnergyReport.from_layers(layers, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj, time_steps=time_steps,
                                    samples=samples, unit=unit)


def summarize(stats: dict[str, SpikeStats] | None = None, report: EnergyReport | None = None) -> dict[str, float]:
    """Flatten statistics into ``{"metric/layer.path": float}`` scalars for a logger, plus totals
    ``"firing_rate/mean"``, ``"dead_fraction/max"``, ``"energy/total_uj"``, ``"energy/ratio"``."""
    flat: dict[str, float] = {}
    if stats:
        for name, s in stats.items():
            key = name.replace("/", ".")
            flat[f"firing_rate/{key}"] = float(s.firing_rate)
            flat[f"dead_fraction/{key}"] = float(s.dead_fraction)
            flat[f"ttfs/{key}"] = float(s.ttfs_mean)
        flat["firing_rate/mean"] = float(np.mean([s.firing_rate for s in stats.values()]))
        flat["dead_fraction/max"] = float(np.nanmax([s.dead_fraction for s in stats.values()]))
        flat["dead_alerts"] = float(sum(s.dead_alert for s in stats.values()))
    if report is not None:
        flat["energy/total_uj"] = report.energy_pj * 1e-6
        flat["energy/dense_uj"] = report.dense_energy_pj * 1e-6
        flat["energy/ratio"] = report.energy_ratio
        flat["ops/macs"] = report.total_macs
        flat["ops/acs"] = report.total_acs
    return flat
