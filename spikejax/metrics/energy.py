"""The energy model: synaptic-operation counts of ``nnx.Linear`` / ``nnx.Conv`` layers and their energy.

Per synaptic layer (input ``x``, output ``y``, kernel ``W``) — :class:`SynOpStats`:
``dense_macs = y.size · prod(W.shape[:-1])``; the input is *spike-driven* when every value is an
integer (binary / ternary / multi-level spike counts, sums of spikes) or the non-zero values of each
input channel (last axis) share one magnitude ``α_c`` (amplitude-scaled spikes, e.g. the ternary
neuron's learnable per-channel amplitude: ``W (α ⊙ s) = (W diag α) s``, the amplitude folds into the
weights). Then the layer does ``acs = dense_macs · u`` accumulates, with ``u = mean|x|`` for integers
(one AC per unit spike and fan-out) and ``u = mean 1[x ≠ 0]`` for amplitude-scaled spikes (one AC per
spike), and no MACs; otherwise ``macs = dense_macs``.

Energy, with the 45 nm figures of Horowitz (2014) used by the SNN literature:
``E = 4.6 pJ · MACs + 0.9 pJ · ACs``. Attention mixing products inside the functional cores
(``Q Kᵀ V``) are not modules and are not counted. Counts are for the whole forward call (all time
steps and the whole batch). Against the same model as an ANN (neurons replaced by ReLU, one pass
instead of ``T``): ``E_ANN = 4.6 pJ · dense_macs / T``; per sample (token, image) every figure is
divided by the samples in the pass (:class:`EnergyReport`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array

__all__ = ["E_MAC_PJ", "E_AC_PJ", "SynOpStats", "EnergyReport", "synop_partials", "reduce_synops"]

E_MAC_PJ = 4.6
"""Energy of one 32-bit float multiply-accumulate at 45 nm, in pJ (Horowitz 2014)."""
E_AC_PJ = 0.9
"""Energy of one 32-bit float accumulate at 45 nm, in pJ (Horowitz 2014)."""


def synop_partials(layer: nnx.Module, x: Array, y: Array) -> dict[str, Array]:
    """Partial counts of one call ``y = layer(x)`` of an ``nnx.Linear`` / ``nnx.Conv`` (traceable):
    ``dense`` (its MACs as a dense layer), ``ac_units`` (``u`` of the module docstring), ``nonzero``
    (``mean 1[x ≠ 0]``) and ``spike_driven`` (the input is integer or per-channel amplitude spikes)."""
    kernel = layer.kernel[...]
    dense = float(np.prod(y.shape, dtype=np.float64) * math.prod(kernel.shape[:-1]))
    xf = jnp.asarray(x).astype(jnp.float32)
    ax = jnp.abs(xf)
    integer = jnp.all(xf == jnp.round(xf))
    channel_mag = jnp.max(ax.reshape(-1, ax.shape[-1]), axis=0)  # α_c over everything but the channel axis
    scaled = jnp.all((ax == 0) | (ax == channel_mag))
    nonzero = jnp.mean((xf != 0).astype(jnp.float32))
    return {
        "dense": jnp.asarray(dense, jnp.float32),
        "ac_units": jnp.where(integer, jnp.mean(ax), nonzero),
        "nonzero": nonzero,
        "spike_driven": integer | scaled,
    }


@dataclasses.dataclass(frozen=True)
class SynOpStats:
    """Operation counts of one synaptic layer (``nnx.Linear`` / ``nnx.Conv``) over one forward pass."""

    dense_macs: float
    macs: float
    acs: float
    input_rate: float
    spike_driven: bool
    energy_pj: float
    calls: int


def reduce_synops(partials: dict[str, list[dict]], *, e_mac_pj: float = E_MAC_PJ,
                  e_ac_pj: float = E_AC_PJ, all_macs: bool = False) -> dict[str, SynOpStats]:
    """:class:`SynOpStats` per synaptic layer from the (fetched) :func:`synop_partials` of each call
    (``{layer path: [partials per call]}``, e.g. :attr:`spikejax.metrics.LayerRecord.synops`), summed
    over calls: a spike-driven call does ``dense_macs · u`` ACs, any other ``dense_macs`` MACs.
    ``all_macs``: every call is counted as ``dense_macs`` MACs (a non-spiking model, e.g. the ANN
    twin of ``neuron="none"``, whose activations may look spike-like by accident)."""
    out: dict[str, SynOpStats] = {}
    for name, parts in sorted(partials.items()):
        dense = macs = acs = nonzero = 0.0
        for p in parts:
            d = float(p["dense"])
            if bool(p["spike_driven"]) and not all_macs:
                acs += d * float(p["ac_units"])
            else:
                macs += d
            dense += d
            nonzero += float(p["nonzero"]) * d
        out[name] = SynOpStats(
            dense_macs=dense, macs=macs, acs=acs, input_rate=nonzero / dense if dense else 0.0,
            spike_driven=not all_macs and all(bool(p["spike_driven"]) for p in parts),
            energy_pj=e_mac_pj * macs + e_ac_pj * acs, calls=len(parts))
    return out


@dataclasses.dataclass(frozen=True)
class EnergyReport:
    """Per-layer :class:`SynOpStats` and totals of one forward pass.

    ``dense_energy_pj = e_mac · Σ dense_macs`` is the same network with every operation a MAC (a
    non-spiking network of the same shapes run for the same steps). When the pass's ``time_steps``
    ``T`` is known, ``ann_energy_pj = dense_energy_pj / T`` is the same model as an ANN (neurons
    replaced by ReLU, one pass instead of ``T``); ``samples`` (tokens, images) in the pass and their
    ``unit`` name the per-sample figures of :meth:`to_dict` and :meth:`table`.
    """

    layers: dict[str, SynOpStats]
    total_macs: float
    total_acs: float
    energy_pj: float
    dense_energy_pj: float
    e_mac_pj: float
    e_ac_pj: float
    time_steps: int | None = None
    samples: float = 1.0
    unit: str = "forward"

    @classmethod
    def from_layers(cls, layers: dict[str, SynOpStats], *, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ,
                    time_steps: int | None = None, samples: float = 1.0, unit: str = "forward") -> EnergyReport:
        """Totals of per-layer counts: ``E = e_mac · Σ MACs + e_ac · Σ ACs``."""
        if e_mac_pj < 0 or e_ac_pj < 0:
            raise ValueError(f"e_mac_pj, e_ac_pj: expected >= 0, got {e_mac_pj}, {e_ac_pj}")
        if time_steps is not None and (isinstance(time_steps, bool) or not isinstance(time_steps, int)
                                       or time_steps < 1):
            raise ValueError(f"time_steps: expected a positive integer, got {time_steps!r}")
        if not samples > 0:
            raise ValueError(f"samples: expected > 0, got {samples}")
        macs = sum(s.macs for s in layers.values())
        acs = sum(s.acs for s in layers.values())
        dense = sum(s.dense_macs for s in layers.values())
        return cls(layers=layers, total_macs=macs, total_acs=acs, energy_pj=e_mac_pj * macs + e_ac_pj * acs,
                   dense_energy_pj=e_mac_pj * dense, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj, time_steps=time_steps,
                   samples=float(samples), unit=unit)

    @property
    def energy_ratio(self) -> float:
        """``energy_pj / dense_energy_pj`` (lower is better)."""
        return self.energy_pj / self.dense_energy_pj if self.dense_energy_pj else float("nan")

    @property
    def ann_energy_pj(self) -> float:
        """``dense_energy_pj / time_steps``: the same model as an ANN, one pass instead of ``T``."""
        if self.time_steps is None:
            raise ValueError("ann_energy_pj: the report has no time_steps (give time_steps=T)")
        return self.dense_energy_pj / self.time_steps

    @property
    def ann_ratio(self) -> float:
        """``ann_energy_pj / energy_pj`` (> 1: the spiking model is cheaper)."""
        return self.ann_energy_pj / self.energy_pj if self.energy_pj else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """Per-sample figures (all counts and joules divided by ``samples``): ``sops`` (ACs) and
        ``snn_macs`` of the SNN, ``ann_macs`` (dense MACs / T), ``snn_joules``, ``ann_joules``,
        ``ratio`` (ANN / SNN), and per layer (paths dotted as in :func:`spikejax.metrics.summarize`)."""
        ann_pj = self.ann_energy_pj  # raises without time_steps
        n, T = self.samples, self.time_steps
        layers = [{"path": name.replace("/", "."), "macs": s.dense_macs / n, "nonzero": s.input_rate,
                   "spiking": s.spike_driven, "sops": s.acs / n, "snn_joules": s.energy_pj * 1e-12 / n,
                   "ann_joules": self.e_mac_pj * s.dense_macs / T * 1e-12 / n}
                  for name, s in sorted(self.layers.items())]
        return {"layers": layers, "time_steps": self.time_steps, "unit": self.unit,
                "sops": self.total_acs / n, "snn_macs": self.total_macs / n,
                "ann_macs": sum(s.dense_macs for s in self.layers.values()) / T / n,
                "snn_joules": self.energy_pj * 1e-12 / n, "ann_joules": ann_pj * 1e-12 / n,
                "ratio": self.ann_ratio}

    def table(self) -> str:
        """A plain-text per-sample summary: SNN (ACs + MACs) against the same model as an ANN."""
        d = self.to_dict()
        return "\n".join([
            f"Energy per {self.unit} (45 nm: MAC {self.e_mac_pj:.1f} pJ, AC {self.e_ac_pj:.1f} pJ; "
            f"T={self.time_steps})",
            f"  SNN: {d['sops']:,.0f} SOPs + {d['snn_macs']:,.0f} MACs = {d['snn_joules'] * 1e9:.3f} nJ",
            f"  ANN: {d['ann_macs']:,.0f} MACs = {d['ann_joules'] * 1e9:.3f} nJ",
            f"  ANN / SNN energy: {d['ratio']:.2f}x",
        ])
