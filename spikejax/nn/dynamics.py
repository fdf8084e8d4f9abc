"""The NNX layers of the neuron models in :mod:`spikejax.neurons.dynamics` (``CubaLIF``, ``Alpha``,
``AdLIF``, ``RefractoryLIF``, ``Izhikevich``, ``EIF``, ``AdEx``, ``QIF``, ``CubaLI``): kinds of the one
neuron layer, :class:`spikejax.nn.SpikingNeuron`, defined in :mod:`spikejax.nn.neurons`; this module
keeps their import path (each name is read from there)."""

from spikejax.nn import neurons as _neurons

_NAMES = ("AdEx", "AdLIF", "Alpha", "CubaLI", "CubaLIF", "DynamicsNeuron", "EIF", "Izhikevich", "QIF",
          "RefractoryLIF")


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(_neurons, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
