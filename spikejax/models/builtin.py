"""Registry entries of spikejax's own models: ``spikformer`` (:class:`~spikejax.nn.Spikformer`)
and ``spiking_lm`` (:class:`~spikejax.nn.SpikingLM`); the keyword arguments are the config fields."""

from __future__ import annotations

from flax import nnx

from spikejax.models.registry import register
from spikejax.nn.config import SpikformerConfig, SpikingLMConfig
from spikejax.nn.models import Spikformer, SpikingLM


@register("spikformer")
def spikformer(*, rngs: nnx.Rngs, **config) -> Spikformer:
    """:class:`~spikejax.nn.Spikformer` with ``SpikformerConfig(**config)``."""
    return Spikformer(SpikformerConfig.from_dict(config), rngs=rngs)


@register("spiking_lm")
def spiking_lm(*, rngs: nnx.Rngs, **config) -> SpikingLM:
    """:class:`~spikejax.nn.SpikingLM` with ``SpikingLMConfig(**config)``."""
    return SpikingLM(SpikingLMConfig.from_dict(config), rngs=rngs)
