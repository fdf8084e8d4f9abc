"""The one dispatch point of every neuron scan: ``xla``, ``pallas``, ``pallas_interpret``,
``triton`` and ``auto``.

A neuron is a step function ``step(params, state, x_t) -> (s_t, new_state)`` (the built-in ones in
:mod:`spikejax.neurons.steps`, a user's through :func:`spikejax.custom_neuron`). :func:`scan` runs
it over a flattened ``x[T, M]``:

* ``xla``: ``lax.scan`` of the step, differentiated by JAX through the surrogates' own
  ``custom_vjp``: the reference every kernel is tested against;
* ``pallas`` (GPU) / ``pallas_interpret`` (anywhere, slowly): the generic fused engine of
  :mod:`pallas_kernels.engine`, forward and backward derived from the same step, lowered through
  Triton; ``pallas_mosaic`` (Hopper GPUs) the same engine lowered through Mosaic GPU
  (:mod:`pallas_kernels.engine_mosaic`);
* ``triton``: the hand-written Triton kernels of the built-in neurons (:mod:`triton_kernels`), which
  restate the built-in equations on purpose (a second implementation, tested against ``xla``)
  through the contract::

    forward(x, v0, a0, beta, threshold, adapt_scale, adapt_decay, alpha, **config)
        -> (s[T,M] in x.dtype, v_T[M] f32, a_T[M] f32, v_seq[T,M] f32 or None, residuals)
    backward(residuals, g_s, g_vT, g_aT, g_vseq or None, **config)
        -> (g_x, g_v0, g_a0, g_beta, g_threshold, g_adapt_scale, g_adapt_decay, g_alpha)

  with ``config`` = :meth:`ScanSpec.kernel_config`, behind the one ``jax.custom_vjp`` here;
* ``auto``: the measured-fastest backend for the platform and shape (:func:`auto_choice`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from spikejax.neurons.steps import KINDS, RESETS, ScanParams, ScanSpec, builtin_step

Array = jax.Array

BACKENDS = ("xla", "pallas", "triton", "auto", "pallas_interpret", "pallas_mosaic")

_LOWERING = {"pallas": "triton", "pallas_mosaic": "mosaic_gpu", "pallas_interpret": "interpret"}
"""The Pallas lowering of each engine backend."""

__all__ = ["BACKENDS", "KINDS", "RESETS", "ScanParams", "ScanResult", "ScanSpec", "StepWithConstants",
           "available_backends", "neuron_scan", "reference_scan", "resolve_backend", "scan", "step_name",
           "with_constants"]


class ScanResult(NamedTuple):
    spikes: Array  # [T, M], x.dtype
    v: Array  # [M] f32
    a: Array  # [M] f32
    membrane: Array | None  # [T, M] f32 when spec.return_membrane


# --- any step function: the lax.scan reference and the fused engine ------------------------------


XLA_UNROLL_MAX_T = 8
"""``backend="xla"`` unrolls scans of at most this many steps: XLA then fuses the neuron's steps with
the elementwise work around it (BatchNorm, residual adds) into the same kernels, forward and backward
(H200, T = 4, batch 64, with :func:`spikejax.nn.temporal.batch_norm`: the Spikformer-CIFAR10 f32 training step
20.58 ms rolled, 13.35 ms unrolled, 14.13 ms with the fused engine; SDT-8-384 bf16 6.34 ms unrolled against the
engine's 7.44; BENCHMARKS.md)."""


def _xla_scan(step: Callable, x: Array, state0: tuple, params, return_states: bool):
    """``lax.scan`` of ``step``: the reference every kernel is tested against (autodiff by JAX);
    unrolled for ``T <= XLA_UNROLL_MAX_T`` (the same operations in the same order)."""

    def body(state, xt):
        s, new = step(params, state, xt.astype(jnp.float32))
        new = tuple(new)
        return new, ((s.astype(x.dtype), new) if return_states else s.astype(x.dtype))

    final, out = jax.lax.scan(body, tuple(state0), x, unroll=x.shape[0] <= XLA_UNROLL_MAX_T)
    if return_states:
        return out[0], final, out[1]
    return out, final, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _engine_scan(step, treedef, lowering: str, return_states: bool, x, state0, leaves):
    # not differentiated: the kernel skips the checkpoints only the backward reads
    engine = importlib.import_module("pallas_kernels.engine")
    s, stateT, states, _ = engine.scan_forward(step, treedef, x, state0, leaves, return_states=return_states,
                                               save_residuals=False, lowering=lowering)
    return s, stateT, states


def _engine_scan_fwd(step, treedef, lowering, return_states, x, state0, leaves):
    engine = importlib.import_module("pallas_kernels.engine")
    s, stateT, states, res = engine.scan_forward(step, treedef, x, state0, leaves, return_states=return_states,
                                                 lowering=lowering)
    return (s, stateT, states), res


def _engine_scan_bwd(step, treedef, lowering, return_states, res, g):
    engine = importlib.import_module("pallas_kernels.engine")
    g_s, g_stateT, g_states = g
    g_x, g_state0, g_leaves = engine.scan_backward(step, treedef, res, g_s, g_stateT,
                                                   g_states if return_states else None)
    return g_x, g_state0, tuple(g_leaves)


_engine_scan.defvjp(_engine_scan_fwd, _engine_scan_bwd)


def scan(step: Callable, x: Array, state0: tuple, params, *, backend: str = "xla", return_states: bool = False,
         triton_spec: ScanSpec | None = None):
    """Run ``step(params, state, x_t) -> (s_t, state)`` over ``x[T, M]`` from ``state0`` (``n`` arrays
    ``[M]`` float32) with ``params`` a pytree whose leaves are float32 ``[1]`` or ``[M]``.

    Returns ``(spikes[T, M] x.dtype, final_state, states or None)``; ``states`` (with
    ``return_states``) is a tuple of ``[T, M]`` float32 trajectories, the state after each step.
    ``x_t`` reaches the step as float32. ``backend``: ``"xla"`` (``lax.scan``), ``"pallas"`` /
    ``"pallas_interpret"`` (the fused engine of :mod:`pallas_kernels.engine`), ``"auto"``.
    """
    if backend == "triton" and triton_spec is None:
        raise ValueError(
            "backend='triton': the hand-written Triton kernels serve only the built-in neurons; "
            "use backend='pallas' (the fused engine, any step function) or 'xla'"
        )
    name = resolve_backend(backend, triton_spec, x.shape, custom=triton_spec is None, dtype=x.dtype)
    state0 = tuple(state0)
    if name == "xla":
        return _xla_scan(step, x, state0, params, return_states)
    step, treedef, leaves = with_constants(step, params)
    s, stateT, states = _engine_scan(step, treedef, _LOWERING[name], bool(return_states), x, state0, leaves)
    return s, tuple(stateT), (tuple(states) if return_states else None)


def step_name(step: Callable) -> str:
    """The name error messages give a step function (its qualified name, else its repr)."""
    return getattr(step, "__qualname__", None) or getattr(step, "__name__", None) or repr(step)


@dataclasses.dataclass(frozen=True)
class StepWithConstants:
    """``step`` with the parameter leaves known at trace time folded in as constants.

    Called as ``bound(inputs, state, x_t)`` with ``inputs`` the tuple of the other (traced) leaves;
    ``constants`` holds, per leaf of ``treedef``, None (an input) or the float32 bit pattern of its
    constant, so equal constants give an equal (hashable) step and one compiled kernel.
    """

    step: Callable
    treedef: jax.tree_util.PyTreeDef
    constants: tuple[int | None, ...]

    @property
    def __name__(self) -> str:  # the engine's messages name the user's step
        return step_name(self.step)

    def __call__(self, inputs: tuple, state: tuple, x: Array):
        it = iter(inputs)
        leaves = [next(it) if c is None else np.array(c, np.uint32).view(np.float32) for c in self.constants]
        return self.step(jax.tree.unflatten(self.treedef, leaves), state, x)


def with_constants(step: Callable, params) -> tuple[Callable, jax.tree_util.PyTreeDef, tuple]:
    """``(step, params_treedef, leaves)`` for the engine: the NumPy scalar leaves of ``params`` (the parameters known at
    trace time, see :func:`spikejax.neurons.custom.flat_param`) become constants of the step (no kernel
    input, no gradient computed), the traced leaves stay inputs."""
    leaves, treedef = jax.tree.flatten(params)
    known = [isinstance(q, (np.ndarray, np.generic)) and np.size(q) == 1 for q in leaves]
    if not any(known):
        return step, treedef, tuple(leaves)
    constants = tuple(int(np.asarray(q, np.float32).reshape(()).view(np.uint32)) if k else None
                      for q, k in zip(leaves, known, strict=True))
    inputs = tuple(q for q, c in zip(leaves, constants, strict=True) if c is None)
    return StepWithConstants(step, treedef, constants), jax.tree.structure(inputs), inputs


# --- kernel backends behind one custom_vjp ----------------------------------------------------


class KernelBackend(NamedTuple):
    forward: Callable
    backward: Callable


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


def _load_triton() -> KernelBackend:
    """Import the Triton kernel package lazily, so importing spikejax never needs triton."""
    module = importlib.import_module("triton_kernels")
    return KernelBackend(module.neuron_scan_forward, module.neuron_scan_backward)


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here (with what to install), or None if it can."""
    if name in ("xla", "auto"):
        return None
    if name == "pallas_interpret":
        return _import_error("pallas_kernels.engine", "scan_forward")
    if name == "pallas_mosaic":
        reason = _import_error("pallas_kernels.engine", "scan_forward")
        if reason is None:
            reason = importlib.import_module("pallas_kernels.engine_mosaic").available()
        return None if reason is None else (
            f"backend='pallas_mosaic' cannot run here: {reason}; use backend='pallas' (the same engine through "
            "the Triton lowering) or 'xla'")
    if name == "pallas":
        if _platform() != "gpu":
            return (
                f"backend='pallas' needs a GPU, but JAX's default platform is {_platform()!r}; "
                "install jax with CUDA (pip install 'spikejax[gpu]') on a machine with an NVIDIA GPU, "
                "or use backend='xla' (or 'pallas_interpret' to run the kernel slowly in the "
                "Pallas interpreter)"
            )
        return _import_error("pallas_kernels.engine", "scan_forward")
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


def resolve_backend(name: str, spec: ScanSpec | None = None, shape: tuple[int, int] | None = None, *,
                    custom: bool = False, dtype=None) -> str:
    """Map ``name`` (possibly ``auto``) to a concrete backend, raising if it cannot run here.

    ``auto`` is ``xla`` off the GPU; on a GPU it picks the fastest available kernel backend by the
    rule recorded in BENCHMARKS.md (:func:`auto_choice`); ``custom`` (a user's step function, or a
    built-in neuron with a user-defined surrogate) rules out the Triton kernels.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a string, got {type(name)!r}")
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "auto":
        return auto_choice(spec, shape, custom=custom, dtype=dtype)
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


MOSAIC_MIN_T = 32
MOSAIC_MIN_M = 1 << 18
"""``auto`` takes the Mosaic GPU lowering for scans of at least ``MOSAIC_MIN_T`` steps (a multiple of 8) of
built-in one-state neurons on float32 inputs, and of any step (built-in or custom, several states) on float32
or bfloat16 inputs over at least ``MOSAIC_MIN_M`` neurons; measured faster there (H200, 2026-12-01, fwd+bwd
ms, Mosaic GPU vs Triton lowering): LIF f32 128 x 1M 0.736 vs 0.784, 32 x 64K 0.019 vs 0.027, 512 x 16K
0.078 vs 0.125; 128 x 1M f32 CUBA 0.777 vs 0.823, ALIF 0.774 vs 0.828, Izhikevich 0.775 vs 0.845; LIF bf16
128 x 1M 0.394 vs 0.417. Slower or equal elsewhere (bf16 32 x 64K 0.022 vs 0.013, CUBA 32 x 64K, T = 8), so
the order below applies there."""


def auto_choice(spec: ScanSpec | None, shape: tuple[int, int] | None, *, custom: bool = False,
                dtype=None) -> str:
    """The ``auto`` rule: the measured-fastest available backend for this platform and shape.

    Off the GPU it is ``xla`` (the kernel backends need a GPU). On a GPU it is ``pallas_mosaic`` where
    :data:`MOSAIC_MIN_T` says so and it can run, else the first available backend of
    :data:`AUTO_GPU_ORDER_LONG_T` for a long scan over few neurons (``shape = (T, M)`` with
    ``T >= LONG_T`` and ``M < LONG_T_MAX_M``), else of :data:`AUTO_GPU_ORDER`; ``triton`` is skipped for
    ``custom`` steps.
    """
    if _platform() != "gpu":
        return "xla"
    if shape is not None and dtype is not None and shape[0] >= MOSAIC_MIN_T and shape[0] % 8 == 0:
        one_state = spec is not None and not custom and not (spec.adaptive and not spec.reset_delay)
        f32 = jnp.dtype(dtype) == jnp.float32
        wide = shape[1] >= MOSAIC_MIN_M and jnp.dtype(dtype) in (jnp.float32, jnp.bfloat16)
        if ((one_state and f32) or wide) and unavailable_reason("pallas_mosaic") is None:
            return "pallas_mosaic"
    order = AUTO_GPU_ORDER
    if shape is not None and shape[0] >= LONG_T and shape[1] < LONG_T_MAX_M:
        order = AUTO_GPU_ORDER_LONG_T
    for candidate in order:
        if candidate == "triton" and custom:
            continue
        if candidate == "xla" or unavailable_reason(candidate) is None:
            return candidate
    return "xla"


def _scan_params(spec: ScanSpec, p: ScanParams) -> ScanParams:
    """The parameters a built-in step reads (the adaptation pair only when adaptive)."""
    if spec.alpha is not None or not isinstance(spec.surrogate, str):
        p = p._replace(alpha=None)
    if spec.adaptive and not spec.reset_delay:
        return p
    return p._replace(adapt_scale=None, adapt_decay=None)


def _spec_for_step(spec: ScanSpec) -> ScanSpec:
    """The options that change the step (the membrane output is the scan's business)."""
    return dataclasses.replace(spec, return_membrane=False, adaptive=spec.adaptive and not spec.reset_delay)


def neuron_scan(
    spec: ScanSpec, x: Array, v0: Array, a0: Array, params: ScanParams, backend: str = "xla"
) -> ScanResult:
    """Run a built-in neuron (:func:`spikejax.neurons.steps.builtin_step` of ``spec``) on ``x[T, M]``
    from ``v0, a0 [M]``; parameters each ``[M]`` or ``[1]`` (see :class:`ScanParams`)."""
    custom = not isinstance(spec.surrogate, str)
    name = resolve_backend(backend, spec, x.shape, custom=custom, dtype=x.dtype)
    if name == "triton":
        if custom:
            raise ValueError(
                "backend='triton': the hand-written Triton kernels know only the named surrogates; "
                "use backend='pallas' or 'xla' for a spikejax.surrogate.custom one"
            )
        params = _per_neuron(params, v0.shape)
        return _kernel_scan(_triton(), spec, x, v0, a0, params)
    step_spec = _spec_for_step(spec)
    state0 = (v0, a0) if step_spec.adaptive else (v0,)
    s, final, states = scan(builtin_step(step_spec), x, state0, _scan_params(step_spec, params), backend=name,
                            return_states=spec.return_membrane, triton_spec=spec)
    a = final[1] if step_spec.adaptive else a0
    return ScanResult(s, final[0], a, states[0] if spec.return_membrane else None)


def reference_scan(spec: ScanSpec, x: Array, v0: Array, a0: Array, p: ScanParams) -> ScanResult:
    """The ``lax.scan`` reference of a built-in neuron (``neuron_scan`` with ``backend="xla"``)."""
    return neuron_scan(spec, x, v0, a0, p, backend="xla")


def _per_neuron(p: ScanParams, shape: tuple[int, ...]) -> ScanParams:
    """Every parameter as an ``[M]`` vector (the ``[1]`` form broadcast; autodiff sums it back)."""
    return ScanParams(*(jnp.broadcast_to(q, shape) for q in p))


@functools.cache
def _triton() -> KernelBackend:
    return _load_triton()
