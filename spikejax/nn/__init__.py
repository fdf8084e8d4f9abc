"""Flax NNX spiking modules: thin shells over the functional core of :mod:`spikejax`.

- neuron layers (:mod:`spikejax.nn.neurons`): :class:`IF`, :class:`LIF`, :class:`ALIF`,
  :class:`PLIF`, :class:`Ternary`, :class:`MultiLevel`, multi-step over ``[T, ...]`` with an optional
  streaming state; further models (:mod:`spikejax.nn.dynamics`): :class:`CubaLIF`, :class:`Alpha`,
  :class:`AdLIF`, :class:`RefractoryLIF`, :class:`Izhikevich`, :class:`EIF`, :class:`AdEx`, :class:`QIF`
  and the readout :class:`CubaLI`; :class:`RecurrentSpiking` (:mod:`spikejax.nn.recurrent`) feeds any
  neuron's spikes back through ``W_rec``;
- encoders as modules (:mod:`spikejax.nn.encoders`): :class:`DirectEncoder`, :class:`RateEncoder`, ...;
- attention on spikes ``[T, B, L, D]`` (:mod:`spikejax.nn.attention`);
- blocks (:mod:`spikejax.nn.blocks`) and models (:mod:`spikejax.nn.models`) with their configs
  (:mod:`spikejax.nn.config`).
"""

from spikejax.nn.attention import (
    ATTENTIONS,
    LINEAR_ATTENTION_EPS,
    HybridSpikeAttention,
    HybridState,
    LinearAttentionState,
    LinearSpikeAttention,
    SDSAState,
    SlidingWindowSpikeAttention,
    SlidingWindowState,
    SpikeAttentionBase,
    SpikeDrivenSelfAttention,
    SpikingAttention,
    SpikingSelfAttention,
    linear_attention_core,
    make_attention,
    sliding_window_core,
    ssa_core,
)
from spikejax.nn.blocks import SpikingMLP, SpikingTransformerBlock
from spikejax.nn.config import DTYPES, SpikformerConfig, SpikingLMConfig
from spikejax.nn.encoders import (
    DeltaEncoder,
    DirectEncoder,
    LatencyEncoder,
    PopulationEncoder,
    RateEncoder,
)
from spikejax.nn.models import Spikformer, SpikingLM, SpikingLMState, SpikingPatchEmbed
from spikejax.nn.neurons import (
    ALIF,
    EIF,
    IF,
    LIF,
    NEURONS,
    PLIF,
    QIF,
    AdEx,
    AdLIF,
    Alpha,
    CubaLI,
    CubaLIF,
    DynamicsNeuron,
    Izhikevich,
    MultiLevel,
    NeuronStateVar,
    RefractoryLIF,
    SpikingNeuron,
    Ternary,
    make_neuron,
    reset_states,
)
from spikejax.nn.recurrent import RecurrentSpiking

__all__ = [
    "AdEx",
    "AdLIF",
    "ALIF",
    "Alpha",
    "ATTENTIONS",
    "CubaLI",
    "CubaLIF",
    "DeltaEncoder",
    "DirectEncoder",
    "DTYPES",
    "DynamicsNeuron",
    "EIF",
    "HybridSpikeAttention",
    "HybridState",
    "IF",
    "Izhikevich",
    "LatencyEncoder",
    "LIF",
    "linear_attention_core",
    "LINEAR_ATTENTION_EPS",
    "LinearAttentionState",
    "LinearSpikeAttention",
    "make_attention",
    "make_neuron",
    "MultiLevel",
    "NEURONS",
    "NeuronStateVar",
    "PLIF",
    "PopulationEncoder",
    "QIF",
    "RateEncoder",
    "RecurrentSpiking",
    "RefractoryLIF",
    "reset_states",
    "SDSAState",
    "sliding_window_core",
    "SlidingWindowSpikeAttention",
    "SlidingWindowState",
    "SpikeAttentionBase",
    "SpikeDrivenSelfAttention",
    "Spikformer",
    "SpikformerConfig",
    "SpikingAttention",
    "SpikingLM",
    "SpikingLMConfig",
    "SpikingLMState",
    "SpikingMLP",
    "SpikingNeuron",
    "SpikingPatchEmbed",
    "SpikingSelfAttention",
    "SpikingTransformerBlock",
    "ssa_core",
    "Ternary",
]
