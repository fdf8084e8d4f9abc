"""The NNX layers of the neuron models in :mod:`spikejax.neurons.dynamics` (``CubaLIF``, ``Alpha``,
``AdLIF``, ``RefractoryLIF``, ``Izhikevich``, ``EIF``, ``AdEx``, ``QIF``, ``CubaLI``): kinds of the one
neuron layer, :class:`spikejax.nn.SpikingNeuron`, defined in :mod:`spikejax.nn.neurons`; this module
keeps their import path."""

from spikejax.nn.neurons import (
    EIF,
    QIF,
    AdEx,
    AdLIF,
    Alpha,
    CubaLI,
    CubaLIF,
    DynamicsNeuron,
    Izhikevich,
    RefractoryLIF,
)

__all__ = ["AdEx", "AdLIF", "Alpha", "CubaLI", "CubaLIF", "DynamicsNeuron", "EIF", "Izhikevich", "QIF",
           "RefractoryLIF"]
