"""Functional spiking neurons: each a pure step function, scanned over the leading time axis.

``builtin`` holds the six original neurons (``if_``, ``lif``, ``alif``, ``plif``, ``ternary``,
``multilevel``); ``custom`` turns any step function ``step(params, state, x_t) -> (s_t, state)``
into a neuron (``custom_neuron``); ``dynamics`` holds the further neuron models built on it.
"""

from spikejax.neurons.builtin import NeuronState, alif, if_, lif, multilevel, plif, ternary
from spikejax.neurons.custom import CustomNeuron, custom_neuron
from spikejax.neurons.dynamics import (
    DYNAMICS,
    adex,
    adlif,
    alpha_neuron,
    cuba_li,
    cuba_lif,
    dynamics_step,
    eif,
    izhikevich,
    qif,
    refractory_lif,
)

__all__ = ["DYNAMICS", "CustomNeuron", "NeuronState", "adex", "adlif", "alif", "alpha_neuron", "cuba_li", "cuba_lif",
           "custom_neuron", "dynamics_step", "eif", "if_", "izhikevich", "lif", "multilevel", "plif", "qif",
           "refractory_lif", "ternary"]
