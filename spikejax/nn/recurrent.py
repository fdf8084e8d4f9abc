"""Recurrent spiking layers: any neuron step function driven by ``x_t + W_rec s_{t-1}``.

:class:`RecurrentSpiking` feeds each step's spikes back through a dense recurrent weight, as
snnTorch's ``RLeaky`` / ``RSynaptic`` do (``all_to_all=True``, ``linear_features=F``)::

    I_t = X_t + s_{t-1} W_rec (+ b_rec)            s_0 = 0, W_rec: kernel[F, F] (in, out)
    S_t, state_t = step(params, state_{t-1}, I_t)

The recurrence is a matmul per step, so the layer scans the step itself (``lax.scan`` over time;
the neuron step runs inside it, not in the fused engine). ``RecurrentSpiking(CubaLIF(alpha=0.9,
beta=0.8, reset_delay=True, detach_reset=True), F)`` is snnTorch ``RSynaptic``; with ``alpha=0``
it is ``RLeaky``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.neurons.custom import check_x
from spikejax.nn.dynamics import DynamicsNeuron
from spikejax.nn.neurons import NeuronStateVar, SpikingNeuron

Array = jax.Array

__all__ = ["RecurrentSpiking"]


class RecurrentSpiking(SpikingNeuron):
    """A spiking layer whose input is ``x_t + s_{t-1} W_rec (+ b)`` (see the module docstring).

    Args:
      neuron: a layer of :mod:`spikejax.nn.dynamics` (its step, parameters, learnable ones included,
        and surrogate are used), or a step function ``step(params, state, x_t) -> (s_t, state)``
        with ``params`` and ``num_states`` given.
      features: ``F``, the size of the last axis of ``x`` (the neurons per position).
      params: the step's parameter pytree (only with a step function; held as constants; train
        parameters through a :mod:`spikejax.nn.dynamics` layer's ``learn=``).
      num_states: the step's number of state arrays (only with a step function).
      use_bias: a recurrent bias ``b_rec[F]`` (snnTorch's recurrent ``nn.Linear`` has one).
      stateful: carry ``(state, s_last)`` between calls (streaming; :meth:`reset_state` clears it).
      rngs: initialises ``W_rec`` (``nnx.Linear``'s default init).

    Shapes: ``x[T, ..., F] -> spikes[T, ..., F]`` (``x``'s dtype); the state is a tuple of float32
    arrays over ``x.shape[1:]``.
    """

    def __init__(self, neuron: DynamicsNeuron | Callable, features: int, *, params: Any = None,
                 num_states: int | None = None, use_bias: bool = False, stateful: bool = False,
                 rngs: nnx.Rngs | None = None):
        super().__init__(stateful=stateful)
        del self.v, self.a
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features: expected a positive integer, got {features!r}")
        if isinstance(neuron, DynamicsNeuron):
            if params is not None or num_states is not None:
                raise ValueError("params, num_states: give them only with a step function; a layer has its own")
            self.neuron = neuron
            self.step, self.step_params, self.step_num_states = None, None, None
        elif callable(neuron):
            if params is None or not isinstance(num_states, int) or num_states < 1:
                raise ValueError("params, num_states: a step function needs its params pytree and its number "
                                 f"of state arrays (got params={params!r}, num_states={num_states!r})")
            self.neuron = None
            constants = nnx.data(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params))  # not trained here
            self.step, self.step_params, self.step_num_states = neuron, constants, num_states
        else:
            raise TypeError(f"neuron: expected a spikejax.nn.dynamics layer or a step function, got {type(neuron)!r}")
        self.features = features
        self.recurrent = nnx.Linear(features, features, use_bias=use_bias, rngs=rngs or nnx.Rngs(0))
        self.carried = NeuronStateVar(None)

    def _step(self) -> tuple[Callable, Any, int]:
        if self.neuron is not None:
            return self.neuron.step_and_params()
        return self.step, self.step_params, self.step_num_states

    def __call__(self, x: Array, *, state: tuple | None = None, return_state: bool = False):
        """Run over ``x[T, ..., F]``; ``state`` is ``(neuron_state_tuple, s_prev)`` (zeros if None).

        Returns ``spikes[T, ..., F]`` or ``(spikes, (neuron_state, s_last))`` with ``return_state``.
        """
        x = check_x(x)
        if x.shape[-1] != self.features:
            raise ValueError(f"x: last axis has {x.shape[-1]} features but this RecurrentSpiking layer was built "
                             f"with features={self.features} (x shape {tuple(x.shape)})")
        step, params, n = self._step()
        shape = tuple(x.shape[1:])
        if self.stateful:
            if state is not None:
                raise ValueError("state: a stateful layer carries its own state; call reset_state() "
                                 "or use stateful=False to pass state explicitly")
            state = self.carried.get_value()
            if state is not None and tuple(state[1].shape) != shape:
                raise ValueError(f"x: neuron shape {shape} does not match the carried state's shape "
                                 f"{tuple(state[1].shape)}; call reset_state() before changing shapes")
        if state is None:
            state = (tuple(jnp.zeros(shape, jnp.float32) for _ in range(n)), jnp.zeros(shape, jnp.float32))
        neuron_state, s_prev = state
        if len(neuron_state) != n:
            raise ValueError(f"state: the neuron has {n} state arrays, got {len(neuron_state)}")
        neuron_state = tuple(jnp.broadcast_to(jnp.asarray(v, jnp.float32), shape) for v in neuron_state)
        kernel = self.recurrent.kernel[...]
        bias = None if self.recurrent.bias is None else self.recurrent.bias[...]

        def body(carry, xt):
            st, s = carry
            current = xt.astype(jnp.float32) + s @ kernel
            if bias is not None:
                current = current + bias
            s_new, st = step(params, st, current)
            st = tuple(st)
            return (st, s_new.astype(jnp.float32)), s_new.astype(x.dtype)

        final, spikes = jax.lax.scan(body, (neuron_state, jnp.asarray(s_prev, jnp.float32)), x)
        if self.stateful:
            self.carried.set_value(final)
        return (spikes, final) if return_state else spikes

    def reset_state(self) -> None:
        """Forget the carried state (streaming mode); the next call starts from zeros."""
        self.carried.set_value(None)
