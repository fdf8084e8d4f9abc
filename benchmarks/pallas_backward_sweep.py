"""Launch sweep of the Pallas backward kernel (LIF, f32, direct kernel calls) at the large shapes.

For each checkpoint interval K the forward runs once with the default tiling to produce the
residuals; then every (block_m, num_warps, evict-first, num_stages) configuration of the backward is
timed like ``benchmarks.neuron_scan`` (amortised, N buffers). Printed per line: backward ms and the
ratio to the floor of its essential bytes, x + g_s + g_x at 3.0 TB/s.

Usage (GPU)::

    python -m benchmarks.pallas_backward_sweep [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp

import pallas_kernels as pk
from benchmarks.neuron_scan import KERNEL_CFG as CFG
from benchmarks.neuron_scan import _inputs, _n_buffers, _time_jax

# (block_m, num_warps, evict_first, num_stages); None = default_tiling's choice
CONFIGS = [(None, None, None, None), (1024, 8, True, None), (1024, 8, False, None), (512, 4, True, None),
           (512, 4, False, None), (2048, 8, True, None), (256, 2, True, None), (1024, 4, True, None),
           (512, 8, True, None), (1024, 8, True, 2), (2048, 16, True, None), (1024, 16, True, None),
           (512, 8, False, None), (256, 4, True, None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    dtype = jnp.dtype(ap.parse_args().dtype)
    prm = [jnp.full((1,), v, jnp.float32) for v in (0.5, 1.0, 0.0, 0.0, 2.0)]
    for T, M in ((128, 1 << 20), (8, 1 << 22)):
        n = _n_buffers(T * M * dtype.itemsize)
        xs, gs = _inputs(T, M, dtype, n)
        z = jnp.zeros((M,), jnp.float32)
        floor_s = T * M * 3 * dtype.itemsize / 3.0e12
        for K in (8, 16) if T > 8 else (8,):
            res = [pk.neuron_scan_forward(x, z, z, *prm, **CFG, checkpoint_every=K)[4] for x in xs]
            for bm, warps, evict, stages in CONFIGS:
                tk = dict(checkpoint_every=K, block_m=bm, num_warps=warps, evict=evict, num_stages=stages)
                tb = _time_jax(lambda r, g, tk=tk, z=z: pk.neuron_scan_backward(r, g, z, z, None, **CFG, **tk)[0],
                               list(zip(res, gs, strict=True)), reps=5)
                print(f"{dtype.name} {T}x{M >> 20}M K={K} block_m={bm} warps={warps} evict={evict} stages={stages}: "
                      f"bwd {tb * 1e3:.3f} ms ({tb / floor_s:.2f}x of the x + g_s + g_x floor)", flush=True)
            del res


if __name__ == "__main__":
    main()
