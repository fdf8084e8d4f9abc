"""The generic neuron-scan engine lowered through Pallas **Mosaic GPU**: TMA pipelines, same plan.

The same contract and plan as :mod:`pallas_kernels.engine` (which lowers through Triton), with the
memory layer of Mosaic GPU: one program (one warpgroup, 128 threads) owns ``BM`` neurons (128 or
256; the state, the parameters and the parameter-gradient sums stay in registers) and walks the
``T / K`` chunks of ``K`` time steps with ``plgpu.emit_pipeline``, whose ``[K, BM]`` tiles arrive in
(and leave from) shared memory by TMA, up to ``stages`` chunks ahead.

* Forward: per chunk, write the chunk-start state as the checkpoint row (row 0 is ``state0``, so
  the backward treats every chunk alike), run ``K`` steps of the step's primal program, store the
  spikes (and, with ``return_states``, every state).
* Backward: the chunks in reverse order (the pipeline's index map runs backwards): reload the
  checkpoint row and the chunk's ``x`` and ``g_s`` tiles, recompute the ``K`` states, apply the
  step's VJP program (derived by ``jax.vjp``) from the last step to the first.

Shapes the pipeline needs: ``K`` divides ``T`` (:func:`checkpoint_interval` takes the largest
divisor of ``T`` not above the requested ``K``) and ``BM`` divides ``M`` (other ``M`` are padded
with zeros, a copy, and sliced back). Gradients of a ``[1]`` parameter are summed over time in the
kernel per neuron and over neurons by one reduction after it. Imports only jax.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .step_program import StepProgram

Array = jax.Array

__all__ = ["available", "checkpoint_interval", "forward", "backward", "STAGES"]

_F32 = jnp.float32

STAGES = 4
"""TMA pipeline depth (chunks in flight); H100 probe of the LIF forward at 128 x 1M: 1.12x of the
copy floor for 3, 4 and 8 (BENCHMARKS.md)."""


def _plgpu():
    try:
        from jax.experimental.pallas import mosaic_gpu as plgpu
    except ImportError:  # pragma: no cover - jax without Mosaic GPU
        return None
    if not hasattr(plgpu, "kernel") or "init_carry" not in inspect.signature(plgpu.emit_pipeline).parameters:
        return None  # pragma: no cover - older jax
    return plgpu


def available() -> str | None:
    """Why the Mosaic GPU lowering cannot run here, or None if it can."""
    if _plgpu() is None:
        return "this jax has no Pallas Mosaic GPU API (plgpu.kernel / emit_pipeline with init_carry)"
    if jax.default_backend() != "gpu":
        return f"Pallas Mosaic GPU needs an NVIDIA GPU (Hopper or newer); JAX's platform is {jax.default_backend()!r}"
    return None


def checkpoint_interval(T: int, K: int) -> int:
    """The largest divisor of ``T`` that is at most ``K`` (the pipeline walks whole chunks)."""
    return max(d for d in range(1, min(K, T) + 1) if T % d == 0)


@dataclasses.dataclass(frozen=True)
class MosaicCfg:
    """Everything static about one Mosaic GPU kernel instance (``M`` already padded to ``BM``)."""

    prog: StepProgram
    T: int
    M: int
    K: int
    block_m: int
    scalar: tuple[bool, ...]
    return_states: bool
    save: bool
    stages: int = STAGES

    @property
    def n(self) -> int:
        return self.prog.num_states

    @property
    def chunks(self) -> int:
        return self.T // self.K


def _call(plgpu, kernel, out, scratch: list, programs: int):
    """``plgpu.kernel`` over a 1-D grid named "m" (keyword names moved between jax 0.10 and 0.11)."""
    names = inspect.signature(plgpu.kernel).parameters
    kw = {("out_type" if "out_type" in names else "out_shape"): out}
    kw["scratch_types" if "scratch_types" in names else "scratch_shapes"] = scratch
    # lane semantics: the step programs are jnp code over per-thread vectors (the table step_program checks)
    params = plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane)
    return plgpu.kernel(kernel, grid=(programs,), grid_names=("m",), compiler_params=params, **kw)


def _rows(arrays, M: int) -> list[Array]:
    return [jnp.asarray(a, _F32).reshape(1, M) for a in arrays]


def _param_rows(c: MosaicCfg, params) -> list[Array]:
    """Per-neuron params as ``[1, M]``, a ``[1]`` one broadcast to one block ``[1, BM]``."""
    return [jnp.broadcast_to(jnp.asarray(q, _F32).reshape(1, 1), (1, c.block_m)) if sc else
            jnp.asarray(q, _F32).reshape(1, c.M) for q, sc in zip(params, c.scalar, strict=True)]


def _load_rows(plgpu, c: MosaicCfg, srcs, scalar, dst, bars, cols):
    """Copy rows ``[1, BM]`` of each source into row ``i`` of the SMEM scratch ``dst``; wait."""
    for i, (src, sc) in enumerate(zip(srcs, scalar, strict=True)):
        plgpu.copy_gmem_to_smem(src.at[pl.ds(0, 1), pl.ds(0, c.block_m) if sc else cols], dst.at[pl.ds(i, 1)],
                                bars.at[i])
    for i in range(len(srcs)):
        plgpu.barrier_wait(bars.at[i])


def _store_rows(plgpu, vals, dst_s, dsts, cols):
    """Registers -> SMEM rows -> ``[1, BM]`` blocks of ``dsts`` (TMA), then wait for the stores."""
    for i, v in enumerate(vals):
        dst_s[i] = v
    plgpu.commit_smem()
    for i, d in enumerate(dsts):
        plgpu.copy_smem_to_gmem(dst_s.at[pl.ds(i, 1)], d.at[pl.ds(0, 1), cols])
    plgpu.wait_smem_to_gmem(0)


def _prologue(plgpu, c: MosaicCfg, vec, rows_g, in_s, bars):
    """Program start: this program's columns, and its ``n`` state rows then ``P`` parameter rows
    (``rows_g``, copied to SMEM by TMA) as register vectors."""
    pid = jax.lax.axis_index("m")
    cols = pl.ds(pid * c.block_m, c.block_m)
    _load_rows(plgpu, c, rows_g, (False,) * c.n + c.scalar, in_s, bars, cols)
    return pid, cols, tuple(vec(in_s[i]) for i in range(c.n)), [vec(in_s[c.n + j]) for j in range(len(c.scalar))]


def forward(c: MosaicCfg, x: Array, state0, params):
    """Forward scan over ``x[T, M]`` (``M % BM == 0``, ``T % K == 0``).

    Returns ``(s[T, M] x.dtype, state_T (n x [M]), states (n x [T, M]) or None, checkpoints)``;
    ``checkpoints`` (with ``c.save``) are ``n`` arrays ``[T/K, M]``, row ``j`` the state before step
    ``j K`` (row 0 = ``state0``; a single chunk reuses ``state0`` itself, no write).
    """
    plgpu = _plgpu()
    T, M, K, BM, n, P = c.T, c.M, c.K, c.block_m, c.n, len(c.scalar)
    nc = c.chunks
    save = c.save and nc > 1
    lay = plgpu.Layout.WG_STRIDED((BM,), vec_size=BM // 128)
    vec = lambda r: plgpu.layout_cast(r, lay)  # noqa: E731
    n_seq = n if c.return_states else 0
    n_ck = n if save else 0

    def kernel(x_g, *refs):
        refs = list(refs)
        take = lambda k: [refs.pop(0) for _ in range(k)]  # noqa: E731
        st0_g, p_g = take(n), take(P)
        (s_g,), stT_g, seq_g, ck_g = take(1), take(n), take(n_seq), take(n_ck)
        in_s, st_s, bars = refs
        pid, cols, carry0, p = _prologue(plgpu, c, vec, st0_g + p_g, in_s, bars)

        def body(idx, x_s, s_s, *rest):
            *tiles, state = rest
            seq_s, ck_s = tiles[:n_seq], tiles[n_seq:]
            for r, v in zip(ck_s, state if ck_s else (), strict=True):
                r[0] = v
            for i in range(K):
                s, state = c.prog.primal(p, state, x_s[i].astype(_F32))
                s_s[i] = s.astype(s_s.dtype)
                for r, v in zip(seq_s, state if seq_s else (), strict=True):
                    r[i] = v
            return tuple(vec(v) for v in state)  # the carry keeps one layout (a constant would be a splat)

        tile = plgpu.BlockSpec((K, BM), lambda t: (t, pid))
        row = plgpu.BlockSpec((1, BM), lambda t: (t, pid))
        final = plgpu.emit_pipeline(body, grid=(nc,), in_specs=[tile], out_specs=[tile] * (1 + n_seq) + [row] * n_ck,
                                    max_concurrent_steps=c.stages, init_carry=carry0)(x_g, s_g, *seq_g, *ck_g)
        _store_rows(plgpu, final, st_s, stT_g, cols)

    out = [jax.ShapeDtypeStruct((T, M), x.dtype)] + [jax.ShapeDtypeStruct((1, M), _F32)] * n
    out += [jax.ShapeDtypeStruct((T, M), _F32)] * n_seq + [jax.ShapeDtypeStruct((nc, M), _F32)] * n_ck
    scratch = [plgpu.SMEM((n + P, BM), _F32), plgpu.SMEM((n, BM), _F32), plgpu.Barrier(num_barriers=n + P)]
    st0 = _rows(state0, M)
    outs = list(_call(plgpu, kernel, out, scratch, M // BM)(x, *st0, *_param_rows(c, params)))
    s = outs.pop(0)
    stateT = tuple(outs.pop(0).reshape(M) for _ in range(n))
    states = tuple(outs.pop(0) for _ in range(n_seq)) or None
    if not c.save:
        return s, stateT, states, None
    ck = tuple(outs.pop(0) for _ in range(n_ck)) if save else tuple(st0)
    return s, stateT, states, ck


def backward(c: MosaicCfg, x: Array, checkpoints, params, g_s: Array, g_stateT, g_states=None):
    """Reverse-time scan from the forward's checkpoints: ``(g_x[T, M] x.dtype, g_state0 (n x [M]),
    g_params (P x [M]))``, each parameter's gradient summed over time per neuron (the caller sums a
    ``[1]`` parameter's over the neurons it really has)."""
    plgpu = _plgpu()
    T, M, K, BM, n, P = c.T, c.M, c.K, c.block_m, c.n, len(c.scalar)
    nc = c.chunks
    lay = plgpu.Layout.WG_STRIDED((BM,), vec_size=BM // 128)
    vec = lambda r: plgpu.layout_cast(r, lay)  # noqa: E731
    n_seq = n if c.return_states else 0

    def kernel(x_g, gs_g, *refs):
        refs = list(refs)
        take = lambda k: [refs.pop(0) for _ in range(k)]  # noqa: E731
        ck_g, gseq_g, gT_g, p_g = take(n), take(n_seq), take(n), take(P)
        (gx_g,), g0_g, gp_g = take(1), take(n), take(P)
        in_s, out_s, bars = refs
        pid, cols, g0, p = _prologue(plgpu, c, vec, gT_g + p_g, in_s, bars)
        acc0 = tuple(vec(q * 0.0) for q in p)

        def body(idx, x_s, gs_s, *rest):
            *tiles, carry = rest
            ck_s, gseq_s, (gx_s,) = tiles[:n], tiles[n:n + n_seq], tiles[n + n_seq:]
            g_state, acc = carry[:n], carry[n:]
            xs = [x_s[i].astype(_F32) for i in range(K)]
            gss = [gs_s[i].astype(_F32) for i in range(K)]
            gseqs = [[r[i] for r in gseq_s] for i in range(K)] if n_seq else None
            state = tuple(vec(r[0]) for r in ck_s)
            g_state, acc = c.prog.chunk_backward(p, state, xs, gss, gseqs, g_state, acc,
                                                 lambda i, g_x: gx_s.__setitem__(i, g_x.astype(gx_s.dtype)))
            return tuple(vec(v) for v in (*g_state, *acc))

        rev_tile = plgpu.BlockSpec((K, BM), lambda t: (nc - 1 - t, pid))
        rev_row = plgpu.BlockSpec((1, BM), lambda t: (nc - 1 - t, pid))
        final = plgpu.emit_pipeline(
            body, grid=(nc,), in_specs=[rev_tile, rev_tile] + [rev_row] * n + [rev_tile] * n_seq,
            out_specs=[rev_tile], max_concurrent_steps=c.stages, init_carry=(*g0, *acc0),
        )(x_g, gs_g, *ck_g, *gseq_g, gx_g)
        _store_rows(plgpu, final, out_s, g0_g + gp_g, cols)

    out = [jax.ShapeDtypeStruct((T, M), x.dtype)] + [jax.ShapeDtypeStruct((1, M), _F32)] * (n + P)
    scratch = [plgpu.SMEM((n + P, BM), _F32), plgpu.SMEM((n + P, BM), _F32), plgpu.Barrier(num_barriers=n + P)]
    args = [x, g_s.astype(x.dtype), *checkpoints]
    args += [jnp.asarray(g, _F32) for g in g_states] if c.return_states else []
    args += _rows(g_stateT, M) + _param_rows(c, params)
    outs = list(_call(plgpu, kernel, out, scratch, M // BM)(*args))
    g_x = outs.pop(0)
    g_state0 = tuple(outs.pop(0).reshape(M) for _ in range(n))
    return g_x, g_state0, tuple(g.reshape(M) for g in outs)

