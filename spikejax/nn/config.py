"""Model configs: small dataclasses that validate, build their model, and round-trip to dict/JSON.

    cfg = SpikingLMConfig(vocab_size=256, d_model=64, num_heads=4, attention="hybrid")
    model = cfg.build(seed=0)                       # or SpikingLM(cfg, rngs=nnx.Rngs(0))
    assert SpikingLMConfig.from_json(cfg.to_json()) == cfg
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import numpy as np
from flax import nnx

__all__ = ["SpikingLMConfig", "SpikformerConfig", "DTYPES"]

DTYPES = ("float32", "bfloat16")
"""Compute dtypes a model config accepts (``dtype``): parameters always stay float32."""


def _pos_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {tuple(options)}")


class _ConfigMixin:
    """dict / JSON round trip shared by the configs."""

    model_name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of every field (JSON-serializable)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict, got {type(data)!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"data: unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(names)}")
        return cls(**data)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    def __hash__(self) -> int:
        # configs are values (static metadata of a model's graph, hashed by jax.jit caches);
        # do not mutate one after building a model from it
        return hash((type(self).__name__, self.to_json()))

    @property
    def compute_dtype(self):
        """``dtype`` as a numpy/JAX dtype (``jnp.float32`` or ``jnp.bfloat16``)."""
        import jax.numpy as jnp

        return jnp.dtype(self.dtype)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def build(self, rngs: nnx.Rngs | None = None, *, seed: int = 0):
        """Build the model :data:`model_name` of :mod:`spikejax.nn.models` with this config
        (initializers from ``rngs``, or ``nnx.Rngs(seed)``)."""
        from spikejax.nn import models

        return getattr(models, self.model_name)(self, rngs=rngs if rngs is not None else nnx.Rngs(seed))


def _validate_common(cfg) -> None:
    from spikejax.nn.attention import ATTENTIONS
    from spikejax.nn.blocks import BLOCK_NORMS, SHORTCUTS
    from spikejax.nn.neurons import NEURONS

    for name in ("d_model", "num_heads", "num_layers", "time_steps"):
        _pos_int(name, getattr(cfg, name))
    if cfg.d_model % cfg.num_heads:
        raise ValueError(f"d_model: {cfg.d_model} is not divisible by num_heads={cfg.num_heads}")
    if not cfg.mlp_ratio > 0:
        raise ValueError(f"mlp_ratio: expected > 0, got {cfg.mlp_ratio}")
    _choice("attention", cfg.attention, ATTENTIONS)
    _choice("norm", cfg.norm, BLOCK_NORMS)
    _choice("shortcut", cfg.shortcut, SHORTCUTS)
    _choice("neuron", cfg.neuron, NEURONS)
    if not isinstance(cfg.dtype, str):  # accept jnp.bfloat16 / np.dtype("float32"); stored by name
        try:
            name = np.dtype(cfg.dtype).name
        except TypeError:
            name = None
        if name in DTYPES:
            cfg.dtype = name
    _choice("dtype", cfg.dtype, DTYPES)
    for name in ("attention_kwargs", "neuron_kwargs"):
        if not isinstance(getattr(cfg, name), dict):
            raise TypeError(f"{name}: expected a dict, got {type(getattr(cfg, name))!r}")


@dataclasses.dataclass
class SpikingLMConfig(_ConfigMixin):
    """Config of :class:`spikejax.nn.SpikingLM` (causal spiking language model).

    Fields: ``vocab_size``; ``d_model`` (D), ``num_heads`` (H | D), ``num_layers``, ``mlp_ratio``;
    ``time_steps`` (T, direct encoding of the embeddings); ``max_len`` (learned positions);
    ``attention`` (``"linear"``, ``"sliding"``, ``"hybrid"``, ``"ssa"``, ``"sdsa"``; always causal) and
    ``attention_kwargs`` (e.g. ``{"window": 16, "softmax": True, "mix_norm": "layer"}``); ``norm`` (``"pre"`` or
    ``"bn"``); ``shortcut`` (``"membrane"`` or ``"spike"``); ``neuron`` and ``neuron_kwargs``;
    ``backend``; ``pos_embedding``; ``dtype`` (the compute dtype, see below).

    Mixed precision: ``dtype="bfloat16"`` runs activations and the matmuls / convolutions of every
    ``nnx.Linear``, ``nnx.Conv`` and norm in bfloat16 while the parameters (and so the optimizer)
    stay float32. Numerically sensitive parts stay float32: LayerNorm / BatchNorm statistics, neuron
    membranes (spikes come out in bfloat16), the attention normalisers, softmax and linear
    attention's running sums, the embedding gather (so its gradient accumulates in float32) and the
    logits (the head accumulates in float32; the model returns float32 logits). Default ``"float32"``.

    ``dropout``: rate of inverted dropout on the embedding and on the output of every attention and
    MLP branch, applied only when the model is called with a ``dropout_key`` (training); one mask per
    neuron shared by all T time steps. Default 0 (none).

    Firing at initialisation: with the default neuron (LIF, τ = 2, θ = 1: ``H = V/2 + X/2``) the
    Q/K/V, attention and MLP-hidden neurons of a fresh model are silent (measured: rate 0.000 for
    ``SpikingLMConfig(vocab_size=64, max_len=64)`` and every attention kind; only the block-input
    neurons fire, ~7%), so the first gradients flow through the surrogate alone. For training,
    ``neuron_kwargs={"beta": 0.5, "threshold": 0.5}`` (``H = V/2 + X``, what ``spikejax train``
    uses) gives rates of ~0.2-0.35 at initialisation (``{"threshold": 0.5}`` for ``if`` / ``plif``).
    The default is kept as the plain neuron's so that a config means the same model it always did.
    """

    vocab_size: int = 256
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: float = 4.0
    time_steps: int = 4
    max_len: int = 256
    attention: str = "linear"
    attention_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    norm: str = "pre"
    shortcut: str = "membrane"
    neuron: str = "lif"
    neuron_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    backend: str = "xla"
    pos_embedding: bool = True
    dtype: str = "float32"
    dropout: float = 0.0

    model_name: ClassVar[str] = "SpikingLM"
    __hash__ = _ConfigMixin.__hash__

    def __post_init__(self):
        _pos_int("vocab_size", self.vocab_size)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        _pos_int("max_len", self.max_len)
        _validate_common(self)


@dataclasses.dataclass
class SpikformerConfig(_ConfigMixin):
    """Config of :class:`spikejax.nn.Spikformer` (image classifier).

    Fields: ``image_size`` (square H = W), ``in_channels``, ``patch_size`` (divides
    ``image_size``), ``num_classes``; ``d_model``, ``num_heads``, ``num_layers``, ``mlp_ratio``,
    ``time_steps``; ``attention`` (default ``"ssa"``, non-causal) and ``attention_kwargs``;
    ``norm`` (default ``"bn"``), ``shortcut`` (default ``"spike"``), ``neuron``, ``neuron_kwargs``,
    ``backend``, ``dtype`` (compute dtype, ``"float32"`` or ``"bfloat16"``; parameters stay float32,
    logits are float32; see :class:`SpikingLMConfig`). With the default neuron (LIF, τ = 2, θ = 1) a
    fresh model fires sparsely (measured on 8×8×1 inputs: Q/K/V ~4%, the attention neuron 0%); see
    :class:`SpikingLMConfig` for ``neuron_kwargs`` that fire at initialisation.
    """

    image_size: int = 32
    in_channels: int = 3
    patch_size: int = 4
    num_classes: int = 10
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: float = 4.0
    time_steps: int = 4
    attention: str = "ssa"
    attention_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    norm: str = "bn"
    shortcut: str = "spike"
    neuron: str = "lif"
    neuron_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    backend: str = "xla"
    dtype: str = "float32"

    model_name: ClassVar[str] = "Spikformer"
    __hash__ = _ConfigMixin.__hash__

    def __post_init__(self):
        for name in ("image_size", "in_channels", "patch_size", "num_classes"):
            _pos_int(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size: {self.image_size} is not divisible by patch_size={self.patch_size}")
        _validate_common(self)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2
