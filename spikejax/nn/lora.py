"""LoRA (Hu et al. 2021): low-rank adapters on a model's projections, and merging them back.

A :class:`LoRALinear` is an ``nnx.Linear`` (same ``kernel`` / ``bias`` parameters, at the same paths)
with two more parameters, ``lora_a[d_in, r]`` and ``lora_b[r, d_out]``::

    y = x W + b + (α / r) · (x A) B

``A`` starts random (normal, std ``1 / sqrt(d_in)``) and ``B`` at zero, so a fresh adapter leaves
the model's outputs exactly as they were. :func:`apply_lora` puts adapters on the chosen projections
of a :class:`~spikejax.nn.SpikingLM` (``attn``: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` of
every block; ``mlp``: ``fc1``, ``fc2``; ``all``: both) in place; :func:`merge_lora` folds each
adapter into its kernel, ``W' = W + (α / r) · A B``, and puts a plain ``nnx.Linear`` back (what
export and sampling use). Being an ``nnx.Linear``, an adapted projection is still counted by the
energy report (its dense ``x W``; the adapter's extra ``r (d_in + d_out)`` MACs per row are not).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LORA_TARGETS", "LoRALinear", "apply_lora", "merge_lora", "lora_parameter_patterns"]

LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "attn": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "mlp": ("fc1", "fc2"),
    "all": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}
"""The projections (attribute names inside the transformer blocks) adapted by each ``targets`` choice."""


class LoRALinear(nnx.Linear):
    """``nnx.Linear`` plus a rank-``rank`` adapter: ``y = x W + b + (alpha / rank) · (x A) B``.

    Built from an existing ``base`` layer (its kernel and bias are shared, not copied); ``rngs`` draws
    ``A``. Shapes: ``x[..., d_in] -> y[..., d_out]``.
    """

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float | None = None, rngs: nnx.Rngs):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected a positive integer, got {rank!r}")
        alpha = float(rank if alpha is None else alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha: expected a finite number > 0, got {alpha!r}")
        d_in, d_out = base.in_features, base.out_features
        super().__init__(d_in, d_out, use_bias=base.use_bias, dtype=base.dtype, param_dtype=base.param_dtype,
                         precision=base.precision, dot_general=base.dot_general, rngs=nnx.Rngs(0),
                         preferred_element_type=getattr(base, "preferred_element_type", None))
        self.kernel = base.kernel
        self.bias = base.bias
        self.rank, self.alpha = rank, alpha
        self.lora_a = nnx.Param(jax.random.normal(rngs.params(), (d_in, rank), base.param_dtype) / math.sqrt(d_in))
        self.lora_b = nnx.Param(jnp.zeros((rank, d_out), base.param_dtype))

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        dt = y.dtype
        a, b = self.lora_a[...].astype(dt), self.lora_b[...].astype(dt)
        return y + (self.scale * ((x.astype(dt) @ a) @ b)).astype(dt)

    def merged(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` with ``W + (alpha / rank) · A B`` (float32 sum) and the same bias."""
        out = nnx.Linear(self.in_features, self.out_features, use_bias=self.use_bias, dtype=self.dtype,
                         param_dtype=self.param_dtype, precision=self.precision, dot_general=self.dot_general,
                         rngs=nnx.Rngs(0), preferred_element_type=getattr(self, "preferred_element_type", None))
        w = self.kernel[...].astype(jnp.float32) + self.scale * (
            self.lora_a[...].astype(jnp.float32) @ self.lora_b[...].astype(jnp.float32))
        out.kernel = nnx.Param(w.astype(self.kernel[...].dtype))
        if self.use_bias:
            out.bias = nnx.Param(self.bias[...])
        return out


def _slots(model: nnx.Module, names: tuple[str, ...], kind: type) -> list[tuple[Any, str | int, nnx.Module]]:
    """``(parent, key, child)`` for every child of type ``kind`` named one of ``names`` inside ``blocks``."""
    out = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, kind) and path and path[0] == "blocks" and path[-1] in names:
            parent = model
            for p in path[:-1]:
                parent = parent[p] if isinstance(p, int) else getattr(parent, p)
            out.append((parent, path[-1], node))
    return out


def apply_lora(model: nnx.Module, *, rank: int, targets: str = "attn", alpha: float | None = None,
               seed: int = 0) -> nnx.Module:
    """Put :class:`LoRALinear` adapters on ``targets`` (:data:`LORA_TARGETS`) of every transformer block
    of ``model`` in place (and return it); ``alpha`` default ``rank`` (scale 1); ``seed`` draws the
    ``A`` matrices. ``ValueError`` for an unknown target or a model with no such projection."""
    if targets not in LORA_TARGETS:
        raise ValueError(f"lora_targets: expected one of {sorted(LORA_TARGETS)}, got {targets!r}")
    slots = _slots(model, LORA_TARGETS[targets], nnx.Linear)
    slots = [s for s in slots if not isinstance(s[2], LoRALinear)]
    if not slots:
        raise ValueError(f"lora_targets: {type(model).__name__} has no {targets} projections "
                         f"{LORA_TARGETS[targets]} to adapt")
    rngs = nnx.Rngs(seed)
    for parent, key, child in slots:
        setattr(parent, key, LoRALinear(child, rank=rank, alpha=alpha, rngs=rngs))
    return model


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every :class:`LoRALinear` of ``model`` into a plain ``nnx.Linear`` in place (and return it)."""
    for parent, key, child in _slots(model, LORA_TARGETS["all"], LoRALinear):
        setattr(parent, key, child.merged())
    return model


def lora_parameter_patterns() -> tuple[str, ...]:
    """Glob patterns of the adapter parameters' dotted names (``blocks.0.attn.q_proj.lora_a``)."""
    return ("*.lora_a", "*.lora_b")
