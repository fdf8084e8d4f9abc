"""Spike metrics collected from any NNX model without changing its code.

One forward pass runs with an *interceptor*: for the duration of the call, the ``__call__`` of every
spiking-neuron layer (:class:`spikejax.nn.SpikingNeuron`) and every ``nnx.Linear`` / ``nnx.Conv``
found in the model is wrapped to record its output (neurons) or input (synaptic layers); the
model's code and parameters are untouched, and with ``jit=True`` (default) the pass runs on a
copy of the model state, so nothing (BatchNorm statistics, streaming neuron state) is mutated.

Per neuron layer (spikes ``s[T, ..., C]``, time first) — :class:`SpikeStats`:

- ``firing_rate``   = mean over all elements of ``1[s ≠ 0]`` (fraction of neuron-steps that spike);
- ``mean_spikes``   = mean ``|s|`` (spike count per neuron-step for multi-level neurons; amplitude
  times rate for ternary ones);
- ``dead_fraction`` = fraction of channels ``c`` (last axis) whose rate over ``T`` and all other
  axes is ``≤ dead_rate`` (default 0: never fired); ``dead_alert = dead_fraction > alert_threshold``;
- ``ttfs_mean``     = mean over neurons (elements of ``s.shape[1:]``) that fire at least once of
  the first step index ``t`` with ``s_t ≠ 0``; ``silent_fraction`` = fraction that never fire.

Per synaptic layer (``nnx.Linear`` / ``nnx.Conv`` with input ``x``, output ``y``, kernel ``W``) —
:class:`SynOpStats`: ``dense_macs = y.size · prod(W.shape[:-1])``; the input is *spike-driven*
when every value is an integer (binary / ternary / multi-level spike counts, sums of spikes) or
the non-zero values of each input channel (last axis) share one magnitude ``α_c`` (amplitude-scaled
spikes, e.g. the ternary neuron's learnable per-channel amplitude: ``W (α ⊙ s) = (W diag α) s``, the
amplitude folds into the weights). Then the layer does ``acs = dense_macs · u`` accumulates, with
``u = mean|x|`` for integers (one AC per unit spike and fan-out) and ``u = mean 1[x ≠ 0]`` for
amplitude-scaled spikes (one AC per spike), and no MACs; otherwise ``macs = dense_macs``. Energy, with the
45 nm figures of Horowitz (2014) used by the SNN literature: ``E = 4.6 pJ · MACs + 0.9 pJ · ACs``.
Attention mixing products inside the functional cores (``Q Kᵀ V``) are not modules and are not
counted. Counts are for the whole forward call (all time steps and the whole batch). Against the
same model as an ANN (neurons replaced by ReLU, one pass instead of ``T``): ``E_ANN = 4.6 pJ ·
dense_macs / T``; per sample (token, image) every figure is divided by the samples in the pass.

Surrogate-gradient magnitude: :func:`record_layers` can add zero *probes* ``p_in``, ``p_out`` to a
neuron layer's input and output, ``s = f(x + p_in) + p_out``; then ``∂L/∂p_in = ∂L/∂x`` (the
gradient that crosses the surrogate) and ``∂L/∂p_out = ∂L/∂s``, and ``mean |∂L/∂x|`` is the layer's
surrogate-gradient magnitude (``spikejax.train`` logs it during training).

API::

    stats = collect_spike_stats(model, x)            # {"blocks/0/mlp/hidden_neuron": SpikeStats, ...}
    report = energy_report(model, x)                 # EnergyReport(layers, total_macs, total_acs, energy_pj)
    log = summarize(stats, report)                   # flat {"firing_rate/blocks.0.mlp.hidden_neuron": 0.12, ...}

    with record_layers(model, probes=zeros) as rec:  # traceable core of the above (jit / grad)
        loss = loss_fn(model, batch)                 # rec.spikes, rec.synops: partial sums per call
    stats = reduce_spike_stats(jax.device_get(rec.spikes))   # after fetching from jit
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax.nn.neurons import SpikingNeuron

Array = jax.Array

__all__ = [
    "E_MAC_PJ",
    "E_AC_PJ",
    "SpikeStats",
    "SynOpStats",
    "EnergyReport",
    "firing_rate",
    "dead_fraction",
    "time_to_first_spike",
    "collect_spikes",
    "collect_spike_stats",
    "collect_synops",
    "energy_report",
    "summarize",
    "intercept_calls",
    "LayerRecord",
    "record_layers",
    "reduce_spike_stats",
    "reduce_synops",
]

E_MAC_PJ = 4.6
"""Energy of one 32-bit float multiply-accumulate at 45 nm, in pJ (Horowitz 2014)."""
E_AC_PJ = 0.9
"""Energy of one 32-bit float accumulate at 45 nm, in pJ (Horowitz 2014)."""


# --- pure functions on spike arrays -------------------------------------------------------------------


def _check_spikes(spikes, name: str = "spikes") -> Array:
    spikes = jnp.asarray(spikes)
    if spikes.ndim < 2:
        raise ValueError(f"{name}: expected [T, ..., C] with time first (rank >= 2), got shape {tuple(spikes.shape)}")
    return spikes


def firing_rate(spikes: Array) -> Array:
    """Fraction of non-zero entries of ``spikes[T, ...]``: ``mean 1[s ≠ 0]`` (float32 scalar)."""
    spikes = _check_spikes(spikes)
    return jnp.mean((spikes != 0).astype(jnp.float32))


def dead_fraction(spikes: Array, dead_rate: float = 0.0) -> Array:
    """Fraction of channels (last axis of ``spikes[T, ..., C]``) whose firing rate over every other
    axis is ``≤ dead_rate`` (default 0: the channel never fired)."""
    spikes = _check_spikes(spikes)
    per_channel = jnp.mean((spikes != 0).astype(jnp.float32).reshape(-1, spikes.shape[-1]), axis=0)
    return jnp.mean((per_channel <= dead_rate).astype(jnp.float32))


def time_to_first_spike(spikes: Array) -> tuple[Array, Array]:
    """``spikes[T, ...] -> (first[...], fired[...])``: the first step ``t`` with ``s_t ≠ 0`` per
    neuron (``T`` where it never fires) and whether it fired at all."""
    spikes = _check_spikes(spikes)
    T = spikes.shape[0]
    nz = spikes != 0
    fired = jnp.any(nz, axis=0)
    first = jnp.where(fired, jnp.argmax(nz, axis=0), T)
    return first, fired


# --- the interceptor ------------------------------------------------------------------------------------


@contextlib.contextmanager
def intercept_calls(model: nnx.Module, record: Callable[[nnx.Module, tuple, Any], None],
                    bases: tuple[type, ...], *,
                    before: Callable[[nnx.Module, tuple], tuple] | None = None,
                    after: Callable[[nnx.Module, tuple, Any], Any] | None = None) -> Iterator[None]:
    """Within the ``with`` block, call ``record(module, args, output)`` after every ``__call__`` of a
    module of ``model`` that is an instance of ``bases`` (outermost call per module only).

    Optional hooks change the intercepted call: ``before(module, args) -> args`` replaces its
    positional arguments and ``after(module, args, output) -> output`` its result (e.g. adding zero
    "probes" whose gradient is ``∂L/∂x`` at a layer's input or ``∂L/∂s`` at its output);
    ``record`` sees the replaced values.

    The ``__call__`` of each concrete class found in ``model`` is wrapped and restored on exit;
    nothing in the model changes.
    """
    classes = {type(node) for _, node in nnx.iter_graph(model) if isinstance(node, bases)}
    active: set[int] = set()
    saved: dict[type, tuple[bool, Any]] = {}

    def wrap(orig):
        def __call__(self, *args, **kwargs):
            if id(self) in active:
                return orig(self, *args, **kwargs)
            active.add(id(self))
            try:
                if before is not None:
                    args = tuple(before(self, args))
                out = orig(self, *args, **kwargs)
                if after is not None:
                    out = after(self, args, out)
            finally:
                active.discard(id(self))
            record(self, args, out)
            return out

        __call__.__wrapped__ = orig
        return __call__

    try:
        for cls in classes:
            saved[cls] = ("__call__" in cls.__dict__, cls.__dict__.get("__call__"))
            cls.__call__ = wrap(cls.__call__)
        yield
    finally:
        for cls, (had, orig) in saved.items():
            if had:
                cls.__call__ = orig
            else:
                delattr(cls, "__call__")


# --- result types -------------------------------------------------------------------------------------


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
        ``ratio`` (ANN / SNN), and per layer (paths dotted as in :func:`summarize`)."""
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


# --- collection -------------------------------------------------------------------------------------


def _path_name(path) -> str:
    return "/".join(str(p) for p in path)


def _module_names(model: nnx.Module) -> dict[int, str]:
    return {id(node): _path_name(path) for path, node in nnx.iter_graph(model)}


def _spike_partials(s: Array) -> dict[str, Array]:
    s = _check_spikes(s, "spikes (a neuron layer's output)")
    nz = (s != 0).astype(jnp.float32)
    first, fired = time_to_first_spike(s)
    fired_f = fired.astype(jnp.float32)
    return {
        "nonzero": jnp.sum(nz),
        "abs": jnp.sum(jnp.abs(s).astype(jnp.float32)),
        "count": jnp.asarray(s.size, jnp.float32),
        "channel_nonzero": jnp.sum(nz.reshape(-1, s.shape[-1]), axis=0),
        "channel_count": jnp.asarray(s.size // s.shape[-1], jnp.float32),
        "ttfs_sum": jnp.sum(jnp.where(fired, first, 0).astype(jnp.float32)),
        "fired": jnp.sum(fired_f),
        "neurons": jnp.asarray(fired.size, jnp.float32),
    }


def _synop_partials(module: nnx.Module, x: Array, y: Array) -> dict[str, Array]:
    kernel = module.kernel[...]
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


@dataclasses.dataclass
class LayerRecord:
    """What :func:`record_layers` collected: per layer path, one dict of partial sums per call
    (traced arrays inside ``jit``; reduce them with :func:`reduce_spike_stats` / :func:`reduce_synops`),
    and each neuron layer's input and output ``jax.ShapeDtypeStruct`` (of its first call)."""

    names: dict[int, str]
    spikes: dict[str, list[dict[str, Array]]] = dataclasses.field(default_factory=dict)
    synops: dict[str, list[dict[str, Array]]] = dataclasses.field(default_factory=dict)
    neuron_io: dict[str, tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]] = dataclasses.field(default_factory=dict)

    def name(self, module: nnx.Module) -> str:
        """The path of ``module`` in the model (``"blocks/0/mlp/hidden_neuron"``)."""
        return self.names.get(id(module), type(module).__name__)


@contextlib.contextmanager
def record_layers(model: nnx.Module, *, spikes: bool = True, synops: bool = True,
                  probes: dict[str, dict[str, Array]] | None = None) -> Iterator[LayerRecord]:
    """Record partial statistics of every neuron layer (``spikes``) and ``nnx.Linear`` / ``nnx.Conv``
    (``synops``) of ``model`` called inside the ``with`` block. Traceable: use it under ``jit``,
    ``jax.eval_shape`` or ``jax.grad``.

    ``probes``, optional ``{neuron path: {"in": zeros[x.shape], "out": zeros[s.shape]}}``, are added
    to the input ``x`` and output spikes ``s`` of those neuron layers: the gradient of a loss with
    respect to them is ``∂L/∂x`` (what reaches the layer through its surrogate: the
    surrogate-gradient magnitude is ``mean |∂L/∂x|``) and ``∂L/∂s``. Shapes from
    :attr:`LayerRecord.neuron_io` of an abstract pass (``jax.eval_shape``).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected an nnx.Module, got {type(model)!r}")
    rec = LayerRecord(_module_names(model))
    bases: tuple[type, ...] = ((SpikingNeuron,) if spikes else ()) + ((nnx.Linear, nnx.Conv) if synops else ())

    def probe(module, kind: str):
        if probes is None or not isinstance(module, SpikingNeuron):
            return None
        return probes.get(rec.name(module), {}).get(kind)

    def before(module, args):
        p = probe(module, "in")
        return args if p is None else (args[0] + p, *args[1:])

    def after(module, args, out):
        p = probe(module, "out")
        if p is None:
            return out
        return (out[0] + p, *out[1:]) if isinstance(out, tuple) else out + p

    def record(module, args, out):
        name = rec.name(module)
        if isinstance(module, SpikingNeuron):
            s = out[0] if isinstance(out, tuple) else out
            rec.neuron_io.setdefault(name, (jax.ShapeDtypeStruct(args[0].shape, args[0].dtype),
                                            jax.ShapeDtypeStruct(s.shape, s.dtype)))
            rec.spikes.setdefault(name, []).append(_spike_partials(s))
        else:
            rec.synops.setdefault(name, []).append(_synop_partials(module, args[0], out))

    hooks = {"before": before, "after": after} if probes is not None else {}
    with intercept_calls(model, record, bases, **hooks):
        yield rec


def reduce_spike_stats(partials: dict[str, list[dict]], *, dead_rate: float = 0.0, alert_threshold: float = 0.5,
                       shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, SpikeStats]:
    """:class:`SpikeStats` per neuron layer from the (fetched) partial sums of
    :attr:`LayerRecord.spikes`; a layer called several times is aggregated over its calls
    (channel-wise statistics need equal channel counts). ``shapes`` fills :attr:`SpikeStats.shape`."""
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


def reduce_synops(partials: dict[str, list[dict]], *, e_mac_pj: float = E_MAC_PJ,
                  e_ac_pj: float = E_AC_PJ) -> dict[str, SynOpStats]:
    """:class:`SynOpStats` per synaptic layer from the (fetched) partial sums of
    :attr:`LayerRecord.synops`, summed over calls: a spike-driven call does
    ``dense_macs · u`` ACs, any other ``dense_macs`` MACs (see the module docstring)."""
    out: dict[str, SynOpStats] = {}
    for name, parts in sorted(partials.items()):
        dense = macs = acs = nonzero = 0.0
        for p in parts:
            d = float(p["dense"])
            if bool(p["spike_driven"]):
                acs += d * float(p["ac_units"])
            else:
                macs += d
            dense += d
            nonzero += float(p["nonzero"]) * d
        out[name] = SynOpStats(
            dense_macs=dense, macs=macs, acs=acs, input_rate=nonzero / dense if dense else 0.0,
            spike_driven=all(bool(p["spike_driven"]) for p in parts),
            energy_pj=e_mac_pj * macs + e_ac_pj * acs, calls=len(parts))
    return out


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


def collect_spikes(model: nnx.Module, *inputs, **kwargs) -> tuple[Any, dict[str, Array]]:
    """Run ``model(*inputs, **kwargs)`` and return ``(output, {layer path: spikes})``.

    Traceable and differentiable (use it inside a loss for spike regularizers, e.g.
    :func:`spikejax.quant.sparsity_penalty`); runs on the model itself. A layer called ``k > 1``
    times gives entries ``path``, ``path#1``, ..., ``path#{k-1}``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected an nnx.Module, got {type(model)!r}")
    names = _module_names(model)
    spikes: dict[str, Array] = {}

    def record(module, args_, out):
        name = names.get(id(module), type(module).__name__)
        key, k = name, 0
        while key in spikes:
            k += 1
            key = f"{name}#{k}"
        spikes[key] = out[0] if isinstance(out, tuple) else out

    with intercept_calls(model, record, (SpikingNeuron,)):
        output = model(*inputs, **kwargs)
    return output, spikes


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
    (see the module docstring for the counting rules). Returns ``{layer path: SynOpStats}``."""
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
