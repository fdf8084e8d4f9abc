"""Pallas GPU kernels of the generalized neuron scan (see spikejax.backends for the contract).

Imports only jax; never spikejax.
"""

from pallas_kernels.neuron_scan import (
    SURROGATE_FORMULAS,
    default_tiling,
    neuron_scan_backward,
    neuron_scan_forward,
)

__all__ = ["SURROGATE_FORMULAS", "default_tiling", "neuron_scan_backward", "neuron_scan_forward"]
