"""Energy estimate of a spiking model from measured activity (45 nm CMOS, Horowitz 2014).

For every linear / conv call recorded by :class:`spikejax.train.probes.Recorder` with ``MACs``
multiply-accumulates (all T time steps included) and a measured fraction ``ρ`` of non-zero inputs:

- spike-driven layer (every input integer-valued: spikes or spike counts): ``SOPs = ρ · MACs``
  accumulates, energy ``E_AC · SOPs``;
- real-valued input (e.g. the read-out after a LayerNorm, a conv on pixels): ``E_MAC · MACs``.

The same model as an ANN (neurons replaced by ReLU, one pass instead of T) costs
``E_MAC · MACs / T`` per layer. Attention products between spike tensors (``QKᵀ``, ``KᵀV``) and
element-wise work are not counted in either column. Energies are per sample (``per``: a
token for language models, an image for vision).
"""

from __future__ import annotations

import dataclasses

__all__ = ["E_MAC_45NM", "E_AC_45NM", "LayerEnergy", "EnergyReport", "energy_report"]

E_MAC_45NM = 4.6e-12
"""Energy of a 32-bit float multiply-accumulate at 45 nm, joules."""
E_AC_45NM = 0.9e-12
"""Energy of a 32-bit float accumulate at 45 nm, joules."""


@dataclasses.dataclass(frozen=True)
class LayerEnergy:
    """One layer's operations and energies per sample."""

    path: str
    macs: float
    nonzero: float
    spiking: bool
    sops: float
    snn_joules: float
    ann_joules: float


@dataclasses.dataclass(frozen=True)
class EnergyReport:
    """Per-sample totals: synaptic operations (ACs), MACs of the SNN, its energy, the ANN's energy."""

    layers: tuple[LayerEnergy, ...]
    time_steps: int
    unit: str
    sops: float
    snn_macs: float
    ann_macs: float
    snn_joules: float
    ann_joules: float

    @property
    def ratio(self) -> float:
        """ANN energy / SNN energy (> 1: the spiking model is cheaper)."""
        return self.ann_joules / self.snn_joules if self.snn_joules else float("inf")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        return d

    def table(self) -> str:
        """A plain-text summary."""
        lines = [
            f"Energy per {self.unit} (45 nm: MAC {E_MAC_45NM * 1e12:.1f} pJ, AC {E_AC_45NM * 1e12:.1f} pJ; "
            f"T={self.time_steps})",
            f"  SNN: {self.sops:,.0f} SOPs + {self.snn_macs:,.0f} MACs = {self.snn_joules * 1e9:.3f} nJ",
            f"  ANN: {self.ann_macs:,.0f} MACs = {self.ann_joules * 1e9:.3f} nJ",
            f"  ANN / SNN energy: {self.ratio:.2f}x",
        ]
        return "\n".join(lines)


def energy_report(linears: dict[str, dict], time_steps: int, per: float, *, unit: str = "sample",
                  e_mac: float = E_MAC_45NM, e_ac: float = E_AC_45NM) -> EnergyReport:
    """Energy per sample from the recorded linear layers.

    Args:
      linears: ``{path: {"macs", "nonzero", "spiking"}}`` (e.g. the ``linears`` of a probe step).
      time_steps: T, the SNN time steps inside the recorded MACs.
      per: the number of samples the recorded pass processed (divides every count).
      unit: what a sample is ("token", "image").
      e_mac, e_ac: energy per MAC and per AC in joules.
    """
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"time_steps: expected a positive integer, got {time_steps!r}")
    if not per > 0:
        raise ValueError(f"per: expected > 0 samples, got {per}")
    layers = []
    for path, rec in sorted(linears.items()):
        macs = float(rec["macs"]) / per
        nz = float(rec["nonzero"])
        spiking = bool(rec["spiking"])
        sops = nz * macs if spiking else 0.0
        snn = sops * e_ac if spiking else macs * e_mac
        layers.append(LayerEnergy(path, macs, nz, spiking, sops, snn, macs / time_steps * e_mac))
    return EnergyReport(
        layers=tuple(layers), time_steps=time_steps, unit=unit,
        sops=sum(l.sops for l in layers),
        snn_macs=sum(l.macs for l in layers if not l.spiking),
        ann_macs=sum(l.macs for l in layers) / time_steps,
        snn_joules=sum(l.snn_joules for l in layers),
        ann_joules=sum(l.ann_joules for l in layers),
    )
