"""Spike metrics collected from any NNX model without changing its code.

One forward pass runs with an interceptor scoped to the model's own module instances
(:func:`intercept_calls`): every spiking-neuron layer (:class:`spikejax.nn.SpikingNeuron`) and every
``nnx.Linear`` / ``nnx.Conv`` of the model has its output (neurons) or input (synaptic layers)
recorded; no class is patched, other modules called meanwhile are not recorded, and the model's
code and parameters are untouched.

One concern per module:

- :mod:`~spikejax.metrics.arrays`     firing rate, dead channels, time to first spike of
  ``spikes[T, ..., C]``; :class:`SpikeStats` and their reduction over calls;
- :mod:`~spikejax.metrics.energy`     the energy model: MAC / AC counts of synaptic layers
  (:class:`SynOpStats`), ``E = 4.6 pJ · MACs + 0.9 pJ · ACs`` (45 nm), :class:`EnergyReport`;
- :mod:`~spikejax.metrics.intercept`  the instance-scoped call interceptor (also used by
  :func:`spikejax.packing.use_packed_spike_linears`);
- :mod:`~spikejax.metrics.recording`  :func:`record_layers` (traceable, with gradient probes) and
  :func:`collect_spikes`;
- :mod:`~spikejax.metrics.report`     one-pass :func:`collect_spike_stats`, :func:`energy_report`
  and the flat :func:`summarize` for loggers.

API::

    stats = collect_spike_stats(model, x)            # {"blocks/0/mlp/hidden_neuron": SpikeStats, ...}
    report = energy_report(model, x)                 # EnergyReport(layers, total_macs, total_acs, energy_pj)
    log = summarize(stats, report)                   # flat {"firing_rate/blocks.0.mlp.hidden_neuron": 0.12, ...}

    with record_layers(model, probes=zeros) as rec:  # traceable core of the above (jit / grad)
        loss = loss_fn(model, batch)                 # rec.spikes, rec.synops: partial sums per call
    stats = reduce_spike_stats(jax.device_get(rec.spikes))   # after fetching from jit
"""

from spikejax.metrics.arrays import SpikeStats, dead_fraction, firing_rate, reduce_spike_stats, time_to_first_spike
from spikejax.metrics.energy import E_AC_PJ, E_MAC_PJ, EnergyReport, SynOpStats, reduce_synops
from spikejax.metrics.intercept import intercept_calls
from spikejax.metrics.recording import LayerRecord, collect_spikes, record_layers
from spikejax.metrics.report import collect_spike_stats, collect_synops, energy_report, summarize

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
