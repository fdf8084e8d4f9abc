"""Functional spiking neurons: pure scans over the leading time axis.

Every function takes ``x[T, ...]`` (rank >= 2: time, then any neuron axes, channels last) and
returns ``(spikes[T, ...], final_state)``, or ``(spikes, final_state, membrane[T, ...])`` with
``return_membrane=True``. ``spikes`` has ``x``'s dtype; state and membrane are float32.
Parameters are Python scalars or arrays broadcastable to the neuron shape ``x.shape[1:]``
(e.g. one value per channel, shape ``[C]``); gradients reach ``x``, the initial state and every
parameter (and a learnable surrogate's α).

Update order (default, SpikingJelly's): at each step t::

    H_t = β V_{t-1} + γ X_t            (charge; γ = 1 - β with decay_input, else 1)
    S_t = Θ(H_t - θ)                   (fire; surrogate gradient in the backward)
    V_t = reset(H_t, S_t)              subtract: H_t - θ S_t | zero: H_t (1 - S_t) | none: H_t

``reset_delay=True`` gives snnTorch's order instead: the reset of a spike fired at t-1 is applied
at t, undecayed (``H_t = β V_{t-1} + X_t - θ S_{t-1}``), and the returned membrane is not reset
(use ``detach_reset=True`` as well to match snnTorch, which always detaches the reset).
See :mod:`spikejax.backends` for the full generalized scan every backend implements.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from spikejax import backends as _backends
from spikejax import surrogate as _surrogate
from spikejax.neurons.custom import broadcast_flat, check_choice, check_range, concrete, flat_param
from spikejax.neurons.steps import RESETS, ScanParams, ScanSpec

Array = jax.Array
Param = float | Array

__all__ = ["NeuronState", "if_", "lif", "alif", "plif", "plif_decay_logit", "ternary", "multilevel"]


class NeuronState(NamedTuple):
    """Neuron state over the neuron shape ``x.shape[1:]``: membrane ``v`` and, for ALIF,
    adaptation ``a`` (``None`` for neurons without adaptation)."""

    v: Array
    a: Array | None = None


# --- validation -------------------------------------------------------------------------------


def _check_x(x) -> Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"x: expected rank >= 2 with time first, [T, ...neurons], got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected a floating dtype (float32, bfloat16, float16), got {x.dtype}")
    if x.shape[0] < 1:
        raise ValueError(f"x: expected at least one time step, got shape {tuple(x.shape)}")
    return x


def _param(name: str, value: Param, neuron_shape: tuple[int, ...], *, low=None, high=None,
           low_open: bool = False) -> Array:
    """A parameter as float32 ``[1]`` when it is one value, else broadcast to the neuron shape and
    flattened to ``[M]`` (see :class:`spikejax.backends.ScanParams`); finite and inside the bounds
    when concrete, checked under :func:`spikejax.checks.checked` when traced."""
    check_range(name, value, low=low, high=high, low_open=low_open)
    return flat_param(name, value, neuron_shape)


def _decay(beta: Param | None, tau: Param | None, decay_input: bool | None,
           default_tau: float | None, default_beta: float | None) -> tuple[Param, bool]:
    """Map the (beta | tau, decay_input) parameterizations to (β, decay_input)."""
    if beta is not None and tau is not None:
        raise ValueError("beta, tau: give one of them, not both (β = 1 - 1/τ)")
    if tau is not None:
        check_range("tau", tau, low=1.0)  # β = 1 - 1/τ in [0, 1)
        host = concrete(tau)  # a τ known at trace time keeps β a constant (no gradient in the kernels)
        beta = 1.0 - 1.0 / (host.astype(np.float32) if host is not None else jnp.asarray(tau, jnp.float32))
        return beta, True if decay_input is None else decay_input
    if beta is not None:
        return beta, False if decay_input is None else decay_input
    if default_tau is not None:
        return 1.0 - 1.0 / default_tau, True if decay_input is None else decay_input
    return default_beta, False if decay_input is None else decay_input


def _run(
    x,
    state: NeuronState | Array | None,
    *,
    beta: Param,
    decay_input: bool,
    threshold: Param,
    reset: str,
    detach_reset: bool,
    reset_delay: bool,
    surrogate,
    backend: str,
    return_membrane: bool,
    kind: str = "binary",
    levels: int = 1,
    adaptive: bool = False,
    adapt_scale: Param = 0.0,
    adapt_decay: Param = 0.0,
    amplitude: Param | None = None,
):
    x = _check_x(x)
    check_choice("reset", reset, RESETS)
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string, got {type(backend)!r}")
    if reset_delay and adaptive:
        raise ValueError("reset_delay: snnTorch's delayed reset is not defined for alif; use False")
    surr = _surrogate.get(surrogate)
    T, neuron_shape = x.shape[0], tuple(x.shape[1:])
    M = math.prod(neuron_shape)

    params = ScanParams(
        beta=_param("beta", beta, neuron_shape, low=0.0, high=1.0),
        threshold=_param("threshold", threshold, neuron_shape, low=0.0, low_open=True),
        adapt_scale=_param("adapt_scale", adapt_scale, neuron_shape, low=0.0),
        adapt_decay=_param("adapt_decay", adapt_decay, neuron_shape, low=0.0, high=1.0),
        alpha=_param("surrogate.alpha", getattr(surr, "alpha", 1.0), neuron_shape, low=0.0, low_open=True),
    )
    # a surrogate steepness known at trace time cannot be differentiated: it becomes a constant of the
    # step (no α stream, no α gradient in the kernels)
    host_alpha = concrete(surr.alpha) if isinstance(surr, _surrogate.Surrogate) else None
    static_alpha = float(host_alpha.reshape(-1)[0]) if host_alpha is not None and host_alpha.size == 1 else None
    v0, a0 = _initial_state(state, neuron_shape, adaptive)
    spec = ScanSpec(
        kind=kind,
        levels=levels,
        adaptive=adaptive,
        decay_input=bool(decay_input),
        reset=reset,
        detach_reset=bool(detach_reset),
        reset_delay=bool(reset_delay),
        surrogate=surr if isinstance(surr, _surrogate.CustomSurrogate) else surr.shape,
        return_membrane=bool(return_membrane),
        alpha=static_alpha,
    )
    res = _backends.neuron_scan(spec, x.reshape(T, M), v0, a0, params, backend=backend)
    spikes = res.spikes.reshape(x.shape)
    if amplitude is not None:
        amp = jnp.asarray(amplitude)
        try:
            amp = jnp.broadcast_to(amp, neuron_shape)
        except ValueError:
            raise ValueError(
                f"amplitude: shape {tuple(amp.shape)} is not broadcastable to the neuron shape {neuron_shape} "
                f"(use a scalar or one value per channel, shape ({neuron_shape[-1]},))"
            ) from None
        spikes = (spikes * amp).astype(x.dtype)
    final = NeuronState(res.v.reshape(neuron_shape), res.a.reshape(neuron_shape) if adaptive else None)
    if return_membrane:
        return spikes, final, res.membrane.reshape(x.shape)
    return spikes, final


def _initial_state(state, neuron_shape, adaptive) -> tuple[Array, Array]:
    if state is None:
        v, a = None, None
    elif isinstance(state, NeuronState):
        v, a = state.v, state.a
    else:
        v, a = state, None
    def flat(name, value):
        if value is None:
            return jnp.zeros((math.prod(neuron_shape),), jnp.float32)
        return broadcast_flat(f"state.{name}", value, neuron_shape)

    return flat("v", v), flat("a", a if adaptive else None)


EXACT_COUNTS = {"bfloat16": 256, "float16": 2048, "float32": 1 << 24, "float64": 1 << 53}
"""The largest spike count each spike dtype holds exactly (every integer up to it)."""


def _with_common_args(fn):
    """Append the arguments every neuron shares to ``fn``'s docstring."""
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _COMMON
    return fn


_COMMON = """
    Args:
      x: input current ``[T, ...]``, rank >= 2, floating (f32 / bf16 / f16).
      state: initial :class:`NeuronState` (or just the membrane ``v``), zeros if None.
      threshold: firing threshold θ > 0, scalar or per neuron/channel.
      reset: ``"subtract"`` (soft), ``"zero"`` (hard, to 0) or ``"none"``.
      detach_reset: stop gradients through the reset term.
      reset_delay: snnTorch's update order (reset applied on the next step).
      surrogate: a :class:`spikejax.surrogate.Surrogate` or its name (default atan, α=2).
      backend: ``"xla"`` (reference), ``"pallas"``, ``"triton"`` or ``"auto"``.
      return_membrane: also return the membrane trace ``V[T, ...]`` (float32).

    Returns:
      ``(spikes[T, ...], NeuronState)`` or ``(spikes, NeuronState, membrane)``.
"""


@_with_common_args
def if_(x, *, state=None, threshold: Param = 1.0, reset: str = "subtract", detach_reset: bool = False,
        reset_delay: bool = False, surrogate="atan", backend: str = "xla", return_membrane: bool = False):
    """Integrate-and-fire: ``H_t = V_{t-1} + X_t``, ``S_t = Θ(H_t - θ)``, ``V_t = reset(H_t, S_t)``.
    """
    return _run(x, state, beta=1.0, decay_input=False, threshold=threshold, reset=reset,
                detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                backend=backend, return_membrane=return_membrane)


@_with_common_args
def lif(x, *, state=None, beta: Param | None = None, tau: Param | None = None,
        decay_input: bool | None = None, threshold: Param = 1.0, reset: str = "subtract",
        detach_reset: bool = False, reset_delay: bool = False, surrogate="atan",
        backend: str = "xla", return_membrane: bool = False):
    """Leaky integrate-and-fire.

    ``H_t = β V_{t-1} + γ X_t``, ``S_t = Θ(H_t - θ)``, ``V_t = reset(H_t, S_t)``.
    Give either ``beta`` (snnTorch's decay; γ = 1 unless ``decay_input``) or ``tau``
    (SpikingJelly's time constant, β = 1 - 1/τ; γ = 1/τ when ``decay_input`` (default) so
    ``H = V + (X - V)/τ``, else γ = 1). With neither, τ = 2.

      beta: decay β in [0, 1]; tau: time constant τ >= 1; decay_input: see above.
    """
    b, di = _decay(beta, tau, decay_input, default_tau=2.0, default_beta=None)
    return _run(x, state, beta=b, decay_input=di, threshold=threshold, reset=reset,
                detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                backend=backend, return_membrane=return_membrane)


@_with_common_args
def plif(x, *, state=None, decay_logit: Param = 0.0, threshold: Param = 1.0, decay_input: bool = True,
         reset: str = "subtract", detach_reset: bool = False, reset_delay: bool = False,
         surrogate="atan", backend: str = "xla", return_membrane: bool = False):
    """Parametric LIF (Fang et al. 2021): LIF with a learnable time constant per channel.

    ``1/τ = sigmoid(w)`` with ``w = decay_logit`` (0 gives τ = 2), so ``β = 1 - sigmoid(w)``;
    ``H_t = V_{t-1} + (X_t - V_{t-1}) sigmoid(w)`` with ``decay_input`` (default), else
    ``H_t = β V_{t-1} + X_t``. ``decay_logit`` and ``threshold`` are meant as per-channel vectors
    ``[C]`` over the last axis (scalars also work); gradients reach both.
    """
    b = 1.0 - jax.nn.sigmoid(jnp.asarray(decay_logit, jnp.float32))
    return _run(x, state, beta=b, decay_input=decay_input, threshold=threshold, reset=reset,
                detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                backend=backend, return_membrane=return_membrane)


def plif_decay_logit(tau: float, *, name: str = "tau") -> float:
    """The :func:`plif` ``decay_logit`` of a time constant τ > 1: ``w = -ln(τ - 1)``, so ``1/τ = sigmoid(w)``
    (``name``: the argument named in the error)."""
    check_range(name, tau, low=1.0, low_open=True)  # β = 1 - 1/τ in (0, 1)
    return -math.log(float(tau) - 1.0)


@_with_common_args
def alif(x, *, state=None, beta: Param | None = None, tau: Param | None = None,
         decay_input: bool | None = None, threshold: Param = 1.0, adapt_scale: Param = 1.0,
         adapt_decay: Param = 0.9, reset: str = "subtract", detach_reset: bool = False,
         reset_delay: bool = False, surrogate="atan", backend: str = "xla", return_membrane: bool = False):
    """Adaptive LIF (Bellec et al. 2018): a threshold that rises with each spike.

    ``H_t = β V_{t-1} + γ X_t``; ``θ_t = θ + b a_{t-1}``; ``S_t = Θ(H_t - θ_t)``;
    ``V_t = reset(H_t, S_t)`` (subtract removes θ_t); ``a_t = ρ a_{t-1} + S_t``.
    The state carries ``a``; β / τ / decay_input as in :func:`lif`. snnTorch's delayed reset is not
    defined with adaptation: ``reset_delay=True`` is refused.

      adapt_scale: b >= 0; adapt_decay: ρ in [0, 1].
    """
    b, di = _decay(beta, tau, decay_input, default_tau=2.0, default_beta=None)
    return _run(x, state, beta=b, decay_input=di, threshold=threshold, reset=reset,
                detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                backend=backend, return_membrane=return_membrane, adaptive=True,
                adapt_scale=adapt_scale, adapt_decay=adapt_decay)


@_with_common_args
def ternary(x, *, state=None, beta: Param | None = None, tau: Param | None = None,
            decay_input: bool | None = None, threshold: Param = 1.0, amplitude: Param = 1.0,
            reset: str = "subtract", detach_reset: bool = False, reset_delay: bool = False,
            surrogate="atan", backend: str = "xla", return_membrane: bool = False):
    """Ternary LIF: spikes in {-1, 0, +1} times an amplitude.

    ``H_t = β V_{t-1} + γ X_t``; ``S_t = Θ(H_t - θ) - Θ(-H_t - θ)``; the output is
    ``amplitude · S_t``; ``V_t = H_t - θ S_t`` (subtract) or ``H_t (1 - |S_t|)`` (zero).
    The surrogate gradient is ``σ'(H - θ) + σ'(-H - θ)``. β / τ as in :func:`lif`.

      amplitude: spike amplitude (scalar or per channel), differentiable.
    """
    b, di = _decay(beta, tau, decay_input, default_tau=2.0, default_beta=None)
    return _run(x, state, beta=b, decay_input=di, threshold=threshold, reset=reset,
                detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                backend=backend, return_membrane=return_membrane, kind="ternary",
                amplitude=amplitude)


@_with_common_args
def multilevel(x, *, state=None, levels: int = 4, beta: Param | None = None, tau: Param | None = None,
               decay_input: bool | None = None, threshold: Param = 1.0, reset: str = "subtract",
               detach_reset: bool = False, reset_delay: bool = False, surrogate="atan",
               backend: str = "xla", return_membrane: bool = False):
    """Multi-level (integer) spiking neuron, the sINT neuron: up to L spikes in one step.

    ``H_t = β V_{t-1} + γ X_t``; ``S_t = clip(floor(H_t / θ), 0, L) = Σ_{k=1..L} Θ(H_t - kθ)``;
    ``V_t = H_t - θ S_t`` (soft reset, the default). The surrogate gradient is the sum of the
    surrogate over the L steps. Default β = 1 (no leak, as used for ANN→SNN conversion);
    pass ``beta`` or ``tau`` for a leak.

      levels: L >= 1, the largest spike count per step.
    """
    if not isinstance(levels, (int, np.integer)) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"levels: expected an integer >= 1, got {levels!r}")
    x = _check_x(x)
    exact = EXACT_COUNTS.get(jnp.dtype(x.dtype).name, 1 << 24)
    if levels > exact:
        raise ValueError(
            f"levels: {levels} spikes per step are not exactly representable in x's dtype {x.dtype} "
            f"(integers up to {exact}); use levels <= {exact} or a wider dtype"
        )
    b, di = _decay(beta, tau, decay_input, default_tau=None, default_beta=1.0)
    return _run(x, state, beta=b, decay_input=di, threshold=threshold, reset=reset,
                detach_reset=detach_reset, reset_delay=reset_delay, surrogate=surrogate,
                backend=backend, return_membrane=return_membrane, kind="multilevel",
                levels=int(levels))
