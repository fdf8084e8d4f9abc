"""Spiking neuron layers: one Flax NNX module over the functional neurons of :mod:`spikejax.neurons`.

:class:`SpikingNeuron` holds a functional neuron's arguments and calls it, so
``IF()(x) == spikejax.if_(x)[0]`` and ``CubaLIF(alpha=0.8, beta=0.9)(x) ==
spikejax.neurons.cuba_lif(x, alpha=0.8, beta=0.9)[0]`` exactly. Each kind is a thin named constructor
that gives the functional neuron and names its arguments; the functional layer checks them (once, at
construction, by an abstract call: :func:`spikejax.neurons.custom.check_args`), so a layer accepts and
refuses exactly what its function does.

==================  ==================================  =====================  ============================
layer               functional neuron                   state                  learnable (``nnx.Param``)
==================  ==================================  =====================  ============================
:class:`IF`         :func:`spikejax.if_`                ``NeuronState(v)``
:class:`LIF`        :func:`spikejax.lif`                ``NeuronState(v)``
:class:`ALIF`       :func:`spikejax.alif`               ``NeuronState(v, a)``
:class:`PLIF`       :func:`spikejax.plif`               ``NeuronState(v)``     ``decay_logit``, ``threshold``
:class:`Ternary`    :func:`spikejax.ternary`            ``NeuronState(v)``     ``amplitude``
:class:`MultiLevel` :func:`spikejax.multilevel`         ``NeuronState(v)``
:class:`CubaLIF`    :func:`~spikejax.neurons.cuba_lif`  ``(i, v)``             any, by ``learn=``
:class:`Alpha`      ``alpha_neuron``                    ``(i_exc, i_inh, v)``  any, by ``learn=``
:class:`AdLIF`      ``adlif``                           ``(u, w)``             any, by ``learn=``
:class:`RefractoryLIF` ``refractory_lif``               ``(v, i, ρ)``          any, by ``learn=``
:class:`Izhikevich` ``izhikevich``                      ``(v, w)``             any, by ``learn=``
:class:`EIF`        ``eif``                             ``(v,)``               any, by ``learn=``
:class:`AdEx`       ``adex``                            ``(v, i, w)``          any, by ``learn=``
:class:`QIF`        ``qif``                             ``(v,)``               any, by ``learn=``
==================  ==================================  =====================  ============================

Every layer maps an input current ``x[T, ...]`` (time first; any batch / position axes; channels
last) to spikes of the same shape. Two ways to use them:

- multi-step (default): ``layer(x)`` runs all ``T`` steps from a zero state;
  ``layer(x, state=s, return_state=True)`` starts from ``s`` and also returns the final state.
- streaming (``stateful=True``): the final state is stored in the layer (``layer.v``, ``layer.a`` for
  the built-in kinds, ``layer.carried`` (the state tuple) for the others: :class:`NeuronStateVar`
  variables) and the next call continues from it, so calling on chunks ``x[:k]``, ``x[k:]`` equals one
  call on ``x``. :meth:`SpikingNeuron.reset_state` (or :func:`reset_states` for a whole model) clears it;
  the stored state has the neuron shape ``x.shape[1:]`` of the first call after a reset.

``num_channels`` sizes the per-channel parameters (``[num_channels]`` over the last axis of ``x``, or
``()`` when None) and makes the layer refuse an input with another channel count. ``surrogate``,
``surrogate_alpha``, ``learnable_surrogate`` (``surrogate_alpha`` becomes an ``nnx.Param``), ``backend``
(``"xla"``, ``"pallas"``, ``"pallas_interpret"``, ``"triton"``, ``"auto"``) and ``stateful`` are common
to every kind.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax import neurons as F
from spikejax import surrogate as _surrogate
from spikejax.backends import BACKENDS
from spikejax.neurons import dynamics as D
from spikejax.neurons.builtin import plif_decay_logit
from spikejax.neurons.custom import check_args, check_choice, check_range, check_x

Array = jax.Array

__all__ = [
    "ALIF",
    "EIF",
    "IF",
    "KINDS",
    "LIF",
    "NEURONS",
    "PLIF",
    "QIF",
    "AdEx",
    "AdLIF",
    "Alpha",
    "CubaLI",
    "CubaLIF",
    "DynamicsNeuron",
    "Izhikevich",
    "MODEL_NEURONS",
    "MultiLevel",
    "NeuronStateVar",
    "NonSpiking",
    "RefractoryLIF",
    "SpikingNeuron",
    "Ternary",
    "make_neuron",
    "reset_states",
]


class NeuronStateVar(nnx.Variable):
    """A neuron layer's carried state (streaming mode); not a parameter, never differentiated."""


def _channels(num_channels: int | None) -> tuple[int, ...]:
    if num_channels is None:
        return ()
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels: expected a positive integer or None, got {num_channels!r}")
    return (num_channels,)


@functools.cache
def _defaults(fn: Callable) -> dict[str, Any]:
    """The keyword defaults of the functional neuron ``fn``."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _constant(value) -> float | np.ndarray | None:
    """A non-learned parameter: None, a float, or a float32 NumPy array (per channel / per neuron)."""
    if value is None:
        return None
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float32)


def _learned(name: str, value, channel_shape: tuple[int, ...]) -> nnx.Param:
    """A learned parameter: ``value`` as a float32 ``nnx.Param`` broadcast to ``channel_shape``."""
    if value is None:
        raise ValueError(f"learn: {name} has no value to start from; give {name}=...")
    arr = jnp.asarray(value, jnp.float32)
    try:
        arr = jnp.broadcast_to(arr, channel_shape) if arr.ndim <= len(channel_shape) else arr
    except ValueError:
        raise ValueError(f"{name}: shape {arr.shape} does not fit num_channels {channel_shape}") from None
    return nnx.Param(arr)


def _value(p) -> Array | float | np.ndarray | None:
    """The array of an ``nnx.Param``, or the constant itself."""
    return p[...] if isinstance(p, nnx.Param) else p


def _hold(owner: nnx.Module, fn: Callable, params: dict[str, Any], options: dict[str, Any], learn: Sequence[str],
          channel_shape: tuple[int, ...], common: dict[str, Any]) -> None:
    """Set ``fn``'s arguments on ``owner``: each of ``params`` a constant or, if named in ``learn``, an
    ``nnx.Param``; each of ``options`` as given. None takes ``fn``'s default. ``fn`` checks them first, with
    the ``common`` arguments (surrogate, backend), on one step of the channel shape."""
    learn = (learn,) if isinstance(learn, str) else tuple(learn)
    unknown = sorted(set(learn) - set(params))
    if unknown:
        raise ValueError(f"learn: {unknown} are not parameters of {type(owner).__name__}; expected some of "
                         f"{sorted(params)}")
    defaults = _defaults(fn)
    values = {k: defaults.get(k) if v is None else v for k, v in (params | options).items()}
    check_args(fn, values | common, channel_shape or None)
    for name in params:
        setattr(owner, name, _learned(name, values[name], channel_shape) if name in learn else _constant(values[name]))
    for name in options:
        setattr(owner, name, values[name])
    owner.param_names, owner.option_names = tuple(params), tuple(options)


class SpikingNeuron(nnx.Module):
    """A neuron layer: the NNX shell of one functional neuron (see the module docstring).

    A kind sets :attr:`neuron` (the functional neuron) and calls :meth:`_setup` with its arguments;
    :attr:`adaptive` kinds carry ALIF's adaptation ``a`` besides ``v``, :attr:`tuple_state` kinds carry
    the functional neuron's state tuple in ``carried``. A layer with its own computation (no
    :attr:`neuron`) overrides :meth:`_fire` ``(x, state) -> (spikes, final_state)``.
    """

    neuron: ClassVar[Callable | None] = None
    adaptive: ClassVar[bool] = False
    tuple_state: ClassVar[bool] = False

    def __init__(self, *, num_channels: int | None = None, surrogate: str = "atan",
                 surrogate_alpha: float | None = None, learnable_surrogate: bool = False,
                 backend: str = "xla", stateful: bool = False):
        if not isinstance(surrogate, str):
            raise TypeError(f"surrogate: expected a surrogate name (str), got {type(surrogate)!r}")
        self.surrogate_shape = _surrogate.get(surrogate).shape  # validates the name
        self.num_channels = num_channels
        self.channel_shape = _channels(num_channels)
        alpha = _surrogate.SURROGATES[self.surrogate_shape][1] if surrogate_alpha is None else float(surrogate_alpha)
        check_range("surrogate_alpha", alpha, low=0.0, low_open=True)
        self.learnable_surrogate = bool(learnable_surrogate)
        if self.learnable_surrogate:
            self.surrogate_alpha = nnx.Param(jnp.full(self.channel_shape, alpha, jnp.float32))
        else:
            self.surrogate_alpha_value = alpha
        self.backend = check_choice("backend", backend, BACKENDS)
        self.stateful = bool(stateful)
        if self.tuple_state:
            self.carried = NeuronStateVar(None)
        else:
            self.v = NeuronStateVar(None)
            self.a = NeuronStateVar(None)

    def _setup(self, params: dict[str, Any], options: dict[str, Any], learn: Sequence[str] = ()) -> None:
        """Hold the functional neuron's ``params`` (those in ``learn``: ``nnx.Param[num_channels]``) and
        static ``options`` as attributes of the same names, after the functional neuron checked them."""
        common = dict(surrogate=self.surrogate_shape, backend="xla")  # α and the backend name: checked above
        _hold(self, self.neuron, params, options, learn, self.channel_shape, common)

    # --- what the functional neuron is called with -------------------------------------------

    def surrogate(self) -> _surrogate.Surrogate:
        """The surrogate passed to the functional neuron (α is a traced leaf when learnable)."""
        if self.learnable_surrogate:
            return _surrogate.Surrogate(self.surrogate_shape, self.surrogate_alpha[...], learnable=True)
        return _surrogate.Surrogate(self.surrogate_shape, self.surrogate_alpha_value)

    def common_kwargs(self) -> dict[str, Any]:
        return dict(surrogate=self.surrogate(), backend=self.backend)

    def param_values(self) -> dict[str, Any]:
        """The parameters as the functional neuron takes them (``nnx.Param`` values read)."""
        return {k: _value(getattr(self, k)) for k in self.param_names}

    @property
    def options(self) -> dict[str, Any]:
        """The static options the functional neuron is called with (``reset``, ...)."""
        return {k: getattr(self, k) for k in self.option_names}

    def _check_channels(self, x: Array) -> None:
        if self.channel_shape and x.shape[-1] != self.channel_shape[0]:
            raise ValueError(
                f"x: last axis has {x.shape[-1]} channels but this {type(self).__name__} layer was "
                f"built with num_channels={self.channel_shape[0]}"
            )

    def _fire(self, x: Array, state) -> tuple[Array, Any]:
        return self.neuron(x, state=state, **self.param_values(), **self.options, **self.common_kwargs())

    # --- the carried state (streaming) -------------------------------------------------------

    def _carried(self):
        if self.tuple_state:
            return self.carried.get_value()
        v = self.v.get_value()
        return None if v is None else F.NeuronState(v, self.a.get_value() if self.adaptive else None)

    def _carry(self, final) -> None:
        if self.tuple_state:
            self.carried.set_value(tuple(final))
            return
        self.v.set_value(final.v)
        if self.adaptive:
            self.a.set_value(final.a)

    def reset_state(self) -> None:
        """Forget the carried state (streaming mode); the next call starts from zeros."""
        if self.tuple_state:
            self.carried.set_value(None)
        else:
            self.v.set_value(None)
            self.a.set_value(None)

    # --- public API --------------------------------------------------------------------------

    def __call__(self, x: Array, *, state=None, return_state: bool = False):
        """Run the neuron over ``x[T, ...]`` (rank >= 2, time first).

        Args:
          x: input current ``[T, ...]``.
          state: initial state (only without ``stateful``; default zeros): a
            :class:`~spikejax.NeuronState` for the built-in kinds, else the functional neuron's tuple of
            arrays over ``x.shape[1:]``.
          return_state: also return the final state.

        Returns:
          ``spikes[T, ...]`` in ``x``'s dtype, or ``(spikes, final_state)``.
        """
        x = check_x(x)
        self._check_channels(x)
        if self.stateful:
            if state is not None:
                raise ValueError("state: a stateful layer carries its own state; call reset_state() "
                                 "or use stateful=False to pass state explicitly")
            state = self._carried()
            if state is not None and tuple(state[0].shape) != tuple(x.shape[1:]):
                raise ValueError(
                    f"x: neuron shape {tuple(x.shape[1:])} does not match the carried state's shape "
                    f"{tuple(state[0].shape)}; call reset_state() before changing shapes"
                )
        spikes, final = self._fire(x, state)
        if self.stateful:
            self._carry(final)
        return (spikes, final) if return_state else spikes


# --- the built-in kinds -----------------------------------------------------------------------------


class IF(SpikingNeuron):
    """Integrate-and-fire layer: ``H_t = V_{t-1} + X_t``, ``S_t = Θ(H_t - θ)``, ``V_t = reset(H_t, S_t)``.

    Wraps :func:`spikejax.if_`. Shapes: ``x[T, ...] -> spikes[T, ...]``.
    """

    neuron = staticmethod(F.if_)

    def __init__(self, *, threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = False,
                 reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(threshold=threshold), dict(reset=reset, detach_reset=detach_reset, reset_delay=reset_delay))


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire layer: ``H_t = β V_{t-1} + γ X_t``, ``S_t = Θ(H_t - θ)``.

    Wraps :func:`spikejax.lif`: give ``tau`` (β = 1 - 1/τ, γ = 1/τ with ``decay_input``, the
    default for τ) or ``beta`` (γ = 1 unless ``decay_input``). Default τ = 2.
    Shapes: ``x[T, ...] -> spikes[T, ...]``.
    """

    neuron = staticmethod(F.lif)

    def __init__(self, *, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, beta=beta, threshold=threshold),
                    dict(decay_input=decay_input, reset=reset, detach_reset=detach_reset, reset_delay=reset_delay))


class ALIF(SpikingNeuron):
    """Adaptive LIF layer (Bellec et al. 2018): threshold ``θ_t = θ + b a_{t-1}``,
    ``a_t = ρ a_{t-1} + S_t``; otherwise as :class:`LIF`. Wraps :func:`spikejax.alif`.

    The streaming state carries both ``v`` and ``a``. Shapes: ``x[T, ...] -> spikes[T, ...]``.
    """

    neuron = staticmethod(F.alif)
    adaptive = True

    def __init__(self, *, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, adapt_scale: float = 1.0,
                 adapt_decay: float = 0.9, reset: str = "subtract", detach_reset: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, beta=beta, threshold=threshold, adapt_scale=adapt_scale, adapt_decay=adapt_decay),
                    dict(decay_input=decay_input, reset=reset, detach_reset=detach_reset))


class PLIF(SpikingNeuron):
    """Parametric LIF layer (Fang et al. 2021) with a learnable time constant per channel.

    Params: ``decay_logit[C]`` (``1/τ = sigmoid(w)``, initialised from ``init_tau``:
    ``w = -ln(τ - 1)``) and, with ``learn_threshold`` (default), ``threshold[C]``; ``C`` is
    ``num_channels`` (scalars ``()`` when None). ``H_t = V_{t-1} + (X_t - V_{t-1}) sigmoid(w)``
    (``decay_input``, default) else ``H_t = (1 - sigmoid(w)) V_{t-1} + X_t``.
    Wraps :func:`spikejax.plif`. Shapes: ``x[T, ..., C] -> spikes[T, ..., C]``.
    """

    neuron = staticmethod(F.plif)

    def __init__(self, num_channels: int | None = None, *, init_tau: float = 2.0, threshold: float = 1.0,
                 learn_threshold: bool = True, decay_input: bool = True, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        self.learn_threshold = bool(learn_threshold)
        self._setup(dict(decay_logit=plif_decay_logit(init_tau, name="init_tau"), threshold=threshold),
                    dict(decay_input=decay_input, reset=reset, detach_reset=detach_reset, reset_delay=reset_delay),
                    learn=("decay_logit", "threshold") if self.learn_threshold else ("decay_logit",))


class Ternary(SpikingNeuron):
    """Ternary LIF layer: spikes ``amplitude · S_t`` with ``S_t ∈ {-1, 0, +1}``,
    ``S_t = Θ(H_t - θ) - Θ(-H_t - θ)``. ``amplitude`` is an ``nnx.Param`` (``[C]`` or ``()``)
    when ``learn_amplitude`` (default). Wraps :func:`spikejax.ternary`.
    Shapes: ``x[T, ..., C] -> spikes[T, ..., C]``.
    """

    neuron = staticmethod(F.ternary)

    def __init__(self, num_channels: int | None = None, *, tau: float | None = None,
                 beta: float | None = None, decay_input: bool | None = None, threshold: float = 1.0,
                 amplitude: float = 1.0, learn_amplitude: bool = True, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        self.learn_amplitude = bool(learn_amplitude)
        self._setup(dict(tau=tau, beta=beta, threshold=threshold, amplitude=amplitude),
                    dict(decay_input=decay_input, reset=reset, detach_reset=detach_reset, reset_delay=reset_delay),
                    learn=("amplitude",) if self.learn_amplitude else ())


class MultiLevel(SpikingNeuron):
    """Multi-level (integer) spiking layer: ``S_t = clip(floor(H_t / θ), 0, L)``, soft reset.

    Default no leak (β = 1); pass ``tau`` or ``beta`` for one. Wraps :func:`spikejax.multilevel`.
    Shapes: ``x[T, ...] -> spikes[T, ...]`` with values in {0, ..., L}.
    """

    neuron = staticmethod(F.multilevel)

    def __init__(self, *, levels: int = 4, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, beta=beta, threshold=threshold),
                    dict(levels=levels, decay_input=decay_input, reset=reset, detach_reset=detach_reset,
                         reset_delay=reset_delay))


# --- the further models of spikejax.neurons.dynamics -------------------------------------------------


class DynamicsNeuron(SpikingNeuron):
    """The kinds of :mod:`spikejax.neurons.dynamics`: :attr:`model` names the model (a key of
    :data:`spikejax.neurons.DYNAMICS`); the state is its tuple, carried in ``carried``; every parameter
    can be learned (``learn=(...)``: ``nnx.Param[num_channels]``, initialised from the given values)."""

    model: ClassVar[str]
    tuple_state = True

    @property
    def num_states(self) -> int:
        return D.DYNAMICS[self.model][2]

    def step_and_params(self) -> tuple[Callable, dict[str, Any], int]:
        """``(step, params, num_states)`` of this layer, for layers that scan it themselves."""
        step, params = D.dynamics_step(self.model, surrogate=self.surrogate(), **self.param_values(), **self.options)
        return step, params, self.num_states


_DYNAMICS_ARGS = """
    Parameters are keyword arguments named as in the functional wrapper (None: its default). Common
    keyword arguments: ``learn`` (names of parameters to train), ``num_channels``, ``surrogate``,
    ``surrogate_alpha``, ``learnable_surrogate``, ``backend``, ``stateful`` (see the module docstring).
    Shapes: ``x[T, ...] -> spikes[T, ...]``.
"""


def _dynamics(cls: type[DynamicsNeuron]) -> type[DynamicsNeuron]:
    """A kind of :mod:`spikejax.neurons.dynamics`: its functional neuron is ``spikejax.neurons.<model>``."""
    cls.neuron = staticmethod(getattr(D, cls.model))
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + _DYNAMICS_ARGS
    return cls


@_dynamics
class CubaLIF(DynamicsNeuron):
    """Current-based synaptic LIF (snnTorch ``Synaptic``): ``I_t = α I_{t-1} + X_t``,
    ``H_t = β V_{t-1} + I_t``, ``S_t = Θ(H_t - θ)``; state ``(i, v)``. Wraps
    :func:`spikejax.neurons.cuba_lif` (``reset_delay=True, detach_reset=True``: snnTorch's order)."""

    model = "cuba_lif"

    def __init__(self, *, alpha=None, beta=None, threshold=None, reset: str | None = None,
                 reset_delay: bool | None = None, detach_reset: bool | None = None, learn: Sequence[str] = (),
                 **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(alpha=alpha, beta=beta, threshold=threshold),
                    dict(reset=reset, reset_delay=reset_delay, detach_reset=detach_reset), learn)


@_dynamics
class Alpha(DynamicsNeuron):
    """Alpha neuron (snnTorch ``Alpha``, ``1 > α > β > 0``); state ``(i_exc, i_inh, v)``. Wraps
    :func:`spikejax.neurons.alpha_neuron` (default reset ``"zero"``, as snnTorch)."""

    model = "alpha_neuron"

    def __init__(self, *, alpha=None, beta=None, threshold=None, reset: str | None = None,
                 detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(alpha=alpha, beta=beta, threshold=threshold), dict(reset=reset, detach_reset=detach_reset),
                    learn)


@_dynamics
class AdLIF(DynamicsNeuron):
    """Adaptive LIF with coupled adaptation (adLIF, Bittar & Garner 2022); state ``(u, w)``. Wraps
    :func:`spikejax.neurons.adlif`; typically ``learn=("alpha", "beta", "a", "b")`` per channel."""

    model = "adlif"

    def __init__(self, *, alpha=None, beta=None, a=None, b=None, threshold=None, reset: str | None = None,
                 detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(alpha=alpha, beta=beta, a=a, b=b, threshold=threshold),
                    dict(reset=reset, detach_reset=detach_reset), learn)


@_dynamics
class RefractoryLIF(DynamicsNeuron):
    """LIF with an absolute refractory period of ``refractory`` steps (Norse ``LIFRefracCell``);
    state ``(v, i, ρ)``. Wraps :func:`spikejax.neurons.refractory_lif`."""

    model = "refractory_lif"

    def __init__(self, *, beta=None, alpha=None, threshold=None, v_leak=None, v_reset=None, refractory=None,
                 reset: str | None = None, detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(beta=beta, alpha=alpha, threshold=threshold, v_leak=v_leak, v_reset=v_reset,
                         refractory=refractory), dict(reset=reset, detach_reset=detach_reset), learn)


@_dynamics
class Izhikevich(DynamicsNeuron):
    """Izhikevich neuron (SpikingJelly's discrete form); state ``(v, w)``. Wraps
    :func:`spikejax.neurons.izhikevich`."""

    model = "izhikevich"

    def __init__(self, *, tau=None, a0=None, v_rest=None, v_c=None, tau_w=None, a=None, b=None, threshold=None,
                 v_reset=None, reset: str | None = None, detach_reset: bool | None = None,
                 learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, a0=a0, v_rest=v_rest, v_c=v_c, tau_w=tau_w, a=a, b=b, threshold=threshold,
                         v_reset=v_reset), dict(reset=reset, detach_reset=detach_reset), learn)


@_dynamics
class EIF(DynamicsNeuron):
    """Exponential integrate-and-fire (SpikingJelly ``EIFNode``); state ``(v,)``. Wraps
    :func:`spikejax.neurons.eif`."""

    model = "eif"

    def __init__(self, *, tau=None, delta_T=None, theta_rh=None, threshold=None, v_rest=None, v_reset=None,
                 reset: str | None = None, detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, delta_T=delta_T, theta_rh=theta_rh, threshold=threshold, v_rest=v_rest,
                         v_reset=v_reset), dict(reset=reset, detach_reset=detach_reset), learn)


@_dynamics
class AdEx(DynamicsNeuron):
    """Adaptive exponential integrate-and-fire (Norse ``LIFAdExCell``); state ``(v, i, w)``. Wraps
    :func:`spikejax.neurons.adex`."""

    model = "adex"

    def __init__(self, *, tau=None, alpha=None, delta_T=None, theta_rh=None, a=None, b=None, tau_w=None,
                 threshold=None, v_rest=None, v_reset=None, reset: str | None = None,
                 detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, alpha=alpha, delta_T=delta_T, theta_rh=theta_rh, a=a, b=b, tau_w=tau_w,
                         threshold=threshold, v_rest=v_rest, v_reset=v_reset),
                    dict(reset=reset, detach_reset=detach_reset), learn)


@_dynamics
class QIF(DynamicsNeuron):
    """Quadratic integrate-and-fire (SpikingJelly ``QIFNode``); state ``(v,)``. Wraps
    :func:`spikejax.neurons.qif`."""

    model = "qif"

    def __init__(self, *, tau=None, a0=None, v_rest=None, v_c=None, threshold=None, v_reset=None,
                 reset: str | None = None, detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, a0=a0, v_rest=v_rest, v_c=v_c, threshold=threshold, v_reset=v_reset),
                    dict(reset=reset, detach_reset=detach_reset), learn)


class CubaLI(nnx.Module):
    """Current-based leaky integrator (non-spiking readout, NIR ``CubaLI``): ``I_t = α I_{t-1} + X_t``,
    ``V_t = β V_{t-1} + I_t``; returns ``V[T, ...]`` (float32). Wraps :func:`spikejax.neurons.cuba_li`.

    ``alpha`` / ``beta``: scalars or per-channel arrays (last axis); ``learn`` as in the spiking layers.
    """

    def __init__(self, *, alpha=None, beta=None, learn: Sequence[str] = (), num_channels: int | None = None,
                 backend: str = "xla"):
        self.backend = check_choice("backend", backend, BACKENDS)
        _hold(self, D.cuba_li, dict(alpha=alpha, beta=beta), {}, learn, _channels(num_channels), dict(backend="xla"))

    def __call__(self, x: Array, *, state: tuple[Array, Array] | None = None) -> Array:
        v, _ = D.cuba_li(x, alpha=_value(self.alpha), beta=_value(self.beta), state=state, backend=self.backend)
        return v


class NonSpiking(SpikingNeuron):
    """The non-spiking twin of a neuron layer (an ANN activation, kind ``"none"``): ``y_t = relu(x_t)``
    at every step, no state and no spikes, so a model built with it is the same architecture as an ANN
    (run it with ``T = 1``). Takes the common arguments (``surrogate`` and ``backend`` unused) and
    ``threshold``, which the models pass to some of their neurons (unused: there is nothing to fire).
    Shapes: ``x[T, ...] -> y[T, ...]``.
    """

    def __init__(self, *, num_channels: int | None = None, threshold: float | None = None, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        self.param_names, self.option_names = (), ()

    def _fire(self, x: Array, state) -> tuple[Array, Any]:
        return jax.nn.relu(x), F.NeuronState(jnp.zeros(x.shape[1:], x.dtype), None)


# --- by name ----------------------------------------------------------------------------------------

NEURONS: dict[str, type[SpikingNeuron]] = {
    "if": IF,
    "lif": LIF,
    "alif": ALIF,
    "plif": PLIF,
    "ternary": Ternary,
    "multilevel": MultiLevel,
}
"""The built-in neuron layer classes by name (the names model configs use)."""

KINDS: dict[str, type[SpikingNeuron]] = NEURONS | {
    cls.model: cls for cls in (CubaLIF, Alpha, AdLIF, RefractoryLIF, Izhikevich, EIF, AdEx, QIF)
}
"""Every neuron layer class by name: :data:`NEURONS` and the further models by their functional names."""

MODEL_NEURONS: dict[str, type[SpikingNeuron]] = NEURONS | {"none": NonSpiking}
"""The neuron kinds a model config takes: :data:`NEURONS` and ``"none"`` (:class:`NonSpiking`, the ANN twin)."""


def make_neuron(kind: str, *, num_channels: int | None = None, **kwargs) -> SpikingNeuron:
    """Build a neuron layer by name (see :data:`KINDS`; ``"none"``: :class:`NonSpiking`).

    ``num_channels`` sizes per-channel parameters and makes the layer check the channel count of its
    input, for every kind; other keyword arguments go to the layer's constructor (``tau``,
    ``threshold``, ``backend``, ...).
    """
    kinds = KINDS | MODEL_NEURONS
    if kind not in kinds:
        raise ValueError(f"neuron: unknown neuron {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](num_channels=num_channels, **kwargs)


def reset_states(module: nnx.Module) -> None:
    """Call :meth:`SpikingNeuron.reset_state` on every neuron layer inside ``module``."""
    for _, node in nnx.iter_graph(module):
        if isinstance(node, SpikingNeuron):
            node.reset_state()
