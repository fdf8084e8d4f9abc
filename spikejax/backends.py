"""The one dispatch point of the neuron scan: ``xla`` (the ``lax.scan`` reference), ``pallas``,
``triton`` and ``auto``.

Every neuron in :mod:`spikejax.neurons` is the generalized scan below over a flattened
``x[T, M]`` with state ``v[M]`` (and adaptation ``a[M]``) and per-neuron parameters
``beta, threshold, adapt_scale, adapt_decay, alpha`` (all ``[M]``, float32). Update order with
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
undecayed, and the membrane returned is the un-reset one::

    S'_{t-1} = spike(V_{t-1} - θ)
    H_t  = β V_{t-1} + γ X_t - θ S'_{t-1}  (subtract) | β V_{t-1}(1 - F'_{t-1}) + γ X_t (zero)
    V_t  = H_t,  S_t = spike(V_t - θ)

Kernel backends (Pallas, Triton) implement a forward and a backward of this contract::

    forward(x, v0, a0, beta, threshold, adapt_scale, adapt_decay, alpha, **config)
        -> (s[T,M] in x.dtype, v_T[M] f32, a_T[M] f32, v_seq[T,M] f32 or None, residuals)
    backward(residuals, g_s, g_vT, g_aT, g_vseq or None, **config)
        -> (g_x, g_v0, g_a0, g_beta, g_threshold, g_adapt_scale, g_adapt_decay, g_alpha)

where ``config`` is :meth:`ScanSpec.kernel_config` (plain Python values) and the parameter
gradients are per neuron ``[M]`` (summed over time inside the kernel). This module owns the one
``jax.custom_vjp`` around them; the ``xla`` reference is differentiated by JAX itself through the
surrogate's own ``custom_vjp``, so it is an independent check of every kernel backward.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from spikejax import surrogate as _surrogate

Array = jax.Array

BACKENDS = ("xla", "pallas", "triton", "auto", "pallas_interpret")
RESETS = ("subtract", "zero", "none")
KINDS = ("binary", "ternary", "multilevel")


@dataclasses.dataclass(frozen=True)
class ScanSpec:
    """Static options of the generalized neuron scan (hashable; compile-time flags)."""

    kind: str = "binary"
    levels: int = 1
    adaptive: bool = False
    decay_input: bool = False
    reset: str = "subtract"
    detach_reset: bool = False
    reset_delay: bool = False
    surrogate: str = "atan"
    return_membrane: bool = False

    def kernel_config(self) -> dict:
        """The options as plain keyword arguments for the kernel packages."""
        return dataclasses.asdict(self)


class ScanParams(NamedTuple):
    """The neurons' parameters, float32: each ``[M]`` (per neuron), or all five ``[1]`` (one value for
    every neuron; kernels that take that form skip the ``[M]`` parameter streams, the others get
    them broadcast by :func:`neuron_scan`)."""

    beta: Array
    threshold: Array
    adapt_scale: Array
    adapt_decay: Array
    alpha: Array


class ScanResult(NamedTuple):
    spikes: Array  # [T, M], x.dtype
    v: Array  # [M] f32
    a: Array  # [M] f32
    membrane: Array | None  # [T, M] f32 when spec.return_membrane


# --- the XLA reference ------------------------------------------------------------------------


def _fire(spec: ScanSpec, h: Array, thr: Array, alpha: Array) -> tuple[Array, Array]:
    """Spike value S and fired indicator F for membrane h against threshold thr."""
    spike = functools.partial(_surrogate.spike, spec.surrogate)
    up = spike(h - thr, alpha)
    if spec.kind == "binary":
        return up, up
    if spec.kind == "ternary":
        down = spike(-h - thr, alpha)
        return up - down, up + down
    return _level_count(spec.surrogate, spec.levels, h, thr, alpha), up


@functools.partial(jax.checkpoint, static_argnums=(0, 1))
def _level_count(shape: str, levels: int, h: Array, thr: Array, alpha: Array) -> Array:
    """Σ_{k=1..L} spike(h - kθ), rematerialized so autodiff keeps O(1), not O(L), residuals per step."""
    spike = functools.partial(_surrogate.spike, shape)
    return jax.lax.fori_loop(1, levels + 1, lambda k, acc: acc + spike(h - k * thr, alpha), jnp.zeros_like(h))


def _reset(spec: ScanSpec, h: Array, thr: Array, s: Array, fired: Array) -> Array:
    if spec.detach_reset:
        s, fired = jax.lax.stop_gradient(s), jax.lax.stop_gradient(fired)
    if spec.reset == "subtract":
        return h - thr * s
    if spec.reset == "zero":
        return h * (1.0 - fired)
    return h


def _per_neuron(p: ScanParams, shape: tuple[int, ...]) -> ScanParams:
    """Every parameter as an ``[M]`` vector (the all-``[1]`` form broadcast; autodiff sums it back)."""
    return ScanParams(*(jnp.broadcast_to(q, shape) for q in p))


def reference_scan(spec: ScanSpec, x: Array, v0: Array, a0: Array, p: ScanParams) -> ScanResult:
    """The ``lax.scan`` reference of the contract above; differentiable by JAX autodiff."""
    p = _per_neuron(p, v0.shape)
    gamma = 1.0 - p.beta if spec.decay_input else jnp.ones_like(p.beta)

    def step(carry, xt):
        v, a = carry
        xt = xt.astype(jnp.float32)
        if spec.reset_delay:
            s_prev, f_prev = _fire(spec, v, p.threshold, p.alpha)
            if spec.reset == "zero":
                v = v * (1.0 - (jax.lax.stop_gradient(f_prev) if spec.detach_reset else f_prev))
            h = p.beta * v + gamma * xt
            if spec.reset == "subtract":
                h = h - p.threshold * (jax.lax.stop_gradient(s_prev) if spec.detach_reset else s_prev)
            s, _ = _fire(spec, h, p.threshold, p.alpha)
            v_new = h
        else:
            h = p.beta * v + gamma * xt
            thr = p.threshold + p.adapt_scale * a if spec.adaptive else p.threshold
            s, fired = _fire(spec, h, thr, p.alpha)
            v_new = _reset(spec, h, thr, s, fired)
            if spec.adaptive:
                a = p.adapt_decay * a + s
        out = (s.astype(x.dtype), v_new) if spec.return_membrane else s.astype(x.dtype)
        return (v_new, a), out

    (v, a), out = jax.lax.scan(step, (v0, a0), x)
    if spec.return_membrane:
        s, vseq = out
        return ScanResult(s, v, a, vseq)
    return ScanResult(out, v, a, None)


# --- kernel backends behind one custom_vjp ----------------------------------------------------


class KernelBackend(NamedTuple):
    forward: Callable
    backward: Callable
    scalar_params: bool = False  # takes the all-[1] ScanParams form (see ScanParams)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _kernel_scan(backend: KernelBackend, spec: ScanSpec, x, v0, a0, p: ScanParams) -> ScanResult:
    # not differentiated: the kernel skips writing what only the backward reads
    s, v, a, vseq, _ = backend.forward(x, v0, a0, *p, save_residuals=False, **spec.kernel_config())
    return ScanResult(s, v, a, vseq)


def _kernel_scan_fwd(backend, spec, x, v0, a0, p):
    s, v, a, vseq, res = backend.forward(x, v0, a0, *p, **spec.kernel_config())
    return ScanResult(s, v, a, vseq), res


def _kernel_scan_bwd(backend, spec, res, g: ScanResult):
    gx, gv0, ga0, *gp = backend.backward(res, g.spikes, g.v, g.a, g.membrane, **spec.kernel_config())
    return gx, gv0, ga0, ScanParams(*gp)


_kernel_scan.defvjp(_kernel_scan_fwd, _kernel_scan_bwd)


# --- availability and dispatch ----------------------------------------------------------------


def _platform() -> str:
    return jax.default_backend()


def _load_kernel_backend(name: str) -> KernelBackend:
    """Import a kernel package lazily, so importing spikejax never needs triton."""
    if name in ("pallas", "pallas_interpret"):
        module = importlib.import_module("pallas_kernels")
        interpret = name == "pallas_interpret"
        return KernelBackend(
            functools.partial(module.neuron_scan_forward, interpret=interpret),
            functools.partial(module.neuron_scan_backward, interpret=interpret),
            scalar_params=True,
        )
    module = importlib.import_module("triton_kernels")
    return KernelBackend(module.neuron_scan_forward, module.neuron_scan_backward)


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here (with what to install), or None if it can."""
    if name in ("xla", "auto"):
        return None
    if name == "pallas_interpret":
        return _import_error("pallas_kernels", "neuron_scan_forward")
    if name == "pallas":
        if _platform() != "gpu":
            return (
                f"backend='pallas' needs a GPU, but JAX's default platform is {_platform()!r}; "
                "install jax with CUDA (pip install 'spikejax[gpu]') on a machine with an NVIDIA GPU, "
                "or use backend='xla' (or 'pallas_interpret' to run the kernel slowly in the "
                "Pallas interpreter)"
            )
        return _import_error("pallas_kernels", "neuron_scan_forward")
    if name == "triton":
        if _platform() != "gpu":
            return (
                f"backend='triton' needs an NVIDIA GPU, but JAX's default platform is {_platform()!r}; "
                "install 'spikejax[gpu]' (jax CUDA plugin, triton, jax-triton) on a GPU machine, "
                "or use backend='xla'"
            )
        for mod in ("triton", "jax_triton"):
            try:
                importlib.import_module(mod)
            except ImportError:
                return (
                    f"backend='triton' needs the {mod!r} package, which is not installed; "
                    "pip install 'spikejax[gpu]' (jax-triton and triton)"
                )
        return _import_error("triton_kernels", "neuron_scan_forward")
    raise ValueError(f"backend: unknown backend {name!r}; expected one of {BACKENDS}")


def _import_error(module: str, attr: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the install
        return f"the {module!r} package could not be imported: {err}"
    if not hasattr(mod, attr):
        return f"the {module!r} package does not implement {attr!r} yet"
    return None


def available_backends() -> list[str]:
    """The concrete backends that can run on this machine, fastest first."""
    return [b for b in ("pallas", "triton", "xla") if unavailable_reason(b) is None]


def resolve_backend(name: str, spec: ScanSpec | None = None, shape: tuple[int, int] | None = None) -> str:
    """Map ``name`` (possibly ``auto``) to a concrete backend, raising if it cannot run here.

    ``auto`` is ``xla`` off the GPU; on a GPU it picks the fastest available kernel backend by the
    rule recorded in BENCHMARKS.md (:func:`auto_choice`).
    """
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {BACKENDS}")
    if os.environ.get("SPIKEJAX_BACKEND") and name == "auto":
        name = os.environ["SPIKEJAX_BACKEND"]
    if name == "auto":
        return auto_choice(spec, shape)
    reason = unavailable_reason(name)
    if reason is not None:
        raise ValueError(reason)
    return name


# The auto rule, from the measurements in BENCHMARKS.md (H200 run 15, 2026-11-30; LIF forward +
# backward at (T, M) = (128, 1M), (32, 64K), (512, 16K), (8, 4M), f32 and bf16): Pallas was fastest
# at 6 of the 8 points (1.03x-2.7x ahead of Triton), Triton at the long scan over few neurons,
# 512 x 16K (1.8x f32, 2.2x bf16: its backward keeps 16-step chunks of loads in flight per neuron).
# The split between T = 32 and T = 512 is not measured in between; 256 is the midpoint in log2.
AUTO_GPU_ORDER: tuple[str, ...] = ("pallas", "triton", "xla")
AUTO_GPU_ORDER_LONG_T: tuple[str, ...] = ("triton", "pallas", "xla")
LONG_T, LONG_T_MAX_M = 256, 1 << 18
"""``auto`` prefers :data:`AUTO_GPU_ORDER_LONG_T` for ``T >= LONG_T`` steps over ``M < LONG_T_MAX_M`` neurons."""


def auto_choice(spec: ScanSpec | None, shape: tuple[int, int] | None) -> str:
    """The ``auto`` rule: the measured-fastest available backend for this platform and shape.

    Off the GPU it is ``xla`` (the kernel backends need a GPU). On a GPU it is the first available
    backend of :data:`AUTO_GPU_ORDER_LONG_T` for a long scan over few neurons (``shape = (T, M)``
    with ``T >= LONG_T`` and ``M < LONG_T_MAX_M``), else of :data:`AUTO_GPU_ORDER`.
    """
    if _platform() != "gpu":
        return "xla"
    order = AUTO_GPU_ORDER
    if shape is not None and shape[0] >= LONG_T and shape[1] < LONG_T_MAX_M:
        order = AUTO_GPU_ORDER_LONG_T
    for candidate in order:
        if candidate == "xla" or unavailable_reason(candidate) is None:
            return candidate
    return "xla"


def neuron_scan(
    spec: ScanSpec, x: Array, v0: Array, a0: Array, params: ScanParams, backend: str = "xla"
) -> ScanResult:
    """Run the generalized scan on ``x[T, M]`` with the chosen backend (see module docstring)."""
    name = resolve_backend(backend, spec, x.shape)
    if name == "xla":
        return reference_scan(spec, x, v0, a0, params)
    kernel = _kernel_backend(name)
    scalar = all(q.shape == (1,) for q in params)
    if not (scalar and kernel.scalar_params):
        params = _per_neuron(params, v0.shape)
    return _kernel_scan(kernel, spec, x, v0, a0, params)


@functools.cache
def _kernel_backend(name: str) -> KernelBackend:
    return _load_kernel_backend(name)
