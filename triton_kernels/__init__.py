"""Triton kernels of the generalized neuron scan, called through jax_triton.triton_call.

Imports only jax, triton and jax_triton (lazily); never spikejax.
"""
