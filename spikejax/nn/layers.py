"""Layer factories shared by the NNX shells (attention, blocks, models).

- :func:`linear`: an ``nnx.Linear`` that computes in a given dtype with float32 parameters;
- :func:`make_norm`: a norm by name (:data:`NORMS`: ``"none"`` -> no module, ``"batch"`` ->
  ``nnx.BatchNorm``, ``"layer"`` -> ``nnx.LayerNorm``), statistics and parameters float32;
- :func:`apply_optional`: ``module(x)``, or ``x`` when the module is absent (``None``).

Mixed precision: ``dtype`` is the compute and output dtype (``jnp.bfloat16`` for mixed precision,
None: the inputs'); parameters stay float32 either way, so the optimizer runs in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["NORMS", "linear", "make_norm", "apply_optional"]

NORMS = ("none", "batch", "layer")
"""Norm names :func:`make_norm` accepts."""


def make_norm(kind: str, features: int, rngs: nnx.Rngs, dtype: Any = None) -> nnx.Module | None:
    """The norm ``kind`` (one of :data:`NORMS`) over the last axis of width ``features``; None for
    ``"none"``. ``dtype`` is its output dtype (statistics and parameters stay float32)."""
    if kind == "none":
        return None
    if kind == "batch":
        return nnx.BatchNorm(features, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    if kind == "layer":
        return nnx.LayerNorm(features, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    raise ValueError(f"norm: unknown norm {kind!r}; expected one of {NORMS}")


def apply_optional(module: nnx.Module | None, x: jax.Array) -> jax.Array:
    """``module(x)``, or ``x`` unchanged when ``module`` is None (an optional norm or neuron)."""
    return x if module is None else module(x)


def linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype: Any = None, **kwargs) -> nnx.Linear:
    """``nnx.Linear(d_in -> d_out)`` computing in ``dtype`` (None: from the inputs) with float32
    parameters; ``kwargs`` go to ``nnx.Linear`` (``use_bias``, ``preferred_element_type``, ...)."""
    return nnx.Linear(d_in, d_out, dtype=dtype, param_dtype=jnp.float32, rngs=rngs, **kwargs)
