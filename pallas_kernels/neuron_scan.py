"""Pallas (Triton-lowered) GPU kernels of the generalized neuron scan, forward and backward.

The contract is the one in ``spikejax.backends`` (this package never imports spikejax): a scan over
time of ``x[T, M]`` with per-neuron state ``v[M]`` (membrane) and ``a[M]`` (adaptation), per-neuron
float32 parameters ``beta, threshold, adapt_scale (b), adapt_decay (rho), alpha`` (all ``[M]``) and
static options. With ``reset_delay=False``, at step t::

    H_t = beta V_{t-1} + gamma X_t              gamma = 1 - beta if decay_input else 1
    thr_t = threshold + b a_{t-1}                (adaptive; else thr_t = threshold)
    S_t = spike(H_t - thr_t)                     binary:  Θ(H - thr)
                                                 ternary: Θ(H - thr) - Θ(-H - thr)
                                                 multilevel: Σ_{k=1..L} Θ(H - k thr)
    V_t = H_t - thr_t S_t | H_t (1 - F_t) | H_t  (reset subtract | zero | none)
    a_t = rho a_{t-1} + S_t                      (adaptive)

``F_t`` is the fired indicator (Θ(H-thr), plus Θ(-H-thr) for ternary). With ``reset_delay=True``
(snnTorch order) ``S'_{t-1} = spike(V_{t-1} - thr)`` is recomputed and the reset applied at step t
(``H_t = beta V_{t-1} + gamma X_t - thr S'_{t-1}`` or ``beta V_{t-1}(1 - F'_{t-1}) + gamma X_t``),
``V_t = H_t`` (no adaptation in that order). Backward: the Heaviside derivative is replaced by the
surrogate ``σ'_α(u)``, and α receives ``Σ g ∂σ_α(u)/∂α``; ``detach_reset`` stops the gradient
through ``S``/``F`` inside the reset term only.

Kernel layout (memory-bound, so everything is about bytes and latency):

* Grid over blocks of ``BM`` neurons; each program runs the whole time loop for its neurons with
  the state in registers. A partial last block is masked.
* Time is processed in chunks. The inputs do not depend on the state, so the forward loads the
  ``Kf`` rows ``x[t0:t0+Kf, block]`` of a chunk before computing any of its steps, and prefetches
  the next chunk into registers while computing the current one (a register double buffer), so
  a long ``T`` with few neurons (T=512, M=16K) keeps many loads in flight instead of issuing one
  dependent load per step.
* What the forward saves for the backward: no per-step trace. It writes a checkpoint of ``v``
  (and ``a`` for ALIF) every ``K`` steps (K = 8 on the GPU), ``(ceil(T/K) - 1) x M x 4`` bytes
  (1/8 of an f32 membrane trace; none at t = 0, where the backward reads ``v0``), and the
  backward recomputes each K-step chunk from its checkpoint and ``x`` (which the caller holds
  anyway). Bytes per element for f32 in/out: forward 8 (x, s) + 4/K, backward 12 (x, g_s, g_x)
  + 4/K, versus 12 + 12 when saving an f32 trace (10 + 10 for a bf16 trace, which is also
  inexact); the H100 sweep in BENCHMARKS.md measures writing an f32 trace at +25-39 % forward
  time at (T, M) = (128, 1M), before the backward even reads it back.
  Recompute also reproduces the forward's spikes bit for bit, so the backward sees exactly the
  forward's branch of every Heaviside.
* The backward is one kernel scanning time in reverse chunk by chunk; per-neuron parameter
  gradients (beta, threshold, b, rho, alpha) are accumulated in registers over time and written
  once.
* Scalar parameters: when all five parameter vectors have shape ``[1]`` (a layer with one β, θ, α
  for every neuron) every program reads the one value (no ``[M]`` parameter streams) and the
  backward writes one partial sum per program for each parameter gradient (``[cdiv(M, BM)]``,
  summed by the wrapper) instead of ``[M]`` per-neuron gradients. At T=8, f32 that removes about a
  fifth of the bytes either pass moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

try:  # the Triton-specific Pallas API (masked load/store, CompilerParams)
    from jax.experimental.pallas import triton as _pltriton
except ImportError:  # pragma: no cover - very old jax
    _pltriton = None

Array = jax.Array

__all__ = [
    "SURROGATE_FORMULAS",
    "neuron_scan_forward",
    "neuron_scan_backward",
    "default_tiling",
]

_F32 = jnp.float32

# --- surrogate formulas, next to the kernel (must equal spikejax.surrogate; tested) ------------
# Each: (relaxation σ_α(x), d/dx σ_α(x), d/dα σ_α(x)). The kernels use only the two derivatives,
# written with ops the Triton lowering supports (no logistic/integer_pow primitives).


def _atan_relax(x, a):
    return jnp.arctan(0.5 * math.pi * a * x) / math.pi + 0.5


def _atan_grad(x, a):
    u = 0.5 * math.pi * a * x
    return 0.5 * a / (1.0 + u * u)


def _atan_grad_alpha(x, a):
    u = 0.5 * math.pi * a * x
    return 0.5 * x / (1.0 + u * u)


def _sig(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def _sigmoid_relax(x, a):
    return _sig(a * x)


def _sigmoid_grad(x, a):
    s = _sig(a * x)
    return a * s * (1.0 - s)


def _sigmoid_grad_alpha(x, a):
    s = _sig(a * x)
    return x * s * (1.0 - s)


def _fast_sigmoid_relax(x, a):
    return 0.5 + x / (1.0 + a * jnp.abs(x))


def _fast_sigmoid_grad(x, a):
    d = 1.0 + a * jnp.abs(x)
    return 1.0 / (d * d)


def _fast_sigmoid_grad_alpha(x, a):
    d = 1.0 + a * jnp.abs(x)
    return -x * jnp.abs(x) / (d * d)


def _triangular_relax(x, a):
    ax = jnp.minimum(a * jnp.abs(x), 1.0)
    return 0.5 + jnp.sign(x) * (ax - 0.5 * ax * ax)


def _triangular_grad(x, a):
    return a * jnp.maximum(0.0, 1.0 - a * jnp.abs(x))


def _triangular_grad_alpha(x, a):
    r = 1.0 - a * jnp.abs(x)
    return jnp.where(r > 0.0, x * r, 0.0)


def _rectangular_relax(x, a):
    return jnp.clip(a * x + 0.5, 0.0, 1.0)


def _rectangular_grad(x, a):
    return jnp.where(jnp.abs(a * x) < 0.5, a, 0.0)


def _rectangular_grad_alpha(x, a):
    return jnp.where(jnp.abs(a * x) < 0.5, x, 0.0)


SURROGATE_FORMULAS: dict[str, tuple[Callable, Callable, Callable]] = {
    "atan": (_atan_relax, _atan_grad, _atan_grad_alpha),
    "sigmoid": (_sigmoid_relax, _sigmoid_grad, _sigmoid_grad_alpha),
    "fast_sigmoid": (_fast_sigmoid_relax, _fast_sigmoid_grad, _fast_sigmoid_grad_alpha),
    "triangular": (_triangular_relax, _triangular_grad, _triangular_grad_alpha),
    "rectangular": (_rectangular_relax, _rectangular_grad, _rectangular_grad_alpha),
}
"""name -> (σ_α(x), ∂σ/∂x, ∂σ/∂α): the same table as ``spikejax.surrogate.SURROGATES``."""

_ALIASES = {"superspike": "fast_sigmoid", "ste": "rectangular", "arctan": "atan"}

# --- static configuration ----------------------------------------------------------------------


class _Cfg(NamedTuple):
    """Compile-time flags of one kernel instance (hashable)."""

    kind: str
    levels: int
    use_a: bool  # adaptation state is carried (adaptive and not reset_delay)
    decay_input: bool
    reset: str
    detach: bool
    delay: bool
    surrogate: str
    membrane: bool
    T: int
    M: int
    BM: int  # neurons per program
    K: int  # checkpoint interval = backward chunk
    Kf: int  # forward chunk (a multiple of K)
    num_warps: int
    masked: bool
    evict: bool  # streaming [T, M] loads/stores hint evict_first (each byte is touched once)
    num_stages: int  # Triton software-pipelining stages of the time loop
    save: bool  # the forward writes the backward's checkpoints (off for a forward-only call)
    scalar: bool  # the parameters are [1] (one value for every neuron), see the module docstring


EVICT_FIRST_MIN_M = 1 << 18
"""From this many neurons on (and :data:`SHORT_T` steps or more), the ``[T, M]`` streams are
loaded/stored with the evict-first cache hint by default (H100, 128 x 1M f32: backward 0.946 -> 0.850
ms, forward 0.614 -> 0.597 ms). Below it, ``x`` (<= 1 MiB per step) is left to stay in L2 for the
backward's re-read."""

SHORT_T = 16
"""Scans shorter than this (e.g. 8 x 4M) are one chunk per program: the forward takes 1024-neuron
blocks with 8 warps and neither pass uses evict-first (H100 sweeps at 8 x 4M f32, direct kernel calls,
old -> new default: forward 0.212 -> 0.182 ms, backward 0.303 -> 0.257 ms; within one run the hint
cost the forward 15-30 %; BENCHMARKS.md)."""


def default_tiling(T: int, M: int, which: str = "fwd", interpret: bool = False,
                   itemsize: int = 4) -> tuple[int, int, int, int]:
    """(BM neurons per program, K checkpoint interval, Kf forward chunk, num_warps) for ``[T, M]``.

    Chosen from the H100 sweep in BENCHMARKS.md. Large M (>= 256K): forward 512 neurons x 4 warps
    with 16-step chunks (plus the prefetched next chunk in registers); backward 512 x 8 warps
    with 8-step chunks (``itemsize`` 2, bf16 streams: 2048 x 16 warps, or 256 x 4 when T < 16).
    Smaller M: the largest power-of-two block in [64, 1024] that still gives
    about two programs per SM (132 SMs), at most two neurons per thread, and longer forward chunks
    (32 steps) so enough loads are in flight when few neurons run a long T. The interpreter
    (CPU tests) uses short chunks to keep the unrolled program small.
    """
    k = 4 if interpret else 8
    bm = 1024
    while bm > 64 and -(-M // bm) < 264:
        bm //= 2
    if which == "bwd":
        if M >= 1 << 18 and not interpret:  # H100 backward sweeps, 2026-11-24 (BENCHMARKS.md)
            if itemsize == 2:  # bf16 streams: 128x1M 0.412 -> 0.361 ms, 8x4M 0.120 -> 0.101 ms
                return (2048, k, k, 16) if T >= SHORT_T else (256, k, k, 4)
            return 512, k, k, 8
        return bm, k, k, max(1, min(8, bm // 128))
    if interpret:
        return bm, k, 2 * k, max(1, min(8, bm // 128))
    if M >= 1 << 18:
        return (1024, k, 16, 8) if T < SHORT_T else (512, k, 16, 4)
    return bm, k, 32, max(1, bm // 64)


def _make_cfg(T, M, *, kind, levels, adaptive, decay_input, reset, detach_reset, reset_delay, surrogate,
              return_membrane, block_m, chunk, num_warps, checkpoint_every, evict, num_stages, which,
              interpret, save_residuals: bool = True, scalar_params: bool = False, itemsize: int = 4) -> _Cfg:
    if kind not in ("binary", "ternary", "multilevel"):
        raise ValueError(f"kind: unknown spike kind {kind!r}; expected binary, ternary or multilevel")
    if reset not in ("subtract", "zero", "none"):
        raise ValueError(f"reset: unknown reset {reset!r}; expected subtract, zero or none")
    surrogate = _ALIASES.get(surrogate, surrogate)
    if surrogate not in SURROGATE_FORMULAS:
        raise ValueError(
            f"surrogate: unknown shape {surrogate!r}; expected one of {sorted(SURROGATE_FORMULAS)}"
        )
    bm, k, kf, warps = default_tiling(T, M, which, interpret, itemsize)
    bm = block_m or bm
    k = checkpoint_every or k
    kf = chunk or kf
    kf = max(k, kf // k * k) if which == "fwd" else k
    warps = num_warps or warps
    if bm & (bm - 1):
        raise ValueError(f"block_m: expected a power of two, got {bm}")
    return _Cfg(
        kind=kind,
        levels=int(levels) if kind == "multilevel" else 1,
        use_a=bool(adaptive) and not reset_delay,
        decay_input=bool(decay_input),
        reset=reset,
        detach=bool(detach_reset),
        delay=bool(reset_delay),
        surrogate=surrogate,
        membrane=bool(return_membrane),
        T=T,
        M=M,
        BM=bm,
        K=k,
        Kf=kf,
        num_warps=warps,
        masked=M % bm != 0,
        evict=(M >= EVICT_FIRST_MIN_M and T >= SHORT_T if evict is None else bool(evict)) and not interpret,
        num_stages=num_stages or 1,
        save=bool(save_residuals) or which == "bwd",
        scalar=bool(scalar_params),
    )


# --- memory helpers (masked for a partial last block) -----------------------------------------


def _mask(c: _Cfg):
    if not c.masked:
        return None
    return pl.program_id(0) * c.BM + jnp.arange(c.BM, dtype=jnp.int32) < c.M


def _ld(ref, mask, evict: bool = False) -> Array:
    """Load a ``[BM]`` ref (view) with the tail mask (0 outside); ``evict``: evict-first hint."""
    policy = "evict_first" if evict else None
    if mask is None and policy is None:
        return ref[...]
    if _pltriton is not None and hasattr(_pltriton, "load"):
        return _pltriton.load(ref, mask=mask, other=None if mask is None else 0, eviction_policy=policy)
    return pl.load(ref, (slice(None),), mask=mask, other=0)  # pragma: no cover - older jax


def _st(ref, val, mask, evict: bool = False) -> None:
    policy = "evict_first" if evict else None
    if mask is None and policy is None:
        ref[...] = val
    elif _pltriton is not None and hasattr(_pltriton, "store"):
        _pltriton.store(ref, val, mask=mask, eviction_policy=policy)
    else:  # pragma: no cover - older jax
        pl.store(ref, (slice(None),), val, mask=mask)


def _row(ref, t):
    """The ``[BM]`` view of row ``t`` (static or traced) of a ``[R, BM]`` block."""
    if isinstance(t, int):
        t = jnp.int32(t)
    return ref.at[t]


class _P(NamedTuple):
    beta: Array
    thr: Array
    b: Array | None
    rho: Array | None
    alpha: Array


# --- the step math (shared by the forward, the recompute and the backward) --------------------


def _heav(u):
    return jnp.where(u >= 0.0, 1.0, 0.0).astype(_F32)


def _fire(c: _Cfg, h, thr):
    """(S, F): spike value and fired indicator of membrane h against threshold thr."""
    up = _heav(h - thr)
    if c.kind == "binary":
        return up, up
    if c.kind == "ternary":
        down = _heav(-h - thr)
        return up - down, up + down
    s = up
    for k in range(2, c.levels + 1):
        s = s + _heav(h - k * thr)
    return s, up


def _fire_bwd(c: _Cfg, h, thr, alpha, g_s, g_f):
    """Cotangents (g_h, g_thr, g_alpha) of (S, F) = _fire(h, thr) given g_s, g_f (None = 0)."""
    _, dx, da = SURROGATE_FORMULAS[c.surrogate]
    if g_s is None:
        g_s = jnp.zeros_like(h)
    g_up = g_s if g_f is None else g_s + g_f
    u = h - thr
    d = g_up * dx(u, alpha)
    g_h, g_thr, g_al = d, -d, g_up * da(u, alpha)
    if c.kind == "ternary":
        g_dn = -g_s if g_f is None else g_f - g_s
        u2 = -h - thr
        d2 = g_dn * dx(u2, alpha)
        g_h = g_h - d2
        g_thr = g_thr - d2
        g_al = g_al + g_dn * da(u2, alpha)
    elif c.kind == "multilevel":
        for k in range(2, c.levels + 1):
            uk = h - k * thr
            dk = g_s * dx(uk, alpha)
            g_h = g_h + dk
            g_thr = g_thr - k * dk
            g_al = g_al + g_s * da(uk, alpha)
    return g_h, g_thr, g_al


def _charge(c: _Cfg, p: _P, v, x):
    if c.decay_input:
        return p.beta * v + (1.0 - p.beta) * x
    return p.beta * v + x


def _step(c: _Cfg, p: _P, v, a, x):
    """One forward step from (V_{t-1}, a_{t-1}) and X_t: returns (S_t, V_t, a_t)."""
    if c.delay:
        s_prev, f_prev = _fire(c, v, p.thr)
        if c.reset == "zero":
            v = v * (1.0 - f_prev)
        h = _charge(c, p, v, x)
        if c.reset == "subtract":
            h = h - p.thr * s_prev
        s, _ = _fire(c, h, p.thr)
        return s, h, a
    h = _charge(c, p, v, x)
    thr = p.thr + p.b * a if c.use_a else p.thr
    s, f = _fire(c, h, thr)
    if c.reset == "subtract":
        v_new = h - thr * s
    elif c.reset == "zero":
        v_new = h * (1.0 - f)
    else:
        v_new = h
    if c.use_a:
        a = p.rho * a + s
    return s, v_new, a


class _Acc(NamedTuple):
    """Per-neuron parameter-gradient accumulators (registers, summed over time)."""

    beta: Array
    thr: Array
    b: Array
    rho: Array
    alpha: Array


def _step_bwd(c: _Cfg, p: _P, v, a, x, g_s, g_v, g_a, acc: _Acc):
    """Reverse of :func:`_step` at one t.

    Given the state before the step (v = V_{t-1}, a = a_{t-1}), X_t, and the cotangents of the
    step's outputs (g_s of S_t, g_v of V_t, g_a of a_t) returns (g_x, g_{V_{t-1}}, g_{a_{t-1}}, acc).
    """
    if c.delay:
        s_prev, f_prev = _fire(c, v, p.thr)
        vr = v * (1.0 - f_prev) if c.reset == "zero" else v
        h = _charge(c, p, vr, x)
        if c.reset == "subtract":
            h = h - p.thr * s_prev
        g_h = g_v
        dh, dthr, dal = _fire_bwd(c, h, p.thr, p.alpha, g_s, None)
        g_h = g_h + dh
        g_thr = dthr
        g_al = dal
        g_sprev = None
        if c.reset == "subtract":
            g_thr = g_thr - g_h * s_prev
            if not c.detach:
                g_sprev = -g_h * p.thr
        g_beta = g_h * vr
        if c.decay_input:
            g_beta = g_beta - g_h * x
            g_x = g_h * (1.0 - p.beta)
        else:
            g_x = g_h
        g_vr = g_h * p.beta
        g_fprev = None
        if c.reset == "zero":
            g_vprev = g_vr * (1.0 - f_prev)
            if not c.detach:
                g_fprev = -g_vr * v
        else:
            g_vprev = g_vr
        if g_sprev is not None or g_fprev is not None:
            dv, dthr2, dal2 = _fire_bwd(c, v, p.thr, p.alpha, g_sprev, g_fprev)
            g_vprev = g_vprev + dv
            g_thr = g_thr + dthr2
            g_al = g_al + dal2
        acc = acc._replace(beta=acc.beta + g_beta, thr=acc.thr + g_thr, alpha=acc.alpha + g_al)
        return g_x, g_vprev, g_a, acc

    h = _charge(c, p, v, x)
    thr = p.thr + p.b * a if c.use_a else p.thr
    s, f = _fire(c, h, thr)
    g_stot = g_s
    g_aprev = g_a
    if c.use_a:
        g_stot = g_stot + g_a
        acc = acc._replace(rho=acc.rho + g_a * a)
        g_aprev = p.rho * g_a
    g_f = None
    if c.reset == "subtract":
        g_h = g_v
        g_thr = -g_v * s
        if not c.detach:
            g_stot = g_stot - g_v * thr
    elif c.reset == "zero":
        g_h = g_v * (1.0 - f)
        g_thr = jnp.zeros_like(h)
        if not c.detach:
            g_f = -g_v * h
    else:
        g_h = g_v
        g_thr = jnp.zeros_like(h)
    dh, dthr, dal = _fire_bwd(c, h, thr, p.alpha, g_stot, g_f)
    g_h = g_h + dh
    g_thr = g_thr + dthr
    if c.use_a:
        acc = acc._replace(b=acc.b + g_thr * a)
        g_aprev = g_aprev + p.b * g_thr
    g_beta = g_h * v
    if c.decay_input:
        g_beta = g_beta - g_h * x
        g_x = g_h * (1.0 - p.beta)
    else:
        g_x = g_h
    acc = acc._replace(beta=acc.beta + g_beta, thr=acc.thr + g_thr, alpha=acc.alpha + dal)
    return g_x, g_h * p.beta, g_aprev, acc


# --- kernels ------------------------------------------------------------------------------------


def _load_params(c: _Cfg, refs, mask) -> _P:
    beta_ref, thr_ref, b_ref, rho_ref, alpha_ref = refs

    def ld(ref):
        if c.scalar:  # a [1] block: the same value for every neuron of the program
            return jnp.broadcast_to(ref[...], (c.BM,))
        return _ld(ref, mask)

    return _P(
        beta=ld(beta_ref),
        thr=ld(thr_ref),
        b=ld(b_ref) if c.use_a else None,
        rho=ld(rho_ref) if c.use_a else None,
        alpha=ld(alpha_ref),
    )


def _st_param_grad(c: _Cfg, ref, g, mask) -> None:
    """Store a parameter gradient: per neuron, or (scalar parameters) the program's partial sum."""
    if not c.scalar:
        _st(ref, g, mask)
        return
    if mask is not None:
        g = jnp.where(mask, g, 0.0)
    ref[...] = jnp.broadcast_to(jnp.sum(g), (1,))


def _chunks(c: _Cfg, size: int) -> tuple[int, int]:
    """(number of full chunks of ``size`` steps, remainder steps)."""
    return c.T // size, c.T % size


def _fwd_kernel(c: _Cfg, *refs):
    x_ref, v0_ref, a0_ref, *prm_refs = refs[:8]
    outs = list(refs[8:])
    s_ref, vT_ref = outs.pop(0), outs.pop(0)
    aT_ref = outs.pop(0) if c.use_a else None
    vseq_ref = outs.pop(0) if c.membrane else None
    ckv_ref = outs.pop(0) if c.save else None
    cka_ref = outs.pop(0) if c.save and c.use_a else None
    mask = _mask(c)
    p = _load_params(c, prm_refs, mask)
    v = _ld(v0_ref, mask)
    a = _ld(a0_ref, mask) if c.use_a else None
    out_dtype = s_ref.dtype
    nf, r = _chunks(c, c.Kf)

    def load_rows(t0, n):
        return tuple(_ld(_row(x_ref, t0 + i), mask, c.evict) for i in range(n))

    def run(ci, xs, v, a, first):
        """Steps of forward chunk ci; checkpoints (v, a) every K steps, except at t = 0 (= v0)."""
        t0 = ci * c.Kf
        per = c.Kf // c.K
        for i, xt in enumerate(xs):
            if c.save and i % c.K == 0 and not (first and i == 0):
                _st(_row(ckv_ref, ci * per + i // c.K), v, mask)
                if c.use_a:
                    _st(_row(cka_ref, ci * per + i // c.K), a, mask)
            s, v, a = _step(c, p, v, a, xt.astype(_F32))
            _st(_row(s_ref, t0 + i), s.astype(out_dtype), mask, c.evict)
            if c.membrane:
                _st(_row(vseq_ref, t0 + i), v, mask)
        return v, a

    if nf > 0:
        xs = load_rows(0, c.Kf)
        nxt = load_rows(c.Kf, c.Kf) if nf > 1 else None  # prefetch chunk 1 while chunk 0 runs
        v, a = run(0, xs, v, a, first=True)
        if nf > 1:
            def body(ci, carry):
                v, a, xs = carry
                nxt = load_rows(jnp.minimum(ci + 1, nf - 1) * c.Kf, c.Kf)  # prefetch the next chunk
                v, a = run(ci, xs, v, a, first=False)
                return v, a, nxt

            v, a, _ = jax.lax.fori_loop(1, nf, body, (v, a, nxt))
    if r > 0:
        v, a = run(nf, load_rows(nf * c.Kf, r), v, a, first=nf == 0)
    _st(vT_ref, v, mask)
    if c.use_a:
        _st(aT_ref, a, mask)


def _bwd_kernel(c: _Cfg, *refs):
    refs = list(refs)
    x_ref, v0_ref, a0_ref, ckv_ref = refs.pop(0), refs.pop(0), refs.pop(0), refs.pop(0)
    cka_ref = refs.pop(0) if c.use_a else None
    prm_refs = [refs.pop(0) for _ in range(5)]
    gs_ref, gvT_ref = refs.pop(0), refs.pop(0)
    gaT_ref = refs.pop(0) if c.use_a else None
    gvseq_ref = refs.pop(0) if c.membrane else None
    gx_ref, gv0_ref = refs.pop(0), refs.pop(0)
    ga0_ref = refs.pop(0) if c.use_a else None
    gbeta_ref, gthr_ref = refs.pop(0), refs.pop(0)
    gb_ref = refs.pop(0) if c.use_a else None
    grho_ref = refs.pop(0) if c.use_a else None
    galpha_ref = refs.pop(0)
    assert not refs

    mask = _mask(c)
    p = _load_params(c, prm_refs, mask)
    g_v = _ld(gvT_ref, mask)
    g_a = _ld(gaT_ref, mask) if c.use_a else None
    zero = jnp.zeros_like(p.beta)
    acc = _Acc(zero, zero, zero, zero, zero)
    out_dtype = gx_ref.dtype
    nf, r = _chunks(c, c.K)

    def chunk(ci, t0, n, g_v, g_a, acc, first):
        xs = [_ld(_row(x_ref, t0 + i), mask, c.evict).astype(_F32) for i in range(n)]
        gss = [_ld(_row(gs_ref, t0 + i), mask, c.evict).astype(_F32) for i in range(n)]
        gvs = [_ld(_row(gvseq_ref, t0 + i), mask) for i in range(n)] if c.membrane else None
        if first:  # chunk 0 starts from the initial state itself (no checkpoint stored)
            v = _ld(v0_ref, mask)
            a = _ld(a0_ref, mask) if c.use_a else None
        else:
            v = _ld(_row(ckv_ref, ci), mask)
            a = _ld(_row(cka_ref, ci), mask) if c.use_a else None
        vs, as_ = [], []
        for i in range(n):  # recompute the chunk's states from its checkpoint
            vs.append(v)
            as_.append(a)
            if i + 1 < n:
                _, v, a = _step(c, p, v, a, xs[i])
        for i in reversed(range(n)):
            gv_tot = g_v + gvs[i] if c.membrane else g_v
            g_x, g_v, g_a, acc = _step_bwd(c, p, vs[i], as_[i], xs[i], gss[i], gv_tot, g_a, acc)
            _st(_row(gx_ref, t0 + i), g_x.astype(out_dtype), mask, c.evict)
        return g_v, g_a, acc

    if r > 0:
        g_v, g_a, acc = chunk(nf, nf * c.K, r, g_v, g_a, acc, first=nf == 0)
    if nf > 1:
        def body(j, carry):
            ci = nf - 1 - j
            return chunk(ci, ci * c.K, c.K, *carry, first=False)

        g_v, g_a, acc = jax.lax.fori_loop(0, nf - 1, body, (g_v, g_a, acc))
    if nf > 0:
        g_v, g_a, acc = chunk(0, 0, c.K, g_v, g_a, acc, first=True)
    _st(gv0_ref, g_v, mask)
    if c.use_a:
        _st(ga0_ref, g_a, mask)
        _st_param_grad(c, gb_ref, acc.b, mask)
        _st_param_grad(c, grho_ref, acc.rho, mask)
    _st_param_grad(c, gbeta_ref, acc.beta, mask)
    _st_param_grad(c, gthr_ref, acc.thr, mask)
    _st_param_grad(c, galpha_ref, acc.alpha, mask)


# --- pallas_call wrappers ---------------------------------------------------------------------


SCALAR, PARTIAL = "scalar", "partial"
"""Block kinds besides ``[M]`` vectors and ``[R, M]`` arrays: a ``[1]`` array every program reads
(scalar parameters) and a ``[cdiv(M, BM)]`` array with one value per program (partial sums)."""


def _specs(c: _Cfg, rows: list[int | str | None]):
    """BlockSpecs: ``None`` -> a ``[M]`` vector, an int R -> an ``[R, M]`` array, :data:`SCALAR` /
    :data:`PARTIAL` (see there)."""
    out = []
    for r in rows:
        if r is None:
            out.append(pl.BlockSpec((c.BM,), lambda i: (i,)))
        elif r == SCALAR:
            out.append(pl.BlockSpec((1,), lambda i: (0,)))
        elif r == PARTIAL:
            out.append(pl.BlockSpec((1,), lambda i: (i,)))
        else:
            out.append(pl.BlockSpec((r, c.BM), lambda i: (0, i)))
    return out


def _compiler_params(c: _Cfg, interpret: bool):
    if interpret or _pltriton is None:
        return None
    return _pltriton.CompilerParams(num_warps=c.num_warps, num_stages=c.num_stages)


def _call(kernel, c: _Cfg, in_rows, out_shapes, out_rows, interpret: bool, name: str):
    grid = (pl.cdiv(c.M, c.BM),)
    kwargs = {}
    cp = _compiler_params(c, interpret)
    if cp is not None:
        kwargs["compiler_params"] = cp
    return pl.pallas_call(
        lambda *refs: kernel(c, *refs),
        out_shape=out_shapes,
        grid=grid,
        in_specs=_specs(c, in_rows),
        out_specs=_specs(c, out_rows),
        interpret=interpret,
        name=name,
        **kwargs,
    )


def _scalar_params(params, M: int) -> bool:
    """True when every parameter is ``[1]`` (scalar mode), False when every one is ``[M]``."""
    names = ("beta", "threshold", "adapt_scale", "adapt_decay", "alpha")
    shapes = [tuple(p.shape) for p in params]
    if all(sh == (1,) for sh in shapes):
        return True
    for name, sh in zip(names, shapes, strict=True):
        if sh != (M,):
            raise ValueError(f"{name}: expected shape ({M},), or (1,) for all five parameters, got {sh}")
    return False


def _check(x, v0):
    if x.ndim != 2:
        raise ValueError(f"x: expected [T, M], got shape {tuple(x.shape)}")
    T, M = x.shape
    if T < 1 or M < 1:
        raise ValueError(f"x: expected T >= 1 and M >= 1, got shape {tuple(x.shape)}")
    if v0.shape != (M,):
        raise ValueError(f"v0: expected shape ({M},), got {tuple(v0.shape)}")
    return T, M


def neuron_scan_forward(
    x: Array,
    v0: Array,
    a0: Array,
    beta: Array,
    threshold: Array,
    adapt_scale: Array,
    adapt_decay: Array,
    alpha: Array,
    *,
    kind: str = "binary",
    levels: int = 1,
    adaptive: bool = False,
    decay_input: bool = False,
    reset: str = "subtract",
    detach_reset: bool = False,
    reset_delay: bool = False,
    surrogate: str = "atan",
    return_membrane: bool = False,
    interpret: bool = False,
    block_m: int | None = None,
    chunk: int | None = None,
    num_warps: int | None = None,
    checkpoint_every: int | None = None,
    evict: bool | None = None,
    num_stages: int | None = None,
    save_residuals: bool = True,
):
    """Forward neuron scan over ``x[T, M]`` (see the module docstring for the equations).

    ``v0, a0`` and the parameters are ``[M]`` float32. ``block_m`` / ``chunk`` / ``num_warps`` /
    ``checkpoint_every`` override :func:`default_tiling` (pass the same ``checkpoint_every`` to
    :func:`neuron_scan_backward`); ``evict`` marks the ``[T, M]`` streams evict-first in the caches
    (default: from :data:`EVICT_FIRST_MIN_M` neurons and :data:`SHORT_T` steps on);
    ``num_stages`` is Triton's pipelining depth (default 1: the kernel prefetches chunks itself).
    ``save_residuals=False`` (a forward without a backward) skips the checkpoint writes.

    Returns ``(s[T, M] x.dtype, v_T[M] f32, a_T[M] f32, v_seq[T, M] f32 or None, residuals)``;
    ``residuals`` hold ``x``, the per-chunk checkpoints of ``v`` (and ``a``) and the parameters
    (None without ``save_residuals``).
    """
    T, M = _check(x, v0)
    f32 = lambda z: jnp.asarray(z, _F32)
    v0, a0 = f32(v0), f32(a0)
    params = tuple(f32(z) for z in (beta, threshold, adapt_scale, adapt_decay, alpha))
    c = _make_cfg(T, M, kind=kind, levels=levels, adaptive=adaptive, decay_input=decay_input, reset=reset,
                  detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                  return_membrane=return_membrane, block_m=block_m, chunk=chunk, num_warps=num_warps,
                  checkpoint_every=checkpoint_every, evict=evict, which="fwd", interpret=interpret,
                  num_stages=num_stages, save_residuals=save_residuals, scalar_params=_scalar_params(params, M))
    nc = -(-T // c.K)
    out_shapes = [jax.ShapeDtypeStruct((T, M), x.dtype), jax.ShapeDtypeStruct((M,), _F32)]
    out_rows: list[int | None] = [T, None]
    if c.use_a:
        out_shapes.append(jax.ShapeDtypeStruct((M,), _F32))
        out_rows.append(None)
    if c.membrane:
        out_shapes.append(jax.ShapeDtypeStruct((T, M), _F32))
        out_rows.append(T)
    if c.save:
        out_shapes.append(jax.ShapeDtypeStruct((nc, M), _F32))
        out_rows.append(nc)
    if c.save and c.use_a:
        out_shapes.append(jax.ShapeDtypeStruct((nc, M), _F32))
        out_rows.append(nc)
    in_rows = [T, None, None] + [SCALAR if c.scalar else None] * 5
    from . import mosaic_forward  # noqa: PLC0415 - that module imports this one

    def triton_lowered(x, v0, a0, params):
        outs = list(_call(_fwd_kernel, c, in_rows, out_shapes, out_rows, interpret, "neuron_scan_fwd")(
            x, v0, a0, *params))
        s, vT = outs.pop(0), outs.pop(0)
        aT = outs.pop(0) if c.use_a else None
        vseq = outs.pop(0) if c.membrane else None
        ckv = outs.pop(0) if c.save else None
        cka = outs.pop(0) if c.save and c.use_a else None
        return s, vT, aT, vseq, ckv, cka

    if mosaic_forward.eligible(c, interpret):
        @jax.custom_batching.custom_vmap
        def run(x, v0, a0, params):
            s, vT, aT, ckv, cka = mosaic_forward.forward(c, x, v0, a0, params)
            return s, vT, aT, None, ckv, cka

        @run.def_vmap
        def _batched(axis_size, in_batched, *args):  # under vmap: the Triton-lowered kernel's batching
            del axis_size
            in_axes = tuple(jax.tree.map(lambda b: 0 if b else None, in_batched))
            outs = jax.vmap(triton_lowered, in_axes=in_axes)(*args)
            return outs, jax.tree.map(lambda _: True, outs)

        s, vT, aT, vseq, ckv, cka = run(x, v0, a0, params)
    else:
        s, vT, aT, vseq, ckv, cka = triton_lowered(x, v0, a0, params)
    aT = aT if c.use_a else a0
    if not c.save:
        return s, vT, aT, vseq, None
    return s, vT, aT, vseq, (x, v0, a0, ckv, cka, params)


def neuron_scan_backward(
    residuals,
    g_s: Array,
    g_vT: Array,
    g_aT: Array,
    g_vseq: Array | None,
    *,
    kind: str = "binary",
    levels: int = 1,
    adaptive: bool = False,
    decay_input: bool = False,
    reset: str = "subtract",
    detach_reset: bool = False,
    reset_delay: bool = False,
    surrogate: str = "atan",
    return_membrane: bool = False,
    interpret: bool = False,
    block_m: int | None = None,
    num_warps: int | None = None,
    checkpoint_every: int | None = None,
    chunk: int | None = None,
    evict: bool | None = None,
    num_stages: int | None = None,
):
    """Reverse-time scan: cotangents of every input of :func:`neuron_scan_forward`.

    ``g_s[T, M]`` (spikes' dtype), ``g_vT, g_aT [M]``, ``g_vseq[T, M]`` or None. Returns
    ``(g_x[T, M] x.dtype, g_v0, g_a0, g_beta, g_threshold, g_adapt_scale, g_adapt_decay, g_alpha)``,
    the last seven ``[M]`` float32 with the parameter gradients summed over time in the kernel.
    """
    del chunk  # the backward chunk is the checkpoint interval
    x, v0, a0, ckv, cka, params = residuals
    T, M = x.shape
    c = _make_cfg(T, M, kind=kind, levels=levels, adaptive=adaptive, decay_input=decay_input, reset=reset,
                  detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                  return_membrane=return_membrane, block_m=block_m, chunk=None, num_warps=num_warps,
                  checkpoint_every=checkpoint_every, evict=evict, which="bwd", interpret=interpret,
                  num_stages=num_stages, scalar_params=_scalar_params(params, M), itemsize=x.dtype.itemsize)
    nc = -(-T // c.K)
    if ckv.shape != (nc, M):
        raise ValueError(f"residuals: checkpoints {ckv.shape} do not match chunk {c.K} for T={T}")
    g_vT = jnp.asarray(g_vT, _F32)
    g_aT = jnp.asarray(g_aT, _F32)
    args = [x, v0, a0, ckv]
    rows: list[int | None] = [T, None, None, nc]
    if c.use_a:
        args.append(cka)
        rows.append(nc)
    args += list(params)
    rows += [SCALAR if c.scalar else None] * 5
    args += [g_s.astype(x.dtype) if g_s.dtype != x.dtype else g_s, g_vT]
    rows += [T, None]
    if c.use_a:
        args.append(g_aT)
        rows.append(None)
    if c.membrane:
        if g_vseq is None:
            g_vseq = jnp.zeros((T, M), _F32)
        args.append(jnp.asarray(g_vseq, _F32))
        rows.append(T)
    # g_x, g_v0, [g_a0], then the parameter gradients: per neuron, or one partial sum per program
    n_state, n_prm = (2, 5) if c.use_a else (1, 3)
    prm_len, prm_row = (pl.cdiv(M, c.BM), PARTIAL) if c.scalar else (M, None)
    out_shapes = [jax.ShapeDtypeStruct((T, M), x.dtype)] + [jax.ShapeDtypeStruct((M,), _F32)] * n_state
    out_shapes += [jax.ShapeDtypeStruct((prm_len,), _F32)] * n_prm
    out_rows: list[int | str | None] = [T] + [None] * n_state + [prm_row] * n_prm
    outs = list(_call(_bwd_kernel, c, rows, out_shapes, out_rows, interpret, "neuron_scan_bwd")(*args))
    if c.scalar:
        outs[-n_prm:] = [jnp.sum(g, keepdims=True) for g in outs[-n_prm:]]
    g_x, g_v0 = outs.pop(0), outs.pop(0)
    zeros = jnp.zeros_like(params[0])
    if c.use_a:
        g_a0, g_beta, g_thr, g_b, g_rho, g_alpha = outs
    else:
        g_beta, g_thr, g_alpha = outs
        g_a0, g_b, g_rho = g_aT, zeros, zeros
    return g_x, g_v0, g_a0, g_beta, g_thr, g_b, g_rho, g_alpha
