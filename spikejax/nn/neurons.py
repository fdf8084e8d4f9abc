"""Spiking neuron layers: Flax NNX shells over the functional neurons of :mod:`spikejax.neurons`.

Every layer maps an input current ``x[T, ...]`` (time first; any batch / position axes; channels
last) to spikes of the same shape by calling the functional neuron with the layer's parameters,
so ``IF()(x) == spikejax.if_(x)[0]`` exactly. Two ways to use them:

- multi-step (default): ``layer(x)`` runs all ``T`` steps from a zero state;
  ``layer(x, state=s, return_state=True)`` starts from ``s`` and also returns the final
  :class:`~spikejax.NeuronState`.
- streaming (``stateful=True``): the final state is stored in the layer (``layer.v``, ``layer.a``,
  :class:`NeuronStateVar` variables) and the next call continues from it, so calling on chunks
  ``x[:k]``, ``x[k:]`` equals one call on ``x``. :meth:`reset_state` (or
  :func:`reset_states` for a whole model) clears it; the stored state has the neuron shape
  ``x.shape[1:]`` of the first call after a reset.

Learnable parameters are ``nnx.Param``: PLIF's ``decay_logit`` and ``threshold``, the ternary
``amplitude``, and ``surrogate_alpha`` when ``learnable_surrogate=True`` (any layer). Per-channel
parameters have shape ``[num_channels]`` over the last axis of ``x`` (or ``()`` when
``num_channels`` is None).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax import neurons as F
from spikejax import surrogate as _surrogate
from spikejax.backends import BACKENDS

Array = jax.Array

__all__ = [
    "NeuronStateVar",
    "SpikingNeuron",
    "IF",
    "LIF",
    "ALIF",
    "PLIF",
    "Ternary",
    "MultiLevel",
    "NEURONS",
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


class SpikingNeuron(nnx.Module):
    """Base class: surrogate handling, backend pass-through, streaming state.

    Subclasses implement :meth:`_fire` ``(x, state) -> (spikes, NeuronState)``.
    """

    adaptive: bool = False

    def __init__(self, *, num_channels: int | None = None, surrogate: str = "atan",
                 surrogate_alpha: float | None = None, learnable_surrogate: bool = False,
                 backend: str = "xla", stateful: bool = False):
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; expected one of {BACKENDS}")
        if not isinstance(surrogate, str):
            raise TypeError(f"surrogate: expected a surrogate name (str), got {type(surrogate)!r}")
        shape = _surrogate.get(surrogate).shape  # validates the name
        self.num_channels = num_channels
        self.channel_shape = _channels(num_channels)
        self.surrogate_shape = shape
        alpha = _surrogate.SURROGATES[shape][1] if surrogate_alpha is None else float(surrogate_alpha)
        if alpha <= 0:
            raise ValueError(f"surrogate_alpha: expected > 0, got {alpha}")
        self.learnable_surrogate = bool(learnable_surrogate)
        if self.learnable_surrogate:
            self.surrogate_alpha = nnx.Param(jnp.full(self.channel_shape, alpha, jnp.float32))
        else:
            self.surrogate_alpha_value = alpha
        self.backend = backend
        self.stateful = bool(stateful)
        self.v = NeuronStateVar(None)
        self.a = NeuronStateVar(None)

    # --- helpers for subclasses -------------------------------------------------------------

    def surrogate(self) -> _surrogate.Surrogate:
        """The surrogate passed to the functional neuron (α is a traced leaf when learnable)."""
        if self.learnable_surrogate:
            return _surrogate.Surrogate(self.surrogate_shape, self.surrogate_alpha[...], learnable=True)
        return _surrogate.Surrogate(self.surrogate_shape, self.surrogate_alpha_value)

    def _check_channels(self, x: Array) -> None:
        if self.channel_shape and x.shape[-1] != self.channel_shape[0]:
            raise ValueError(
                f"x: last axis has {x.shape[-1]} channels but this {type(self).__name__} layer was "
                f"built with num_channels={self.channel_shape[0]}"
            )

    def _fire(self, x: Array, state: F.NeuronState | None) -> tuple[Array, F.NeuronState]:
        raise NotImplementedError

    # --- public API --------------------------------------------------------------------------

    def __call__(self, x: Array, *, state: F.NeuronState | None = None, return_state: bool = False):
        """Run the neuron over ``x[T, ...]`` (rank >= 2, time first).

        Args:
          x: input current ``[T, ...]``.
          state: initial state (only without ``stateful``; default zeros).
          return_state: also return the final :class:`~spikejax.NeuronState`.

        Returns:
          ``spikes[T, ...]`` in ``x``'s dtype, or ``(spikes, final_state)``.
        """
        if not hasattr(x, "ndim") or x.ndim < 2:
            shape = getattr(x, "shape", None)
            raise ValueError(f"x: expected rank >= 2 with time first, [T, ...neurons], got shape {shape}")
        self._check_channels(x)
        if self.stateful:
            if state is not None:
                raise ValueError("state: a stateful layer carries its own state; call reset_state() "
                                 "or use stateful=False to pass state explicitly")
            v = self.v.get_value()
            if v is not None and tuple(v.shape) != tuple(x.shape[1:]):
                raise ValueError(
                    f"x: neuron shape {tuple(x.shape[1:])} does not match the carried state's shape "
                    f"{tuple(v.shape)}; call reset_state() before changing shapes"
                )
            state = None if v is None else F.NeuronState(v, self.a.get_value() if self.adaptive else None)
        spikes, final = self._fire(x, state)
        if self.stateful:
            self.v.set_value(final.v)
            if self.adaptive:
                self.a.set_value(final.a)
        return (spikes, final) if return_state else spikes

    def reset_state(self) -> None:
        """Forget the carried state (streaming mode); the next call starts from zeros."""
        self.v.set_value(None)
        self.a.set_value(None)

    def common_kwargs(self) -> dict[str, Any]:
        return dict(surrogate=self.surrogate(), backend=self.backend)


class _ResetMixin:
    """Constructor helpers shared by the neuron layers (leak, threshold, reset arguments)."""

    def _set_leak(self, tau: float | None, beta: float | None, decay_input: bool | None, threshold: float) -> None:
        """Store ``tau`` or ``beta`` (β = 1 - 1/τ; at most one of them), ``decay_input`` and ``threshold``."""
        if tau is not None and beta is not None:
            raise ValueError("beta, tau: give one of them, not both (β = 1 - 1/τ)")
        self.tau = None if tau is None else float(tau)
        self.beta = None if beta is None else float(beta)
        self.decay_input = decay_input
        self.threshold = float(threshold)

    def _set_reset(self, reset: str, detach_reset: bool, reset_delay: bool | None) -> None:
        """Store the reset arguments (``reset_delay=None``: the neuron has no delayed reset)."""
        self.reset = _check_reset(reset)
        self.detach_reset = bool(detach_reset)
        if reset_delay is not None:
            self.reset_delay = bool(reset_delay)

    def _reset_kwargs(self) -> dict[str, Any]:
        return dict(reset=self.reset, detach_reset=self.detach_reset)


def _param_or_value(learn: bool, shape: tuple[int, ...], value: float) -> nnx.Param | float:
    """A per-channel ``nnx.Param`` filled with ``value`` (``learn``) or the plain float ``value``."""
    return nnx.Param(jnp.full(shape, value, jnp.float32)) if learn else float(value)


def _value(p: nnx.Param | float) -> Array | float:
    """The array of a parameter made by :func:`_param_or_value`, or the float itself."""
    return p[...] if isinstance(p, nnx.Param) else p


def _check_reset(reset: str) -> str:
    from spikejax.backends import RESETS

    if reset not in RESETS:
        raise ValueError(f"reset: unknown reset {reset!r}; expected one of {RESETS}")
    return reset


class IF(SpikingNeuron, _ResetMixin):
    """Integrate-and-fire layer: ``H_t = V_{t-1} + X_t``, ``S_t = Θ(H_t - θ)``, ``V_t = reset(H_t, S_t)``.

    Wraps :func:`spikejax.if_`. Shapes: ``x[T, ...] -> spikes[T, ...]``.
    """

    def __init__(self, *, threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = False,
                 reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self._set_reset(reset, detach_reset, reset_delay)

    def _fire(self, x, state):
        return F.if_(x, state=state, threshold=self.threshold, reset_delay=self.reset_delay,
                     **self._reset_kwargs(), **self.common_kwargs())


class LIF(SpikingNeuron, _ResetMixin):
    """Leaky integrate-and-fire layer: ``H_t = β V_{t-1} + γ X_t``, ``S_t = Θ(H_t - θ)``.

    Wraps :func:`spikejax.lif`: give ``tau`` (β = 1 - 1/τ, γ = 1/τ with ``decay_input``, the
    default for τ) or ``beta`` (γ = 1 unless ``decay_input``). Default τ = 2.
    Shapes: ``x[T, ...] -> spikes[T, ...]``.
    """

    def __init__(self, *, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._set_leak(tau, beta, decay_input, threshold)
        self._set_reset(reset, detach_reset, reset_delay)

    def _fire(self, x, state):
        return F.lif(x, state=state, tau=self.tau, beta=self.beta, decay_input=self.decay_input,
                     threshold=self.threshold, reset_delay=self.reset_delay,
                     **self._reset_kwargs(), **self.common_kwargs())


class ALIF(SpikingNeuron, _ResetMixin):
    """Adaptive LIF layer (Bellec et al. 2018): threshold ``θ_t = θ + b a_{t-1}``,
    ``a_t = ρ a_{t-1} + S_t``; otherwise as :class:`LIF`. Wraps :func:`spikejax.alif`.

    The streaming state carries both ``v`` and ``a``. Shapes: ``x[T, ...] -> spikes[T, ...]``.
    """

    adaptive = True

    def __init__(self, *, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, adapt_scale: float = 1.0,
                 adapt_decay: float = 0.9, reset: str = "subtract", detach_reset: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self._set_leak(tau, beta, decay_input, threshold)
        self.adapt_scale = float(adapt_scale)
        self.adapt_decay = float(adapt_decay)
        self._set_reset(reset, detach_reset, None)

    def _fire(self, x, state):
        return F.alif(x, state=state, tau=self.tau, beta=self.beta, decay_input=self.decay_input,
                      threshold=self.threshold, adapt_scale=self.adapt_scale,
                      adapt_decay=self.adapt_decay, **self._reset_kwargs(), **self.common_kwargs())


class PLIF(SpikingNeuron, _ResetMixin):
    """Parametric LIF layer (Fang et al. 2021) with a learnable time constant per channel.

    Params: ``decay_logit[C]`` (``1/τ = sigmoid(w)``, initialised from ``init_tau``:
    ``w = -ln(τ - 1)``) and, with ``learn_threshold`` (default), ``threshold[C]``; ``C`` is
    ``num_channels`` (scalars ``()`` when None). ``H_t = V_{t-1} + (X_t - V_{t-1}) sigmoid(w)``
    (``decay_input``, default) else ``H_t = (1 - sigmoid(w)) V_{t-1} + X_t``.
    Wraps :func:`spikejax.plif`. Shapes: ``x[T, ..., C] -> spikes[T, ..., C]``.
    """

    def __init__(self, num_channels: int | None = None, *, init_tau: float = 2.0, threshold: float = 1.0,
                 learn_threshold: bool = True, decay_input: bool = True, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        if not init_tau > 1.0:
            raise ValueError(f"init_tau: expected > 1 (so that β = 1 - 1/τ is in (0, 1)), got {init_tau}")
        if not threshold > 0:
            raise ValueError(f"threshold: expected > 0, got {threshold}")
        self.decay_logit = nnx.Param(jnp.full(self.channel_shape, -math.log(init_tau - 1.0), jnp.float32))
        self.learn_threshold = bool(learn_threshold)
        self.threshold = _param_or_value(self.learn_threshold, self.channel_shape, threshold)
        self.decay_input = bool(decay_input)
        self._set_reset(reset, detach_reset, reset_delay)

    def _fire(self, x, state):
        return F.plif(x, state=state, decay_logit=self.decay_logit[...], threshold=_value(self.threshold),
                      decay_input=self.decay_input, reset_delay=self.reset_delay,
                      **self._reset_kwargs(), **self.common_kwargs())


class Ternary(SpikingNeuron, _ResetMixin):
    """Ternary LIF layer: spikes ``amplitude · S_t`` with ``S_t ∈ {-1, 0, +1}``,
    ``S_t = Θ(H_t - θ) - Θ(-H_t - θ)``. ``amplitude`` is an ``nnx.Param`` (``[C]`` or ``()``)
    when ``learn_amplitude`` (default). Wraps :func:`spikejax.ternary`.
    Shapes: ``x[T, ..., C] -> spikes[T, ..., C]``.
    """

    def __init__(self, num_channels: int | None = None, *, tau: float | None = None,
                 beta: float | None = None, decay_input: bool | None = None, threshold: float = 1.0,
                 amplitude: float = 1.0, learn_amplitude: bool = True, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        self._set_leak(tau, beta, decay_input, threshold)
        self.learn_amplitude = bool(learn_amplitude)
        self.amplitude = _param_or_value(self.learn_amplitude, self.channel_shape, amplitude)
        self._set_reset(reset, detach_reset, reset_delay)

    def _fire(self, x, state):
        return F.ternary(x, state=state, tau=self.tau, beta=self.beta, decay_input=self.decay_input,
                         threshold=self.threshold, amplitude=_value(self.amplitude), reset_delay=self.reset_delay,
                         **self._reset_kwargs(), **self.common_kwargs())


class MultiLevel(SpikingNeuron, _ResetMixin):
    """Multi-level (integer) spiking layer: ``S_t = clip(floor(H_t / θ), 0, L)``, soft reset.

    Default no leak (β = 1); pass ``tau`` or ``beta`` for one. Wraps :func:`spikejax.multilevel`.
    Shapes: ``x[T, ...] -> spikes[T, ...]`` with values in {0, ..., L}.
    """

    def __init__(self, *, levels: int = 4, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels: expected an integer >= 1, got {levels!r}")
        self.levels = levels
        self._set_leak(tau, beta, decay_input, threshold)
        self._set_reset(reset, detach_reset, reset_delay)

    def _fire(self, x, state):
        return F.multilevel(x, state=state, levels=self.levels, tau=self.tau, beta=self.beta,
                            decay_input=self.decay_input, threshold=self.threshold,
                            reset_delay=self.reset_delay, **self._reset_kwargs(), **self.common_kwargs())


NEURONS: dict[str, type[SpikingNeuron]] = {
    "if": IF,
    "lif": LIF,
    "alif": ALIF,
    "plif": PLIF,
    "ternary": Ternary,
    "multilevel": MultiLevel,
}
"""Neuron layer classes by name (the names model configs use)."""

_PER_CHANNEL = (PLIF, Ternary)


def make_neuron(kind: str, *, num_channels: int | None = None, **kwargs) -> SpikingNeuron:
    """Build a neuron layer by name (see :data:`NEURONS`).

    ``num_channels`` sizes per-channel parameters (PLIF, Ternary, a learnable surrogate); other
    keyword arguments go to the layer's constructor (``tau``, ``threshold``, ``backend``, ...).
    """
    if kind not in NEURONS:
        raise ValueError(f"neuron: unknown neuron {kind!r}; expected one of {sorted(NEURONS)}")
    cls = NEURONS[kind]
    if cls in _PER_CHANNEL:
        return cls(num_channels, **kwargs)
    if kwargs.get("learnable_surrogate"):
        return cls(num_channels=num_channels, **kwargs)
    return cls(**kwargs)


def reset_states(module: nnx.Module) -> None:
    """Call :meth:`SpikingNeuron.reset_state` on every neuron layer inside ``module``."""
    for _, node in nnx.iter_graph(module):
        if isinstance(node, SpikingNeuron):
            node.reset_state()
