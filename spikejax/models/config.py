"""The fields every zoo CNN config shares (:class:`VisionConfig`), validated once.

:class:`~spikejax.models.resnet.ResNetConfig`, :class:`~spikejax.models.resnet.MSResNetConfig` and
:class:`~spikejax.models.vgg.VGGConfig` are frozen dataclasses over it (change one with
``dataclasses.replace``, which validates again); these fields are keyword-only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from spikejax.models.sj_neurons import NeuronSpec
from spikejax.nn.config import DTYPES
from spikejax.remat import check_remat

__all__ = ["VisionConfig", "check_dtype", "check_int"]


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` if it is an integer ``>= low`` (not a bool), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def check_dtype(value: Any) -> str:
    """The compute dtype's name (``"float32"`` or ``"bfloat16"``; parameters stay float32)."""
    try:
        name = jnp.dtype(value).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {value!r}")
    return name


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionConfig:
    """Fields of every zoo CNN config (keyword-only).

    Attributes:
      num_classes: classifier outputs.
      T: time steps for images ``[B, H, W, C]`` (SpikingJelly's models take ``[T, B, C, H, W]``).
      in_channels: image channels (SpikingJelly: 3).
      neuron: the neuron of every spiking layer (:class:`~spikejax.models.sj_neurons.NeuronSpec`).
      dtype: compute dtype of the convolutions, linear layers and activations (``"bfloat16"`` for
        mixed precision; parameters, BatchNorm statistics and logits stay float32); a numpy / JAX
        dtype is stored by name.
      remat: training memory, one of :data:`spikejax.remat.REMAT_MODES` (what each residual block,
        or each VGG stage, keeps for the backward pass; same gradients in every mode).
    """

    num_classes: int = 1000
    T: int = 4
    in_channels: int = 3
    neuron: NeuronSpec = dataclasses.field(default_factory=lambda: NeuronSpec(detach_reset=True))
    dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        check_remat(self.remat)
        for name in ("num_classes", "T", "in_channels"):
            check_int(name, getattr(self, name))
        if not isinstance(self.neuron, NeuronSpec):
            raise TypeError(f"neuron: expected a NeuronSpec, got {type(self.neuron)!r}")
