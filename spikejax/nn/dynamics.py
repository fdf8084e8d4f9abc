"""NNX layers of the neuron models in :mod:`spikejax.neurons.dynamics`: thin shells over the
functional wrappers, so ``CubaLIF(alpha=0.8, beta=0.9)(x) == spikejax.neurons.cuba_lif(x, alpha=0.8,
beta=0.9)[0]`` exactly.

Every layer maps ``x[T, ...]`` (time first, channels last) to spikes of the same shape, like
:class:`spikejax.nn.LIF`: multi-step by default (``layer(x, state=s, return_state=True)`` starts
from ``s``, a tuple of arrays over ``x.shape[1:]`` in the model's state order, and also returns the
final one), or streaming with ``stateful=True`` (the final state is carried in ``layer.carried``
and the next call continues from it; :meth:`reset_state` / :func:`spikejax.nn.reset_states` clear it).

Parameters are keyword arguments named as in the functional wrapper (None: its default).
``learn=("alpha", "beta")`` makes those ``nnx.Param`` of shape ``[num_channels]`` (or ``()``),
initialised from the given values; the others are constants. ``surrogate``, ``surrogate_alpha``,
``learnable_surrogate``, ``backend`` (``"xla"``, ``"pallas"``, ``"pallas_interpret"``, ``"auto"``)
and ``stateful`` are as in :class:`spikejax.nn.SpikingNeuron`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax.neurons import dynamics as D
from spikejax.nn.neurons import NeuronStateVar, SpikingNeuron

Array = jax.Array

__all__ = ["AdEx", "AdLIF", "Alpha", "CubaLI", "CubaLIF", "DynamicsNeuron", "EIF", "Izhikevich", "QIF",
           "RefractoryLIF"]


def _constant(value) -> float | np.ndarray:
    """A non-learned parameter: a float, or a float32 NumPy array (per channel / per neuron)."""
    arr = np.asarray(value, np.float32)
    return float(arr) if arr.ndim == 0 else arr


def _params(owner: nnx.Module, model: str, values: dict[str, Any], learn: Sequence[str],
            channel_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Set each parameter on ``owner`` (an ``nnx.Param`` if in ``learn``); returns their names."""
    defaults = D.DYNAMICS[model][1]
    learn = (learn,) if isinstance(learn, str) else tuple(learn)
    unknown = sorted(set(learn) - set(values))
    if unknown:
        raise ValueError(f"learn: {unknown} are not parameters of {model}; expected some of {sorted(values)}")
    for name, value in values.items():
        value = defaults[name] if value is None else value
        if name in learn:
            arr = jnp.asarray(value, jnp.float32)
            try:
                arr = jnp.broadcast_to(arr, channel_shape) if arr.ndim <= len(channel_shape) else arr
            except ValueError:
                raise ValueError(f"{name}: shape {arr.shape} does not fit num_channels {channel_shape}") from None
            setattr(owner, name, nnx.Param(arr))
        else:
            setattr(owner, name, _constant(value))
    return tuple(values)


def _value(p) -> Array | float | np.ndarray:
    return p[...] if isinstance(p, nnx.Param) else p


class DynamicsNeuron(SpikingNeuron):
    """Base of the layers here: parameters, options and the tuple-valued streaming state.

    Subclasses set :attr:`model` (a key of :data:`spikejax.neurons.DYNAMICS`) and call :meth:`_setup`.
    """

    model: ClassVar[str]

    def _setup(self, values: dict[str, Any], options: dict[str, Any], learn: Sequence[str]) -> None:
        del self.v, self.a  # the base class's (v, a) state: this layer carries a tuple instead
        self.param_names = _params(self, self.model, values, learn, self.channel_shape)
        self.options = D.model_options(self.model) | {k: v for k, v in options.items() if v is not None}
        D.dynamics_step(self.model, **self.options)  # validates the options now, not at the first call
        self.carried = NeuronStateVar(None)

    @property
    def reset(self) -> str:
        return self.options["reset"]

    @property
    def detach_reset(self) -> bool:
        return bool(self.options.get("detach_reset", False))

    @property
    def num_states(self) -> int:
        return D.DYNAMICS[self.model][2]

    def param_values(self) -> dict[str, Any]:
        """The parameters as the functional wrapper takes them (``nnx.Param`` values read)."""
        return {k: _value(getattr(self, k)) for k in self.param_names}

    def step_and_params(self) -> tuple[Callable, dict[str, Any], int]:
        """``(step, params, num_states)`` of this layer, for layers that scan it themselves."""
        step, params = D.dynamics_step(self.model, surrogate=self.surrogate(), **self.param_values(),
                                       **self.options)
        return step, params, self.num_states

    def _fire(self, x: Array, state):
        fn = getattr(D, self.model)
        return fn(x, **self.param_values(), **self.options, surrogate=self.surrogate(), state=state,
                  backend=self.backend)

    def __call__(self, x: Array, *, state: tuple[Array, ...] | None = None, return_state: bool = False):
        """Run the neuron over ``x[T, ...]`` (rank >= 2, time first).

        Returns ``spikes[T, ...]`` in ``x``'s dtype, or ``(spikes, final_state)`` (a tuple of float32
        arrays over ``x.shape[1:]``) with ``return_state``.
        """
        if not hasattr(x, "ndim") or x.ndim < 2:
            raise ValueError(f"x: expected rank >= 2 with time first, [T, ...neurons], got shape "
                             f"{getattr(x, 'shape', None)}")
        self._check_channels(x)
        if self.stateful:
            if state is not None:
                raise ValueError("state: a stateful layer carries its own state; call reset_state() "
                                 "or use stateful=False to pass state explicitly")
            state = self.carried.get_value()
            if state is not None and tuple(state[0].shape) != tuple(x.shape[1:]):
                raise ValueError(f"x: neuron shape {tuple(x.shape[1:])} does not match the carried state's "
                                 f"shape {tuple(state[0].shape)}; call reset_state() before changing shapes")
        spikes, final = self._fire(x, state)
        if self.stateful:
            self.carried.set_value(tuple(final))
        return (spikes, final) if return_state else spikes

    def reset_state(self) -> None:
        """Forget the carried state (streaming mode); the next call starts from zeros."""
        self.carried.set_value(None)


_LAYER_ARGS = """
    Common keyword arguments: ``learn`` (names of parameters to train), ``num_channels``,
    ``surrogate``, ``surrogate_alpha``, ``learnable_surrogate``, ``backend``, ``stateful``
    (see the module docstring). Shapes: ``x[T, ...] -> spikes[T, ...]``.
"""


def _doc(cls):
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + _LAYER_ARGS
    return cls


@_doc
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

    @property
    def reset_delay(self) -> bool:
        return self.options["reset_delay"]


@_doc
class Alpha(DynamicsNeuron):
    """Alpha neuron (snnTorch ``Alpha``, ``1 > α > β > 0``); state ``(i_exc, i_inh, v)``. Wraps
    :func:`spikejax.neurons.alpha_neuron` (default reset ``"zero"``, as snnTorch)."""

    model = "alpha_neuron"

    def __init__(self, *, alpha=None, beta=None, threshold=None, reset: str | None = None,
                 detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(alpha=alpha, beta=beta, threshold=threshold),
                    dict(reset=reset, detach_reset=detach_reset), learn)


@_doc
class AdLIF(DynamicsNeuron):
    """Adaptive LIF with coupled adaptation (adLIF, Bittar & Garner 2022); state ``(u, w)``. Wraps
    :func:`spikejax.neurons.adlif`; typically ``learn=("alpha", "beta", "a", "b")`` per channel."""

    model = "adlif"

    def __init__(self, *, alpha=None, beta=None, a=None, b=None, threshold=None, reset: str | None = None,
                 detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(alpha=alpha, beta=beta, a=a, b=b, threshold=threshold),
                    dict(reset=reset, detach_reset=detach_reset), learn)


@_doc
class RefractoryLIF(DynamicsNeuron):
    """LIF with an absolute refractory period of ``refractory`` steps (Norse ``LIFRefracCell``);
    state ``(v, i, ρ)``. Wraps :func:`spikejax.neurons.refractory_lif`."""

    model = "refractory_lif"

    def __init__(self, *, beta=None, alpha=None, threshold=None, v_leak=None, v_reset=None, refractory=None,
                 reset: str | None = None, detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(beta=beta, alpha=alpha, threshold=threshold, v_leak=v_leak, v_reset=v_reset,
                         refractory=refractory), dict(reset=reset, detach_reset=detach_reset), learn)


@_doc
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


@_doc
class EIF(DynamicsNeuron):
    """Exponential integrate-and-fire (SpikingJelly ``EIFNode``); state ``(v,)``. Wraps
    :func:`spikejax.neurons.eif`."""

    model = "eif"

    def __init__(self, *, tau=None, delta_T=None, theta_rh=None, threshold=None, v_rest=None, v_reset=None,
                 reset: str | None = None, detach_reset: bool | None = None, learn: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._setup(dict(tau=tau, delta_T=delta_T, theta_rh=theta_rh, threshold=threshold, v_rest=v_rest,
                         v_reset=v_reset), dict(reset=reset, detach_reset=detach_reset), learn)


@_doc
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


@_doc
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
        shape = () if num_channels is None else (int(num_channels),)
        self.param_names = _params(self, "cuba_li", dict(alpha=alpha, beta=beta), learn, shape)
        self.backend = backend

    def __call__(self, x: Array, *, state: tuple[Array, Array] | None = None) -> Array:
        v, _ = D.cuba_li(x, alpha=_value(self.alpha), beta=_value(self.beta), state=state, backend=self.backend)
        return v
