"""The generic fused neuron-scan engine: any step function, forward and backward Pallas kernels.

``engine`` (the plan, tiling and the Triton lowering), ``engine_mosaic`` (the same plan lowered
through Mosaic GPU) and ``step_program`` (a step function traced into the primal and VJP programs
the kernels evaluate). Imports only jax; never spikejax.
"""

from pallas_kernels.engine import Residuals, Tiling, default_tiling, scan_backward, scan_forward

__all__ = ["Residuals", "Tiling", "default_tiling", "scan_backward", "scan_forward"]
