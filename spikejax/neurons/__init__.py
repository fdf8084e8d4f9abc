"""Functional spiking neurons: each a pure step function, scanned over the leading time axis.

``builtin`` holds the six original neurons (``if_``, ``lif``, ``alif``, ``plif``, ``ternary``,
``multilevel``); ``custom`` turns any step function ``step(params, state, x_t) -> (s_t, state)``
into a neuron (``custom_neuron``); ``dynamics`` holds the further neuron models built on it.
"""

from spikejax.neurons.builtin import NeuronState, alif, if_, lif, multilevel, plif, ternary

__all__ = ["NeuronState", "alif", "if_", "lif", "multilevel", "plif", "ternary"]
