"""The generic neuron-scan engine: any step function, fused forward and backward Pallas kernels.

A neuron is a step ``step(params, state, x_t) -> (s_t, new_state)`` over per-neuron values
(see :mod:`pallas_kernels.step_program`). Over ``x[T, M]`` (time first, ``M`` neurons) with
``state0`` a tuple of ``n`` arrays ``[M]`` and ``params`` a list of ``P`` arrays, each ``[M]`` (per
neuron) or ``[1]`` (one value for all), the engine computes::

    (s_t, state_t) = step(params, state_{t-1}, x_t)      t = 1..T

Plan (memory-bound, so it is about bytes and latency):

* Grid over blocks of ``BM`` neurons; each program runs the whole time loop of its neurons with the
  state in registers. The forward loads chunks of ``Kf`` time steps of ``x`` ahead (a register double
  buffer: the next chunk is in flight while the current one computes), writes the spikes and, every
  ``K`` steps, a checkpoint of the state (none at t = 0, where the backward reads ``state0``).
* The backward walks the ``K``-step chunks in reverse: it reloads a checkpoint and the chunk's ``x``
  and ``g_s`` rows, recomputes the chunk's states with the same step, and applies the step's VJP
  (derived by JAX from the step: no hand-written derivative), accumulating the parameter gradients
  in registers over time: per neuron ``[M]``, or for a ``[1]`` parameter one partial sum per
  program (``[cdiv(M, BM)]``, summed here). Bytes per element, f32 in and out: forward 8 + 4n/K,
  backward 12 + 4n/K.
* ``return_states`` also writes every state ``[T, M]`` (and the backward takes their cotangents).

Tiling and checkpoint interval are a frozen :class:`Tiling` (a static, hashable argument) with
defaults from :func:`default_tiling`. Imports only jax.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import engine_mosaic
from .step_program import StepProgram, check_captures, trace_step

try:  # the Triton-specific Pallas API (masked load/store with cache hints, CompilerParams)
    from jax.experimental.pallas import triton as _pltriton
except ImportError:  # pragma: no cover - very old jax
    _pltriton = None

Array = jax.Array

__all__ = ["Tiling", "default_tiling", "scan_forward", "scan_backward", "Residuals"]

_F32 = jnp.float32

EVICT_FIRST_MIN_M = 1 << 18
"""From this many neurons on (and :data:`SHORT_T` steps or more) the ``[T, M]`` streams carry the
evict-first cache hint (each byte is touched once; H100, 128 x 1M f32: backward -10 %, forward -3 %)."""

SHORT_T = 16
"""Scans shorter than this run as one chunk per program with wider forward blocks (H100 8 x 4M sweep)."""


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Launch configuration of one engine kernel (static; part of the compile cache key).

    block_m: neurons per program (a power of two); checkpoint_every: K, the state checkpoint
    interval and backward chunk; chunk: Kf, the forward's load-ahead chunk (a multiple of K);
    num_warps / num_stages: Triton launch options; evict: evict-first hint on the [T, M] streams.
    """

    block_m: int
    checkpoint_every: int
    chunk: int
    num_warps: int
    num_stages: int = 1
    evict: bool = False

    def __post_init__(self):
        for name in ("block_m", "checkpoint_every", "chunk", "num_warps", "num_stages"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Tiling.{name}: expected a positive integer, got {value!r}")
        if self.block_m & (self.block_m - 1):
            raise ValueError(f"Tiling.block_m: expected a power of two, got {self.block_m}")
        if self.chunk % self.checkpoint_every:
            raise ValueError(
                f"Tiling.chunk: expected a multiple of checkpoint_every={self.checkpoint_every}, got {self.chunk}"
            )


def default_tiling(T: int, M: int, which: str = "fwd", *, num_states: int = 1, itemsize: int = 4,
                   interpret: bool = False) -> Tiling:
    """The measured default :class:`Tiling` for ``[T, M]`` (``which`` = ``"fwd"`` or ``"bwd"``).

    From the H100/H200 sweeps in BENCHMARKS.md (one-state LIF): large M (>= 256K) forward 512 neurons
    x 4 warps with 16-step chunks (1024 x 8 warps, one chunk, below 16 steps), backward 512 x 8 warps
    with K = 8 (bf16: 2048 x 16 warps, 256 x 4 below 16 steps); smaller M the largest power-of-two
    block in [64, 1024] giving about two programs per SM and 32-step forward chunks. With more than
    two states the blocks halve (the backward keeps K states of each in registers). The interpreter
    (CPU) uses short chunks to keep the unrolled program small.
    """
    k = 4 if interpret else 8
    bm = 1024
    while bm > 64 and -(-M // bm) < 264:
        bm //= 2
    if which == "bwd":
        if M >= 1 << 18 and not interpret:
            if itemsize == 2:
                bm_b, w = (2048, 16) if T >= SHORT_T else (256, 4)
            else:
                bm_b, w = 512, 8
        else:
            bm_b, w = bm, max(1, min(8, bm // 128))
        shrink = 1 if num_states <= 2 else 2
        return Tiling(max(32, bm_b // shrink), k, k, max(1, w // shrink), 1,
                      M >= EVICT_FIRST_MIN_M and T >= SHORT_T and not interpret)
    if interpret:
        return Tiling(bm, k, 2 * k, max(1, min(8, bm // 128)))
    evict = M >= EVICT_FIRST_MIN_M and T >= SHORT_T
    if M >= 1 << 18:
        return Tiling(1024, k, 16, 8, 1, False) if T < SHORT_T else Tiling(512, k, 16, 4, 1, evict)
    return Tiling(bm, k, 32, max(1, bm // 64), 1, evict)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    """Everything static about one kernel instance."""

    prog: StepProgram
    T: int
    M: int
    scalar: tuple[bool, ...]  # per parameter: a [1] value for all neurons
    tiling: Tiling
    return_states: bool
    save: bool  # the forward writes the backward's checkpoints

    @property
    def n(self) -> int:
        return self.prog.num_states

    @property
    def masked(self) -> bool:
        return self.M % self.tiling.block_m != 0


# --- memory helpers (masked for a partial last block) ------------------------------------------


def _mask(c: _Cfg):
    if not c.masked:
        return None
    bm = c.tiling.block_m
    return pl.program_id(0) * bm + jnp.arange(bm, dtype=jnp.int32) < c.M


def _ld(ref, mask, evict: bool = False) -> Array:
    policy = "evict_first" if evict else None
    if mask is None and policy is None:
        return ref[...]
    return _pltriton.load(ref, mask=mask, other=None if mask is None else 0, eviction_policy=policy)


def _st(ref, val, mask, evict: bool = False) -> None:
    policy = "evict_first" if evict else None
    if mask is None and policy is None:
        ref[...] = val
    else:
        _pltriton.store(ref, val, mask=mask, eviction_policy=policy)


def _row(ref, t):
    return ref.at[jnp.int32(t) if isinstance(t, int) else t]


def _load_params(c: _Cfg, refs, mask) -> list[Array]:
    bm = c.tiling.block_m
    return [jnp.broadcast_to(r[...], (bm,)) if sc else _ld(r, mask) for r, sc in zip(refs, c.scalar, strict=True)]


# --- kernels -------------------------------------------------------------------------------------


def _fwd_kernel(c: _Cfg, *refs):
    n, P, tl = c.n, len(c.scalar), c.tiling
    refs = list(refs)
    x_ref, st_refs, p_refs = refs[0], refs[1:1 + n], refs[1 + n:1 + n + P]
    outs = refs[1 + n + P:]
    s_ref, stT_refs = outs[0], outs[1:1 + n]
    seq_refs = outs[1 + n:1 + 2 * n] if c.return_states else ()
    ck_refs = outs[1 + n + (n if c.return_states else 0):] if c.save else ()
    mask = _mask(c)
    p = _load_params(c, p_refs, mask)
    state = tuple(_ld(r, mask) for r in st_refs)
    K, Kf = tl.checkpoint_every, tl.chunk
    nf, rem = c.T // Kf, c.T % Kf

    def load_rows(t0, count):
        return tuple(_ld(_row(x_ref, t0 + i), mask, tl.evict) for i in range(count))

    def run(ci, xs, state, first):
        t0, per = ci * Kf, Kf // K
        for i, xt in enumerate(xs):
            if c.save and i % K == 0 and not (first and i == 0):
                for r, v in zip(ck_refs, state, strict=True):
                    _st(_row(r, ci * per + i // K), v, mask)
            s, state = c.prog.primal(p, state, xt.astype(_F32))
            _st(_row(s_ref, t0 + i), s.astype(s_ref.dtype), mask, tl.evict)
            for r, v in zip(seq_refs, state if c.return_states else (), strict=True):
                _st(_row(r, t0 + i), v, mask)
        return state

    if nf > 0:
        xs = load_rows(0, Kf)
        nxt = load_rows(Kf, Kf) if nf > 1 else None
        state = run(0, xs, state, first=True)
        if nf > 1:
            def body(ci, carry):
                state, xs = carry
                ahead = load_rows(jnp.minimum(ci + 1, nf - 1) * Kf, Kf)
                return run(ci, xs, state, first=False), ahead

            state, _ = jax.lax.fori_loop(1, nf, body, (state, nxt))
    if rem > 0:
        state = run(nf, load_rows(nf * Kf, rem), state, first=nf == 0)
    for r, v in zip(stT_refs, state, strict=True):
        _st(r, v, mask)


def _bwd_kernel(c: _Cfg, *refs):
    n, P, tl = c.n, len(c.scalar), c.tiling
    refs = list(refs)
    take = lambda k: [refs.pop(0) for _ in range(k)]  # noqa: E731
    (x_ref,), st0_refs, ck_refs, p_refs = take(1), take(n), take(n), take(P)
    (gs_ref,), gT_refs = take(1), take(n)
    gseq_refs = take(n) if c.return_states else []
    (gx_ref,), g0_refs, gp_refs = take(1), take(n), take(P)
    assert not refs
    mask = _mask(c)
    p = _load_params(c, p_refs, mask)
    g_state = tuple(_ld(r, mask) for r in gT_refs)
    acc = tuple(jnp.zeros_like(q) for q in p)
    K = tl.checkpoint_every
    nf, rem = c.T // K, c.T % K

    def chunk(ci, t0, count, g_state, acc, first):
        xs = [_ld(_row(x_ref, t0 + i), mask, tl.evict).astype(_F32) for i in range(count)]
        gss = [_ld(_row(gs_ref, t0 + i), mask, tl.evict).astype(_F32) for i in range(count)]
        gseq = [[_ld(_row(r, t0 + i), mask) for r in gseq_refs] for i in range(count)]
        src = st0_refs if first else [_row(r, ci) for r in ck_refs]
        state = tuple(_ld(r, mask) for r in src)
        def emit(i, g_x):
            _st(_row(gx_ref, t0 + i), g_x.astype(gx_ref.dtype), mask, tl.evict)

        return c.prog.chunk_backward(p, state, xs, gss, gseq if c.return_states else None, g_state, acc, emit)

    if rem > 0:
        g_state, acc = chunk(nf, nf * K, rem, g_state, acc, first=nf == 0)
    if nf > 1:
        def body(j, carry):
            ci = nf - 1 - j
            return chunk(ci, ci * K, K, *carry, first=False)

        g_state, acc = jax.lax.fori_loop(0, nf - 1, body, (g_state, acc))
    if nf > 0:
        g_state, acc = chunk(0, 0, K, g_state, acc, first=True)
    for r, g in zip(g0_refs, g_state, strict=True):
        _st(r, g, mask)
    for r, g, sc in zip(gp_refs, acc, c.scalar, strict=True):
        if sc:  # one partial sum per program
            if mask is not None:
                g = jnp.where(mask, g, 0.0)
            r[...] = jnp.broadcast_to(jnp.sum(g), (1,))
        else:
            _st(r, g, mask)


# --- pallas_call wrappers --------------------------------------------------------------------------

_VEC, _SCALAR, _PARTIAL = "vec", "scalar", "partial"


def _spec(bm: int, kind):
    if kind == _VEC:
        return pl.BlockSpec((bm,), lambda i: (i,))
    if kind == _SCALAR:
        return pl.BlockSpec((1,), lambda i: (0,))
    if kind == _PARTIAL:
        return pl.BlockSpec((1,), lambda i: (i,))
    return pl.BlockSpec((kind, bm), lambda i: (0, i))  # an int: R rows of [R, M]


def _call(kernel, c: _Cfg, in_kinds, out_shapes, out_kinds, interpret: bool, name: str):
    bm = c.tiling.block_m
    kwargs = {}
    if not interpret and _pltriton is not None:
        kwargs["compiler_params"] = _pltriton.CompilerParams(num_warps=c.tiling.num_warps,
                                                             num_stages=c.tiling.num_stages)
    return pl.pallas_call(
        lambda *refs: kernel(c, *refs),
        out_shape=out_shapes,
        grid=(pl.cdiv(c.M, bm),),
        in_specs=[_spec(bm, k) for k in in_kinds],
        out_specs=[_spec(bm, k) for k in out_kinds],
        interpret=interpret,
        name=name,
        **kwargs,
    )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Residuals:
    """What the forward keeps for the backward: ``x``, ``state0``, the state checkpoints
    (``n`` arrays ``[ceil(T/K), M]``; row 0 unused by the Triton lowering, ``state0`` in the Mosaic
    GPU one) and the parameters; the forward's tiling and lowering ride along as static data so the
    backward uses the same ``K`` and layout (the Mosaic GPU lowering keeps ``x``, the checkpoints and
    per-neuron parameters padded to whole blocks, and ``num_neurons`` the true ``M``)."""

    x: Array
    state0: tuple[Array, ...]
    checkpoints: tuple[Array, ...]
    params: tuple[Array, ...]
    tiling: Tiling = dataclasses.field(metadata=dict(static=True))
    lowering: str = dataclasses.field(metadata=dict(static=True))
    num_neurons: int = dataclasses.field(metadata=dict(static=True))  # M before padding (Mosaic GPU)


def _check_inputs(x, state0, params) -> tuple[int, int, tuple[bool, ...]]:
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x: expected [T, M] with T, M >= 1, got shape {tuple(x.shape)}")
    T, M = x.shape
    for i, s in enumerate(state0):
        if tuple(s.shape) != (M,):
            raise ValueError(f"state0[{i}]: expected shape ({M},), got {tuple(s.shape)}")
    scalar = []
    for i, q in enumerate(params):
        if tuple(q.shape) not in ((1,), (M,)):
            raise ValueError(f"params[{i}]: expected shape (1,) or ({M},), got {tuple(q.shape)}")
        scalar.append(tuple(q.shape) == (1,))
    return T, M, tuple(scalar)


LOWERINGS = ("triton", "mosaic_gpu", "interpret")


def _lowering(interpret: bool, lowering: str | None = None) -> str:
    if lowering is None:
        return "interpret" if interpret else "triton"
    if lowering not in LOWERINGS:
        raise ValueError(f"lowering: expected one of {LOWERINGS}, got {lowering!r}")
    if interpret and lowering != "interpret":
        raise ValueError(f"lowering={lowering!r} cannot run with interpret=True (use lowering='interpret')")
    return lowering


def default_mosaic_tiling(T: int, M: int) -> Tiling:
    """The Mosaic GPU lowering's :class:`Tiling` (the backward walks the forward's): ``block_m`` 128 or
    256 neurons (one warpgroup), ``checkpoint_every`` K the largest divisor of ``T`` up to 8 (16 with 128
    neurons for ``M >= 2^18`` and ``T % 16 == 0``), ``num_stages`` the TMA pipeline depth (``chunk`` and
    ``num_warps`` are unused there).

    Measured (H200 2026-12-01, ``benchmarks.custom_neurons --sweep-mosaic``, fwd + bwd ms at 128 x 1M
    f32): LIF 0.734 with (128, K=16) against 0.744 with (256, K=8); two-state CUBA 0.744 against 0.782.
    """
    if M >= 1 << 18 and T % 16 == 0:
        return Tiling(128, 16, 16, 4, engine_mosaic.STAGES)
    K = engine_mosaic.checkpoint_interval(T, 8)
    bm = 256 if M >= 1 << 18 and M % 256 == 0 else 128
    return Tiling(bm, K, K, 4, engine_mosaic.STAGES)


def _pad(a: Array, M: int, Mp: int) -> Array:
    """Zero-pad the last axis from ``M`` to ``Mp`` (a no-op when equal)."""
    if Mp == M:
        return a
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, Mp - M)])


def _mosaic_cfg(step, params_treedef, T, M, scalar, n, tiling: Tiling, return_states, save):
    if tiling.block_m not in (128, 256):
        raise ValueError(f"tiling.block_m: the Mosaic GPU lowering takes 128 or 256 neurons, got {tiling.block_m}")
    if T % tiling.checkpoint_every:
        raise ValueError(f"tiling.checkpoint_every: the Mosaic GPU lowering needs a divisor of T={T}, "
                         f"got {tiling.checkpoint_every}")
    reason = engine_mosaic.available()
    if reason is not None:
        raise ValueError(f"lowering='mosaic_gpu': {reason}")
    bm = tiling.block_m
    Mp = -(-M // bm) * bm
    prog = trace_step(step, params_treedef, len(scalar), n, bm, "mosaic_gpu")
    return engine_mosaic.MosaicCfg(prog, T, Mp, tiling.checkpoint_every, bm, scalar, return_states, save,
                                   tiling.num_stages)


def _mosaic_forward(step, params_treedef, x, state0, params, scalar, return_states, save, tiling):
    T, M = x.shape
    tiling = tiling or default_mosaic_tiling(T, M)
    c = _mosaic_cfg(step, params_treedef, T, M, scalar, len(state0), tiling, return_states, save)
    Mp = c.M
    pparams = tuple(q if sc else _pad(q, M, Mp) for q, sc in zip(params, scalar, strict=True))
    xp = _pad(x, M, Mp)
    s, stateT, states, ck = engine_mosaic.forward(c, xp, [_pad(v, M, Mp) for v in state0], pparams)
    s, stateT = s[:, :M], tuple(v[:M] for v in stateT)
    states = tuple(v[:, :M] for v in states) if states is not None else None
    if not save:
        return s, stateT, states, None
    return s, stateT, states, Residuals(xp, state0, ck, pparams, tiling, "mosaic_gpu", M)


def _mosaic_backward(step, params_treedef, res: Residuals, g_s, g_stateT, g_states, tiling: Tiling | None):
    x, M = res.x, res.num_neurons
    T, Mp = x.shape
    if tiling is None:
        tiling = res.tiling  # the forward's (measured default)
    elif Mp % tiling.block_m:
        raise ValueError(f"tiling.block_m: the forward padded the neurons to {Mp}, which {tiling.block_m} "
                         "does not divide")
    else:  # the chunks are the forward's checkpoints
        tiling = dataclasses.replace(tiling, checkpoint_every=res.tiling.checkpoint_every,
                                     chunk=res.tiling.checkpoint_every)
    scalar = tuple(tuple(q.shape) == (1,) for q in res.params)
    if tuple(g_s.shape) != (T, M):
        raise ValueError(f"g_s: expected shape ({T}, {M}), got {tuple(g_s.shape)}")
    c = _mosaic_cfg(step, params_treedef, T, M, scalar, len(res.state0), tiling, g_states is not None, True)
    g_x, g_state0, g_p = engine_mosaic.backward(
        c, x, res.checkpoints, res.params, _pad(g_s, M, Mp), [_pad(jnp.asarray(g, _F32), M, Mp) for g in g_stateT],
        None if g_states is None else [_pad(jnp.asarray(g, _F32), M, Mp) for g in g_states])
    g_params = tuple(jnp.sum(g[:M], keepdims=True) if sc else g[:M] for g, sc in zip(g_p, scalar, strict=True))
    return g_x[:, :M], tuple(g[:M] for g in g_state0), g_params


def scan_forward(step: Callable, params_treedef, x: Array, state0: Sequence[Array], params: Sequence[Array], *,
                 return_states: bool = False, save_residuals: bool = True, interpret: bool = False,
                 tiling: Tiling | None = None, lowering: str | None = None):
    """Forward scan of ``step`` over ``x[T, M]``.

    ``params`` are the flattened leaves (``params_treedef`` rebuilds the step's pytree), each ``[M]``
    or ``[1]`` float32; ``state0`` ``n`` arrays ``[M]`` float32. ``lowering``: ``"triton"`` (the
    default on a GPU), ``"mosaic_gpu"`` (:mod:`pallas_kernels.engine_mosaic`) or ``"interpret"``
    (the default with ``interpret=True``). Returns
    ``(s[T, M] x.dtype, state_T (n x [M]), states (n x [T, M]) or None, Residuals or None)``.
    """
    state0 = tuple(jnp.asarray(s, _F32) for s in state0)
    params = tuple(jnp.asarray(q, _F32) for q in params)
    T, M, scalar = _check_inputs(x, state0, params)
    n = len(state0)
    lowering = _lowering(interpret, lowering)
    interpret = lowering == "interpret"
    check_captures(step, params_treedef, len(params), n, M)
    if lowering == "mosaic_gpu":
        return _mosaic_forward(step, params_treedef, x, state0, params, scalar, bool(return_states),
                               bool(save_residuals), tiling)
    tiling = tiling or default_tiling(T, M, "fwd", num_states=n, itemsize=x.dtype.itemsize, interpret=interpret)
    prog = trace_step(step, params_treedef, len(params), n, tiling.block_m, lowering)
    c = _Cfg(prog, T, M, scalar, tiling, bool(return_states), bool(save_residuals))
    nc = -(-T // tiling.checkpoint_every)
    out_shapes = [jax.ShapeDtypeStruct((T, M), x.dtype)] + [jax.ShapeDtypeStruct((M,), _F32)] * n
    out_kinds = [T] + [_VEC] * n
    if return_states:
        out_shapes += [jax.ShapeDtypeStruct((T, M), _F32)] * n
        out_kinds += [T] * n
    if save_residuals:
        out_shapes += [jax.ShapeDtypeStruct((nc, M), _F32)] * n
        out_kinds += [nc] * n
    in_kinds = [T] + [_VEC] * n + [_SCALAR if sc else _VEC for sc in scalar]
    outs = list(_call(_fwd_kernel, c, in_kinds, out_shapes, out_kinds, interpret, f"{prog.name}_fwd")(
        x, *state0, *params))
    s, stateT = outs[0], tuple(outs[1:1 + n])
    states = tuple(outs[1 + n:1 + 2 * n]) if return_states else None
    if not save_residuals:
        return s, stateT, states, None
    ck = tuple(outs[-n:])
    return s, stateT, states, Residuals(x, state0, ck, params, tiling, lowering, M)


def scan_backward(step: Callable, params_treedef, res: Residuals, g_s: Array, g_stateT: Sequence[Array],
                  g_states: Sequence[Array] | None = None, *, tiling: Tiling | None = None):
    """Reverse-time scan: ``(g_x[T, M] x.dtype, g_state0 (n x [M]), g_params)`` (each like its param,
    ``[M]`` or ``[1]``, summed over time inside the kernel) from the cotangents of the outputs; the
    lowering is the forward's (``res.lowering``)."""
    if res.lowering == "mosaic_gpu":
        return _mosaic_backward(step, params_treedef, res, g_s, g_stateT, g_states, tiling)
    x, state0, params = res.x, res.state0, res.params
    interpret = res.lowering == "interpret"
    T, M, scalar = _check_inputs(x, state0, params)
    n = len(state0)
    K = res.tiling.checkpoint_every
    if tiling is None:
        tiling = default_tiling(T, M, "bwd", num_states=n, itemsize=x.dtype.itemsize, interpret=interpret)
    tiling = dataclasses.replace(tiling, checkpoint_every=K, chunk=K)
    nc = -(-T // K)
    if any(tuple(ck.shape) != (nc, M) for ck in res.checkpoints):
        raise ValueError(f"residuals: checkpoints of shape {res.checkpoints[0].shape} do not match K={K}, T={T}")
    if tuple(g_s.shape) != (T, M):
        raise ValueError(f"g_s: expected shape ({T}, {M}), got {tuple(g_s.shape)}")
    prog = trace_step(step, params_treedef, len(params), n, tiling.block_m, res.lowering)
    return_states = g_states is not None
    c = _Cfg(prog, T, M, scalar, tiling, return_states, True)
    args = [x, *state0, *res.checkpoints, *params, g_s.astype(x.dtype)]
    args += [jnp.asarray(g, _F32) for g in g_stateT]
    in_kinds = [T] + [_VEC] * n + [nc] * n + [_SCALAR if sc else _VEC for sc in scalar] + [T] + [_VEC] * n
    if return_states:
        args += [jnp.asarray(g, _F32) for g in g_states]
        in_kinds += [T] * n
    programs = pl.cdiv(M, tiling.block_m)
    out_shapes = [jax.ShapeDtypeStruct((T, M), x.dtype)] + [jax.ShapeDtypeStruct((M,), _F32)] * n
    out_kinds = [T] + [_VEC] * n
    for sc in scalar:
        out_shapes.append(jax.ShapeDtypeStruct((programs if sc else M,), _F32))
        out_kinds.append(_PARTIAL if sc else _VEC)
    outs = list(_call(_bwd_kernel, c, in_kinds, out_shapes, out_kinds, interpret, f"{prog.name}_bwd")(*args))
    g_x, g_state0, g_params = outs[0], tuple(outs[1:1 + n]), outs[1 + n:]
    g_params = tuple(jnp.sum(g, keepdims=True) if sc else g for g, sc in zip(g_params, scalar, strict=True))
    return g_x, g_state0, g_params


def num_bytes(T: int, M: int, itemsize: int, num_states: int, K: int) -> tuple[int, int]:
    """Minimum bytes (forward, backward) the plan moves: for the floor ratios in the benchmarks."""
    ck = num_states * 4 * M * (math.ceil(T / K) - 1)
    return 2 * T * M * itemsize + ck, 3 * T * M * itemsize + ck
