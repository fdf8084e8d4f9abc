"""Launch sweep of the Triton kernels (LIF as in ``benchmarks.neuron_scan``, direct kernel calls).

Every configuration is set through the ``SPIKEJAX_TRITON_*`` overrides that
``triton_kernels.default_tiling`` reads, and timed like ``benchmarks.neuron_scan`` (amortised over
N buffers). Backward rows (checkpoint interval K, block, warps): the forward runs with that K for
the residuals, then the backward is timed; forward rows: (block, warps, chunk). Printed per
line: ms and the ratio to the floor of the pass's essential bytes (forward x + s, backward
x + g_s + g_x) at ``--bandwidth`` bytes/s.

Usage (GPU)::

    python -m benchmarks.triton_tiling_sweep [--bandwidth 4.2e12]
"""

from __future__ import annotations

import argparse
import contextlib
import os

import jax.numpy as jnp

import triton_kernels as tk
from benchmarks.neuron_scan import KERNEL_CFG as CFG
from benchmarks.neuron_scan import _inputs, _n_buffers, _time_jax

# backward (checkpoint interval K, block, warps); forward (block, warps, chunk)
BWD_LARGE = [(8, 512, 8), (8, 512, 4), (8, 1024, 8), (8, 256, 2), (8, 1024, 4), (8, 256, 4)]
BWD_SMALL = [(8, 64, 1), (8, 32, 1), (8, 128, 1), (8, 128, 2), (8, 64, 2), (16, 64, 1), (16, 32, 1)]
FWD_LARGE = [(512, 4, 16), (512, 4, 8), (1024, 8, 16), (1024, 4, 16), (256, 2, 16), (512, 2, 16)]
FWD_SMALL = [(64, 1, 32), (64, 1, 16), (64, 1, 64), (128, 2, 32), (128, 1, 32), (32, 1, 32), (64, 2, 32)]


@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update({k: str(v) for k, v in kv.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bandwidth", type=float, default=4.2e12, help="copy bandwidth for the floor, bytes/s")
    ap.add_argument("--shapes", default="128x1048576,8x4194304,512x16384,32x65536")
    args = ap.parse_args()
    for shape in args.shapes.split(","):
        T, M = (int(v) for v in shape.split("x"))
        for dtype in (jnp.dtype("float32"), jnp.dtype("bfloat16")):
            n = _n_buffers(T * M * dtype.itemsize)
            xs, gs = _inputs(T, M, dtype, n)
            z = jnp.zeros((M,), jnp.float32)
            prm = [jnp.full((M,), v, jnp.float32) for v in (0.5, 1.0, 0.0, 0.0, 2.0)]
            e = T * M * dtype.itemsize
            head = f"{dtype.name} {T}x{M}"
            fwd_cfgs = FWD_LARGE if M >= 1 << 18 else FWD_SMALL
            for block, warps, chunk in fwd_cfgs:
                with _env(SPIKEJAX_TRITON_FWD_BLOCK=block, SPIKEJAX_TRITON_FWD_WARPS=warps,
                          SPIKEJAX_TRITON_CHUNK=chunk):
                    t = _time_jax(lambda x, z=z, prm=prm: tk.neuron_scan_forward(x, z, z, *prm, **CFG)[0],
                                  [(x,) for x in xs], reps=5)
                print(f"{head} fwd block={block} warps={warps} chunk={chunk}: {t * 1e3:.3f} ms "
                      f"({t / (2 * e / args.bandwidth):.2f}x of the x + s floor)", flush=True)
            for K, block, warps in BWD_LARGE if M >= 1 << 18 else BWD_SMALL:
                with _env(SPIKEJAX_TRITON_CHECKPOINT=K, SPIKEJAX_TRITON_BWD_BLOCK=block,
                          SPIKEJAX_TRITON_BWD_WARPS=warps):
                    res = [tk.neuron_scan_forward(x, z, z, *prm, **CFG)[4] for x in xs]
                    t = _time_jax(lambda r, g, z=z: tk.neuron_scan_backward(r, g, z, z, None, **CFG)[0],
                                  list(zip(res, gs, strict=True)), reps=5)
                print(f"{head} bwd K={K} block={block} warps={warps}: {t * 1e3:.3f} ms "
                      f"({t / (3 * e / args.bandwidth):.2f}x of the x + g_s + g_x floor)", flush=True)
            del res, xs, gs


if __name__ == "__main__":
    main()
