"""Triton kernels of the generalized neuron scan, called through jax_triton.triton_call.

Imports only jax, triton and jax_triton (triton guarded, jax_triton lazily, so this package imports
on machines without them); never spikejax. See :mod:`triton_kernels.neuron_scan`.
"""

from triton_kernels.neuron_scan import neuron_scan_backward, neuron_scan_forward

__all__ = ["neuron_scan_forward", "neuron_scan_backward"]
