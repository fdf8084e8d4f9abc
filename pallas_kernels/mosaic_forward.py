"""The neuron-scan forward as a Pallas **Mosaic GPU** kernel: TMA copies in a multi-stage pipeline.

The step math is :func:`pallas_kernels.neuron_scan._step` (shared with the Triton-lowered kernels);
only the memory layer differs. One program (one warpgroup, 128 threads) owns ``BM`` (128 or 256)
neurons and walks the ``T / K`` chunks of ``K`` (= the checkpoint interval, 8) time steps with
``plgpu.emit_pipeline``: the ``[K, BM]`` tiles of ``x`` arrive in shared memory by TMA, up to
:data:`STAGES` chunks ahead, and the ``[K, BM]`` spike tiles (and the ``[1, BM]`` checkpoint of
``v``, ``a`` at each chunk start) leave by TMA while the next chunk computes. The state and the
parameters stay in registers.

Measured on an H100 (BENCHMARKS.md, amortised timing): the LIF forward at (T, M) = (128, 1M)
streams at ~2.7 TB/s, 1.12x of the copy floor in f32 (a plain copy through the same pipeline:
1.09x), 0.399 ms against 0.420 ms for the Triton-lowered kernel; no gain at 8 x 4M. It is used for
the forward when :func:`eligible` (GPU, at least :data:`MIN_M` neurons, ``T % K == 0``,
``M % 128 == 0``, no membrane output, not batched by vmap); everything else takes the
Triton-lowered kernel. ``SPIKEJAX_PALLAS_MOSAIC=0`` turns it off. The Mosaic GPU interpreter of
jax 0.10 cannot run ``emit_pipeline`` (predicated TMA stores), so the CPU tests cover the shared
step math through the Triton-lowered kernel and the GPU tests compare this kernel with ``lax.scan``.
"""

from __future__ import annotations

import inspect
import os

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .neuron_scan import _F32, _P, _Cfg, _step

Array = jax.Array

MIN_M = 1 << 18
"""Neurons from which the forward takes this kernel (measured only at 1M and 4M): below it the grid
of 128-256-neuron programs gets thin on 132 SMs, and the Triton-lowered kernel's tiling for small M
(long register prefetch; T=512, M=16K at 1.5x of the floor) is kept."""

STAGES = 4
"""TMA pipeline depth (chunks in flight); H100 probe at 128 x 1M: 1.12x of the floor for 3, 4 and 8."""


def _plgpu():
    try:
        from jax.experimental.pallas import mosaic_gpu as plgpu
    except ImportError:  # pragma: no cover - jax without Mosaic GPU
        return None
    if not hasattr(plgpu, "kernel") or "init_carry" not in inspect.signature(plgpu.emit_pipeline).parameters:
        return None  # pragma: no cover - older jax
    return plgpu


def eligible(c: _Cfg, interpret: bool) -> bool:
    """Whether the forward of config ``c`` runs on this kernel (else the Triton-lowered one)."""
    if interpret or os.environ.get("SPIKEJAX_PALLAS_MOSAIC", "1") == "0":
        return False
    if jax.default_backend() != "gpu" or _plgpu() is None:
        return False
    return c.M >= MIN_M and c.T % c.K == 0 and c.M % 128 == 0 and not c.membrane


def call_kernel(plgpu, kernel, out, scratch: list, programs: int):
    """``plgpu.kernel`` over a 1-D grid named "m" (the keyword names moved between jax 0.10 and 0.11)."""
    names = inspect.signature(plgpu.kernel).parameters
    kw = {("out_type" if "out_type" in names else "out_shape"): out}
    if scratch:
        kw["scratch_types" if "scratch_types" in names else "scratch_shapes"] = scratch
    return plgpu.kernel(kernel, grid=(programs,), grid_names=("m",), **kw)


def forward(c: _Cfg, x: Array, v0: Array, a0: Array, params: tuple[Array, ...], *, block_m: int | None = None,
            stages: int = STAGES):
    """Forward scan of ``x[T, M]`` from ``v0, a0 [M]`` with ``params`` (5 arrays, all [1] when
    ``c.scalar``, else [M]).

    Returns ``(s[T, M] x.dtype, v_T[M], a_T[M] or None, ckv[T/K, M] or None, cka or None)``;
    the checkpoints (written when ``c.save``) hold the state at the start of each K-step chunk
    (row 0 = ``v0``), the layout of the Triton-lowered kernel's checkpoints; a single chunk writes
    none (``v0`` reshaped is its checkpoint: at T = 8 that saves 4 of the forward's 68 B per neuron).
    ``block_m`` (128 or 256, default the largest dividing M) and ``stages`` override the launch.
    """
    plgpu = _plgpu()
    T, M = x.shape
    BM = block_m or (256 if M % 256 == 0 else 128)
    if BM not in (128, 256) or M % BM:
        raise ValueError(f"block_m: expected 128 or 256 dividing M={M}, got {BM}")
    K = c.K
    nc = T // K
    save = c.save and nc > 1  # one chunk: its checkpoint is v0 itself (no write; see the end)
    prm = jnp.stack([jnp.broadcast_to(jnp.asarray(p, _F32).reshape(-1), (BM if c.scalar else M,)) for p in params])
    lay = plgpu.Layout.WG_STRIDED((BM,), vec_size=BM // 128)
    n_state = 2 if c.use_a else 1

    def kernel(x_g, v0_g, a0_g, prm_g, *refs):
        refs = list(refs)
        s_g, vT_g = refs.pop(0), refs.pop(0)
        aT_g = refs.pop(0) if c.use_a else None
        ck_g = [refs.pop(0) for _ in range(n_state)] if save else []
        st_s, prm_s, bars = refs
        pid = jax.lax.axis_index("m")
        cols = pl.ds(pid * BM, BM)
        pcols = pl.ds(0, BM) if c.scalar else cols
        plgpu.copy_gmem_to_smem(prm_g.at[:, pcols], prm_s, bars.at[0])
        plgpu.copy_gmem_to_smem(v0_g.at[pl.ds(0, 1), cols], st_s.at[pl.ds(0, 1)], bars.at[1])
        if c.use_a:
            plgpu.copy_gmem_to_smem(a0_g.at[pl.ds(0, 1), cols], st_s.at[pl.ds(1, 1)], bars.at[2])
        plgpu.barrier_wait(bars.at[0])
        plgpu.barrier_wait(bars.at[1])
        if c.use_a:
            plgpu.barrier_wait(bars.at[2])
        vec = lambda r: plgpu.layout_cast(r, lay)
        p = _P(beta=vec(prm_s[0]), thr=vec(prm_s[1]), b=vec(prm_s[2]) if c.use_a else None,
               rho=vec(prm_s[3]) if c.use_a else None, alpha=None)
        carry0 = tuple(vec(st_s[i]) for i in range(n_state))

        def body(idx, x_s, s_s, *rest):
            *ck_s, carry = rest
            v, a = carry if c.use_a else (carry[0], None)
            for r, val in zip(ck_s, carry, strict=False):  # no checkpoint refs without save
                r[0] = val
            for i in range(K):
                s, v, a = _step(c, p, v, a, x_s[i].astype(_F32))
                s_s[i] = s.astype(s_s.dtype)
            return (v, a) if c.use_a else (v,)

        tile = plgpu.BlockSpec((K, BM), lambda t: (t, pid))
        row = plgpu.BlockSpec((1, BM), lambda t: (t, pid))
        final = plgpu.emit_pipeline(body, grid=(nc,), in_specs=[tile], out_specs=[tile] + [row] * len(ck_g),
                                    max_concurrent_steps=stages, init_carry=carry0)(x_g, s_g, *ck_g)
        for i, val in enumerate(final):
            st_s[i] = val
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(st_s.at[pl.ds(0, 1)], vT_g.at[pl.ds(0, 1), cols])
        if c.use_a:
            plgpu.copy_smem_to_gmem(st_s.at[pl.ds(1, 1)], aT_g.at[pl.ds(0, 1), cols])
        plgpu.wait_smem_to_gmem(0)

    out = [jax.ShapeDtypeStruct((T, M), x.dtype), jax.ShapeDtypeStruct((1, M), _F32)]
    if c.use_a:
        out.append(jax.ShapeDtypeStruct((1, M), _F32))
    if save:
        out += [jax.ShapeDtypeStruct((nc, M), _F32)] * n_state
    scratch = [plgpu.SMEM((2, BM), _F32), plgpu.SMEM((5, BM), _F32), plgpu.Barrier(num_barriers=3)]
    outs = list(call_kernel(plgpu, kernel, out, scratch, M // BM)(x, v0.reshape(1, M), a0.reshape(1, M), prm))
    s, vT = outs.pop(0), outs.pop(0).reshape(M)
    aT = outs.pop(0).reshape(M) if c.use_a else None
    ckv = outs.pop(0) if save else None
    cka = outs.pop(0) if save and c.use_a else None
    if c.save and nc == 1:  # the backward restarts chunk 0 from v0 / a0: a free reshape, not a copy
        ckv = v0.reshape(1, M)
        cka = a0.reshape(1, M) if c.use_a else None
    return s, vT, aT, ckv, cka

