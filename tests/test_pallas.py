"""Pallas-specific checks: the surrogate formulas kept next to the kernel equal
``spikejax.surrogate``, and non-default tilings give the same results. The comparison of every
neuron, option and gradient against the ``lax.scan`` reference is in test_kernel_backends.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from spikejax import surrogate as sg

SURROGATES = sorted(sg.SURROGATES)

# --- the surrogate formulas next to the kernel equal spikejax.surrogate ------------------------


@pytest.mark.parametrize("shape", SURROGATES)
def test_kernel_surrogate_formulas_match_spikejax(shape):
    xs = jax.random.normal(jax.random.key(3), (513,)) * 1.5
    for alpha in (0.5, sg.SURROGATES[shape][1], 7.0):
        ours = pallas_kernels.SURROGATE_FORMULAS[shape]
        ref = sg.SURROGATES[shape][0]
        for f_ours, f_ref in zip(ours, ref, strict=True):
            np.testing.assert_allclose(f_ours(xs, alpha), f_ref(xs, alpha), rtol=1e-5, atol=1e-6)


# --- tilings ------------------------------------------------------------------------------------


def test_tiling_overrides_roundtrip():
    """Non-default block / chunk / checkpoint sizes give the same results (interpret mode)."""
    x = jax.random.normal(jax.random.key(1001), (13, 70)) + 0.3
    m = x.shape[1]
    prm = [jnp.full((m,), 0.8), jnp.full((m,), 1.0), jnp.full((m,), 0.2), jnp.full((m,), 0.9),
           jnp.full((m,), 2.0)]
    cfg = dict(kind="binary", levels=1, adaptive=True, decay_input=False, reset="subtract",
               detach_reset=False, reset_delay=False, surrogate="atan", return_membrane=False,
               interpret=True)
    z = jnp.zeros((m,))
    outs = []
    for tiling in (dict(), dict(block_m=32, chunk=4), dict(block_m=128, chunk=16, checkpoint_every=8),
                   dict(block_m=64, chunk=6, checkpoint_every=3)):
        s, v, a, _, res = pallas_kernels.neuron_scan_forward(x, z, z, *prm, **cfg, **tiling)
        g = pallas_kernels.neuron_scan_backward(res, jnp.cos(x), z + 1, z + 1, None, **cfg, **tiling)
        outs.append((s, v, a, *g))
    for other in outs[1:]:
        for a, b in zip(other, outs[0], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
