"""Spiking MLP and spiking transformer block, on ``[T, B, L, D]``.

Two residual conventions (``shortcut``):

- ``"membrane"`` (Spike-driven Transformer / MS shortcut): the residual stream ``u`` is real-valued
  (membrane-like); each branch starts with a spiking neuron::

      u = u + Attn(SN(N₁(u)));   u = u + MLP(SN(N₂(u)))

- ``"spike"`` (Spikformer / SEW shortcut): the stream carries spikes (sums of spikes); each
  branch ends with a spiking neuron::

      s = s + SN(Attn(N₁(s)));   s = s + SN(MLP(N₂(s)))

and two normalization styles (``norm``): ``"pre"`` (``N₁``, ``N₂`` are ``nnx.LayerNorm``, no
norm inside the branches; position-local, so causal models stay causal in training) or ``"bn"``
(no ``N``; ``nnx.BatchNorm`` after every linear layer inside the branches, as in the papers; call
``model.eval()`` for position-local inference).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.nn.attention import make_attention
from spikejax.nn.layers import apply_optional, linear, make_norm
from spikejax.nn.neurons import make_neuron

Array = jax.Array

__all__ = ["SpikingMLP", "SpikingTransformerBlock", "BLOCK_NORMS", "SHORTCUTS", "time_shared_dropout"]

BLOCK_NORMS = ("pre", "bn")
SHORTCUTS = ("membrane", "spike")


def time_shared_dropout(x: Array, rate: float, key: Array | None) -> Array:
    """Inverted dropout of ``x[T, ...]`` with one keep-mask over ``x.shape[1:]`` shared by all T steps
    (a dropped neuron is dropped for the whole sample, as in multi-step SNN dropout):
    ``y = x · m / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``. Identity when ``key`` is None or rate is 0."""
    if key is None or rate == 0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape[1:])
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class SpikingMLP(nnx.Module):
    """Spiking MLP: ``[in_neuron] → fc1 → norm1 → hidden_neuron → fc2 → norm2 → [out_neuron]``.

    Args:
      d_model: D (input and output width).
      hidden_dim: the hidden width.
      norm: ``"none"``, ``"batch"`` or ``"layer"`` after fc1 and fc2.
      input_neuron / output_neuron: spiking neuron on the input / output (see the module doc).
      neuron, neuron_kwargs, backend: the spiking neurons' kind and settings.
      dtype: compute dtype of fc1 / fc2 and the norms (None: the inputs'); parameters are float32.
      rngs: ``nnx.Rngs``.

    Call: ``x[..., D] -> y[..., D]`` with time first (``[T, ..., D]``) for the neurons.
    """

    def __init__(self, d_model: int, hidden_dim: int, *, norm: str = "none", input_neuron: bool = False,
                 output_neuron: bool = False, neuron: str = "lif", neuron_kwargs: dict[str, Any] | None = None,
                 use_bias: bool = True, backend: str = "xla", dtype: Any = None, rngs: nnx.Rngs):
        for name, val in (("d_model", d_model), ("hidden_dim", hidden_dim)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: expected a positive integer, got {val!r}")
        self.d_model = d_model
        self.hidden_dim = hidden_dim
        kw = {**(neuron_kwargs or {}), "backend": backend}
        self.input_neuron = make_neuron(neuron, num_channels=d_model, **kw) if input_neuron else None
        self.fc1 = linear(d_model, hidden_dim, rngs, dtype, use_bias=use_bias)
        self.norm1 = make_norm(norm, hidden_dim, rngs, dtype)
        self.hidden_neuron = make_neuron(neuron, num_channels=hidden_dim, **kw)
        self.fc2 = linear(hidden_dim, d_model, rngs, dtype, use_bias=use_bias)
        self.norm2 = make_norm(norm, d_model, rngs, dtype)
        self.output_neuron = make_neuron(neuron, num_channels=d_model, **kw) if output_neuron else None

    def __call__(self, x: Array) -> Array:
        if not hasattr(x, "shape") or x.ndim < 2 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected [T, ..., D] with D=d_model={self.d_model}, got shape {tuple(getattr(x, 'shape', ()))}"
            )
        h = apply_optional(self.input_neuron, x)
        h = self.hidden_neuron(apply_optional(self.norm1, self.fc1(h)))
        y = apply_optional(self.norm2, self.fc2(h))
        return apply_optional(self.output_neuron, y)


class SpikingTransformerBlock(nnx.Module):
    """A spiking transformer block on ``[T, B, L, D]`` (see the module docstring for the equations).

    Args:
      d_model: D; num_heads: H (D must be divisible by H).
      attention: ``"ssa"``, ``"sdsa"``, ``"linear"``, ``"sliding"`` or ``"hybrid"``.
      mlp_ratio: hidden width = ``mlp_ratio · D``.
      norm: ``"pre"`` (LayerNorm before each branch) or ``"bn"`` (BatchNorm inside the branches).
      shortcut: ``"membrane"`` or ``"spike"``.
      causal: causal attention (``linear``/``sliding``/``hybrid`` are always causal).
      attention_kwargs: extra arguments of the attention (``window``, ``softmax``, ``scale``, ...).
      neuron, neuron_kwargs, backend: the spiking neurons' kind and settings.
      dtype: compute dtype of every projection and norm (e.g. ``jnp.bfloat16``; None: the inputs');
        parameters are float32 either way.
      dropout: rate of :func:`time_shared_dropout` on each branch output (only with a ``dropout_key``).
      rngs: ``nnx.Rngs``.

    Call: ``block(x[T, B, L, D]) -> [T, B, L, D]``; ``block(x, return_state=True)`` also returns the
    attention's decoding state; ``block(x, dropout_key=key)`` applies dropout (training);
    ``block.decode_step(x[T, B, 1, D], state)`` processes one position.
    """

    def __init__(self, d_model: int, num_heads: int, *, attention: str = "ssa", mlp_ratio: float = 4.0,
                 norm: str = "pre", shortcut: str = "membrane", causal: bool = False,
                 attention_kwargs: dict[str, Any] | None = None, neuron: str = "lif",
                 neuron_kwargs: dict[str, Any] | None = None, backend: str = "xla", dtype: Any = None,
                 dropout: float = 0.0, rngs: nnx.Rngs):
        if norm not in BLOCK_NORMS:
            raise ValueError(f"norm: unknown block norm {norm!r}; expected one of {BLOCK_NORMS}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut: unknown shortcut {shortcut!r}; expected one of {SHORTCUTS}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: expected > 0, got {mlp_ratio}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
        self.norm = norm
        self.shortcut = shortcut
        self.dropout = float(dropout)
        inner = "batch" if norm == "bn" else "none"
        membrane = shortcut == "membrane"
        common = dict(neuron=neuron, neuron_kwargs=neuron_kwargs, backend=backend, dtype=dtype, rngs=rngs)
        akw = dict(attention_kwargs or {})
        if attention in ("ssa", "sdsa"):
            akw["causal"] = causal
        self.attn_norm = make_norm("layer", d_model, rngs, dtype) if norm == "pre" else None
        self.attn = make_attention(attention, d_model, num_heads, norm=inner, input_neuron=membrane,
                                   output_neuron=not membrane, **akw, **common)
        self.mlp_norm = make_norm("layer", d_model, rngs, dtype) if norm == "pre" else None
        hidden = max(1, int(round(mlp_ratio * d_model)))
        self.mlp = SpikingMLP(d_model, hidden, norm=inner, input_neuron=membrane, output_neuron=not membrane,
                              **common)

    @property
    def causal(self) -> bool:
        return self.attn.causal

    def _mlp_branch(self, x: Array, key: Array | None = None) -> Array:
        return x + time_shared_dropout(self.mlp(apply_optional(self.mlp_norm, x)), self.dropout, key)

    def __call__(self, x: Array, *, return_state: bool = False, dropout_key: Array | None = None):
        k_attn, k_mlp = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
        h = apply_optional(self.attn_norm, x)
        if return_state:
            a, state = self.attn(h, return_state=True)
            return self._mlp_branch(x + time_shared_dropout(a, self.dropout, k_attn), k_mlp), state
        return self._mlp_branch(x + time_shared_dropout(self.attn(h), self.dropout, k_attn), k_mlp)

    def init_state(self, batch_size: int, time_steps: int):
        """An empty decoding state (the attention's)."""
        return self.attn.init_state(batch_size, time_steps)

    def decode_step(self, x: Array, state) -> tuple[Array, Any]:
        """One position ``x[T, B, 1, D]`` -> ``(y[T, B, 1, D], new_state)``."""
        a, state = self.attn.decode_step(apply_optional(self.attn_norm, x), state)
        return self._mlp_branch(x + a), state
