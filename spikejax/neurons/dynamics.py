"""Further neuron models, each a step function run by :func:`spikejax.custom_neuron`.

A step is ``step(params, state, x_t) -> (s_t, new_state)`` over per-neuron values (elementwise);
``params`` is a dict of scalars / per-channel arrays (last axis) and always holds
``"surrogate_alpha"``, the steepness α of the named surrogate (a leaf, so it can be learned).
Static options (reset mode, ``reset_delay``, ``detach_reset``, the surrogate's shape or a
:func:`spikejax.surrogate.custom` surrogate) select the step function through its cached factory
(``cuba_lif_step(reset="zero")``), so equal options give the same function object and share
compiled kernels. Every functional wrapper (``cuba_lif(x, alpha=..., ...)``) takes ``x[T, ...]``
(time first) and returns ``(spikes[T, ...], final_state)`` or, with ``return_states=True``,
``(spikes, final_state, states)``; states are tuples of float32 arrays over the neuron shape
``x.shape[1:]`` (``states``: ``[T, ...]`` trajectories, the state after each step), in the order
each docstring gives; ``state=None`` starts from zeros.

Below ``spike(u)`` is the Heaviside ``Θ(u) = 1[u >= 0]`` with the surrogate's derivative in the
backward, ``s̃`` is ``stop_gradient(s)`` when ``detach_reset`` (else ``s``), and the resets are
``subtract: V - θ s̃``, ``zero: V (1 - s̃)`` (or ``s̃ v_reset + (1 - s̃) V`` where the model has a
``v_reset``), ``none: V``.

==================  ==========================================  ======================  =====================
name                model                                       state                   reference
==================  ==========================================  ======================  =====================
``cuba_lif``        current-based synaptic LIF                  ``(i, v)``              snnTorch ``Synaptic``
``alpha_neuron``    alpha-kernel LIF (excitatory/inhibitory)    ``(i_exc, i_inh, v)``   snnTorch ``Alpha``
``adlif``           adaptive LIF, coupled adaptation (adLIF)    ``(u, w)``              Bittar & Garner 2022
``refractory_lif``  LIF with an absolute refractory period      ``(v, i, ρ)``           Norse ``LIFRefracCell``
``izhikevich``      Izhikevich (quadratic + recovery)           ``(v, w)``              SJ ``IzhikevichNode``
``eif``             exponential integrate-and-fire              ``(v,)``                SJ ``EIFNode``
``adex``            adaptive exponential IF                     ``(v, i, w)``           Norse ``LIFAdExCell``
``qif``             quadratic integrate-and-fire                ``(v,)``                SJ ``QIFNode``
``cuba_li``         current-based leaky integrator (no spikes)  ``(i, v)``              NIR ``CubaLI``
==================  ==========================================  ======================  =====================

(SJ: SpikingJelly; ``cuba_lif`` also matches SJ ``CUBALIFNode``.)

:data:`DYNAMICS` maps each name to ``(default step, default params, number of states)``;
:func:`dynamics_step` builds ``(step, params)`` from keyword arguments, for layers that run the
step themselves (:class:`spikejax.nn.RecurrentSpiking`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spikejax import surrogate as _surrogate
from spikejax.neurons.custom import check_choice, check_range, concrete, custom_neuron

Array = jax.Array
Param = float | Array

RESETS = ("subtract", "zero", "none")

__all__ = [
    "DYNAMICS",
    "RESETS",
    "adex",
    "adex_step",
    "adlif",
    "adlif_step",
    "alpha_neuron",
    "alpha_neuron_step",
    "cuba_li",
    "cuba_li_step",
    "cuba_lif",
    "cuba_lif_step",
    "dynamics_step",
    "eif",
    "eif_step",
    "izhikevich",
    "izhikevich_step",
    "model_options",
    "qif",
    "qif_step",
    "refractory_lif",
    "refractory_lif_step",
]


# --- shared pieces of the step functions ------------------------------------------------------


def _spike_fn(surrogate: str | _surrogate.CustomSurrogate, alpha: Array) -> Callable[[Array], Array]:
    """``u -> Θ(u)`` with the named shape's surrogate (steepness ``alpha``) or a custom one."""
    if isinstance(surrogate, str):
        return functools.partial(_surrogate.spike, surrogate, alpha=alpha)
    return surrogate


def _detach(detach_reset: bool, s: Array) -> Array:
    return jax.lax.stop_gradient(s) if detach_reset else s


def _reset(reset: str, h: Array, s: Array, threshold: Array, v_reset: Array | float = 0.0) -> Array:
    """``subtract: h - θ s``; ``zero: s v_reset + (1 - s) h`` (``h (1 - s)`` for v_reset 0); ``none: h``."""
    if reset == "subtract":
        return h - threshold * s
    if reset == "zero":
        if isinstance(v_reset, float) and v_reset == 0.0:
            return h * (1.0 - s)
        return s * v_reset + (1.0 - s) * h
    return h


def _check_options(reset: str, surrogate) -> None:
    check_choice("reset", reset, RESETS)
    if not isinstance(surrogate, (str, _surrogate.CustomSurrogate)):
        raise TypeError(f"surrogate: expected a shape name or a spikejax.surrogate.custom(...), got {surrogate!r}")


def _spiking(name: str, doc: str | None, surrogate):
    """Name a spiking step ``body(p, state, x, spike, thr)`` as ``step(p, state, x)``: ``spike`` is the
    surrogate spike function (α from ``p["surrogate_alpha"]``), ``thr = p["threshold"]``."""

    def wrap(body):
        def step(p: dict, state: tuple, x: Array):
            return body(p, state, x, _spike_fn(surrogate, p["surrogate_alpha"]), p["threshold"])

        return _named(name, doc)(step)

    return wrap


def _named(name: str, doc: str | None):
    def wrap(step):
        step.__name__ = step.__qualname__ = name
        step.__doc__ = doc
        return step

    return wrap


def _charge_fire_step(name: str, doc: str, charge: Callable, reset: str, detach_reset: bool, surrogate) -> Callable:
    """A one-state neuron ``H_t = charge(p, V_{t-1}, X_t)``, ``S_t = spike(H_t - θ)``,
    ``V_t = reset(H_t, S̃_t)`` (to ``v_reset`` for a zero reset)."""

    @_spiking(name, doc, surrogate)
    def step(p: dict, state: tuple[Array], x: Array, spike: Callable, thr: Array):
        (v,) = state
        h = charge(p, v, x)
        s = spike(h - thr)
        return s, (_reset(reset, h, _detach(detach_reset, s), thr, p["v_reset"]),)

    return step


# --- the step functions -----------------------------------------------------------------------


@functools.cache
def cuba_lif_step(reset: str = "subtract", reset_delay: bool = False, detach_reset: bool = False,
                  surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Current-based synaptic LIF, state ``(i, v)``; params ``alpha, beta, threshold``.

    ``reset_delay=False`` (SpikingJelly's ``CUBALIFNode`` order; the reset in the same step)::

        I_t = α I_{t-1} + X_t
        H_t = β V_{t-1} + I_t
        S_t = spike(H_t - θ)
        V_t = reset(H_t, S_t)

    ``reset_delay=True`` (snnTorch ``Synaptic``'s default order): the reset of a spike is applied
    on the next step from the carried, un-reset membrane, ``R_t = spike(V_{t-1} - θ)`` (s̃)::

        I_t = α I_{t-1} + X_t
        H_t = β V_{t-1} + I_t - θ R_t (subtract) | (β V_{t-1} + I_t)(1 - R_t) (zero) | β V_{t-1} + I_t
        S_t = spike(H_t - θ),   V_t = H_t

    snnTorch detaches that delayed reset: ``reset_delay=True, detach_reset=True`` matches ``Synaptic``
    exactly. With ``reset_delay=False`` snnTorch's reset keeps its gradient (``detach_reset=False``)
    and equals this order for ``reset="zero"`` / ``"none"``; for ``"subtract"`` snnTorch also
    subtracts θ from the *spike test* of the next step when the reset membrane is still >= θ, which
    this order does not.
    """
    _check_options(reset, surrogate)

    @_spiking("cuba_lif_step", cuba_lif_step.__doc__, surrogate)
    def step(p: dict, state: tuple[Array, Array], x: Array, spike: Callable, thr: Array):
        i, v = state
        if reset_delay:
            r = _detach(detach_reset, spike(v - thr))
            i = p["alpha"] * i + x
            h = p["beta"] * v + i
            if reset == "subtract":
                h = h - thr * r
            elif reset == "zero":
                h = h - h * r
            return spike(h - thr), (i, h)
        i = p["alpha"] * i + x
        h = p["beta"] * v + i
        s = spike(h - thr)
        return s, (i, _reset(reset, h, _detach(detach_reset, s), thr))

    return step


@functools.cache
def cuba_li_step() -> Callable:
    """Current-based leaky integrator (no spikes), state ``(i, v)``; params ``alpha, beta``.

    ``I_t = α I_{t-1} + X_t``, ``V_t = β V_{t-1} + I_t``; the "spike" output is ``V_t`` itself
    (NIR ``CubaLI`` with unit input and membrane gains).
    """

    @_named("cuba_li_step", cuba_li_step.__doc__)
    def step(p: dict, state: tuple[Array, Array], x: Array):
        i, v = state
        i = p["alpha"] * i + x
        v = p["beta"] * v + i
        return v, (i, v)

    return step


@functools.cache
def alpha_neuron_step(reset: str = "zero", detach_reset: bool = False,
                      surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Alpha neuron (snnTorch ``Alpha``), state ``(i_exc, i_inh, v)``; params ``alpha, beta, threshold``
    with ``1 > α > β > 0``. The reset of a spike is applied on the next step,
    ``R_t = spike(V_{t-1} - θ)`` (s̃)::

        E'_t = α E_{t-1} + X_t,   N'_t = β N_{t-1} - X_t
        τ_α  = ln α / (ln β - ln α) + 1
        V'_t = τ_α (E'_t + N'_t)
        subtract: E_t = E'_t - θ R_t,    N_t = N'_t (1 - R_t),  V_t = V'_t + N_{t-1} R_t
        zero:     E_t = E'_t (1 - R_t),  N_t = N'_t (1 - R_t),  V_t = V'_t (1 - R_t)
        none:     E_t = E'_t,  N_t = N'_t,  V_t = V'_t
        S_t = spike(V_t - θ)

    (snnTorch's update, including its subtract form; snnTorch detaches ``R``: ``detach_reset=True``.)
    """
    _check_options(reset, surrogate)

    @_spiking("alpha_neuron_step", alpha_neuron_step.__doc__, surrogate)
    def step(p: dict, state: tuple[Array, Array, Array], x: Array, spike: Callable, thr: Array):
        e, n, v = state
        a, b = p["alpha"], p["beta"]
        r = _detach(detach_reset, spike(v - thr))
        e_new = a * e + x
        n_new = b * n - x
        log_a = jnp.log(a)
        tau_alpha = log_a / (jnp.log(b) - log_a) + 1.0
        v_new = tau_alpha * (e_new + n_new)
        if reset == "subtract":
            e_new, n_new, v_new = e_new - thr * r, n_new - n_new * r, v_new + n * r
        elif reset == "zero":
            e_new, n_new, v_new = e_new - e_new * r, n_new - n_new * r, v_new - v_new * r
        return spike(v_new - thr), (e_new, n_new, v_new)

    return step


@functools.cache
def adlif_step(reset: str = "subtract", detach_reset: bool = False,
               surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Adaptive LIF with a coupled adaptation current (adLIF, Bittar & Garner 2022), state ``(u, w)``;
    params ``alpha`` (membrane decay), ``beta`` (adaptation decay), ``a`` (sub-threshold coupling),
    ``b`` (spike-triggered adaptation), ``threshold``. The carried ``u`` is un-reset; the spike of the
    previous step is ``S_{t-1} = spike(u_{t-1} - θ)`` and its reset is applied inside the update::

        w_t = β w_{t-1} + a u_{t-1} + b S_{t-1}
        u_t = α reset(u_{t-1}, S̃_{t-1}) + (1 - α)(X_t - w_t)
        S_t = spike(u_t - θ)
    """
    _check_options(reset, surrogate)

    @_spiking("adlif_step", adlif_step.__doc__, surrogate)
    def step(p: dict, state: tuple[Array, Array], x: Array, spike: Callable, thr: Array):
        u, w = state
        s_prev = spike(u - thr)
        w = p["beta"] * w + p["a"] * u + p["b"] * s_prev
        u = p["alpha"] * _reset(reset, u, _detach(detach_reset, s_prev), thr) + (1.0 - p["alpha"]) * (x - w)
        return spike(u - thr), (u, w)

    return step


@functools.cache
def refractory_lif_step(reset: str = "zero", detach_reset: bool = False,
                        surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """LIF with an absolute refractory period (Norse ``LIFRefracCell``), state ``(v, i, ρ)``; params
    ``beta`` (membrane decay, ``1 - dt/τ_mem``), ``alpha`` (synaptic decay, ``1 - dt/τ_syn``; 0: none),
    ``threshold``, ``v_leak``, ``v_reset``, ``refractory`` (steps a spike blocks, Norse ``rho_reset``)::

        J_t  = I_{t-1} + X_t
        H_t  = V_{t-1} + (1 - β)(v_leak - V_{t-1} + J_t)
        I_t  = J_t - (1 - α) J_t
        Z_t  = spike(H_t - θ),   V'_t = reset(H_t, Z̃_t)           (zero: to v_reset)
        M_t  = 1 - spike(-ρ_{t-1})                               (= Θ(ρ > 0): refractory)
        V_t  = (1 - M_t) V'_t + M_t V_{t-1},   S_t = (1 - M_t) Z_t
        ρ_t  = (1 - S_t) max(ρ_{t-1} - M_t, 0) + S_t refractory

    so a spike holds the reset membrane for ``refractory`` steps, during which no spike is emitted.
    """
    _check_options(reset, surrogate)

    @_spiking("refractory_lif_step", refractory_lif_step.__doc__, surrogate)
    def step(p: dict, state: tuple[Array, Array, Array], x: Array, spike: Callable, thr: Array):
        v, i, rho = state
        j = i + x
        h = v + (1.0 - p["beta"]) * (p["v_leak"] - v + j)
        i_new = j - (1.0 - p["alpha"]) * j
        z = spike(h - thr)
        v_new = _reset(reset, h, _detach(detach_reset, z), thr, p["v_reset"])
        mask = 1.0 - spike(-rho)
        v_new = (1.0 - mask) * v_new + mask * v
        z = (1.0 - mask) * z
        left = rho - mask
        rho_new = (1.0 - z) * jnp.where(left > 0, left, 0.0) + z * p["refractory"]
        return z, (v_new, i_new, rho_new)

    return step


@functools.cache
def izhikevich_step(reset: str = "zero", detach_reset: bool = False,
                    surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Izhikevich neuron in SpikingJelly's discrete form (``IzhikevichNode``), state ``(v, w)``; params
    ``tau, a0, v_rest, v_c, tau_w, a, b, threshold, v_reset``::

        H_t = V_{t-1} + (X_t + a0 (V_{t-1} - v_rest)(V_{t-1} - v_c) - w_{t-1}) / τ
        S_t = spike(H_t - θ)
        w_t = w_{t-1} + (a (H_t - v_rest) - w_{t-1}) / τ_w + b S_t
        V_t = reset(H_t, S̃_t)                                    (zero: to v_reset)
    """
    _check_options(reset, surrogate)

    @_spiking("izhikevich_step", izhikevich_step.__doc__, surrogate)
    def step(p: dict, state: tuple[Array, Array], x: Array, spike: Callable, thr: Array):
        v, w = state
        h = v + (x + p["a0"] * (v - p["v_rest"]) * (v - p["v_c"]) - w) / p["tau"]
        s = spike(h - thr)
        w = w + (p["a"] * (h - p["v_rest"]) - w) / p["tau_w"] + p["b"] * s
        return s, (_reset(reset, h, _detach(detach_reset, s), thr, p["v_reset"]), w)

    return step


@functools.cache
def eif_step(reset: str = "zero", detach_reset: bool = False,
             surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Exponential integrate-and-fire (SJ ``EIFNode``), state ``(v,)``; params
    ``tau, delta_T, theta_rh, threshold, v_rest, v_reset``::

        H_t = V_{t-1} + (X_t + v_rest - V_{t-1} + Δ_T exp((V_{t-1} - θ_rh) / Δ_T)) / τ
        S_t = spike(H_t - θ),   V_t = reset(H_t, S̃_t)            (zero: to v_reset)
    """
    _check_options(reset, surrogate)

    def charge(p: dict, v: Array, x: Array) -> Array:
        dT = p["delta_T"]
        return v + (x + p["v_rest"] - v + dT * jnp.exp((v - p["theta_rh"]) / dT)) / p["tau"]

    return _charge_fire_step("eif_step", eif_step.__doc__, charge, reset, detach_reset, surrogate)


@functools.cache
def adex_step(reset: str = "zero", detach_reset: bool = False,
              surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Adaptive exponential integrate-and-fire (AdEx; Norse ``LIFAdExCell``), state ``(v, i, w)``;
    params ``tau`` (membrane, steps), ``alpha`` (synaptic decay; 0: none), ``delta_T``, ``theta_rh``,
    ``a`` (sub-threshold adaptation), ``b`` (spike-triggered adaptation), ``tau_w`` (steps),
    ``threshold``, ``v_rest``, ``v_reset``::

        J_t = I_{t-1} + X_t
        H_t = V_{t-1} + (v_rest - V_{t-1} + Δ_T exp((V_{t-1} - θ_rh) / Δ_T) + J_t - w_{t-1}) / τ
        I_t = J_t - (1 - α) J_t
        S_t = spike(H_t - θ),   V_t = reset(H_t, S̃_t)            (zero: to v_reset)
        w_t = w_{t-1} + (a (V_{t-1} - v_rest) - w_{t-1}) / τ_w + b S_t

    Norse's parameters map as ``τ = 1/(dt τ_mem⁻¹)``, ``α = 1 - dt τ_syn⁻¹``, ``τ_w = 1/(dt τ_ada⁻¹)``,
    ``θ_rh = θ = v_th``, ``v_rest = v_leak``.
    """
    _check_options(reset, surrogate)

    @_spiking("adex_step", adex_step.__doc__, surrogate)
    def step(p: dict, state: tuple[Array, Array, Array], x: Array, spike: Callable, thr: Array):
        v, i, w = state
        dT = p["delta_T"]
        j = i + x
        h = v + ((p["v_rest"] - v) + dT * jnp.exp((v - p["theta_rh"]) / dT) + j - w) / p["tau"]
        i_new = j - (1.0 - p["alpha"]) * j
        s = spike(h - thr)
        w_new = w + (p["a"] * (v - p["v_rest"]) - w) / p["tau_w"] + p["b"] * s
        return s, (_reset(reset, h, _detach(detach_reset, s), thr, p["v_reset"]), i_new, w_new)

    return step


@functools.cache
def qif_step(reset: str = "zero", detach_reset: bool = False,
             surrogate: str | _surrogate.CustomSurrogate = "atan") -> Callable:
    """Quadratic integrate-and-fire (SpikingJelly ``QIFNode``), state ``(v,)``; params
    ``tau, a0, v_rest, v_c, threshold, v_reset``::

        H_t = V_{t-1} + (X_t + a0 (V_{t-1} - v_rest)(V_{t-1} - v_c)) / τ
        S_t = spike(H_t - θ),   V_t = reset(H_t, S̃_t)            (zero: to v_reset)
    """
    _check_options(reset, surrogate)

    def charge(p: dict, v: Array, x: Array) -> Array:
        return v + (x + p["a0"] * (v - p["v_rest"]) * (v - p["v_c"])) / p["tau"]

    return _charge_fire_step("qif_step", qif_step.__doc__, charge, reset, detach_reset, surrogate)


# --- the models: defaults, bounds, factories --------------------------------------------------

# parameter -> (low, high, low_open), None: unbounded on that side; the defaults are the functional
# wrappers' keyword defaults (read from their signatures below: one definition)
_UNIT = (0.0, 1.0, False)
_POS = (0.0, None, True)
_ANY = (None, None, False)

_MODELS: dict[str, dict[str, Any]] = {
    "cuba_lif": dict(
        factory=cuba_lif_step, num_states=2, options=("reset", "reset_delay", "detach_reset"),
        params=dict(alpha=_UNIT, beta=_UNIT, threshold=_POS)),
    "cuba_li": dict(
        factory=cuba_li_step, num_states=2, options=(), spiking=False,
        params=dict(alpha=_UNIT, beta=_UNIT)),
    "alpha_neuron": dict(
        factory=alpha_neuron_step, num_states=3, options=("reset", "detach_reset"),
        params=dict(alpha=(0.0, 1.0, True), beta=(0.0, 1.0, True), threshold=_POS)),
    "adlif": dict(
        factory=adlif_step, num_states=2, options=("reset", "detach_reset"),
        params=dict(alpha=_UNIT, beta=_UNIT, a=_ANY, b=_ANY,
                    threshold=_POS)),
    "refractory_lif": dict(
        factory=refractory_lif_step, num_states=3, options=("reset", "detach_reset"),
        params=dict(beta=_UNIT, alpha=_UNIT, threshold=_POS, v_leak=_ANY,
                    v_reset=_ANY, refractory=(0.0, None, False))),
    "izhikevich": dict(
        factory=izhikevich_step, num_states=2, options=("reset", "detach_reset"),
        params=dict(tau=_POS, a0=_ANY, v_rest=_ANY, v_c=_ANY,
                    tau_w=_POS, a=_ANY, b=_ANY, threshold=_ANY,
                    v_reset=_ANY)),
    "eif": dict(
        factory=eif_step, num_states=1, options=("reset", "detach_reset"),
        params=dict(tau=_POS, delta_T=_POS, theta_rh=_ANY, threshold=_ANY,
                    v_rest=_ANY, v_reset=_ANY)),
    "adex": dict(
        factory=adex_step, num_states=3, options=("reset", "detach_reset"),
        params=dict(tau=_POS, alpha=_UNIT, delta_T=_POS, theta_rh=_ANY,
                    a=_ANY, b=_ANY, tau_w=_POS, threshold=_ANY,
                    v_rest=_ANY, v_reset=_ANY)),
    "qif": dict(
        factory=qif_step, num_states=1, options=("reset", "detach_reset"),
        params=dict(tau=_POS, a0=_ANY, v_rest=_ANY, v_c=_ANY,
                    threshold=_ANY, v_reset=_ANY)),
}

def dynamics_step(name: str, *, surrogate="atan", **kwargs) -> tuple[Callable, dict[str, Any]]:
    """``(step, params)`` of the model ``name`` (a key of :data:`DYNAMICS`) from keyword arguments:
    its parameters (defaults as in the functional wrapper) and static options (``reset``,
    ``reset_delay``, ``detach_reset`` where the model has them). ``surrogate``: a shape name, a
    :class:`spikejax.surrogate.Surrogate` (its α becomes ``params["surrogate_alpha"]``) or a
    :func:`spikejax.surrogate.custom` surrogate.
    """
    if name not in _MODELS:
        raise ValueError(f"name: unknown neuron model {name!r}; expected one of {sorted(_MODELS)}")
    model = _MODELS[name]
    unknown = sorted(set(kwargs) - set(model["params"]) - set(model["options"]))
    if unknown:
        raise TypeError(f"{name}: unexpected argument(s) {unknown}; parameters {sorted(model['params'])}, "
                        f"options {sorted(model['options'])}")
    params: dict[str, Any] = {}
    defaults = _defaults(name)
    for key, (low, high, low_open) in model["params"].items():
        value = kwargs.get(key, defaults[key])
        if value is None:
            raise ValueError(f"{key}: {name} needs a value (a scalar or per-channel array), got None")
        check_range(key, value, low=low, high=high, low_open=low_open)
        params[key] = value
    if name == "alpha_neuron":
        a, b = concrete(params["alpha"]), concrete(params["beta"])
        if a is not None and b is not None and np.any(a <= b):
            raise ValueError("alpha, beta: alpha_neuron needs alpha > beta (τ_α = ln α / (ln β - ln α) + 1)")
        if a is None or b is None:  # traced: checked under spikejax.checks.checked
            check_range("alpha, beta: alpha_neuron needs alpha > beta; alpha - beta",
                        jnp.asarray(params["alpha"]) - jnp.asarray(params["beta"]), low=0.0, low_open=True)
    options = {k: kwargs[k] for k in model["options"] if k in kwargs}
    if not model.get("spiking", True):
        return model["factory"](**options), params
    if isinstance(surrogate, _surrogate.CustomSurrogate):
        static, alpha = surrogate, 1.0
    else:
        surr = _surrogate.get(surrogate)
        static, alpha = surr.shape, surr.alpha
        check_range("surrogate.alpha", alpha, low=0.0, low_open=True)
    params["surrogate_alpha"] = alpha
    for key in ("reset_delay", "detach_reset"):
        if key in options:
            options[key] = bool(options[key])
    return model["factory"](**options, surrogate=static), params


@functools.cache
def _neuron(step: Callable, num_states: int, name: str):
    return custom_neuron(step, num_states=num_states, name=name)


def _run(name: str, x, state, backend: str, return_states: bool, surrogate, kwargs: dict):
    step, params = dynamics_step(name, surrogate=surrogate, **kwargs)
    neuron = _neuron(step, _MODELS[name]["num_states"], name)
    return neuron(x, params, state=state, backend=backend, return_states=return_states)


_COMMON = """
    Args:
      x: input current ``[T, ...]``, time first, floating (spikes come back in its dtype).
      state: initial state tuple (float32 arrays over ``x.shape[1:]``, order as above); zeros if None.
      surrogate: a shape name, :class:`spikejax.surrogate.Surrogate` (α learnable) or
        :func:`spikejax.surrogate.custom` surrogate (default atan, α = 2).
      backend: ``"xla"`` (``lax.scan``, the reference), ``"pallas"``, ``"pallas_interpret"``, ``"auto"``.
      return_states: also return the state trajectories (tuple of ``[T, ...]`` float32).
      Parameters are Python scalars or arrays broadcastable to the neuron shape (per channel: the
      last axis); gradients reach ``x``, ``state``, every parameter and the surrogate's α.

    Returns:
      ``(spikes[T, ...], final_state)`` or ``(spikes, final_state, states)``.
"""


def _with_common(fn):
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _COMMON
    return fn


# --- functional wrappers ----------------------------------------------------------------------


@_with_common
def cuba_lif(x, *, alpha: Param = 0.5, beta: Param = 0.75, threshold: Param = 1.0, reset: str = "subtract",
             reset_delay: bool = False, detach_reset: bool = False, surrogate="atan", state=None,
             backend: str = "xla", return_states: bool = False):
    """Current-based synaptic LIF; state ``(i, v)``; equations in :func:`cuba_lif_step`.

    ``I_t = α I_{t-1} + X_t``, ``H_t = β V_{t-1} + I_t``, ``S_t = Θ(H_t - θ)``, ``V_t = reset(H_t, S_t)``.
    ``reset_delay=True, detach_reset=True`` is snnTorch ``Synaptic``'s default; the default order is
    SpikingJelly ``CUBALIFNode``'s (its ``c_decay = α``, ``v_decay = β``).
    """
    return _run("cuba_lif", x, state, backend, return_states, surrogate,
                dict(alpha=alpha, beta=beta, threshold=threshold, reset=reset, reset_delay=reset_delay,
                     detach_reset=detach_reset))


def cuba_li(x, *, alpha: Param = 0.5, beta: Param = 0.75, state=None, backend: str = "xla"):
    """Current-based leaky integrator (non-spiking readout): ``I_t = α I_{t-1} + X_t``,
    ``V_t = β V_{t-1} + I_t``. Returns ``(V[T, ...] float32, (i_T, v_T))``."""
    _, final, states = _run("cuba_li", x, state, backend, True, None, dict(alpha=alpha, beta=beta))
    return states[1], final


@_with_common
def alpha_neuron(x, *, alpha: Param = 0.9, beta: Param = 0.8, threshold: Param = 1.0, reset: str = "zero",
                 detach_reset: bool = False, surrogate="atan", state=None, backend: str = "xla",
                 return_states: bool = False):
    """Alpha neuron (snnTorch ``Alpha``, ``1 > α > β > 0``); state ``(i_exc, i_inh, v)``; equations in
    :func:`alpha_neuron_step`. ``detach_reset=True`` matches snnTorch exactly."""
    return _run("alpha_neuron", x, state, backend, return_states, surrogate,
                dict(alpha=alpha, beta=beta, threshold=threshold, reset=reset, detach_reset=detach_reset))


@_with_common
def adlif(x, *, alpha: Param = 0.9, beta: Param = 0.95, a: Param = 0.5, b: Param = 1.0, threshold: Param = 1.0,
          reset: str = "subtract", detach_reset: bool = False, surrogate="atan", state=None,
          backend: str = "xla", return_states: bool = False):
    """Adaptive LIF with coupled adaptation (adLIF, Bittar & Garner 2022); state ``(u, w)``:
    ``w_t = β w + a u_{t-1} + b S_{t-1}``, ``u_t = α reset(u_{t-1}) + (1 - α)(X_t - w_t)``,
    ``S_t = Θ(u_t - θ)`` (see :func:`adlif_step`)."""
    return _run("adlif", x, state, backend, return_states, surrogate,
                dict(alpha=alpha, beta=beta, a=a, b=b, threshold=threshold, reset=reset, detach_reset=detach_reset))


@_with_common
def refractory_lif(x, *, beta: Param = 0.9, alpha: Param = 0.0, threshold: Param = 1.0, v_leak: Param = 0.0,
                   v_reset: Param = 0.0, refractory: Param = 5.0, reset: str = "zero", detach_reset: bool = False,
                   surrogate="atan", state=None, backend: str = "xla", return_states: bool = False):
    """LIF with an absolute refractory period of ``refractory`` steps (Norse ``LIFRefracCell``);
    state ``(v, i, ρ)``; equations in :func:`refractory_lif_step` (``alpha > 0`` adds a synaptic current)."""
    return _run("refractory_lif", x, state, backend, return_states, surrogate,
                dict(beta=beta, alpha=alpha, threshold=threshold, v_leak=v_leak, v_reset=v_reset,
                     refractory=refractory, reset=reset, detach_reset=detach_reset))


@_with_common
def izhikevich(x, *, tau: Param = 2.0, a0: Param = 1.0, v_rest: Param = -0.1, v_c: Param = 0.8,
               tau_w: Param = 2.0, a: Param = 0.1, b: Param = 0.2, threshold: Param = 1.0, v_reset: Param = 0.0,
               reset: str = "zero", detach_reset: bool = False, surrogate="atan", state=None,
               backend: str = "xla", return_states: bool = False):
    """Izhikevich neuron (SpikingJelly's discrete form); state ``(v, w)``; equations in
    :func:`izhikevich_step`. ``reset="zero"`` resets to ``v_reset``."""
    return _run("izhikevich", x, state, backend, return_states, surrogate,
                dict(tau=tau, a0=a0, v_rest=v_rest, v_c=v_c, tau_w=tau_w, a=a, b=b, threshold=threshold,
                     v_reset=v_reset, reset=reset, detach_reset=detach_reset))


@_with_common
def eif(x, *, tau: Param = 2.0, delta_T: Param = 1.0, theta_rh: Param = 0.8, threshold: Param = 1.0,
        v_rest: Param = 0.0, v_reset: Param = -0.1, reset: str = "zero", detach_reset: bool = False,
        surrogate="atan", state=None, backend: str = "xla", return_states: bool = False):
    """Exponential integrate-and-fire (SJ ``EIFNode``); state ``(v,)``; equations in
    :func:`eif_step`. ``reset="zero"`` resets to ``v_reset``."""
    return _run("eif", x, state, backend, return_states, surrogate,
                dict(tau=tau, delta_T=delta_T, theta_rh=theta_rh, threshold=threshold, v_rest=v_rest,
                     v_reset=v_reset, reset=reset, detach_reset=detach_reset))


@_with_common
def adex(x, *, tau: Param = 10.0, alpha: Param = 0.0, delta_T: Param = 0.5, theta_rh: Param = 1.0, a: Param = 4.0,
         b: Param = 0.02, tau_w: Param = 500.0, threshold: Param = 1.0, v_rest: Param = 0.0, v_reset: Param = 0.0,
         reset: str = "zero", detach_reset: bool = False, surrogate="atan", state=None, backend: str = "xla",
         return_states: bool = False):
    """Adaptive exponential integrate-and-fire (AdEx; Norse ``LIFAdExCell``); state ``(v, i, w)``;
    equations in :func:`adex_step` (defaults: Norse's, without its synaptic filter: ``alpha = 0``)."""
    return _run("adex", x, state, backend, return_states, surrogate,
                dict(tau=tau, alpha=alpha, delta_T=delta_T, theta_rh=theta_rh, a=a, b=b, tau_w=tau_w,
                     threshold=threshold, v_rest=v_rest, v_reset=v_reset, reset=reset, detach_reset=detach_reset))


@_with_common
def qif(x, *, tau: Param = 2.0, a0: Param = 1.0, v_rest: Param = 0.0, v_c: Param = 0.8, threshold: Param = 1.0,
        v_reset: Param = -0.1, reset: str = "zero", detach_reset: bool = False, surrogate="atan", state=None,
        backend: str = "xla", return_states: bool = False):
    """Quadratic integrate-and-fire (SpikingJelly ``QIFNode``); state ``(v,)``; equations in
    :func:`qif_step`. ``reset="zero"`` resets to ``v_reset``."""
    return _run("qif", x, state, backend, return_states, surrogate,
                dict(tau=tau, a0=a0, v_rest=v_rest, v_c=v_c, threshold=threshold, v_reset=v_reset, reset=reset,
                     detach_reset=detach_reset))


def _defaults(name: str) -> dict[str, Any]:
    """The keyword defaults of the functional wrapper of ``name`` (parameters and options)."""
    sig = inspect.signature(globals()[name])
    return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


def model_options(name: str) -> dict[str, Any]:
    """The static options of model ``name`` with their defaults (``reset``, ``reset_delay``, ...)."""
    defaults = _defaults(name)
    return {k: defaults[k] for k in _MODELS[name]["options"]}


def _default_params(name: str) -> dict[str, float]:
    model, defaults = _MODELS[name], _defaults(name)
    out = {k: defaults[k] for k in model["params"]}
    if model.get("spiking", True):
        out["surrogate_alpha"] = _surrogate.get(defaults["surrogate"]).alpha
    return out


DYNAMICS: dict[str, tuple[Callable, dict[str, float], int]] = {
    name: (model["factory"](), _default_params(name), model["num_states"]) for name, model in _MODELS.items()
}
"""name -> (step function with the default options, default params dict, number of states)."""
