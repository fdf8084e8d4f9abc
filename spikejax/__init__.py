"""spikejax: spiking neural networks in JAX.

Functional neurons (``spikejax.lif`` etc.) are pure scans over the leading time axis with
surrogate gradients; see :mod:`spikejax.neurons`, :mod:`spikejax.surrogate` and
:mod:`spikejax.backends`.
"""

from spikejax import checks, encoding, nn, surrogate
from spikejax.backends import available_backends
from spikejax.neurons import CustomNeuron, NeuronState, alif, custom_neuron, if_, lif, multilevel, plif, ternary

__version__ = "0.1.0"

__all__ = [
    "CustomNeuron",
    "NeuronState",
    "alif",
    "available_backends",
    "checks",
    "custom_neuron",
    "encoding",
    "if_",
    "lif",
    "multilevel",
    "nn",
    "plif",
    "surrogate",
    "ternary",
]
