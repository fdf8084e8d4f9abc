"""Recording one model's layers during a forward pass, scoped to that model's module instances.

:func:`record_layers` intercepts (:func:`spikejax.metrics.intercept_calls`) every spiking-neuron
layer (:class:`spikejax.nn.SpikingNeuron`, its output spikes) and every ``nnx.Linear`` /
``nnx.Conv`` (its input) *of the given model* and keeps per call the partial sums of
:func:`~spikejax.metrics.spike_partials` / :func:`~spikejax.metrics.synop_partials`; any other
module called meanwhile is not recorded. The model's code, classes and parameters are untouched.

Surrogate-gradient magnitude: :func:`record_layers` can add zero *probes* ``p_in``, ``p_out`` to a
neuron layer's input and output, ``s = f(x + p_in) + p_out``; then ``∂L/∂p_in = ∂L/∂x`` (the
gradient that crosses the surrogate) and ``∂L/∂p_out = ∂L/∂s``, and ``mean |∂L/∂x|`` is the layer's
surrogate-gradient magnitude (``spikejax.train`` logs it during training).

Usage::

    with record_layers(model, probes=zeros) as rec:  # traceable (jit / grad / eval_shape)
        loss = loss_fn(model, batch)                 # rec.spikes, rec.synops: partial sums per call
    stats = reduce_spike_stats(jax.device_get(rec.spikes))   # after fetching from jit
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
from flax import nnx

from spikejax.metrics.arrays import spike_partials
from spikejax.metrics.energy import synop_partials
from spikejax.metrics.intercept import intercept_calls
from spikejax.nn.neurons import SpikingNeuron

Array = jax.Array

__all__ = ["LayerRecord", "record_layers", "collect_spikes"]


def _module_paths(model: nnx.Module) -> dict[int, str]:
    """``{id(module): "blocks/0/mlp/fc2"}`` for every node of ``model``."""
    return {id(node): "/".join(str(p) for p in path) for path, node in nnx.iter_graph(model)}


def _spikes_of(out: Any) -> Array:
    """A neuron layer's spikes: its output, or the first element of ``(spikes, state)``."""
    return out[0] if isinstance(out, tuple) else out


@dataclasses.dataclass
class LayerRecord:
    """What :func:`record_layers` collected: per layer path, one dict of partial sums per call
    (traced arrays inside ``jit``; reduce them with :func:`~spikejax.metrics.reduce_spike_stats` /
    :func:`~spikejax.metrics.reduce_synops`), and each neuron layer's input and output
    ``jax.ShapeDtypeStruct`` (of its first call)."""

    names: dict[int, str]
    spikes: dict[str, list[dict[str, Array]]] = dataclasses.field(default_factory=dict)
    synops: dict[str, list[dict[str, Array]]] = dataclasses.field(default_factory=dict)
    neuron_io: dict[str, tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]] = dataclasses.field(default_factory=dict)

    def name(self, module: nnx.Module) -> str:
        """The path of ``module`` in the model (``"blocks/0/mlp/hidden_neuron"``; the class name for a
        module that is not part of it)."""
        return self.names.get(id(module), type(module).__name__)


@contextlib.contextmanager
def record_layers(model: nnx.Module, *, spikes: bool = True, synops: bool = True,
                  probes: dict[str, dict[str, Array]] | None = None) -> Iterator[LayerRecord]:
    """Record partial statistics of every neuron layer (``spikes``) and ``nnx.Linear`` / ``nnx.Conv``
    (``synops``) of ``model`` called inside the ``with`` block; modules that are not part of
    ``model`` are not recorded. Traceable: use it under ``jit``, ``jax.eval_shape`` or ``jax.grad``.

    ``probes``, optional ``{neuron path: {"in": zeros[x.shape], "out": zeros[s.shape]}}``, are added
    to the input ``x`` and output spikes ``s`` of those neuron layers: the gradient of a loss with
    respect to them is ``∂L/∂x`` (what reaches the layer through its surrogate: the
    surrogate-gradient magnitude is ``mean |∂L/∂x|``) and ``∂L/∂s``. Shapes from
    :attr:`LayerRecord.neuron_io` of an abstract pass (``jax.eval_shape``).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected an nnx.Module, got {type(model)!r}")
    rec = LayerRecord(_module_paths(model))
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
            s = _spikes_of(out)
            rec.neuron_io.setdefault(name, (jax.ShapeDtypeStruct(args[0].shape, args[0].dtype),
                                            jax.ShapeDtypeStruct(s.shape, s.dtype)))
            rec.spikes.setdefault(name, []).append(spike_partials(s))
        else:
            rec.synops.setdefault(name, []).append(synop_partials(module, args[0], out))

    hooks = {"before": before, "after": after} if probes is not None else {}
    with intercept_calls(model, record, bases, **hooks):
        yield rec


def collect_spikes(model: nnx.Module, *inputs, **kwargs) -> tuple[Any, dict[str, Array]]:
    """Run ``model(*inputs, **kwargs)`` and return ``(output, {layer path: spikes})`` of the neuron
    layers of ``model``.

    Traceable and differentiable (use it inside a loss for spike regularizers, e.g.
    :func:`spikejax.quant.sparsity_penalty`); runs on the model itself. A layer called ``k > 1``
    times gives entries ``path``, ``path#1``, ..., ``path#{k-1}``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected an nnx.Module, got {type(model)!r}")
    names = _module_paths(model)
    spikes: dict[str, Array] = {}

    def record(module, args_, out):
        name = names[id(module)]
        key, k = name, 0
        while key in spikes:
            k += 1
            key = f"{name}#{k}"
        spikes[key] = _spikes_of(out)

    with intercept_calls(model, record, (SpikingNeuron,)):
        output = model(*inputs, **kwargs)
    return output, spikes
