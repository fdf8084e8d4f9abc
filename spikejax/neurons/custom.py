"""Any neuron from one step function: ``custom_neuron(step)``.

A researcher writes the neuron once, as a pure jnp step over per-neuron values::

    def cuba(params, state, x_t):                 # params: a pytree, state: a tuple of arrays
        i, v = state
        i = params["alpha"] * i + x_t
        h = params["beta"] * v + i
        s = sj.surrogate.atan(alpha=2.0)(h - params["threshold"])
        return s, (i, h - s * params["threshold"])             # (spike_t, new_state)

    neuron = sj.custom_neuron(cuba)
    spikes, final_state = neuron(x, {"alpha": 0.8, "beta": 0.9, "threshold": 1.0})   # x[T, ...]

and gets the ``lax.scan`` reference (``backend="xla"``) and the fused Pallas forward and backward
(``"pallas"`` on a GPU, ``"pallas_interpret"`` anywhere), both from that one definition; ``"auto"``
picks the measured-fastest. The contract:

* ``x[T, ...]``: time first, rank >= 2, floating; ``x_t`` reaches the step as float32 and the spike
  is returned in ``x``'s dtype.
* ``params``: a pytree (dicts, tuples, :class:`spikejax.surrogate.Surrogate` values, ...) whose
  leaves are scalars or arrays broadcastable to the neuron shape ``x.shape[1:]`` (e.g. one value
  per channel, ``[C]`` over the last axis). Inside the step every leaf is a float32 vector over the
  neurons (or a ``[1]`` value for all), so the step must be elementwise; a scalar known at trace time
  (a Python number, not a traced value) arrives as a 0-d float32 constant, for which no gradient is
  computed (nothing can request one).
* ``state``: a tuple of ``num_states`` arrays over the neurons (float32); None means zeros.
* Returns ``(spikes[T, ...], final_state)``, plus the state trajectories (a tuple of ``[T, ...]``,
  the state after each step) with ``return_states=True``.

Gradients reach ``x``, the initial state, every parameter leaf (per-channel gradients summed over
time inside the kernel) and a learnable surrogate's α. ``jit``, ``vmap``, ``grad`` and
``lax.scan``/``nnx.scan`` compose. A step the kernels cannot run (wrong output structure, shapes or
dtypes, a captured array, an operation the Pallas lowering lacks) raises a ``ValueError`` naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spikejax import backends as _backends
from spikejax import checks as _checks

Array = jax.Array

__all__ = ["CustomNeuron", "broadcast_flat", "check_args", "check_choice", "check_finite", "check_range", "check_x",
           "concrete", "custom_neuron", "flat_param"]

MAX_STATES = 8
"""The most state variables :func:`custom_neuron` tries when it infers ``num_states``."""


def check_x(x) -> Array:
    """``x`` as an array of rank >= 2 (time first), floating, with at least one step."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x: expected rank >= 2 with time first, [T, ...neurons], got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected a floating dtype (float32, bfloat16, float16), got {x.dtype}")
    if x.shape[0] < 1 or 0 in x.shape[1:]:
        raise ValueError(f"x: expected at least one time step and one neuron, got shape {tuple(x.shape)}")
    return x


def concrete(value) -> np.ndarray | None:
    """The value as numpy if it is known at trace time, else None (a tracer)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        return None


def check_finite(name: str, host: np.ndarray | None) -> None:
    """Refuse a concrete float value with a NaN or inf in it, naming ``name``."""
    if host is not None and host.dtype.kind in "fc" and host.size and not np.all(np.isfinite(host)):
        raise ValueError(f"{name}: expected finite values, got {host.ravel()[~np.isfinite(host.ravel())][0]}")


def check_range(name: str, value, *, low=None, high=None, low_open: bool = False) -> None:
    """Refuse values of ``name`` outside ``[low, high]`` (``(low, high]`` with ``low_open``) or not finite.

    A value known at trace time is checked now (``ValueError`` naming ``name``); a traced one is checked
    under :func:`spikejax.checks.checked` (checkify), and passes unchecked otherwise.
    """
    host = concrete(value)
    if host is None:
        _checks.check_range(name, value, low=low, high=high, low_open=low_open)
        return
    check_finite(name, host)
    if not host.size:
        return
    if low is not None and (np.any(host <= low) if low_open else np.any(host < low)):
        raise ValueError(f"{name}: expected values {'>' if low_open else '>='} {low}, got min {host.min()}")
    if high is not None and np.any(host > high):
        raise ValueError(f"{name}: expected values <= {high}, got max {host.max()}")


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the names ``choices``, else a ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: unknown {name} {value!r}; expected one of {choices}")
    return value


def _neuron_shape(values: dict[str, Any], neuron_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if neuron_shape:
        return tuple(neuron_shape)
    try:
        shape = np.broadcast_shapes(*(np.shape(v) for v in values.values() if isinstance(v, (np.ndarray, jax.Array))))
    except ValueError:  # parameters that do not broadcast together: the neuron names the first one
        shape = ()
    return shape or (1,)


@functools.lru_cache(maxsize=4096)
def _check_args_cached(fn: Callable, items: tuple, neuron_shape: tuple[int, ...]) -> None:
    x = jax.ShapeDtypeStruct((1, *neuron_shape), jnp.float32)
    jax.eval_shape(lambda x: fn(x, **{k: v for k, _, v in items}), x)


def check_args(fn: Callable, kwargs: dict[str, Any], neuron_shape: tuple[int, ...] | None = None) -> None:
    """Validate the keyword arguments of the functional neuron ``fn`` without running it.

    ``fn(x[1, *neuron_shape], **kwargs)`` is traced abstractly (``jax.eval_shape``: nothing is computed), so
    every check of the functional neuron runs on the given (concrete) values and raises its ``ValueError`` /
    ``TypeError`` naming the argument. ``neuron_shape`` defaults to the parameters' broadcast shape. Argument
    sets of hashable values are checked once.
    """
    shape = _neuron_shape(kwargs, neuron_shape)
    items = tuple((k, type(v), v) for k, v in sorted(kwargs.items()))  # the type: True == 1 but not as levels
    try:
        hash(items)
    except TypeError:  # array-valued parameters: check this set without remembering it
        jax.eval_shape(lambda x: fn(x, **kwargs), jax.ShapeDtypeStruct((1, *shape), jnp.float32))
        return
    _check_args_cached(fn, items, shape)


def broadcast_flat(name: str, value, neuron_shape: tuple[int, ...], hint: str = "") -> Array:
    """``value`` broadcast to the neuron shape, as a flat ``[M]`` float32 vector."""
    arr = jnp.asarray(value)
    try:
        out = jnp.broadcast_to(arr, neuron_shape)
    except ValueError:
        raise ValueError(
            f"{name}: shape {tuple(arr.shape)} is not broadcastable to the neuron shape {neuron_shape} {hint}".rstrip()
        ) from None
    return out.astype(jnp.float32).reshape(-1)


def flat_param(name: str, value, neuron_shape: tuple[int, ...]) -> Array | np.float32:
    """A parameter as a float32 constant (a 0-d ``np.float32``) when it is one value known at trace
    time, as float32 ``[1]`` when it is one traced value, else broadcast to the neuron shape and
    flattened to ``[M]`` (a shape that does not broadcast is refused, naming ``name``).

    A value known at trace time (a Python number, a NumPy or concrete JAX array) cannot be
    differentiated in that trace, so it stays a constant of the step: the kernels compute no
    gradient for it (:func:`spikejax.backends.scan`)."""
    if jnp.size(value) == 1:
        host = concrete(value)
        if host is not None:
            return np.float32(host.reshape(-1)[0])
        return jnp.asarray(value, jnp.float32).reshape(1)
    return broadcast_flat(name, value, neuron_shape,
                          f"(use a scalar or one value per channel, shape ({neuron_shape[-1]},))")


def _flat_params(params, neuron_shape: tuple[int, ...]):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    flat = []
    for path, leaf in leaves:
        name = f"params{jax.tree_util.keystr(path)}"
        check_range(name, leaf)  # finite: now when concrete, under checks.checked when traced
        flat.append(flat_param(name, leaf, neuron_shape))
    return jax.tree.unflatten(treedef, flat)


def _flat_state(state, num_states: int, neuron_shape: tuple[int, ...], name: str) -> tuple[Array, ...]:
    M = math.prod(neuron_shape)
    if state is None:
        return tuple(jnp.zeros((M,), jnp.float32) for _ in range(num_states))
    if not isinstance(state, (tuple, list)):
        state = (state,)
    if len(state) != num_states:
        raise ValueError(f"state: step function {name!r} has {num_states} state variables, got {len(state)}")
    return tuple(broadcast_flat(f"state[{i}]", v, neuron_shape) for i, v in enumerate(state))


def _check_step(step: Callable, params, num_states: int, M: int, name: str) -> None:
    """Trace the step once on abstract values and check what it returns."""
    vec = jax.ShapeDtypeStruct((M,), jnp.float32)
    try:
        out = jax.eval_shape(step, params, (vec,) * num_states, vec)
    except Exception as err:  # noqa: BLE001 - the user's function failed: say which and why
        raise ValueError(
            f"step function {name!r} failed on per-neuron float32 [{M}] inputs with {num_states} state "
            f"variable(s): {type(err).__name__}: {err}"
        ) from None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (tuple, list))
            and len(out[1]) == num_states):
        raise ValueError(
            f"step function {name!r} must return (spike, new_state) with new_state a tuple of {num_states} "
            f"arrays, got {jax.tree.structure(out)}"
        )
    for what, aval in [("the spike", out[0])] + [(f"state[{i}]", a) for i, a in enumerate(out[1])]:
        if getattr(aval, "shape", None) != (M,) or not jnp.issubdtype(aval.dtype, jnp.floating):
            raise ValueError(
                f"step function {name!r}: {what} has shape {getattr(aval, 'shape', None)} and dtype "
                f"{getattr(aval, 'dtype', None)}; expected float values of the neurons' shape ({M},) "
                "(a step is elementwise over the neurons)"
            )


def _infer_num_states(step: Callable, params, M: int, name: str) -> int:
    vec = jax.ShapeDtypeStruct((M,), jnp.float32)
    for n in range(1, MAX_STATES + 1):
        try:
            out = jax.eval_shape(step, params, (vec,) * n, vec)
        except Exception:  # noqa: BLE001, S112 - a wrong guess of the state size fails somewhere inside
            continue
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (tuple, list)) and len(out[1]) == n:
            return n
    raise ValueError(
        f"step function {name!r}: could not infer its number of state variables (tried tuples of 1 to "
        f"{MAX_STATES} arrays); pass custom_neuron(step, num_states=N)"
    )


@functools.cache
def _checked_num_states(step: Callable, treedef, shapes: tuple, num_states: int | None, M: int, name: str) -> int:
    """The step's number of states (``num_states``, or inferred), after checking what it returns; traced on
    abstract values once per step, parameter structure and neuron count (not on every eager call)."""
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(sh, jnp.float32) for sh in shapes])
    n = num_states or _infer_num_states(step, params, M, name)
    _check_step(step, params, n, M, name)
    return n


@dataclasses.dataclass(frozen=True)
class CustomNeuron:
    """A neuron defined by its step function; call it on ``x[T, ...]`` (see the module docstring)."""

    step: Callable[[Any, tuple, Array], tuple[Array, tuple]]
    num_states: int | None = None
    name: str = ""

    def __post_init__(self):
        if not callable(self.step):
            raise TypeError(f"step: expected a function step(params, state, x_t), got {type(self.step)!r}")
        if self.num_states is not None and (not isinstance(self.num_states, int) or self.num_states < 1):
            raise ValueError(f"num_states: expected a positive integer, got {self.num_states!r}")
        if not self.name:
            object.__setattr__(self, "name", _backends.step_name(self.step))

    def __call__(self, x, params=None, state=None, *, backend: str = "auto", return_states: bool = False):
        """Run the neuron over ``x[T, ...]``; returns ``(spikes, final_state[, states])``."""
        x = check_x(x)
        T, neuron_shape = x.shape[0], tuple(x.shape[1:])
        M = math.prod(neuron_shape)
        flat = _flat_params({} if params is None else params, neuron_shape)
        leaves, treedef = jax.tree.flatten(flat)
        n = _checked_num_states(self.step, treedef, tuple(q.shape for q in leaves), self.num_states, M, self.name)
        state0 = _flat_state(state, n, neuron_shape, self.name)
        spikes, final, states = _backends.scan(self.step, x.reshape(T, M), state0, flat, backend=backend,
                                               return_states=return_states)
        spikes = spikes.reshape(x.shape)
        final = tuple(v.reshape(neuron_shape) for v in final)
        if return_states:
            return spikes, final, tuple(s.reshape(x.shape) for s in states)
        return spikes, final


def custom_neuron(step: Callable, *, num_states: int | None = None, name: str | None = None) -> CustomNeuron:
    """Turn ``step(params, state, x_t) -> (spike_t, new_state)`` into a neuron on every backend.

    ``num_states`` (the length of the state tuple) is inferred when not given; ``name`` defaults to
    the function's. Usable as a decorator. See the module docstring for the contract.
    """
    return CustomNeuron(step, num_states, name or "")
