"""The step functions of the built-in neurons: the one definition of their equations.

A step is ``step(params, state, x_t) -> (s_t, new_state)`` over per-neuron values (elementwise);
:func:`spikejax.backends.scan` runs it as a ``lax.scan`` (``xla``, the reference) or compiles it
into the fused Pallas engine. :func:`builtin_step` builds the step of one :class:`ScanSpec`
(cached, so equal specs give the same function object and share compiled kernels). With
``reset_delay=False`` (SpikingJelly's order), at step t::

    H_t  = β V_{t-1} + γ X_t                 γ = 1 - β if decay_input else 1
    θ_t  = θ + b a_{t-1}                      (adaptive; else θ_t = θ)
    S_t  = spike(H_t - θ_t)                   binary: Θ(·); ternary: Θ(H-θ) - Θ(-H-θ);
                                              multilevel: Σ_{k=1..L} Θ(H - kθ)
    V_t  = H_t - θ_t S_t   (subtract) | H_t (1 - F_t) (zero) | H_t (none)
    a_t  = ρ a_{t-1} + S_t                    (adaptive)

with ``F_t`` the 0/1 "fired" indicator (Θ(H-θ), plus Θ(-H-θ) for ternary) and ``S_t``, ``F_t``
replaced by ``stop_gradient`` copies in the reset terms when ``detach_reset``. With
``reset_delay=True`` (snnTorch's order) the reset of a spike is applied on the next step,
undecayed, and the membrane carried is the un-reset one::

    S'_{t-1} = spike(V_{t-1} - θ)
    H_t  = β V_{t-1} + γ X_t - θ S'_{t-1}  (subtract) | β V_{t-1}(1 - F'_{t-1}) + γ X_t (zero)
    V_t  = H_t,  S_t = spike(V_t - θ)

The state is ``(v,)``, or ``(v, a)`` for the adaptive neuron; the parameters a :class:`ScanParams`
(``adapt_scale``/``adapt_decay`` are None unless adaptive). The surrogate's α is a parameter, so a
learnable surrogate trains through every backend.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax

from spikejax import surrogate as _surrogate

Array = jax.Array

RESETS = ("subtract", "zero", "none")
KINDS = ("binary", "ternary", "multilevel")

__all__ = ["KINDS", "RESETS", "ScanParams", "ScanSpec", "builtin_step"]


@dataclasses.dataclass(frozen=True)
class ScanSpec:
    """Static options of a built-in neuron (hashable; compile-time flags).

    ``surrogate`` is a shape name (``"atan"``, ...) or a :class:`spikejax.surrogate.CustomSurrogate`.
    """

    kind: str = "binary"
    levels: int = 1
    adaptive: bool = False
    decay_input: bool = False
    reset: str = "subtract"
    detach_reset: bool = False
    reset_delay: bool = False
    surrogate: str | _surrogate.CustomSurrogate = "atan"
    return_membrane: bool = False
    alpha: float | None = None
    """The surrogate steepness as a constant of the step (known at trace time, so never differentiated);
    None: it is the parameter ``ScanParams.alpha``."""

    def kernel_config(self) -> dict:
        """The options as plain keyword arguments for the hand-written (Triton) kernels (which read α
        from the parameters)."""
        config = dataclasses.asdict(self)
        del config["alpha"]
        return config


class ScanParams(NamedTuple):
    """The neurons' parameters, float32: each ``[M]`` (per neuron) or ``[1]`` (one value for every
    neuron). In a step function's params, ``adapt_scale`` / ``adapt_decay`` are None unless adaptive."""

    beta: Array
    threshold: Array
    adapt_scale: Array | None
    adapt_decay: Array | None
    alpha: Array | None


def _spike_fn(spec: ScanSpec, alpha: Array) -> Callable[[Array], Array]:
    if spec.alpha is not None:
        alpha = spec.alpha
    if isinstance(spec.surrogate, _surrogate.CustomSurrogate):
        return spec.surrogate
    return functools.partial(_surrogate.spike, spec.surrogate, alpha=alpha)


def _fire(spec: ScanSpec, h: Array, thr: Array, alpha: Array) -> tuple[Array, Array]:
    """Spike value S and fired indicator F of membrane h against threshold thr."""
    spike = _spike_fn(spec, alpha)
    up = spike(h - thr)
    if spec.kind == "binary":
        return up, up
    if spec.kind == "ternary":
        down = spike(-h - thr)
        return up - down, up + down
    surr = spec.surrogate
    if not isinstance(surr, _surrogate.CustomSurrogate):
        surr = _surrogate.Surrogate(surr, alpha if spec.alpha is None else spec.alpha)
    return _surrogate.spike_count(surr, spec.levels, h, thr), up


def _detach(spec: ScanSpec, z: Array) -> Array:
    return jax.lax.stop_gradient(z) if spec.detach_reset else z


def _charge(spec: ScanSpec, p: ScanParams, v: Array, x: Array) -> Array:
    if spec.decay_input:
        return p.beta * v + (1.0 - p.beta) * x
    return p.beta * v + x


@functools.cache
def builtin_step(spec: ScanSpec) -> Callable:
    """The step function ``step(params: ScanParams, state, x_t) -> (S_t, state)`` of ``spec``."""

    def step(p: ScanParams, state: tuple[Array, ...], x: Array):
        v = state[0]
        if spec.reset_delay:
            s_prev, f_prev = _fire(spec, v, p.threshold, p.alpha)
            if spec.reset == "zero":
                v = v * (1.0 - _detach(spec, f_prev))
            h = _charge(spec, p, v, x)
            if spec.reset == "subtract":
                h = h - p.threshold * _detach(spec, s_prev)
            s, _ = _fire(spec, h, p.threshold, p.alpha)
            return s, (h,)
        h = _charge(spec, p, v, x)
        thr = p.threshold + p.adapt_scale * state[1] if spec.adaptive else p.threshold
        s, fired = _fire(spec, h, thr, p.alpha)
        if spec.reset == "subtract":
            v_new = h - thr * _detach(spec, s)
        elif spec.reset == "zero":
            v_new = h * (1.0 - _detach(spec, fired))
        else:
            v_new = h
        if spec.adaptive:
            return s, (v_new, p.adapt_decay * state[1] + s)
        return s, (v_new,)

    step.__name__ = step.__qualname__ = f"builtin_{spec.kind}_step"
    return step
