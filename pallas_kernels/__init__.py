"""Pallas GPU kernels of the generalized neuron scan (see spikejax.backends for the contract).

Imports only jax; never spikejax.
"""
