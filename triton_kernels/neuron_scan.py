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

Memory plan (the scan is memory-bound). One Triton program owns ``BLOCK`` neurons and walks
over time with a register prefetch (4 steps ahead forward, 2 backward). The forward reads ``x`` once, writes ``s`` once
and stores the charge trace ``H[T, M]`` (f32, plus ``a_{t-1}`` for ALIF) as the residual. The
backward is a single reverse-time kernel: it reads ``g_s`` and ``H``, recomputes ``V_{t-1}`` from
``H_{t-1}`` (bit-exactly: the same f32 operations, FMA contraction off), writes ``g_x`` and
accumulates every parameter gradient in registers, storing them once per neuron. ``x`` is only
read back for ``decay_input`` neurons with small γ: elsewhere ``∂H_t/∂β = V_{t-1} - X_t`` is
taken as ``(V_{t-1} - H_t [- θ S'_{t-1}]) / γ`` (exact algebra, γ X_t = H_t - β V_{t-1}), with
the division done once per neuron.

``jax.vmap`` is supported by a ``custom_vmap`` rule that folds the batch axis into the neuron
axis: the kernels address ``x[B, T, M]`` batch-major directly, so batching needs no transpose.
"""

from __future__ import annotations

import functools
import os
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
        """Stand-in so the kernel definitions below parse; calling them raises."""

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

# decay_input neurons with γ = 1 - β below this read x back in the backward for ∂H/∂β = V - X;
# above it (τ <= 8) the identity (V - H) / γ is used, whose rounding error is <= ~1e-7 |H| / γ.
_GAMMA_EXACT_BELOW = 0.125


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
def _neuron_offsets(pid, M_INNER: tl.constexpr, T, BATCHED: tl.constexpr, BLOCK: tl.constexpr):
    """Neuron ids ``n`` of this program and the int64 element offset of ``(t=0, n)`` in a
    batch-major ``[B, T, M_INNER]`` array (B = 1 unless vmapped)."""
    n = pid * BLOCK + tl.arange(0, BLOCK)
    if BATCHED:
        base = (n // M_INNER).to(tl.int64) * T * M_INNER + (n % M_INNER).to(tl.int64)
    else:
        base = n.to(tl.int64)
    return n, base


# =============================================================================================
# Forward kernel
# =============================================================================================


@triton.jit
def _scan_fwd_kernel(
    x_ptr, v0_ptr, a0_ptr, beta_ptr, thr_ptr, b_ptr, rho_ptr,  # inputs
    T,  # runtime scalar: time steps
    s_ptr, vT_ptr, aT_ptr, vseq_ptr, h_ptr, atr_ptr,  # outputs
    N: tl.constexpr, M_INNER: tl.constexpr, BATCHED: tl.constexpr,
    KIND: tl.constexpr, LEVELS: tl.constexpr, ADAPTIVE: tl.constexpr, DECAY_INPUT: tl.constexpr,
    RESET: tl.constexpr, RESET_DELAY: tl.constexpr, RETURN_MEMBRANE: tl.constexpr,
    STORE_H: tl.constexpr, STORE_A: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program: BLOCK neurons, all T steps. Reference: backends.reference_scan.step."""
    pid = tl.program_id(0)
    n, base = _neuron_offsets(pid, M_INNER, T, BATCHED, BLOCK)
    mask = n < N
    v = tl.load(v0_ptr + n, mask=mask, other=0.0)
    beta = tl.load(beta_ptr + n, mask=mask, other=0.0)
    thr = tl.load(thr_ptr + n, mask=mask, other=1.0)
    if DECAY_INPUT:
        gamma = 1.0 - beta
    else:
        gamma = tl.full([BLOCK], 1.0, tl.float32)
    if ADAPTIVE:
        a = tl.load(a0_ptr + n, mask=mask, other=0.0)
        b = tl.load(b_ptr + n, mask=mask, other=0.0)
        rho = tl.load(rho_ptr + n, mask=mask, other=0.0)
    # four-step register prefetch of x (latency hiding when M is small)
    x_1 = tl.load(x_ptr + base, mask=mask, other=0.0)
    x_2 = tl.load(x_ptr + base + M_INNER, mask=mask & (T > 1), other=0.0)
    x_3 = tl.load(x_ptr + base + 2 * M_INNER, mask=mask & (T > 2), other=0.0)
    x_4 = tl.load(x_ptr + base + 3 * M_INNER, mask=mask & (T > 3), other=0.0)
    for t in range(T):
        off = base + tl.cast(t, tl.int64) * M_INNER
        x_5 = tl.load(x_ptr + off + 4 * M_INNER, mask=mask & (t + 4 < T), other=0.0)
        xt = x_1.to(tl.float32)
        if RESET_DELAY:
            # s_prev = spike(V_{t-1} - θ); zero: V <- V (1 - F'); H = βV + γX [- θ S']; V_t = H
            s_prev, f_prev = _fire(v, thr, KIND, LEVELS)
            if RESET == 1:
                v = v * (1.0 - f_prev)
            h = beta * v + gamma * xt
            if RESET == 0:
                h = h - thr * s_prev
            s, f = _fire(h, thr, KIND, LEVELS)
            v = h
        else:
            # H = βV + γX; θ_t = θ + b a; S, F = fire(H, θ_t); V = reset(H); a = ρ a + S
            h = beta * v + gamma * xt
            if ADAPTIVE:
                if STORE_A:
                    tl.store(atr_ptr + off, a, mask=mask)
                thr_t = thr + b * a
            else:
                thr_t = thr
            s, f = _fire(h, thr_t, KIND, LEVELS)
            v = _reset(h, thr_t, s, f, RESET)
            if ADAPTIVE:
                a = rho * a + s
        tl.store(s_ptr + off, s.to(s_ptr.dtype.element_ty), mask=mask)
        if STORE_H:
            tl.store(h_ptr + off, h, mask=mask)
        if RETURN_MEMBRANE:
            tl.store(vseq_ptr + off, v, mask=mask)
        x_1 = x_2
        x_2 = x_3
        x_3 = x_4
        x_4 = x_5
    tl.store(vT_ptr + n, v, mask=mask)
    if ADAPTIVE:
        tl.store(aT_ptr + n, a, mask=mask)


# =============================================================================================
# Backward kernel: one reverse-time pass, parameter gradients reduced over T in registers
# =============================================================================================


@triton.jit
def _scan_bwd_kernel(
    x_ptr, h_ptr, atr_ptr, gs_ptr, gvseq_ptr, gvT_ptr, gaT_ptr,
    v0_ptr, a0_ptr, beta_ptr, thr_ptr, b_ptr, rho_ptr, alpha_ptr,  # inputs
    T,  # runtime scalar
    gx_ptr, gv0_ptr, ga0_ptr, gbeta_ptr, gthr_ptr, gb_ptr, grho_ptr, galpha_ptr,  # outputs
    N: tl.constexpr, M_INNER: tl.constexpr, BATCHED: tl.constexpr,
    KIND: tl.constexpr, LEVELS: tl.constexpr, ADAPTIVE: tl.constexpr, DECAY_INPUT: tl.constexpr,
    RESET: tl.constexpr, DETACH_RESET: tl.constexpr, RESET_DELAY: tl.constexpr,
    SURR: tl.constexpr, RETURN_MEMBRANE: tl.constexpr, GAMMA_EXACT_BELOW: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Reverse-time VJP of ``_scan_fwd_kernel``.

    Carries g_v = ∂L/∂V_t (and g_a = ∂L/∂a_t). Non-delayed step t, with cotangent c_s on S_t::

        c_s = g_s[t] (+ g_a)                 (a_t = ρ a_{t-1} + S_t)
        subtract: g_H = g_v, g_θt = -g_v S_t, c_s -= g_v θ_t (unless detach_reset)
        zero:     g_H = g_v (1 - F_t),         c_f  = -g_v H_t   (unless detach_reset)
        (g_H, g_θt, g_α) += fire_vjp(H_t, θ_t; c_s, c_f)
        θ_t = θ + b a_{t-1}: g_θ += g_θt, g_b += g_θt a_{t-1}, g_ρ += g_a a_{t-1},
                             g_a <- ρ g_a + b g_θt
        H_t = β V_{t-1} + γ X_t: g_X = γ g_H, g_β += g_H ∂H/∂β, g_v <- β g_H (+ g_vseq[t-1])

    Delayed (snnTorch) step t: g_H = g_v + fire_vjp(H_t, θ; g_s[t]); then through
    H_t = β V'_{t-1} + γ X_t - θ S'_{t-1} back to V_{t-1} (including fire_vjp of S'_{t-1}, F'_{t-1}).
    """
    pid = tl.program_id(0)
    n, base = _neuron_offsets(pid, M_INNER, T, BATCHED, BLOCK)
    mask = n < N
    beta = tl.load(beta_ptr + n, mask=mask, other=0.0)
    thr = tl.load(thr_ptr + n, mask=mask, other=1.0)
    alpha = tl.load(alpha_ptr + n, mask=mask, other=1.0)
    v0 = tl.load(v0_ptr + n, mask=mask, other=0.0)
    if DECAY_INPUT:
        gamma = 1.0 - beta
        read_x = mask & (gamma < GAMMA_EXACT_BELOW)
    else:
        gamma = tl.full([BLOCK], 1.0, tl.float32)
    if ADAPTIVE:
        b = tl.load(b_ptr + n, mask=mask, other=0.0)
        rho = tl.load(rho_ptr + n, mask=mask, other=0.0)
        g_a = tl.load(gaT_ptr + n, mask=mask, other=0.0)
        acc_b = tl.zeros([BLOCK], tl.float32)
        acc_rho = tl.zeros([BLOCK], tl.float32)
    g_v = tl.load(gvT_ptr + n, mask=mask, other=0.0)
    acc_beta = tl.zeros([BLOCK], tl.float32)  # Σ g_H ∂H/∂β (exact part)
    acc_beta_id = tl.zeros([BLOCK], tl.float32)  # Σ g_H (V_{t-1} - H_t [- θS']) , divided by γ
    acc_thr = tl.zeros([BLOCK], tl.float32)
    acc_alpha = tl.zeros([BLOCK], tl.float32)
    zero = tl.zeros([BLOCK], tl.float32)

    # carried / prefetched step data (two steps ahead): h_cur = H_t, h_prev = H_{t-1},
    # h_pp = H_{t-2}; gs_cur = g_s[t], gs_nxt = g_s[t-1]; likewise a, g_vseq, x
    last = base + tl.cast(T - 1, tl.int64) * M_INNER
    h_cur = tl.load(h_ptr + last, mask=mask, other=0.0)
    h_prev = tl.load(h_ptr + last - M_INNER, mask=mask & (T > 1), other=0.0)
    h_pp = tl.load(h_ptr + last - 2 * M_INNER, mask=mask & (T > 2), other=0.0)
    gs_cur = tl.load(gs_ptr + last, mask=mask, other=0.0)
    gs_nxt = tl.load(gs_ptr + last - M_INNER, mask=mask & (T > 1), other=0.0)
    if ADAPTIVE:
        a_cur = tl.load(atr_ptr + last, mask=mask, other=0.0)
        a_prev = tl.load(atr_ptr + last - M_INNER, mask=mask & (T > 1), other=0.0)
        a_pp = tl.load(atr_ptr + last - 2 * M_INNER, mask=mask & (T > 2), other=0.0)
    if RETURN_MEMBRANE:
        gvs_cur = tl.load(gvseq_ptr + last, mask=mask, other=0.0)
        gvs_nxt = tl.load(gvseq_ptr + last - M_INNER, mask=mask & (T > 1), other=0.0)
    if DECAY_INPUT:
        x_cur = tl.load(x_ptr + last, mask=read_x, other=0.0)
        x_nxt = tl.load(x_ptr + last - M_INNER, mask=read_x & (T > 1), other=0.0)

    for i in range(T):
        t = T - 1 - i
        off = base + tl.cast(t, tl.int64) * M_INNER
        has_prev = t > 0
        # prefetch step t-2 (and H_{t-3})
        h_3 = tl.load(h_ptr + off - 3 * M_INNER, mask=mask & (t > 2), other=0.0)
        gs_2 = tl.load(gs_ptr + off - 2 * M_INNER, mask=mask & (t > 1), other=0.0)
        if ADAPTIVE:
            a_3 = tl.load(atr_ptr + off - 3 * M_INNER, mask=mask & (t > 2), other=0.0)
        if RETURN_MEMBRANE:
            gvs_2 = tl.load(gvseq_ptr + off - 2 * M_INNER, mask=mask & (t > 1), other=0.0)
        if DECAY_INPUT:
            x_2 = tl.load(x_ptr + off - 2 * M_INNER, mask=read_x & (t > 1), other=0.0)

        g_st = gs_cur.to(tl.float32)
        if RETURN_MEMBRANE:
            g_v += gvs_cur
        if RESET_DELAY:
            # V_{t-1} is H_{t-1} (un-reset), or v0
            v_prev = tl.where(has_prev, h_prev, v0)
            g_h = g_v
            d_h, d_thr, d_a = _fire_vjp(h_cur, thr, alpha, g_st, zero, KIND, LEVELS, SURR)
            g_h += d_h
            acc_thr += d_thr
            acc_alpha += d_a
            # H_t = β V' + γ X_t - θ S'  with  S', F' = fire(V_{t-1}, θ), V' = V (1 - F') (zero)
            s_p, f_p = _fire(v_prev, thr, KIND, LEVELS)
            if RESET == 1:
                v_eff = v_prev * (1.0 - f_p)
            else:
                v_eff = v_prev
            g_veff = g_h * beta
            c_sp = zero
            c_fp = zero
            if RESET == 0:
                acc_thr -= g_h * s_p
                if not DETACH_RESET:
                    c_sp = -g_h * thr
                dbeta_id = v_eff - h_cur - thr * s_p
            else:
                dbeta_id = v_eff - h_cur
            if RESET == 1:
                g_vp = g_veff * (1.0 - f_p)
                if not DETACH_RESET:
                    c_fp = -g_veff * v_prev
            else:
                g_vp = g_veff
            d_h2, d_thr2, d_a2 = _fire_vjp(v_prev, thr, alpha, c_sp, c_fp, KIND, LEVELS, SURR)
            g_vp += d_h2
            acc_thr += d_thr2
            acc_alpha += d_a2
        else:
            if ADAPTIVE:
                thr_t = thr + b * a_cur
                thr_p = thr + b * a_prev
            else:
                thr_t = thr
                thr_p = thr
            # recompute S_t, F_t and V_{t-1} = reset(H_{t-1}) exactly as the forward did
            s_t, f_t = _fire(h_cur, thr_t, KIND, LEVELS)
            s_p, f_p = _fire(h_prev, thr_p, KIND, LEVELS)
            v_prev = tl.where(has_prev, _reset(h_prev, thr_p, s_p, f_p, RESET), v0)
            v_eff = v_prev
            c_s = g_st
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
                    c_f = -g_v * h_cur
            else:
                g_h = g_v
                g_thr_t = zero
            d_h, d_thr, d_a = _fire_vjp(h_cur, thr_t, alpha, c_s, c_f, KIND, LEVELS, SURR)
            g_h += d_h
            g_thr_t += d_thr
            acc_alpha += d_a
            acc_thr += g_thr_t
            if ADAPTIVE:
                acc_b += g_thr_t * a_cur
                acc_rho += g_a * a_cur
                g_a = rho * g_a + b * g_thr_t
            g_vp = g_h * beta
            dbeta_id = v_prev - h_cur
        # H_t = β V'_{t-1} + γ X_t (...): g_X = γ g_H; ∂H/∂β = V' (- X_t with decay_input)
        tl.store(gx_ptr + off, (gamma * g_h).to(gx_ptr.dtype.element_ty), mask=mask)
        if DECAY_INPUT:
            acc_beta += tl.where(read_x, g_h * (v_eff - x_cur.to(tl.float32)), 0.0)
            acc_beta_id += tl.where(read_x, 0.0, g_h * dbeta_id)
            x_cur = x_nxt
            x_nxt = x_2
        else:
            acc_beta += g_h * v_eff
        g_v = g_vp
        # rotate the prefetched step data
        h_cur = h_prev
        h_prev = h_pp
        h_pp = h_3
        gs_cur = gs_nxt
        gs_nxt = gs_2
        if ADAPTIVE:
            a_cur = a_prev
            a_prev = a_pp
            a_pp = a_3
        if RETURN_MEMBRANE:
            gvs_cur = gvs_nxt
            gvs_nxt = gvs_2

    if DECAY_INPUT:
        acc_beta += tl.where(read_x, 0.0, acc_beta_id / tl.where(read_x, 1.0, gamma))
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
    save_residuals: bool = True  # the forward stores the backward's traces (off for forward-only calls)


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
    return _Config(KINDS.index(kind), int(levels) if kind == "multilevel" else 1, bool(adaptive),
                   bool(decay_input), RESETS.index(reset), bool(detach_reset), bool(reset_delay),
                   SURROGATES.index(surrogate), bool(return_membrane), bool(save_residuals))


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


def _launch(n: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for ``n`` neurons.

    Each program walks all T steps for its BLOCK neurons, so the grid must cover the GPU
    (132 SMs on an H100) several times over for latency hiding: the largest power-of-two BLOCK
    in [32, 1024] that still gives >= 528 programs (4 per SM), with one warp per 128 neurons.
    ``SPIKEJAX_TRITON_BLOCK`` / ``SPIKEJAX_TRITON_WARPS`` override it (for benchmarking).
    """
    block = 1024
    while block > 32 and -(-n // block) < 528:
        block //= 2
    warps = max(1, min(8, block // 128))
    block = int(os.environ.get("SPIKEJAX_TRITON_BLOCK", block))
    warps = int(os.environ.get("SPIKEJAX_TRITON_WARPS", warps))
    return block, warps


def _stages(which: str) -> int:
    """Triton's software-pipelining depth of the ``which`` ("fwd" | "bwd") kernel's time loop: 1
    (the kernels prefetch ``x`` into registers themselves); ``SPIKEJAX_TRITON_STAGES_FWD`` /
    ``SPIKEJAX_TRITON_STAGES_BWD`` override it (for benchmarking)."""
    return int(os.environ.get(f"SPIKEJAX_TRITON_STAGES_{which.upper()}", 1))


def _vec(a: Array) -> Array:
    return jnp.asarray(a, jnp.float32).reshape(-1)


def _fwd_launch(cfg: _Config, B: int, T: int, Mi: int, dtype) -> tuple[list, dict, int, int]:
    """Output shapes, constexpr flags, grid size and warps of the forward kernel on x[B, T, Mi]."""
    N = B * Mi
    f32 = jnp.float32
    store_h = cfg.save_residuals and not (cfg.reset_delay and cfg.return_membrane)  # delayed: V_t == H_t
    store_a = cfg.save_residuals and cfg.adaptive
    one = jax.ShapeDtypeStruct((1,), f32)  # placeholder for an output the flags switch off
    seq = jax.ShapeDtypeStruct((B, T, Mi), f32)
    vec = jax.ShapeDtypeStruct((N,), f32)
    out_shape = [
        jax.ShapeDtypeStruct((B, T, Mi), dtype),  # s
        vec,  # v_T
        vec if cfg.adaptive else one,  # a_T
        seq if cfg.return_membrane else one,  # v_seq
        seq if store_h else one,  # H trace (residual)
        seq if store_a else one,  # a_{t-1} trace (residual)
    ]
    block, warps = _launch(N)
    flags = dict(
        N=N, M_INNER=Mi, BATCHED=B > 1, KIND=cfg.kind, LEVELS=cfg.levels, ADAPTIVE=cfg.adaptive,
        DECAY_INPUT=cfg.decay_input, RESET=cfg.reset, RESET_DELAY=cfg.reset_delay,
        RETURN_MEMBRANE=cfg.return_membrane, STORE_H=store_h, STORE_A=store_a, BLOCK=block,
    )
    return out_shape, flags, -(-N // block), warps


def _bwd_launch(cfg: _Config, B: int, T: int, Mi: int, dtype) -> tuple[list, dict, int, int]:
    """Output shapes, constexpr flags, grid size and warps of the backward kernel."""
    N = B * Mi
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
    block, warps = _launch(N)
    flags = dict(
        N=N, M_INNER=Mi, BATCHED=B > 1, KIND=cfg.kind, LEVELS=cfg.levels, ADAPTIVE=cfg.adaptive,
        DECAY_INPUT=cfg.decay_input, RESET=cfg.reset, DETACH_RESET=cfg.detach_reset,
        RESET_DELAY=cfg.reset_delay, SURR=cfg.surrogate, RETURN_MEMBRANE=cfg.return_membrane,
        GAMMA_EXACT_BELOW=_GAMMA_EXACT_BELOW, BLOCK=block,
    )
    return out_shape, flags, -(-N // block), warps


def _placeholder() -> Array:
    return jnp.zeros((1,), jnp.float32)


def _forward_core(cfg: _Config, x: Array, v0: Array, a0: Array, beta: Array, thr: Array,
                  b: Array, rho: Array, alpha: Array):
    """Batch-major core: ``x[B, T, M]``, vectors ``[B*M]``. Returns outputs and residuals
    (``None`` for the arrays the flags switch off; no residuals without ``cfg.save_residuals``)."""
    jt = _require_triton()
    B, T, Mi = x.shape
    out_shape, flags, grid, warps = _fwd_launch(cfg, B, T, Mi, x.dtype)
    s, vT, aT, vseq, h, atr = jt.triton_call(
        x, v0, a0, beta, thr, b, rho, int(T),
        kernel=_scan_fwd_kernel, out_shape=out_shape, grid=(grid,), num_warps=warps, num_stages=_stages("fwd"),
        enable_fp_fusion=False, name="spikejax_neuron_scan_fwd", **flags,
    )
    if not cfg.adaptive:
        aT, atr = a0, None
    vseq = vseq if cfg.return_membrane else None
    if not cfg.save_residuals:
        return s, vT, aT, vseq, None
    if not flags["STORE_H"]:
        h = vseq
    residuals = (x, h, atr, v0, a0, beta, thr, b, rho, alpha)
    return s, vT, aT, vseq, residuals


def _backward_core(cfg: _Config, residuals, g_s: Array, g_vT: Array, g_aT: Array, g_vseq):
    jt = _require_triton()
    x, h, atr, v0, a0, beta, thr, b, rho, alpha = residuals
    B, T, Mi = x.shape
    out_shape, flags, grid, warps = _bwd_launch(cfg, B, T, Mi, x.dtype)
    f32 = jnp.float32
    gx, gv0, ga0, gbeta, gthr, gb, grho, galpha = jt.triton_call(
        x, h, _placeholder() if atr is None else atr, g_s.astype(x.dtype),
        _placeholder() if g_vseq is None else g_vseq.astype(f32), g_vT.astype(f32),
        g_aT.astype(f32), v0, a0, beta, thr, b, rho, alpha, int(T),
        kernel=_scan_bwd_kernel, out_shape=out_shape, grid=(grid,), num_warps=warps, num_stages=_stages("bwd"),
        enable_fp_fusion=False, name="spikejax_neuron_scan_bwd", **flags,
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


def _vmap_rule(fn):
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
    bwd = jax.custom_batching.custom_vmap(functools.partial(_backward_core, cfg))
    bwd.def_vmap(_vmap_rule(bwd))
    return bwd


# --- the contract -------------------------------------------------------------------------------


def _check(x: Array, vectors: dict[str, Array]) -> tuple[int, int]:
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
    ``save_residuals=False``: a forward-only call that does not write the H / a traces).
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
