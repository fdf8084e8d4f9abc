"""Training glue around :mod:`spikejax.metrics`: zero-probe shapes and the model-level means logged
during training.

The probe step (:func:`spikejax.train.steps.make_steps`) runs the loss under
:func:`spikejax.metrics.record_layers` with zero probes on every neuron layer and differentiates
with respect to them: per layer, ``mean |∂L/∂x|`` at the neuron input (the gradient that crosses the
surrogate: "surrogate-gradient magnitude") and ``mean |∂L/∂s|`` at its output, next to the firing
rate ``mean(s ≠ 0)`` over ``[T, B, ..., C]`` and the dead fraction (channels of the last axis that
never fire in the batch) of :class:`spikejax.metrics.SpikeStats`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from spikejax.metrics import SpikeStats, record_layers

__all__ = ["probe_shapes", "summarize_layers", "dotted"]


def dotted(path: str) -> str:
    """A metrics path as logged by training: ``"blocks/0/mlp/hidden_neuron"`` -> ``"blocks.0.mlp.hidden_neuron"``."""
    return path.replace("/", ".")


def probe_shapes(make_model: Callable[..., nnx.Module], run: Callable[[nnx.Module], Any], *args
                 ) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
    """``{neuron path: {"in": x, "out": s}}`` shapes and dtypes of every neuron layer's input and
    output (for zero probes), found by tracing ``run(make_model(*args))`` abstractly
    (``jax.eval_shape``: no FLOPs spent)."""
    found: dict[str, tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]] = {}

    def traced(*a):
        model = make_model(*a)
        with record_layers(model, synops=False) as rec:
            run(model)
        found.update(rec.neuron_io)
        return 0

    jax.eval_shape(traced, *args)
    return {p: {"in": x, "out": s} for p, (x, s) in found.items()}


def summarize_layers(stats: dict[str, SpikeStats], grads: dict[str, dict[str, float]] | None = None
                     ) -> dict[str, float]:
    """Model-level means over neuron layers: ``firing_rate``, ``dead_fraction``, ``surrogate_grad``
    (mean |∂L/∂x| at neuron inputs) and ``spike_grad`` (mean |∂L/∂s| at their outputs)."""
    if not stats:
        return {}
    n = len(stats)
    out = {
        "firing_rate": sum(s.firing_rate for s in stats.values()) / n,
        "dead_fraction": sum(s.dead_fraction for s in stats.values()) / n,
    }
    if grads:
        out["surrogate_grad"] = sum(float(g["in"]) for g in grads.values()) / len(grads)
        out["spike_grad"] = sum(float(g["out"]) for g in grads.values()) / len(grads)
    return out
