"""Functional spiking neurons: each a pure step function, scanned over the leading time axis.

``builtin`` holds the six original neurons (``if_``, ``lif``, ``alif``, ``plif``, ``ternary``,
``multilevel``); ``custom`` turns any step function ``step(params, state, x_t) -> (s_t, state)``
into a neuron (``custom_neuron``); ``dynamics`` holds the further neuron models built on it.
"""

from spikejax.neurons.builtin import NeuronState, alif, if_, lif, multilevel, plif, ternary
from spikejax.neurons.custom import CustomNeuron, custom_neuron

__all__ = ["CustomNeuron", "NeuronState", "alif", "custom_neuron", "if_", "lif", "multilevel", "plif", "ternary"]
