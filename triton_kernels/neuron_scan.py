"""The generalized neuron scan in Triton (forward and backward), called through
``jax_triton.triton_call``.

Contract (the one of ``spikejax.backends``; config = ``ScanSpec.kernel_config()``)::

    neuron_scan_forward(x[T,M], v0[M], a0[M], beta[M], threshold[M], adapt_scale[M],
                        adapt_decay[M], alpha[M], **config)
        -> (s[T,M] x.dtype, v_T[M] f32, a_T[M] f32, v_seq[T,M] f32 or None, residuals)
    neuron_scan_backward(residuals, g_s[T,M], g_vT[M], g_aT[M], g_vseq[T,M] or None, **config)
        -> (g_x[T,M] x.dtype, g_v0, g_a0, g_beta, g_threshold, g_adapt_scale, g_adapt_decay,
            g_alpha)   # every parameter gradient [M] f32, summed over time in the kernel

The math, step t (``reset_delay=False``, SpikingJelly's order; b = adapt_scale, ρ = adapt_decay)::

    H_t = β V_{t-1} + γ X_t              γ = 1 - β (decay_input) else 1
    θ_t = θ + b a_{t-1}                  (adaptive, else θ)
    S_t, F_t = fire(H_t, θ_t)            binary Θ(H-θ_t); ternary Θ(H-θ_t) - Θ(-H-θ_t);
                                         multilevel Σ_k Θ(H - kθ_t); F = "fired" 0/1 indicator
    V_t = H_t - θ_t S_t | H_t (1 - F_t) | H_t        (subtract | zero | none)
    a_t = ρ a_{t-1} + S_t

and with ``reset_delay=True`` (snnTorch's order, non-adaptive)::

    S'_{t-1}, F'_{t-1} = fire(V_{t-1}, θ)
    H_t = β V_{t-1}(1 - F'_{t-1} if zero) + γ X_t - θ S'_{t-1} (if subtract);  V_t = H_t
    S_t = fire(H_t, θ)

Memory plan (the scan is memory-bound; the same plan as ``pallas_kernels``). One Triton program
owns ``BLOCK`` neurons and walks over time in chunks with the state in registers:

* Forward: the ``KF`` rows ``x[t0:t0+KF, block]`` of a chunk are loaded before any of its steps
  runs, and the next chunk is loaded while the current one is computed (a register double
  buffer), so a long ``T`` with few neurons keeps many loads in flight. No per-step trace is
  saved: every ``K`` steps the forward writes a checkpoint of ``V`` (and ``a`` for ALIF),
  ``(ceil(T/K) - 1) x M x 4`` bytes each, none at t = 0 (the backward reads ``v0``).
* Backward: one reverse-time kernel. Per K-step chunk (latest first) it loads the checkpoint and
  the chunk's ``x`` and ``g_s`` rows (prefetching the previous chunk's rows meanwhile), recomputes
  the chunk's states with the forward's own step function (bit for bit: same f32 operations, FMA
  contraction off, so every Heaviside takes the forward's branch), then walks the chunk backwards,
  writes ``g_x`` and accumulates every parameter gradient in registers, stored once per neuron.
* Bytes per element (f32 in/out): forward 8 (x, s) + 4/K, backward 12 (x, g_s, g_x) + 4/K;
  saving an f32 trace of ``H`` instead (SpikingJelly's plan, and this module's until 2026-11-30)
  costs 12 + 12.

``jax.vmap`` is supported by a ``custom_vmap`` rule that folds the batch axis into the neuron
axis: the kernels address ``x[B, T, M]`` (and the checkpoints ``[B, C, M]``) batch-major directly,
so batching needs no transpose.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

try:  # triton is optional: importing this module (and spikejax) must work without it
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR: str | None = None
except ImportError as _err:  # pragma: no cover - depends on the install
    _TRITON_IMPORT_ERROR = str(_err)

    class _MissingTriton:
        """Stand-in so the kernel definitions below parse; every entry point raises through
        :func:`_require_triton` first."""

        constexpr = int

        @staticmethod
        def jit(fn=None, **_kw):
            return fn if fn is not None else (lambda f: f)

    triton = _MissingTriton()
    tl = _MissingTriton()

__all__ = ["neuron_scan_forward", "neuron_scan_backward", "KINDS", "RESETS", "SURROGATES"]

KINDS = ("binary", "ternary", "multilevel")
RESETS = ("subtract", "zero", "none")
SURROGATES = ("atan", "sigmoid", "fast_sigmoid", "triangular", "rectangular")
_SURROGATE_ALIASES = {"superspike": "fast_sigmoid", "ste": "rectangular", "arctan": "atan"}

EVICT_FIRST_MIN_N = 1 << 18
"""From this many neurons on (and :data:`SHORT_T` steps or more) the ``[T, M]`` streams carry the
evict-first cache hint (every byte is touched once); below it ``x`` may stay in L2 for the backward's
re-read. The Pallas kernels' rule, measured there (BENCHMARKS.md)."""

TUNING_VARS = tuple(f"SPIKEJAX_TRITON_{name}" for name in (
    "FWD_BLOCK", "FWD_WARPS", "BWD_BLOCK", "BWD_WARPS", "CHUNK", "CHECKPOINT", "EVICT", "STAGES_FWD",
    "STAGES_BWD"))
"""The environment variables that override the launch choices (read when a scan is called; see
:func:`default_tiling`, :func:`_evict`, :func:`_stages`)."""

SHORT_T = 16
"""From :data:`EVICT_FIRST_MIN_N` neurons on, a forward over fewer steps than this runs as one chunk
per program with larger blocks (as in Pallas), and without the evict-first hint."""


# =============================================================================================
# Triton device functions. Each mirrors spikejax.surrogate / spikejax.backends.reference_scan.
# =============================================================================================


@triton.jit
def _surrogate_vjp(u, c, alpha, SURR: tl.constexpr):
    """Cotangent ``c`` of ``spike(u, α)`` -> ``(c σ'_α(u), c ∂σ_α(u)/∂α)``.

    Reference (spikejax.surrogate):
      atan:         σ' = α / (2 (1 + (π α u / 2)²))        ∂σ/∂α = u / (2 (1 + (π α u / 2)²))
      sigmoid:      σ' = α sg (1 - sg), sg = sig(α u)     ∂σ/∂α = u sg (1 - sg)
      fast_sigmoid: σ' = 1 / (1 + α|u|)²                  ∂σ/∂α = -u |u| / (1 + α|u|)²
      triangular:   σ' = α max(0, 1 - α|u|)               ∂σ/∂α = u (1 - α|u|) where α|u| < 1
      rectangular:  σ' = α 1[|α u| < 1/2]                 ∂σ/∂α = u 1[|α u| < 1/2]
    """
    if SURR == 0:
        z = 1.5707963267948966 * alpha * u  # (π/2) α u
        d = 1.0 / (1.0 + z * z)
        dx = 0.5 * alpha * d
        da = 0.5 * u * d
    elif SURR == 1:
        sg = 1.0 / (1.0 + tl.exp(-(alpha * u)))
        q = sg * (1.0 - sg)
        dx = alpha * q
        da = u * q
    elif SURR == 2:
        au = tl.abs(u)
        r = 1.0 + alpha * au
        r2 = 1.0 / (r * r)
        dx = r2
        da = -u * au * r2
    elif SURR == 3:
        aau = alpha * tl.abs(u)
        dx = alpha * tl.maximum(1.0 - aau, 0.0)
        da = tl.where(aau < 1.0, u * (1.0 - aau), 0.0)
    else:
        inside = tl.abs(alpha * u) < 0.5
        dx = tl.where(inside, alpha, 0.0)
        da = tl.where(inside, u, 0.0)
    return c * dx, c * da


@triton.jit
def _fire(h, thr, KIND: tl.constexpr, LEVELS: tl.constexpr):
    """Spike value S and fired indicator F of membrane ``h`` against ``thr`` (forward).

    Reference (backends._fire): up = Θ(h - θ); binary S = F = up; ternary down = Θ(-h - θ),
    S = up - down, F = up + down; multilevel S = up + Σ_{k=2..L} Θ(h - kθ), F = up.
    """
    up = ((h - thr) >= 0.0).to(tl.float32)
    if KIND == 0:
        s = up
        f = up
    elif KIND == 1:
        down = ((-h - thr) >= 0.0).to(tl.float32)
        s = up - down
        f = up + down
    else:
        s = up
        for k in tl.static_range(2, LEVELS + 1):
            s += ((h - k * thr) >= 0.0).to(tl.float32)
        f = up
    return s, f


@triton.jit
def _fire_vjp(h, thr, alpha, c_s, c_f, KIND: tl.constexpr, LEVELS: tl.constexpr, SURR: tl.constexpr):
    """Backward of ``_fire``: cotangents (c_s on S, c_f on F) -> (g_h, g_θ, g_α) contributions.

    Each Θ(u) call gets cotangent c and contributes c σ'(u) ∂u/∂h, c σ'(u) ∂u/∂θ, c ∂σ/∂α.
    """
    c_up = c_s + c_f
    d_up, a_up = _surrogate_vjp(h - thr, c_up, alpha, SURR)
    g_h = d_up
    g_thr = -d_up
    g_a = a_up
    if KIND == 1:  # down = Θ(-h - θ): cotangent c_f - c_s, ∂u/∂h = -1, ∂u/∂θ = -1
        d_dn, a_dn = _surrogate_vjp(-h - thr, c_f - c_s, alpha, SURR)
        g_h -= d_dn
        g_thr -= d_dn
        g_a += a_dn
    elif KIND == 2:  # Θ(h - kθ), k >= 2: cotangent c_s, ∂u/∂θ = -k
        for k in tl.static_range(2, LEVELS + 1):
            d_k, a_k = _surrogate_vjp(h - k * thr, c_s, alpha, SURR)
            g_h += d_k
            g_thr -= k * d_k
            g_a += a_k
    return g_h, g_thr, g_a


@triton.jit
def _reset(h, thr, s, f, RESET: tl.constexpr):
    """V = H - θ S (subtract) | H (1 - F) (zero) | H (none)."""
    if RESET == 0:
        v = h - thr * s
    elif RESET == 1:
        v = h * (1.0 - f)
    else:
        v = h
    return v


@triton.jit
def _offsets(pid, M_INNER: tl.constexpr, T: tl.constexpr, C: tl.constexpr, BATCHED: tl.constexpr,
             BLOCK: tl.constexpr):
    """Neuron ids ``n`` of this program and the int64 element offsets of ``(t=0, n)`` in a
    batch-major ``[B, T, M_INNER]`` stream and of ``(c=0, n)`` in the ``[B, C, M_INNER]``
    checkpoints (B = 1 unless vmapped)."""
    n = pid * BLOCK + tl.arange(0, BLOCK)
    if BATCHED:
        batch = (n // M_INNER).to(tl.int64)
        inner = (n % M_INNER).to(tl.int64)
        return n, batch * T * M_INNER + inner, batch * C * M_INNER + inner
    return n, n.to(tl.int64), n.to(tl.int64)


@triton.jit
def _params(n, mask, beta_ptr, thr_ptr, b_ptr, rho_ptr, ADAPTIVE: tl.constexpr,
            DECAY_INPUT: tl.constexpr):
    """Per-neuron parameters ``(β, θ, γ, b, ρ)`` (γ = 1 - β with decay_input, else 1; b = ρ = 0
    for non-adaptive neurons), loaded once per program by both kernels."""
    beta = tl.load(beta_ptr + n, mask=mask, other=0.0)
    thr = tl.load(thr_ptr + n, mask=mask, other=1.0)
    if DECAY_INPUT:
        gamma = 1.0 - beta
    else:
        gamma = tl.full(beta.shape, 1.0, tl.float32)
    if ADAPTIVE:
        b = tl.load(b_ptr + n, mask=mask, other=0.0)
        rho = tl.load(rho_ptr + n, mask=mask, other=0.0)
    else:
        b = tl.zeros(beta.shape, tl.float32)
        rho = tl.zeros(beta.shape, tl.float32)
    return beta, thr, gamma, b, rho


@triton.jit
def _rows(ptr, base, t0, T: tl.constexpr, M_INNER: tl.constexpr, mask, R: tl.constexpr,
          EVICT: tl.constexpr):
    """The ``R`` rows ``ptr[t0 : t0 + R, block]`` of a ``[T, M]`` stream as a tuple of f32 ``[BLOCK]``
    vectors, all loads issued before any is used; rows outside ``[0, T)`` read as 0."""
    out = ()
    for i in tl.static_range(R):
        t = t0 + i
        ok = mask & (t >= 0) & (t < T)
        row = tl.load(ptr + base + tl.cast(t, tl.int64) * M_INNER, mask=ok, other=0.0,
                      eviction_policy=EVICT)
        out = out + (row.to(tl.float32),)
    return out


@triton.jit
def _step(v, a, x, beta, thr, gamma, b, rho, KIND: tl.constexpr, LEVELS: tl.constexpr,
          ADAPTIVE: tl.constexpr, RESET: tl.constexpr, RESET_DELAY: tl.constexpr):
    """One time step: state ``(V_{t-1}, a_{t-1})`` and input ``X_t`` -> ``(H_t, V_t, a_t, S_t)``
    (module docstring; reference: backends.reference_scan.step). The forward and the backward's
    recomputation both call this, so they agree bit for bit."""
    if RESET_DELAY:
        s_prev, f_prev = _fire(v, thr, KIND, LEVELS)
        if RESET == 1:
            v = v * (1.0 - f_prev)
        h = beta * v + gamma * x
        if RESET == 0:
            h = h - thr * s_prev
        s, f = _fire(h, thr, KIND, LEVELS)
        v_new = h
        a_new = a
    else:
        h = beta * v + gamma * x
        if ADAPTIVE:
            thr_t = thr + b * a
        else:
            thr_t = thr
        s, f = _fire(h, thr_t, KIND, LEVELS)
        v_new = _reset(h, thr_t, s, f, RESET)
        if ADAPTIVE:
            a_new = rho * a + s
        else:
            a_new = a
    return h, v_new, a_new, s


@triton.jit
def _step_vjp(v, a, h, x, g_s, g_v, g_a, beta, thr, gamma, b, rho, alpha,
              KIND: tl.constexpr, LEVELS: tl.constexpr, ADAPTIVE: tl.constexpr,
              DECAY_INPUT: tl.constexpr, RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
              RESET_DELAY: tl.constexpr, SURR: tl.constexpr):
    """VJP of :func:`_step` at ``(V_{t-1}, a_{t-1}, X_t)`` with ``H_t`` from the recomputation.

    Cotangents ``g_s`` of S_t, ``g_v`` of V_t, ``g_a`` of a_t ->
    ``(g_X, g_V_{t-1}, g_a_{t-1}, dβ, dθ, db, dρ, dα)`` (the last five: this step's terms of the
    parameter gradients). Non-delayed::

        c_s = g_s (+ g_a)                    (a_t = ρ a_{t-1} + S_t)
        subtract: g_H = g_v, g_θt = -g_v S_t, c_s -= g_v θ_t (unless detach_reset)
        zero:     g_H = g_v (1 - F_t),       c_f  = -g_v H_t   (unless detach_reset)
        (g_H, g_θt, dα) += fire_vjp(H_t, θ_t; c_s, c_f)
        θ_t = θ + b a_{t-1}: dθ = g_θt, db = g_θt a_{t-1}, dρ = g_a a_{t-1},
                             g_a_{t-1} = ρ g_a + b g_θt
        H_t = β V_{t-1} + γ X_t: g_X = γ g_H, dβ = g_H (V_{t-1} - X_t | V_{t-1}), g_V_{t-1} = β g_H

    Delayed (snnTorch): g_H = g_v + fire_vjp(H_t, θ; g_s), then through
    H_t = β V'_{t-1} + γ X_t - θ S'_{t-1} back to V_{t-1}, including fire_vjp of S'_{t-1}, F'_{t-1}.
    """
    zero = tl.zeros(h.shape, tl.float32)
    d_b = zero
    d_rho = zero
    g_a_prev = g_a
    if RESET_DELAY:
        g_h = g_v
        d_h, d_thr, d_alpha = _fire_vjp(h, thr, alpha, g_s, zero, KIND, LEVELS, SURR)
        g_h += d_h
        s_p, f_p = _fire(v, thr, KIND, LEVELS)
        if RESET == 1:
            v_eff = v * (1.0 - f_p)
        else:
            v_eff = v
        g_veff = g_h * beta
        c_sp = zero
        c_fp = zero
        if RESET == 0:
            d_thr -= g_h * s_p
            if not DETACH_RESET:
                c_sp = -g_h * thr
        if RESET == 1:
            g_vp = g_veff * (1.0 - f_p)
            if not DETACH_RESET:
                c_fp = -g_veff * v
        else:
            g_vp = g_veff
        d_h2, d_thr2, d_a2 = _fire_vjp(v, thr, alpha, c_sp, c_fp, KIND, LEVELS, SURR)
        g_vp += d_h2
        d_thr += d_thr2
        d_alpha += d_a2
    else:
        if ADAPTIVE:
            thr_t = thr + b * a
        else:
            thr_t = thr
        s_t, f_t = _fire(h, thr_t, KIND, LEVELS)
        c_s = g_s
        c_f = zero
        if ADAPTIVE:
            c_s += g_a
        if RESET == 0:
            g_h = g_v
            g_thr_t = -g_v * s_t
            if not DETACH_RESET:
                c_s -= g_v * thr_t
        elif RESET == 1:
            g_h = g_v * (1.0 - f_t)
            g_thr_t = zero
            if not DETACH_RESET:
                c_f = -g_v * h
        else:
            g_h = g_v
            g_thr_t = zero
        d_h, d_thr_f, d_alpha = _fire_vjp(h, thr_t, alpha, c_s, c_f, KIND, LEVELS, SURR)
        g_h += d_h
        d_thr = g_thr_t + d_thr_f
        if ADAPTIVE:
            d_b = d_thr * a
            d_rho = g_a * a
            g_a_prev = rho * g_a + b * d_thr
        v_eff = v
        g_vp = g_h * beta
    if DECAY_INPUT:
        d_beta = g_h * (v_eff - x)
    else:
        d_beta = g_h * v_eff
    return gamma * g_h, g_vp, g_a_prev, d_beta, d_thr, d_b, d_rho, d_alpha


# =============================================================================================
# Forward kernel
# =============================================================================================


@triton.jit
def _scan_fwd_kernel(
    x_ptr, v0_ptr, a0_ptr, beta_ptr, thr_ptr, b_ptr, rho_ptr,  # inputs
    s_ptr, vT_ptr, aT_ptr, vseq_ptr, ckv_ptr, cka_ptr,  # outputs
    T: tl.constexpr, N: tl.constexpr, M_INNER: tl.constexpr, BATCHED: tl.constexpr,
    KIND: tl.constexpr, LEVELS: tl.constexpr, ADAPTIVE: tl.constexpr, DECAY_INPUT: tl.constexpr,
    RESET: tl.constexpr, RESET_DELAY: tl.constexpr, RETURN_MEMBRANE: tl.constexpr,
    SAVE: tl.constexpr, K: tl.constexpr, KF: tl.constexpr, C: tl.constexpr, BLOCK: tl.constexpr,
    EVICT: tl.constexpr,
):
    """One program: BLOCK neurons, all T steps in chunks of KF (a multiple of K); with SAVE the
    state entering step t is checkpointed for every t = K, 2K, ... (checkpoint t/K - 1 of C)."""
    pid = tl.program_id(0)
    n, base, cbase = _offsets(pid, M_INNER, T, C, BATCHED, BLOCK)
    mask = n < N
    beta, thr, gamma, b, rho = _params(n, mask, beta_ptr, thr_ptr, b_ptr, rho_ptr, ADAPTIVE, DECAY_INPUT)
    v = tl.load(v0_ptr + n, mask=mask, other=0.0)
    if ADAPTIVE:
        a = tl.load(a0_ptr + n, mask=mask, other=0.0)
    else:
        a = tl.zeros([BLOCK], tl.float32)
    xs = _rows(x_ptr, base, 0, T, M_INNER, mask, KF, EVICT)
    for ci in range((T + KF - 1) // KF):
        t0 = ci * KF
        nxt = _rows(x_ptr, base, t0 + KF, T, M_INNER, mask, KF, EVICT)  # the next chunk, in flight
        for i in tl.static_range(KF):
            t = t0 + i
            live = t < T
            if SAVE and i % K == 0:  # checkpoint of the state entering step t (none at t = 0)
                ck = cbase + tl.cast(tl.maximum(t // K - 1, 0), tl.int64) * M_INNER
                ok = mask & live & (t > 0)
                tl.store(ckv_ptr + ck, v, mask=ok)
                if ADAPTIVE:
                    tl.store(cka_ptr + ck, a, mask=ok)
            h, v_new, a_new, s = _step(v, a, xs[i], beta, thr, gamma, b, rho, KIND, LEVELS, ADAPTIVE,
                                       RESET, RESET_DELAY)
            if T % KF != 0:  # the last chunk is partial: steps t >= T leave the state alone
                v = tl.where(live, v_new, v)
                a = tl.where(live, a_new, a)
            else:
                v = v_new
                a = a_new
            off = base + tl.cast(t, tl.int64) * M_INNER
            tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=mask & live, eviction_policy=EVICT)
            if RETURN_MEMBRANE:
                tl.store(vseq_ptr + off, v, mask=mask & live, eviction_policy=EVICT)
        xs = nxt
    tl.store(vT_ptr + n, v, mask=mask)
    if ADAPTIVE:
        tl.store(aT_ptr + n, a, mask=mask)


# =============================================================================================
# Backward kernel: reverse time chunk by chunk, recomputing each chunk from its checkpoint
# =============================================================================================


@triton.jit
def _scan_bwd_kernel(
    x_ptr, ckv_ptr, cka_ptr, gs_ptr, gvseq_ptr, gvT_ptr, gaT_ptr,
    v0_ptr, a0_ptr, beta_ptr, thr_ptr, b_ptr, rho_ptr, alpha_ptr,  # inputs
    gx_ptr, gv0_ptr, ga0_ptr, gbeta_ptr, gthr_ptr, gb_ptr, grho_ptr, galpha_ptr,  # outputs
    T: tl.constexpr, N: tl.constexpr, M_INNER: tl.constexpr, BATCHED: tl.constexpr,
    KIND: tl.constexpr, LEVELS: tl.constexpr, ADAPTIVE: tl.constexpr, DECAY_INPUT: tl.constexpr,
    RESET: tl.constexpr, DETACH_RESET: tl.constexpr, RESET_DELAY: tl.constexpr,
    SURR: tl.constexpr, RETURN_MEMBRANE: tl.constexpr, K: tl.constexpr, C: tl.constexpr,
    BLOCK: tl.constexpr, EVICT: tl.constexpr,
):
    """Reverse-time VJP of ``_scan_fwd_kernel``, chunk by chunk (module docstring).

    Carries g_v = ∂L/∂V_t and g_a = ∂L/∂a_t; per chunk: load the checkpoint (v0/a0 for the
    first), recompute the K states with :func:`_step`, then apply :func:`_step_vjp` from the
    chunk's last step to its first, accumulating the parameter gradients.
    """
    pid = tl.program_id(0)
    n, base, cbase = _offsets(pid, M_INNER, T, C, BATCHED, BLOCK)
    mask = n < N
    beta, thr, gamma, b, rho = _params(n, mask, beta_ptr, thr_ptr, b_ptr, rho_ptr, ADAPTIVE, DECAY_INPUT)
    alpha = tl.load(alpha_ptr + n, mask=mask, other=1.0)
    v0 = tl.load(v0_ptr + n, mask=mask, other=0.0)
    g_v = tl.load(gvT_ptr + n, mask=mask, other=0.0)
    zero = tl.zeros([BLOCK], tl.float32)
    if ADAPTIVE:
        a0 = tl.load(a0_ptr + n, mask=mask, other=0.0)
        g_a = tl.load(gaT_ptr + n, mask=mask, other=0.0)
    else:
        a0 = zero
        g_a = zero
    acc_beta = zero
    acc_thr = zero
    acc_b = zero
    acc_rho = zero
    acc_alpha = zero
    t_last = (T - 1) // K * K  # first step of the last chunk
    xs = _rows(x_ptr, base, t_last, T, M_INNER, mask, K, EVICT)
    gss = _rows(gs_ptr, base, t_last, T, M_INNER, mask, K, EVICT)
    if RETURN_MEMBRANE:
        gvs = _rows(gvseq_ptr, base, t_last, T, M_INNER, mask, K, EVICT)
    for j in range((T + K - 1) // K):
        t0 = t_last - j * K
        ci = t0 // K
        # the previous chunk's rows, in flight while this chunk is computed
        nxt_x = _rows(x_ptr, base, t0 - K, T, M_INNER, mask, K, EVICT)
        nxt_gs = _rows(gs_ptr, base, t0 - K, T, M_INNER, mask, K, EVICT)
        if RETURN_MEMBRANE:
            nxt_gvs = _rows(gvseq_ptr, base, t0 - K, T, M_INNER, mask, K, EVICT)
        # the state entering step t0: checkpoint ci - 1, or (v0, a0) for the first chunk
        ck = cbase + tl.cast(tl.maximum(ci - 1, 0), tl.int64) * M_INNER
        has_ck = mask & (ci > 0)
        v = tl.where(ci > 0, tl.load(ckv_ptr + ck, mask=has_ck, other=0.0), v0)
        if ADAPTIVE:
            a = tl.where(ci > 0, tl.load(cka_ptr + ck, mask=has_ck, other=0.0), a0)
        else:
            a = zero
        # recompute the chunk: states entering each step and each step's H
        vs = ()
        as_ = ()
        hs = ()
        for i in tl.static_range(K):
            vs = vs + (v,)
            as_ = as_ + (a,)
            h, v, a, _s = _step(v, a, xs[i], beta, thr, gamma, b, rho, KIND, LEVELS, ADAPTIVE, RESET,
                                RESET_DELAY)
            hs = hs + (h,)
        # walk the chunk backwards
        for k in tl.static_range(K - 1, -1, -1):
            t = t0 + k
            g_vt = g_v
            if RETURN_MEMBRANE:
                g_vt = g_vt + gvs[k]
            g_x, g_vp, g_ap, d_beta, d_thr, d_b, d_rho, d_alpha = _step_vjp(
                vs[k], as_[k], hs[k], xs[k], gss[k], g_vt, g_a, beta, thr, gamma, b, rho, alpha,
                KIND, LEVELS, ADAPTIVE, DECAY_INPUT, RESET, DETACH_RESET, RESET_DELAY, SURR)
            if T % K != 0:  # steps t >= T of the partial last chunk pass the cotangents through
                live = t < T
                g_vp = tl.where(live, g_vp, g_v)
                g_ap = tl.where(live, g_ap, g_a)
                d_beta = tl.where(live, d_beta, 0.0)
                d_thr = tl.where(live, d_thr, 0.0)
                d_b = tl.where(live, d_b, 0.0)
                d_rho = tl.where(live, d_rho, 0.0)
                d_alpha = tl.where(live, d_alpha, 0.0)
                ok = mask & live
            else:
                ok = mask
            tl.store(gx_ptr + base + tl.cast(t, tl.int64) * M_INNER, g_x.to(gx_ptr.dtype.element_ty),
                     mask=ok, eviction_policy=EVICT)
            acc_beta += d_beta
            acc_thr += d_thr
            acc_alpha += d_alpha
            if ADAPTIVE:
                acc_b += d_b
                acc_rho += d_rho
            g_v = g_vp
            g_a = g_ap
        xs = nxt_x
        gss = nxt_gs
        if RETURN_MEMBRANE:
            gvs = nxt_gvs
    tl.store(gv0_ptr + n, g_v, mask=mask)
    tl.store(gbeta_ptr + n, acc_beta, mask=mask)
    tl.store(gthr_ptr + n, acc_thr, mask=mask)
    tl.store(galpha_ptr + n, acc_alpha, mask=mask)
    if ADAPTIVE:
        tl.store(ga0_ptr + n, g_a, mask=mask)
        tl.store(gb_ptr + n, acc_b, mask=mask)
        tl.store(grho_ptr + n, acc_rho, mask=mask)


# =============================================================================================
# JAX wrappers (jax_triton.triton_call), launch configuration and the vmap rule
# =============================================================================================


class _Config(NamedTuple):
    """Static options (hashable), validated; see spikejax.backends.ScanSpec."""

    kind: int
    levels: int
    adaptive: bool
    decay_input: bool
    reset: int
    detach_reset: bool
    reset_delay: bool
    surrogate: int
    return_membrane: bool
    save_residuals: bool = True  # the forward writes the backward's checkpoints (off for forward-only calls)
    tuning: tuple[tuple[str, str], ...] = ()  # the TUNING_VARS set at call time (a cache key)


def _config(kind: str, levels: int, adaptive: bool, decay_input: bool, reset: str,
            detach_reset: bool, reset_delay: bool, surrogate: str, return_membrane: bool,
            save_residuals: bool = True) -> _Config:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown spike kind {kind!r}; expected one of {KINDS}")
    if reset not in RESETS:
        raise ValueError(f"reset: unknown reset {reset!r}; expected one of {RESETS}")
    surrogate = _SURROGATE_ALIASES.get(surrogate, surrogate)
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate: unknown shape {surrogate!r}; expected one of {SURROGATES}")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels: expected an integer >= 1, got {levels!r}")
    if reset_delay and adaptive:
        raise ValueError("reset_delay: the delayed (snnTorch) reset is not defined for adaptive neurons")
    tuning = tuple((k, os.environ[k]) for k in TUNING_VARS if k in os.environ)
    return _Config(KINDS.index(kind), int(levels) if kind == "multilevel" else 1, bool(adaptive),
                   bool(decay_input), RESETS.index(reset), bool(detach_reset), bool(reset_delay),
                   SURROGATES.index(surrogate), bool(return_membrane), bool(save_residuals), tuning)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["x", "ckv", "cka", "v0", "a0", "beta", "thr", "b", "rho", "alpha"],
                   meta_fields=["tuning"])
@dataclasses.dataclass(frozen=True)
class _Residuals:
    """What the forward saves for the backward: ``x[B, T, M]``, the checkpoints ``ckv`` / ``cka``
    ``[B, C, M]`` f32 (None when the scan is one chunk, or not adaptive), the initial state and
    parameters ``[B*M]`` f32, and, as static data, the forward's tuning snapshot, so the backward
    uses the forward's checkpoint interval whatever the environment says by then."""

    x: Array
    ckv: Array | None
    cka: Array | None
    v0: Array
    a0: Array
    beta: Array
    thr: Array
    b: Array
    rho: Array
    alpha: Array
    tuning: tuple[tuple[str, str], ...]


def _require_triton() -> Any:
    """Import jax_triton, or raise a ValueError saying what is missing and what to install."""
    if _TRITON_IMPORT_ERROR is not None:
        raise ValueError(
            f"triton_kernels needs the 'triton' package ({_TRITON_IMPORT_ERROR}); "
            "pip install 'spikejax[gpu]' (triton, jax-triton) on a machine with an NVIDIA GPU"
        )
    try:
        import jax_triton
    except ImportError as err:
        raise ValueError(
            f"triton_kernels needs the 'jax_triton' package, which could not be imported ({err}); "
            "pip install 'spikejax[gpu]' (jax-triton, and jax with CUDA) on a machine with an NVIDIA GPU"
        ) from None
    return jax_triton


def default_tiling(T: int, n: int, which: str = "fwd", itemsize: int = 4,
                   tuning: dict[str, str] | None = None) -> tuple[int, int, int, int]:
    """(BLOCK neurons per program, num_warps, K checkpoint interval, KF forward chunk; K for "bwd") for ``T``
    steps of ``n`` neurons (per vmapped instance: the choice, K included, must not depend on how
    the forward and the backward are batched) and ``itemsize``-byte streams; ``which`` is "fwd" or
    "bwd".

    From the H200 sweep (benchmarks/triton_tiling_sweep.py, BENCHMARKS.md). From 256K neurons:
    K = 8; forward 512 x 4 warps with 16-step chunks (1024 x 8, one chunk, when T < 16); backward
    512 x 4 warps for f32 streams (128 x 1M: 0.470 ms vs 0.551 ms at 512 x 8), 512 x 8 for bf16
    (0.293 vs 0.327 ms). Fewer neurons: K = 16 and a backward of 32 neurons per one-warp program, so
    each thread keeps 2 x 16 rows of x and g_s in flight (512 x 16K f32: 0.056 ms vs 0.093 ms with
    K = 8 and 64 neurons); the forward runs 64 neurons per one-warp program in 32-step chunks
    (32 x 64K f32: 0.014 ms vs 0.019 ms with 128 neurons and 2 warps).
    ``tuning`` (the :data:`TUNING_VARS` set when the scan was called, see :func:`_config`):
    ``SPIKEJAX_TRITON_{FWD,BWD}_BLOCK`` / ``_{FWD,BWD}_WARPS``, ``SPIKEJAX_TRITON_CHUNK`` (forward) and
    ``SPIKEJAX_TRITON_CHECKPOINT`` (both passes) override it.
    """
    if which not in ("fwd", "bwd"):
        raise ValueError(f"which: expected 'fwd' or 'bwd', got {which!r}")
    if n >= 1 << 18:
        k = 8
        if which == "bwd":
            block, warps, kf = (512, 4, k) if itemsize == 4 else (512, 8, k)
        else:
            block, warps, kf = (1024, 8, SHORT_T) if T < SHORT_T else (512, 4, 2 * k)
    else:
        k = 16
        if which == "bwd":
            block, warps, kf = 32, 1, k
        else:
            block, warps, kf = 64, 1, 2 * k
    tuning = tuning or {}
    block = _setting(tuning, f"SPIKEJAX_TRITON_{which.upper()}_BLOCK", block, power_of_two=True)
    warps = _setting(tuning, f"SPIKEJAX_TRITON_{which.upper()}_WARPS", warps, power_of_two=True)
    k = _setting(tuning, "SPIKEJAX_TRITON_CHECKPOINT", k)
    if which == "fwd":
        kf = _setting(tuning, "SPIKEJAX_TRITON_CHUNK", kf)
        kf = max(k, min(kf // k * k, -(-T // k) * k))  # a multiple of K, no longer than T needs
    return block, warps, k, kf


def _setting(tuning: dict[str, str], name: str, default: int, power_of_two: bool = False) -> int:
    """The integer override ``name`` from ``tuning`` (else ``default``), validated."""
    raw = tuning.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (power_of_two and value & (value - 1)):
        what = "a power of two" if power_of_two else "an integer >= 1"
        raise ValueError(f"{name}: expected {what}, got {raw!r}")
    return value


def _evict(T: int, n: int, tuning: dict[str, str]) -> str:
    """The eviction policy of the ``[T, M]`` streams (:data:`EVICT_FIRST_MIN_N`); ``SPIKEJAX_TRITON_EVICT``
    = 0 / 1 in ``tuning`` overrides it."""
    on = n >= EVICT_FIRST_MIN_N and T >= SHORT_T
    on = bool(int(tuning.get("SPIKEJAX_TRITON_EVICT", on)))
    return "evict_first" if on else ""


def _stages(which: str, tuning: dict[str, str]) -> int:
    """Triton's software-pipelining depth of the ``which`` ("fwd" | "bwd") kernel's time loop: 1
    (the kernels prefetch chunks into registers themselves); ``SPIKEJAX_TRITON_STAGES_FWD`` /
    ``SPIKEJAX_TRITON_STAGES_BWD`` in ``tuning`` override it (for benchmarking)."""
    return int(tuning.get(f"SPIKEJAX_TRITON_STAGES_{which.upper()}", 1))


def _vec(a: Array) -> Array:
    """A parameter or state as a flat f32 vector ``[M]``."""
    return jnp.asarray(a, jnp.float32).reshape(-1)


def _checkpoints(T: int, k: int) -> int:
    """Number of checkpoints the forward writes: one per chunk after the first."""
    return -(-T // k) - 1


def _flags(cfg: _Config, B: int, T: int, Mi: int) -> dict:
    """The constexpr flags both kernels share."""
    return dict(T=T, N=B * Mi, M_INNER=Mi, BATCHED=B > 1, KIND=cfg.kind, LEVELS=cfg.levels,
                ADAPTIVE=cfg.adaptive, DECAY_INPUT=cfg.decay_input, RESET=cfg.reset,
                RESET_DELAY=cfg.reset_delay, RETURN_MEMBRANE=cfg.return_membrane,
                EVICT=_evict(T, B * Mi, dict(cfg.tuning)))


def _placeholder() -> Array:
    """A ``[1]`` f32 stand-in for a pointer argument the flags switch off (never read)."""
    return jnp.zeros((1,), jnp.float32)


def _fwd_plan(cfg: _Config, B: int, T: int, Mi: int, dtype) -> tuple[list, int, int, dict]:
    """Output shapes, grid size, warps and constexpr flags of the forward kernel on ``x[B, T, Mi]``."""
    N = B * Mi
    block, warps, k, kf = default_tiling(T, Mi, "fwd", jnp.dtype(dtype).itemsize, dict(cfg.tuning))
    C = _checkpoints(T, k)
    save = cfg.save_residuals and C > 0
    f32 = jnp.float32
    one = jax.ShapeDtypeStruct((1,), f32)  # placeholder for an output the flags switch off
    seq = jax.ShapeDtypeStruct((B, T, Mi), f32)
    vec = jax.ShapeDtypeStruct((N,), f32)
    ck = jax.ShapeDtypeStruct((B, C, Mi), f32) if save else one
    out_shape = [
        jax.ShapeDtypeStruct((B, T, Mi), dtype),  # s
        vec,  # v_T
        vec if cfg.adaptive else one,  # a_T
        seq if cfg.return_membrane else one,  # v_seq
        ck,  # checkpoints of V (residual)
        ck if cfg.adaptive else one,  # checkpoints of a (residual)
    ]
    flags = dict(_flags(cfg, B, T, Mi), SAVE=save, K=k, KF=kf, C=max(C, 1), BLOCK=block)
    return out_shape, -(-N // block), warps, flags


def _bwd_plan(cfg: _Config, B: int, T: int, Mi: int, dtype) -> tuple[list, int, int, dict]:
    """Output shapes, grid size, warps and constexpr flags of the backward kernel."""
    N = B * Mi
    block, warps, k, _ = default_tiling(T, Mi, "bwd", jnp.dtype(dtype).itemsize, dict(cfg.tuning))
    f32 = jnp.float32
    vec = jax.ShapeDtypeStruct((N,), f32)
    one = jax.ShapeDtypeStruct((1,), f32)
    out_shape = [
        jax.ShapeDtypeStruct((B, T, Mi), dtype),  # g_x
        vec,  # g_v0
        vec if cfg.adaptive else one,  # g_a0
        vec, vec,  # g_beta, g_threshold
        vec if cfg.adaptive else one, vec if cfg.adaptive else one,  # g_adapt_scale, g_adapt_decay
        vec,  # g_alpha
    ]
    flags = dict(_flags(cfg, B, T, Mi), DETACH_RESET=cfg.detach_reset, SURR=cfg.surrogate, K=k,
                 C=max(_checkpoints(T, k), 1), BLOCK=block)
    return out_shape, -(-N // block), warps, flags


def _forward_core(cfg: _Config, x: Array, v0: Array, a0: Array, beta: Array, thr: Array,
                  b: Array, rho: Array, alpha: Array):
    """Batch-major core: ``x[B, T, M]``, vectors ``[B*M]``. Returns the outputs and the residuals
    (``None`` for the arrays the flags switch off; no residuals without ``cfg.save_residuals``)."""
    jt = _require_triton()
    B, T, Mi = x.shape
    out_shape, grid, warps, flags = _fwd_plan(cfg, B, T, Mi, x.dtype)
    s, vT, aT, vseq, ckv, cka = jt.triton_call(
        x, v0, a0, beta, thr, b, rho,
        kernel=_scan_fwd_kernel, out_shape=out_shape, grid=(grid,), num_warps=warps,
        num_stages=_stages("fwd", dict(cfg.tuning)), enable_fp_fusion=False, name="spikejax_neuron_scan_fwd",
        **flags,
    )
    if not cfg.adaptive:
        aT = a0
    vseq = vseq if cfg.return_membrane else None
    if not cfg.save_residuals:
        return s, vT, aT, vseq, None
    ckv = ckv if flags["SAVE"] else None
    cka = cka if flags["SAVE"] and cfg.adaptive else None
    return s, vT, aT, vseq, _Residuals(x, ckv, cka, v0, a0, beta, thr, b, rho, alpha, cfg.tuning)


def _backward_core(cfg: _Config, residuals: _Residuals, g_s: Array, g_vT: Array, g_aT: Array,
                   g_vseq: Array | None) -> tuple[Array, ...]:
    """Batch-major backward: cotangents ``g_s[B, T, M]``, ``g_vT``/``g_aT[B*M]``, ``g_vseq[B, T, M]``
    or None -> ``(g_x[B, T, M] x.dtype, g_v0, g_a0, g_beta, g_threshold, g_b, g_rho, g_alpha)``
    (each ``[B*M]`` f32). Runs with the forward's tuning (``residuals.tuning``)."""
    jt = _require_triton()
    cfg = cfg._replace(tuning=residuals.tuning)
    r = residuals
    x, ckv, cka = r.x, r.ckv, r.cka
    B, T, Mi = x.shape
    if g_s.shape != x.shape:
        raise ValueError(f"g_s: expected shape {tuple(x.shape)} (that of x), got {tuple(g_s.shape)}")
    if g_vseq is not None and g_vseq.shape != x.shape:
        raise ValueError(f"g_vseq: expected shape {tuple(x.shape)} (that of x), got {tuple(g_vseq.shape)}")
    out_shape, grid, warps, flags = _bwd_plan(cfg, B, T, Mi, x.dtype)
    have, need = (0 if ckv is None else ckv.shape[1]), _checkpoints(T, flags["K"])
    if have != need:
        raise ValueError(f"residuals: {have} checkpoints, but interval {flags['K']} over T={T} needs {need}")
    f32 = jnp.float32
    gx, gv0, ga0, gbeta, gthr, gb, grho, galpha = jt.triton_call(
        x, _placeholder() if ckv is None else ckv, _placeholder() if cka is None else cka,
        g_s.astype(x.dtype), _placeholder() if g_vseq is None else g_vseq.astype(f32),
        g_vT.astype(f32), g_aT.astype(f32), r.v0, r.a0, r.beta, r.thr, r.b, r.rho, r.alpha,
        kernel=_scan_bwd_kernel, out_shape=out_shape, grid=(grid,), num_warps=warps,
        num_stages=_stages("bwd", dict(cfg.tuning)), enable_fp_fusion=False, name="spikejax_neuron_scan_bwd",
        **flags,
    )
    if not cfg.adaptive:
        ga0 = g_aT.astype(f32)
        gb = jnp.zeros_like(gbeta)
        grho = jnp.zeros_like(gbeta)
    return gx, gv0, ga0, gbeta, gthr, gb, grho, galpha


# --- vmap: fold every new batch axis into the leading batch axis B of [B, T, M] ------------------


def _fold(axis_size: int, batched: bool, a: Array) -> Array:
    """A vmapped argument as the core expects it: [k, B, T, M] -> [k*B, T, M], [k, N] -> [k*N]."""
    if not batched:
        a = jnp.broadcast_to(a, (axis_size, *a.shape))
    return a.reshape((-1, *a.shape[2:])) if a.ndim == 4 else a.reshape(-1)


def _unfold(axis_size: int, a: Array) -> Array:
    """Inverse of :func:`_fold` on an output: [k*B, T, M] -> [k, B, T, M], [k*N] -> [k, N]."""
    return a.reshape((axis_size, -1, *a.shape[1:])) if a.ndim == 3 else a.reshape(axis_size, -1)


def _vmap_rule(fn: Callable) -> Callable:
    """The ``custom_vmap`` rule: fold the mapped axis into B (:func:`_fold`), run ``fn`` once, unfold."""

    def rule(axis_size, in_batched, *args):
        folded = jax.tree_util.tree_map(functools.partial(_fold, axis_size), list(in_batched),
                                        list(args))
        out = fn(*folded)
        out = jax.tree_util.tree_map(functools.partial(_unfold, axis_size), out)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return rule


@functools.cache
def _forward_fn(cfg: _Config):
    """The forward core as a ``custom_vmap`` function (vmap folds into B, recursively)."""
    fwd = jax.custom_batching.custom_vmap(functools.partial(_forward_core, cfg))
    fwd.def_vmap(_vmap_rule(fwd))
    return fwd


@functools.cache
def _backward_fn(cfg: _Config):
    """The backward core as a ``custom_vmap`` function (vmap folds into B, recursively)."""
    bwd = jax.custom_batching.custom_vmap(functools.partial(_backward_core, cfg))
    bwd.def_vmap(_vmap_rule(bwd))
    return bwd


# --- the contract -------------------------------------------------------------------------------


def _check(x: Array, vectors: dict[str, Array]) -> tuple[int, int]:
    """Validate ``x[T, M]`` (floating, T, M >= 1) and that every vector is ``[M]``; return (T, M)."""
    if x.ndim != 2:
        raise ValueError(f"x: expected shape [T, M], got {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
    T, M = x.shape
    if T < 1 or M < 1:
        raise ValueError(f"x: expected T >= 1 and M >= 1, got shape {tuple(x.shape)}")
    for name, a in vectors.items():
        if a.shape != (M,):
            raise ValueError(f"{name}: expected shape ({M},) to match x[T, M], got {tuple(a.shape)}")
    return T, M


def neuron_scan_forward(
    x: Array, v0: Array, a0: Array, beta: Array, threshold: Array, adapt_scale: Array,
    adapt_decay: Array, alpha: Array, *, kind: str = "binary", levels: int = 1,
    adaptive: bool = False, decay_input: bool = False, reset: str = "subtract",
    detach_reset: bool = False, reset_delay: bool = False, surrogate: str = "atan",
    return_membrane: bool = False, save_residuals: bool = True,
):
    """Forward of the generalized neuron scan on ``x[T, M]`` (see the module docstring).

    Returns ``(s[T, M] x.dtype, v_T[M] f32, a_T[M] f32, v_seq[T, M] f32 or None, residuals)``;
    ``residuals`` is an opaque pytree for :func:`neuron_scan_backward` (None with
    ``save_residuals=False``: a forward-only call that does not write the checkpoints).
    """
    cfg = _config(kind, levels, adaptive, decay_input, reset, detach_reset, reset_delay, surrogate,
                  return_membrane, save_residuals)
    vectors = dict(v0=v0, a0=a0, beta=beta, threshold=threshold, adapt_scale=adapt_scale,
                   adapt_decay=adapt_decay, alpha=alpha)
    _check(x, vectors)
    _require_triton()
    s, vT, aT, vseq, res = _forward_fn(cfg)(x[None], *(_vec(a) for a in vectors.values()))
    return s[0], vT, aT, (None if vseq is None else vseq[0]), res


def neuron_scan_backward(
    residuals, g_s: Array, g_vT: Array, g_aT: Array, g_vseq: Array | None, *, kind: str = "binary",
    levels: int = 1, adaptive: bool = False, decay_input: bool = False, reset: str = "subtract",
    detach_reset: bool = False, reset_delay: bool = False, surrogate: str = "atan",
    return_membrane: bool = False,
):
    """Backward of :func:`neuron_scan_forward`: cotangents of ``(s, v_T, a_T, v_seq)`` ->
    ``(g_x[T, M] x.dtype, g_v0, g_a0, g_beta, g_threshold, g_adapt_scale, g_adapt_decay, g_alpha)``
    (each ``[M]`` f32, summed over time)."""
    cfg = _config(kind, levels, adaptive, decay_input, reset, detach_reset, reset_delay, surrogate,
                  return_membrane)
    if cfg.return_membrane and g_vseq is None:
        g_vseq = jnp.zeros(g_s.shape, jnp.float32)
    out = _backward_fn(cfg)(residuals, g_s[None], g_vT.reshape(-1), g_aT.reshape(-1),
                            None if not cfg.return_membrane else g_vseq[None])
    gx, *rest = out
    return (gx[0], *rest)
