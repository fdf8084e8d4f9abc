"""How close a TMA-pipelined Mosaic GPU kernel streams to the copy floor: a plain copy and the
production Mosaic forward (``pallas_kernels.mosaic_forward``, LIF) at 128 x 1M, per block width,
chunk length and pipeline depth, timed like ``benchmarks.neuron_scan`` (amortised).

Usage (GPU, jax with Mosaic GPU)::

    python -m benchmarks.tma_pipeline_probe
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu

from benchmarks.neuron_scan import KERNEL_CFG, _time_jax
from pallas_kernels import mosaic_forward
from pallas_kernels.neuron_scan import _make_cfg


def tma_copy(x: jax.Array, block_m: int, chunk: int, stages: int) -> jax.Array:
    """``x[T, M]`` copied through ``emit_pipeline`` in ``[chunk, block_m]`` tiles (the bandwidth ceiling)."""
    T, M = x.shape

    def kernel(x_g, o_g):
        pid = jax.lax.axis_index("m")

        def body(idx, x_s, o_s):
            o_s[...] = x_s[...]

        spec = plgpu.BlockSpec((chunk, block_m), lambda t: (t, pid))
        plgpu.emit_pipeline(body, grid=(T // chunk,), in_specs=[spec], out_specs=[spec],
                            max_concurrent_steps=stages)(x_g, o_g)

    out = jax.ShapeDtypeStruct((T, M), x.dtype)
    return mosaic_forward.call_kernel(plgpu, kernel, out, [], M // block_m)(x)


def main() -> None:
    T, M = 128, 1 << 20
    prm = tuple(jnp.full((1,), v, jnp.float32) for v in (0.5, 1.0, 0.0, 0.0, 2.0))
    z = jnp.zeros((M,), jnp.float32)
    for dtype in (jnp.float32, jnp.bfloat16):
        x = (jax.random.normal(jax.random.key(0), (T, M)) * 1.5 + 0.6).astype(dtype)
        floor_s = 2 * x.nbytes / 3.0e12
        for bm, chunk, stages in ((128, 8, 4), (256, 8, 4), (256, 16, 3), (256, 8, 8), (128, 32, 3)):
            t_copy = _time_jax(lambda a, bm=bm, k=chunk, st=stages: tma_copy(a, bm, k, st), [(x,)], reps=5)
            c = _make_cfg(T, M, **KERNEL_CFG, block_m=None, chunk=None, num_warps=None, checkpoint_every=chunk,
                          evict=None, which="fwd", interpret=False, num_stages=None, save_residuals=False,
                          scalar_params=True)
            t_lif = _time_jax(lambda a, c=c, bm=bm, st=stages: mosaic_forward.forward(c, a, z, z, prm, block_m=bm,
                                                                                      stages=st)[0], [(x,)], reps=5)
            print(f"{jnp.dtype(dtype).name} block_m={bm} chunk={chunk} stages={stages}: copy {t_copy * 1e3:.3f} ms "
                  f"({t_copy / floor_s:.2f}x floor), LIF forward {t_lif * 1e3:.3f} ms ({t_lif / floor_s:.2f}x)",
                  flush=True)


if __name__ == "__main__":
    main()
