"""Model configs: frozen dataclasses, validated on construction, that build their model and
round-trip to dict/JSON. They are values: change one with ``dataclasses.replace`` (validated again).

    cfg = SpikingLMConfig(vocab_size=256, d_model=64, num_heads=4, attention="hybrid")
    model = cfg.build(seed=0)                       # or SpikingLM(cfg, rngs=nnx.Rngs(0))
    wide = dataclasses.replace(cfg, d_model=128)    # a new config; cfg is unchanged
    assert SpikingLMConfig.from_json(cfg.to_json()) == cfg

The fields the two transformer models share are defined once, in :class:`TransformerConfig`
(keyword-only). This module does not import the models: each model class names the config it is
built from with ``@builds(ConfigClass)`` (:mod:`spikejax.nn.models`), which :meth:`ModelConfig.build` reads.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
from flax import nnx

from spikejax.nn.attention import ATTENTIONS
from spikejax.nn.blocks import BLOCK_NORMS, SHORTCUTS
from spikejax.nn.neurons import MODEL_NEURONS
from spikejax.remat import check_remat

__all__ = ["ModelConfig", "TransformerConfig", "SpikingLMConfig", "SpikformerConfig", "DTYPES", "builds"]

DTYPES = ("float32", "bfloat16")
"""Compute dtypes a model config accepts (``dtype``): parameters always stay float32."""

_MODELS: dict[type, type] = {}  # config class -> the model class built from it (filled by @builds)


def builds(config_cls: type):
    """Class decorator: ``config_cls(...).build()`` builds the decorated model class, called as
    ``model_cls(config, rngs=rngs)``. Each config class builds one model class."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, ModelConfig)):
        raise TypeError(f"config_cls: expected a ModelConfig subclass, got {config_cls!r}")

    def register(model_cls: type) -> type:
        if _MODELS.get(config_cls, model_cls) is not model_cls:
            raise ValueError(f"config_cls: {config_cls.__name__} already builds {_MODELS[config_cls].__name__}")
        _MODELS[config_cls] = model_cls
        return model_cls

    return register


def _pos_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {tuple(options)}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the model configs: dict / JSON round trip, a hash of the value, :meth:`build`."""

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
        # a config is static metadata of a model's graph (hashed by jax.jit caches); its dict fields
        # are copies owned by the config, so hash it by value
        return hash((type(self).__name__, self.to_json()))

    def replace(self, **changes):
        """``dataclasses.replace(self, **changes)``: a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def build(self, rngs: nnx.Rngs | None = None, *, seed: int = 0):
        """The model this config describes (the class registered with :func:`builds`), with
        initializers from ``rngs``, or ``nnx.Rngs(seed)``."""
        model_cls = _MODELS.get(type(self))
        if model_cls is None:
            raise LookupError(f"{type(self).__name__}: no model class is registered with @builds for this config "
                              "(import spikejax.nn first)")
        return model_cls(self, rngs=rngs if rngs is not None else nnx.Rngs(seed))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig(ModelConfig):
    """Fields shared by the spiking transformer configs (keyword-only; see :class:`SpikingLMConfig`):
    ``d_model`` (D), ``num_heads`` (H | D), ``num_layers``, ``mlp_ratio``, ``time_steps`` (T);
    ``attention`` and ``attention_kwargs``; ``norm``; ``shortcut``; ``neuron`` and ``neuron_kwargs``;
    ``backend``; ``dtype`` (compute dtype, one of :data:`DTYPES`; a numpy / JAX dtype is stored by
    name); ``remat`` (training memory, :data:`spikejax.remat.REMAT_MODES`)."""

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: float = 4.0
    time_steps: int = 4
    attention: str = "linear"
    attention_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    norm: str = "pre"
    shortcut: str = "membrane"
    neuron: str = "lif"
    neuron_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    backend: str = "xla"
    dtype: str = "float32"
    remat: str = "none"

    __hash__ = ModelConfig.__hash__

    def __post_init__(self):
        for name in ("d_model", "num_heads", "num_layers", "time_steps"):
            _pos_int(name, getattr(self, name))
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model: {self.d_model} is not divisible by num_heads={self.num_heads}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: expected > 0, got {self.mlp_ratio}")
        _choice("attention", self.attention, ATTENTIONS)
        _choice("norm", self.norm, BLOCK_NORMS)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        _choice("neuron", self.neuron, MODEL_NEURONS)
        if not isinstance(self.dtype, str):  # accept jnp.bfloat16 / np.dtype("float32"); stored by name
            try:
                name = np.dtype(self.dtype).name
            except TypeError:
                name = None
            if name in DTYPES:
                object.__setattr__(self, "dtype", name)
        _choice("dtype", self.dtype, DTYPES)
        for name in ("attention_kwargs", "neuron_kwargs"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise TypeError(f"{name}: expected a dict, got {type(value)!r}")
            object.__setattr__(self, name, dict(value))  # the config's own copy
        check_remat(self.remat)

    @property
    def compute_dtype(self):
        """``dtype`` as a numpy/JAX dtype (``jnp.float32`` or ``jnp.bfloat16``)."""
        import jax.numpy as jnp

        return jnp.dtype(self.dtype)


@dataclasses.dataclass(frozen=True)
class SpikingLMConfig(TransformerConfig):
    """Config of :class:`spikejax.nn.SpikingLM` (causal spiking language model).

    Fields: ``vocab_size``; ``d_model`` (D), ``num_heads`` (H | D), ``num_layers``, ``mlp_ratio``;
    ``time_steps`` (T, direct encoding of the embeddings); ``max_len`` (learned positions);
    ``attention`` (``"linear"``, ``"sliding"``, ``"hybrid"``, ``"ssa"``, ``"sdsa"``; always causal) and
    ``attention_kwargs`` (e.g. ``{"window": 16, "softmax": True, "mix_norm": "layer"}``); ``norm`` (``"pre"`` or
    ``"bn"``); ``shortcut`` (``"membrane"`` or ``"spike"``); ``neuron`` and ``neuron_kwargs``;
    ``backend``; ``pos_embedding``; ``dtype`` (the compute dtype, see below). Every field but
    ``vocab_size`` is keyword-only. Frozen: ``dataclasses.replace(cfg, d_model=128)`` makes a changed copy.

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

    ``remat``: what each block keeps for the backward pass (training memory), one of
    :data:`spikejax.remat.REMAT_MODES`: ``"none"`` (everything, default), ``"block"`` (its input; the
    block is recomputed), ``"spikes"`` (its input and its spikes bit-packed), ``"offload"`` (packed
    spikes, the input in host memory). Same gradients in every mode; see :mod:`spikejax.remat`.
    """

    vocab_size: int = 256
    _: dataclasses.KW_ONLY
    max_len: int = 256
    pos_embedding: bool = True
    dropout: float = 0.0

    __hash__ = ModelConfig.__hash__

    def __post_init__(self):
        _pos_int("vocab_size", self.vocab_size)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        _pos_int("max_len", self.max_len)
        super().__post_init__()


@dataclasses.dataclass(frozen=True)
class SpikformerConfig(TransformerConfig):
    """Config of :class:`spikejax.nn.Spikformer` (image classifier).

    Fields: ``image_size`` (square H = W), ``in_channels``, ``patch_size`` (divides
    ``image_size``), ``num_classes``; the keyword-only :class:`TransformerConfig` fields ``d_model``,
    ``num_heads``, ``num_layers``, ``mlp_ratio``, ``time_steps``; ``attention`` (default ``"ssa"``,
    non-causal) and ``attention_kwargs``; ``norm`` (default ``"bn"``), ``shortcut`` (default
    ``"spike"``), ``neuron``, ``neuron_kwargs``, ``backend``, ``dtype`` (compute dtype, ``"float32"``
    or ``"bfloat16"``; parameters stay float32, logits are float32; see :class:`SpikingLMConfig`).
    With the default neuron (LIF, τ = 2, θ = 1) a fresh model fires sparsely (measured on 8×8×1
    inputs: Q/K/V ~4%, the attention neuron 0%); see :class:`SpikingLMConfig` for ``neuron_kwargs``
    that fire at initialisation. ``remat``: training memory mode (:data:`spikejax.remat.REMAT_MODES`,
    see :class:`SpikingLMConfig`).
    """

    image_size: int = 32
    in_channels: int = 3
    patch_size: int = 4
    num_classes: int = 10
    _: dataclasses.KW_ONLY
    attention: str = "ssa"  # the image model's defaults of three shared fields
    norm: str = "bn"
    shortcut: str = "spike"

    __hash__ = ModelConfig.__hash__

    def __post_init__(self):
        for name in ("image_size", "in_channels", "patch_size", "num_classes"):
            _pos_int(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size: {self.image_size} is not divisible by patch_size={self.patch_size}")
        super().__post_init__()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2
