"""Spiking metrics recorded without changing model code.

Inside :class:`Recorder` (a context manager used while a model runs, usually under ``jax.jit``),
every :class:`spikejax.nn.SpikingNeuron` call and every ``nnx.Linear`` / ``nnx.Conv`` call is
intercepted and summarised by its path in the model (``"blocks.0.attn.q_neuron"``):

- neuron layers: firing rate ``mean(s != 0)`` over ``[T, B, ..., C]``, dead-neuron fraction (channels
  of the last axis that never fire in the batch), and, when given zero "probes", the gradient that
  reaches the layer's input through the surrogate: ``mean |∂L/∂x|`` ("surrogate-gradient magnitude")
  next to ``mean |∂L/∂s|`` at its output;
- linear / conv layers: multiply-accumulate count ``MACs`` of the call, the measured fraction of
  non-zero inputs, and whether every input is integer-valued (spikes or spike counts), in which
  case the layer's work is accumulates only: ``SOPs = nonzero_fraction · MACs``.

This is the minimal collection the training loop needs; ``spikejax.metrics`` (issue 8) is the
general one, and the two should be unified once it exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.nn.neurons import SpikingNeuron

Array = jax.Array

__all__ = ["Recorder", "probe_shapes", "summarize_layers"]

_ACTIVE: list[Recorder] = []


def _path(p) -> str:
    return ".".join(str(k) for k in p)


class Recorder:
    """Record neuron and linear-layer statistics of ``model`` while the ``with`` block runs.

    Args:
      model: the NNX model (the object that runs inside the block, i.e. after ``nnx.merge``).
      probes: optional ``{path: {"in": zeros[x.shape], "out": zeros[s.shape]}}`` added to each
        neuron's input and output, so that ``jax.grad`` with respect to them gives ``∂L/∂x`` and
        ``∂L/∂s`` per layer (shapes from :func:`probe_shapes`).

    After the block, :attr:`neurons` maps path -> ``{"rate", "dead", "shape"}`` and :attr:`linears`
    maps path -> ``{"macs", "nonzero", "spiking"}`` (traced values under ``jit``).
    """

    def __init__(self, model: nnx.Module, probes: dict[str, dict[str, Array]] | None = None):
        self.paths = {id(m): _path(p) for p, m in nnx.iter_graph(model) if isinstance(m, nnx.Module)}
        self.probes = probes
        self.neurons: dict[str, dict[str, Any]] = {}
        self.linears: dict[str, dict[str, Any]] = {}
        self._saved: list[tuple[type, Callable]] = []

    # --- interception ----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        recorder = self

        def neuron_call(orig):
            def call(module, x, **kwargs):
                path = recorder.paths.get(id(module), f"<unnamed {type(module).__name__}>")
                if recorder.probes is not None and path in recorder.probes:
                    x = x + recorder.probes[path]["in"]
                out = orig(module, x, **kwargs)
                s = out[0] if isinstance(out, tuple) else out
                if recorder.probes is not None and path in recorder.probes:
                    s = s + recorder.probes[path]["out"]
                    out = (s, *out[1:]) if isinstance(out, tuple) else s
                recorder._neuron(path, x, s)
                return out
            return call

        def linear_call(orig, conv: bool):
            def call(module, x, *args, **kwargs):
                y = orig(module, x, *args, **kwargs)
                path = recorder.paths.get(id(module), f"<unnamed {type(module).__name__}>")
                recorder._linear(path, module, x, y, conv)
                return y
            return call

        for cls, wrap in ((SpikingNeuron, neuron_call), (nnx.Linear, lambda o: linear_call(o, False)),
                          (nnx.Conv, lambda o: linear_call(o, True))):
            orig = cls.__call__
            self._saved.append((cls, orig))
            cls.__call__ = wrap(orig)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for cls, orig in reversed(self._saved):
            cls.__call__ = orig
        self._saved.clear()
        _ACTIVE.remove(self)

    # --- statistics ------------------------------------------------------------------------------

    def _neuron(self, path: str, x: Array, s: Array) -> None:
        fired = (s != 0).astype(jnp.float32)
        per_channel = fired.reshape(-1, s.shape[-1]).max(axis=0)
        self.neurons[path] = {"rate": fired.mean(), "dead": 1.0 - per_channel.mean(), "shape": tuple(x.shape)}

    def _linear(self, path: str, module, x: Array, y: Array, conv: bool) -> None:
        if conv:
            groups = getattr(module, "feature_group_count", 1)
            per_out = math.prod(module.kernel_size) * module.in_features // groups
            macs = math.prod(y.shape[:-1]) * per_out * module.out_features
        else:
            macs = math.prod(x.shape[:-1]) * module.in_features * module.out_features
        xf = x.astype(jnp.float32)
        self.linears[path] = {
            "macs": float(macs),
            "nonzero": (xf != 0).astype(jnp.float32).mean(),
            "spiking": jnp.all(xf == jnp.round(xf)),
        }


def probe_shapes(make_model: Callable[..., nnx.Module], run: Callable[[nnx.Module], Any], *args
                 ) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
    """Shapes of every neuron layer's input and output (for zero probes), found by tracing
    ``run(make_model(*args))`` abstractly (``jax.eval_shape``: no FLOPs spent)."""
    found: dict[str, tuple[int, ...]] = {}

    def traced(*a):
        model = make_model(*a)
        with Recorder(model) as rec:
            run(model)
        found.update({p: v["shape"] for p, v in rec.neurons.items()})
        return 0

    jax.eval_shape(traced, *args)
    return {p: {"in": jax.ShapeDtypeStruct(s, jnp.float32), "out": jax.ShapeDtypeStruct(s, jnp.float32)}
            for p, s in found.items()}


def summarize_layers(neurons: dict[str, dict[str, float]], grads: dict[str, dict[str, float]] | None = None
                     ) -> dict[str, float]:
    """Model-level means of the per-layer statistics: ``firing_rate``, ``dead_fraction``,
    ``surrogate_grad`` (mean |∂L/∂x| at neuron inputs) and ``spike_grad`` (mean |∂L/∂s|)."""
    if not neurons:
        return {}
    n = len(neurons)
    out = {
        "firing_rate": sum(float(v["rate"]) for v in neurons.values()) / n,
        "dead_fraction": sum(float(v["dead"]) for v in neurons.values()) / n,
    }
    if grads:
        out["surrogate_grad"] = sum(float(g["in"]) for g in grads.values()) / len(grads)
        out["spike_grad"] = sum(float(g["out"]) for g in grads.values()) / len(grads)
    return out
