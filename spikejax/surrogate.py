"""Surrogate gradients for the Heaviside spike function.

A spike is ``S = Θ(x)`` with ``x = H - θ`` (membrane minus threshold) and ``Θ(x) = 1[x >= 0]``
(SpikingJelly's convention). Θ has zero derivative almost everywhere, so the backward pass uses
the derivative ``σ'_α(x)`` of a smooth relaxation ``σ_α(x) ≈ Θ(x)`` instead. Every shape below is a
:class:`Surrogate` with the relaxation ``σ_α`` (:meth:`Surrogate.relaxation`), its ``x``-derivative
(:meth:`Surrogate.grad`) and its ``α``-derivative (:meth:`Surrogate.grad_alpha`), so the steepness
``α`` itself can be learned: the gradient reaching ``α`` is that of the relaxation.

=================  ==========================================  ======================================
name               σ'_α(x)                                     σ_α(x)
=================  ==========================================  ======================================
``atan``           α / (2 (1 + (π α x / 2)²))                  arctan(π α x / 2) / π + 1/2
``sigmoid``        α sig(αx) (1 - sig(αx))                     sig(αx)
``fast_sigmoid``   1 / (1 + α|x|)²        (SuperSpike/snnTorch) 1/2 + x / (1 + α|x|)
``triangular``     α max(0, 1 - α|x|)                          1/2 + sign(x)(α|x| - α²x²/2), clipped
``rectangular``    α 1[|x| < 1/(2α)]      (STE window)         clip(αx + 1/2, 0, 1)
=================  ==========================================  ======================================

Usage::

    spike = spikejax.surrogate.atan(alpha=2.0)
    s = spike(v - 1.0)                      # forward: Heaviside; backward: σ'_α
    learn = spikejax.surrogate.learnable("sigmoid", alpha_init=4.0)   # α is a trainable leaf
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "Surrogate",
    "SURROGATES",
    "atan",
    "sigmoid",
    "fast_sigmoid",
    "superspike",
    "triangular",
    "rectangular",
    "ste",
    "learnable",
    "custom",
    "CustomSurrogate",
    "spike_count",
    "get",
    "heaviside",
    "spike",
]


def heaviside(x: Array) -> Array:
    """Θ(x) = 1 where x >= 0, else 0, in x's dtype."""
    return (x >= 0).astype(x.dtype)


# --- the formulas: (relaxation, d/dx, d/dalpha) per shape ------------------------------------


def _atan_relax(x, a):
    return jnp.arctan(0.5 * math.pi * a * x) / math.pi + 0.5


def _atan_grad(x, a):
    return 0.5 * a / (1.0 + (0.5 * math.pi * a * x) ** 2)


def _atan_grad_alpha(x, a):
    return 0.5 * x / (1.0 + (0.5 * math.pi * a * x) ** 2)


def _sigmoid_relax(x, a):
    return jax.nn.sigmoid(a * x)


def _sigmoid_grad(x, a):
    s = jax.nn.sigmoid(a * x)
    return a * s * (1.0 - s)


def _sigmoid_grad_alpha(x, a):
    s = jax.nn.sigmoid(a * x)
    return x * s * (1.0 - s)


def _fast_sigmoid_relax(x, a):
    return 0.5 + x / (1.0 + a * jnp.abs(x))


def _fast_sigmoid_grad(x, a):
    return 1.0 / (1.0 + a * jnp.abs(x)) ** 2


def _fast_sigmoid_grad_alpha(x, a):
    return -x * jnp.abs(x) / (1.0 + a * jnp.abs(x)) ** 2


def _triangular_relax(x, a):
    ax = jnp.minimum(a * jnp.abs(x), 1.0)
    return 0.5 + jnp.sign(x) * (ax - 0.5 * ax * ax)


def _triangular_grad(x, a):
    return a * jnp.maximum(0.0, 1.0 - a * jnp.abs(x))


def _triangular_grad_alpha(x, a):
    inside = a * jnp.abs(x) < 1.0
    return jnp.where(inside, x * (1.0 - a * jnp.abs(x)), 0.0)


def _rectangular_relax(x, a):
    return jnp.clip(a * x + 0.5, 0.0, 1.0)


def _rectangular_grad(x, a):
    return jnp.where(jnp.abs(a * x) < 0.5, a, 0.0).astype(jnp.result_type(x, a))


def _rectangular_grad_alpha(x, a):
    return jnp.where(jnp.abs(a * x) < 0.5, x, 0.0).astype(jnp.result_type(x, a))


_Formula = tuple[Callable, Callable, Callable]

SURROGATES: dict[str, tuple[_Formula, float]] = {
    "atan": ((_atan_relax, _atan_grad, _atan_grad_alpha), 2.0),
    "sigmoid": ((_sigmoid_relax, _sigmoid_grad, _sigmoid_grad_alpha), 4.0),
    "fast_sigmoid": ((_fast_sigmoid_relax, _fast_sigmoid_grad, _fast_sigmoid_grad_alpha), 25.0),
    "triangular": ((_triangular_relax, _triangular_grad, _triangular_grad_alpha), 1.0),
    "rectangular": ((_rectangular_relax, _rectangular_grad, _rectangular_grad_alpha), 1.0),
}
"""name -> ((relaxation, d/dx, d/dalpha), default alpha)."""

_ALIASES = {"superspike": "fast_sigmoid", "ste": "rectangular", "arctan": "atan"}


def _canonical(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in SURROGATES:
        raise ValueError(
            f"surrogate: unknown shape {name!r}; expected one of "
            f"{sorted(SURROGATES) + sorted(_ALIASES)}"
        )
    return name


# --- the Heaviside with a surrogate backward --------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def spike(shape: str, x: Array, alpha: Array) -> Array:
    """Θ(x) forward; backward ``(g σ'_α(x), Σ g ∂σ_α(x)/∂α)`` for the named ``shape``."""
    return heaviside(x)


def _spike_fwd(shape, x, alpha):
    return heaviside(x), (x, alpha)


def _spike_bwd(shape, res, g):
    x, alpha = res
    (_, grad, grad_alpha) = SURROGATES[shape][0]
    a = jnp.asarray(alpha, jnp.float32)
    xf = x.astype(jnp.float32)
    gf = g.astype(jnp.float32)
    gx = (gf * grad(xf, a)).astype(x.dtype)
    ga = gf * grad_alpha(xf, a)
    # reduce the alpha gradient to alpha's (broadcastable) shape
    alpha_arr = jnp.asarray(alpha)
    extra = ga.ndim - alpha_arr.ndim
    ga = ga.sum(axis=tuple(range(extra)))
    keep = tuple(i for i, d in enumerate(alpha_arr.shape) if d == 1 and ga.shape[i] != 1)
    ga = ga.sum(axis=keep, keepdims=True).reshape(alpha_arr.shape)
    return gx, ga.astype(alpha_arr.dtype) if jnp.issubdtype(alpha_arr.dtype, jnp.floating) else ga


spike.defvjp(_spike_fwd, _spike_bwd)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A Heaviside spike with a named surrogate derivative.

    Attributes:
      shape: one of ``SURROGATES`` (static).
      alpha: steepness ``α``; a float, or an array (per channel, broadcastable to the neurons)
        which is a pytree leaf and so receives gradients (see :func:`learnable`).
      learnable: informational flag set by :func:`learnable` (static).

    ``surrogate(x)`` returns ``Θ(x)`` with backward ``σ'_α(x)``.
    """

    shape: str = dataclasses.field(metadata=dict(static=True))
    alpha: Array | float = 1.0
    learnable: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def __post_init__(self):
        object.__setattr__(self, "shape", _canonical(self.shape))

    def __call__(self, x: Array) -> Array:
        return spike(self.shape, x, self.alpha)

    def relaxation(self, x: Array) -> Array:
        """The smooth function σ_α(x) whose derivatives the backward pass uses."""
        return SURROGATES[self.shape][0][0](x, self.alpha)

    def grad(self, x: Array) -> Array:
        """σ'_α(x) = dσ_α/dx, the surrogate derivative."""
        return SURROGATES[self.shape][0][1](x, self.alpha)

    def grad_alpha(self, x: Array) -> Array:
        """∂σ_α(x)/∂α, the gradient that trains a learnable α."""
        return SURROGATES[self.shape][0][2](x, self.alpha)


def _factory(name: str):
    default = SURROGATES[name][1]

    def make(alpha: float | Array = default) -> Surrogate:
        return Surrogate(name, alpha)

    make.__name__ = name
    make.__doc__ = (
        f"The ``{name}`` surrogate (default α = {default}); see the module table for σ'_α."
    )
    return make


atan = _factory("atan")
sigmoid = _factory("sigmoid")
fast_sigmoid = _factory("fast_sigmoid")
superspike = fast_sigmoid
triangular = _factory("triangular")
rectangular = _factory("rectangular")
ste = rectangular


def learnable(shape: str = "atan", alpha_init: float | Array = None) -> Surrogate:
    """A surrogate whose steepness α is a trainable array (a pytree leaf of the result).

    ``alpha_init`` may be a float or an array (e.g. one α per channel). The gradient reaching α is
    ``Σ g ∂σ_α(x)/∂α``: the gradient of the smooth relaxation, since Θ itself does not depend on α.
    """
    shape = _canonical(shape)
    if alpha_init is None:
        alpha_init = SURROGATES[shape][1]
    return Surrogate(shape, jnp.asarray(alpha_init, jnp.float32), learnable=True)


# --- user-defined surrogates -------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _custom_spike(derivative: Callable, x: Array) -> Array:
    return heaviside(x)


def _custom_spike_fwd(derivative, x):
    return heaviside(x), x


def _custom_spike_bwd(derivative, x, g):
    d = derivative(x.astype(jnp.float32))
    return ((g.astype(jnp.float32) * d).astype(x.dtype),)


_custom_spike.defvjp(_custom_spike_fwd, _custom_spike_bwd)


@dataclasses.dataclass(frozen=True)
class CustomSurrogate:
    """A Heaviside spike whose backward is a user-given derivative ``u -> dS/du`` (see :func:`custom`).

    Hashable and static (no array leaves): ``derivative`` must be a pure jnp function of ``u`` alone;
    constants it needs are Python numbers in its definition (for a learnable steepness use a named
    shape with :func:`learnable`).
    """

    derivative: Callable[[Array], Array]
    name: str

    def __call__(self, x: Array) -> Array:
        return _custom_spike(self.derivative, x)

    def grad(self, x: Array) -> Array:
        """The surrogate derivative dS/du at ``x``."""
        return self.derivative(x)


def custom(derivative: Callable[[Array], Array], name: str | None = None) -> CustomSurrogate:
    """Turn any jnp derivative ``u -> dS/du`` into a spike function usable in every backend.

    ``spike = custom(lambda u: 1 / (1 + 10 * jnp.abs(u)) ** 2, name="my_fast_sigmoid")`` gives
    ``spike(u) = Θ(u)`` forward and ``g · derivative(u)`` backward, elementwise. Use it inside a step
    function (:func:`spikejax.custom_neuron`) or as ``surrogate=`` of the built-in neurons on the
    ``xla`` and ``pallas`` backends (the hand-written Triton kernels know only the named shapes).
    """
    if not callable(derivative):
        raise TypeError(f"derivative: expected a function u -> dS/du, got {type(derivative)!r}")
    try:
        probe = jax.eval_shape(derivative, jax.ShapeDtypeStruct((3,), jnp.float32))
    except Exception as err:  # noqa: BLE001 - report what the user's function raised
        raise ValueError(f"derivative: calling it on a float32 [3] array failed: {err}") from None
    if getattr(probe, "shape", None) != (3,):
        raise ValueError(
            "derivative: expected an elementwise function (same shape out as in), got shape "
            f"{getattr(probe, 'shape', None)} for a [3] input"
        )
    return CustomSurrogate(derivative, name or getattr(derivative, "__name__", "custom"))


# --- multi-level spike counts -----------------------------------------------------------------

UNROLL_LEVELS = 16
"""Spike counts of up to this many levels are unrolled; more levels run a ``fori_loop``."""


def _level_sum(levels: int, body, init):
    if levels <= UNROLL_LEVELS:
        acc = init
        for k in range(1, levels + 1):
            acc = body(k, acc)
        return acc
    return jax.lax.fori_loop(1, levels + 1, body, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _count(surr, levels: int, h: Array, thr: Array, alpha: Array) -> Array:
    return _level_sum(levels, lambda k, acc: acc + heaviside(h - k * thr), jnp.zeros_like(h))


def _count_fwd(surr, levels, h, thr, alpha):
    return _count(surr, levels, h, thr, alpha), (h, thr, alpha)


def _count_bwd(surr, levels, res, g):
    h, thr, alpha = res

    def body(k, acc):
        gh, gthr, ga = acc
        u = h - k * thr
        if isinstance(surr, CustomSurrogate):
            d, da = surr.derivative(u), jnp.zeros_like(u)
        else:
            d, da = SURROGATES[surr][0][1](u, alpha), SURROGATES[surr][0][2](u, alpha)
        return gh + g * d, gthr - k * g * d, ga + g * da

    z = jnp.zeros_like(h)
    gh, gthr, ga = _level_sum(levels, body, (z, z, z))
    return gh, gthr, ga


_count.defvjp(_count_fwd, _count_bwd)


def spike_count(surrogate: Surrogate | CustomSurrogate, levels: int, h: Array, thr: Array) -> Array:
    """The multi-level spike ``Σ_{k=1..L} Θ(h - kθ)`` (an integer count 0..L) with the surrogate
    backward ``Σ_k σ'_α(h - kθ)`` (and ``-Σ_k k σ'_α(h - kθ)`` to θ, ``Σ_k ∂σ_α/∂α`` to α).

    Elementwise over ``h`` and ``thr`` (same shape); O(1) residuals per call whatever ``L`` is.
    """
    thr = jnp.broadcast_to(jnp.asarray(thr, h.dtype), h.shape)  # autodiff sums the broadcast back
    if isinstance(surrogate, CustomSurrogate):
        return _count(surrogate, levels, h, thr, jnp.zeros_like(h))
    alpha = jnp.broadcast_to(jnp.asarray(surrogate.alpha, h.dtype), h.shape)
    return _count(surrogate.shape, levels, h, thr, alpha)


def get(surrogate: str | Surrogate | CustomSurrogate | None) -> Surrogate | CustomSurrogate:
    """Accept a Surrogate or CustomSurrogate, a name (default α), or None (atan)."""
    if surrogate is None:
        return atan()
    if isinstance(surrogate, (Surrogate, CustomSurrogate)):
        return surrogate
    if isinstance(surrogate, str):
        name = _canonical(surrogate)
        return Surrogate(name, SURROGATES[name][1])
    raise TypeError(
        f"surrogate: expected a spikejax.surrogate.Surrogate or a name, got {type(surrogate)!r}"
    )
