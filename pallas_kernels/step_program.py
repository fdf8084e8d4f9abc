"""A neuron step function turned into kernel-ready programs: its primal and its VJP, as jaxprs.

A step is ``step(params, state, x_t) -> (s_t, new_state)`` over per-neuron values (elementwise),
``params`` a pytree, ``state`` a tuple of arrays. :func:`trace_step` traces, once per block size,

* the primal ``(params leaves, state, x) -> (s, new_state)``, and
* the VJP ``(params leaves, state, x, g_s, g_new_state) -> (g_params leaves, g_state, g_x)``,
  derived by ``jax.vjp`` (custom_vjp surrogates included: their backward rules are traced here),

and checks what the kernels need: the right output structure, shapes and dtypes, no captured
arrays, and only primitives the chosen Pallas lowering implements. Kernels evaluate the programs
with :func:`StepProgram.primal` / :func:`StepProgram.vjp`, which inline calls (``jit``,
``custom_jvp``/``custom_vjp`` primal bodies, ``checkpoint``), drop dead equations and rewrite the
few primitives a lowering lacks into ones it has. Imports only jax.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

Array = jax.Array

__all__ = ["StepError", "StepProgram", "trace_step", "step_name"]

_F32 = jnp.float32

# primitives whose body is inlined (their param holding the body, in order of preference)
_INLINE = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
    "remat2": "jaxpr",
}


_NOT_ELEMENTWISE = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "argmax", "argmin",
    "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "dot_general", "sort", "gather", "scatter",
    "scatter-add", "dynamic_slice", "dynamic_update_slice", "rev", "transpose", "concatenate", "pad", "slice",
})
"""Primitives that mix values across neurons: a step using them is not elementwise."""


class StepError(ValueError):
    """A step function that the fused kernels cannot run (the message says why and names it)."""


def step_name(step: Callable) -> str:
    return getattr(step, "__qualname__", None) or getattr(step, "__name__", None) or repr(step)


# --- rewrites of primitives a lowering lacks -----------------------------------------------------


def _floor(x):
    t = x - jax.lax.rem(x, jnp.ones_like(x))
    return jnp.where(t > x, t - 1.0, t)


def _integer_pow(x, *, y: int):
    if y < -1:  # Mosaic GPU lowers only y = -1 and y >= 2
        return 1.0 / jax.lax.integer_pow(x, -y)
    if y in (0, 1):
        return jnp.ones_like(x) if y == 0 else x
    return jax.lax.integer_pow(x, y)


_REWRITES: dict[str, dict[str, Callable]] = {
    # Mosaic GPU (lane semantics) has no atan / floor / stop_gradient / ... : the same values from ops it has
    # (each rewrite takes the equation's operands and its params)
    "mosaic_gpu": {
        "stop_gradient": lambda x, **_: x,
        "add_any": lambda a, b, **_: jax.lax.add(a, b),
        "atan": lambda x, **_: jax.lax.atan2(x, jnp.ones_like(x)),
        "floor": lambda x, **_: _floor(x),
        "sqrt": lambda x, **_: jnp.where(x > 0, x * jax.lax.rsqrt(jnp.where(x > 0, x, 1.0)), 0.0 * x),
        "expm1": lambda x, **_: jax.lax.exp(x) - 1.0,
        "log1p": lambda x, **_: jax.lax.log(1.0 + x),
        "integer_pow": _integer_pow,
    },
    "triton": {},
    "interpret": {},
}


def _lowering_rules(lowering: str) -> set[str] | None:
    """Names of the primitives the Pallas ``lowering`` implements (None: unknown, do not check)."""
    try:
        if lowering in ("triton", "interpret"):
            from jax._src.pallas.triton import lowering as tl  # noqa: PLC0415

            return {p.name for p in tl.triton_lowering_rules}
        if lowering == "mosaic_gpu":
            from jax._src.pallas.mosaic_gpu import lowering as ml  # noqa: PLC0415

            sem = ml.mosaic_lowering_rules[(ml.LoweringSemantics.Lane, ml.PrimitiveSemantics.Warpgroup)]
            return {p.name for p in sem}
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - depends on the jax version
        return None
    return None


# --- the interpreter -----------------------------------------------------------------------------


def _read(env, v):
    return v.val if isinstance(v, jcore.Literal) else env[v]


def _live(jaxpr: jcore.Jaxpr) -> list[bool]:
    """Which equations contribute to the outputs (effect-free dead code dropped)."""
    used = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    keep = [False] * len(jaxpr.eqns)
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if eqn.effects or any(isinstance(o, jcore.Var) and o in used for o in eqn.outvars):
            keep[i] = True
            used.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    return keep


def _body(eqn) -> tuple[jcore.Jaxpr, Sequence] | None:
    key = _INLINE.get(eqn.primitive.name)
    if key is None or key not in eqn.params:
        return None
    body = eqn.params[key]
    if isinstance(body, jcore.ClosedJaxpr):
        return body.jaxpr, body.consts
    return body, ()


def _is_identity(eqn) -> bool:
    """An equation that returns its operand unchanged (what autodiff leaves behind, e.g. the
    ``reduce_sum`` over no axes that un-broadcasts a same-shaped cotangent); some lowerings lack it."""
    name, params = eqn.primitive.name, eqn.params
    if name == "reduce_sum":
        return not params["axes"]
    if name in ("broadcast_in_dim", "reshape"):
        inv = eqn.invars[0]
        return hasattr(inv, "aval") and inv.aval.shape == eqn.outvars[0].aval.shape
    return False


def eval_inlined(jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence, lowering: str) -> list:
    """Evaluate ``jaxpr`` by binding its primitives in the current trace (a kernel body), inlining
    calls, dropping dead equations and applying the ``lowering``'s rewrites."""
    rewrites = _REWRITES[lowering]
    env = {}
    for v, val in zip(jaxpr.constvars, consts, strict=True):
        env[v] = val
    for v, val in zip(jaxpr.invars, args, strict=True):
        env[v] = val
    for eqn, keep in zip(jaxpr.eqns, _live(jaxpr), strict=True):
        if not keep:
            continue
        invals = [_read(env, v) for v in eqn.invars]
        name = eqn.primitive.name
        body = _body(eqn)
        if body is not None:
            sub, sub_consts = body  # a custom_*_call's consts are leading invars of its body, as here
            outs = eval_inlined(sub, sub_consts, invals, lowering)
        elif _is_identity(eqn):
            outs = [invals[0]]
        elif name in rewrites:
            outs = rewrites[name](*invals, **eqn.params)
            outs = [outs] if not isinstance(outs, (list, tuple)) else list(outs)
        else:
            outs = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, val in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jcore.DropVar):
                env[v] = val
    return [_read(env, v) for v in jaxpr.outvars]


def _primitives(jaxpr: jcore.Jaxpr, lowering: str, out: set[str]) -> set[str]:
    """The primitives that :func:`eval_inlined` binds (control-flow bodies included)."""
    rewrites = _REWRITES[lowering]
    for eqn, keep in zip(jaxpr.eqns, _live(jaxpr), strict=True):
        if not keep:
            continue
        body = _body(eqn)
        if body is not None:
            _primitives(body[0], lowering, out)
            continue
        if eqn.primitive.name in rewrites or _is_identity(eqn):
            continue
        out.add(eqn.primitive.name)
        for sub in jcore.jaxprs_in_params(eqn.params):
            _primitives(sub, lowering, out)
    return out


# --- tracing -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepProgram:
    """The primal and VJP jaxprs of a step at one block shape (see the module docstring)."""

    name: str
    num_params: int
    num_states: int
    primal_jaxpr: jcore.ClosedJaxpr
    vjp_jaxpr: jcore.ClosedJaxpr
    lowering: str

    def primal(self, params: Sequence[Array], state: Sequence[Array], x: Array) -> tuple[Array, tuple]:
        out = eval_inlined(self.primal_jaxpr.jaxpr, self.primal_jaxpr.consts, [*params, *state, x],
                           self.lowering)
        return out[0], tuple(out[1:])

    def vjp(self, params, state, x, g_s, g_state) -> tuple[list, tuple, Array]:
        """Cotangents ``(g_params, g_state_before, g_x)`` of one step given those of its outputs."""
        out = eval_inlined(self.vjp_jaxpr.jaxpr, self.vjp_jaxpr.consts,
                           [*params, *state, x, g_s, *g_state], self.lowering)
        P, n = self.num_params, self.num_states
        return out[:P], tuple(out[P:P + n]), out[P + n]

    def chunk_backward(self, params, state, xs, g_ss, g_seqs, g_state, acc, emit: Callable) -> tuple[tuple, tuple]:
        """The backward of one chunk of ``len(xs)`` steps from its first ``state``: recompute the states,
        then apply the VJP from the last step to the first, handing each step's ``g_x`` to
        ``emit(i, g_x)`` as soon as it exists. ``g_seqs[i]`` (or None) are the cotangents of the states
        after step ``i`` (``return_states``); ``acc`` accumulates the parameter gradients.
        Returns ``(g_state before the chunk, acc)``."""
        states = []
        for i in range(len(xs)):
            states.append(state)
            if i + 1 < len(xs):
                _, state = self.primal(params, state, xs[i])
        for i in reversed(range(len(xs))):
            g_new = g_state if g_seqs is None else tuple(g + q for g, q in zip(g_state, g_seqs[i], strict=True))
            g_p, g_state, g_x = self.vjp(params, states[i], xs[i], g_ss[i], g_new)
            acc = tuple(a + g for a, g in zip(acc, g_p, strict=True))
            emit(i, g_x)
        return g_state, acc


def _scalar_consts(closed: jcore.ClosedJaxpr, name: str) -> jcore.ClosedJaxpr:
    """Captured constants as Python scalars (kernels cannot capture arrays); refuse array ones."""
    consts = []
    for c in closed.consts:
        shape = getattr(c, "shape", ())
        if shape != ():
            raise StepError(
                f"step function {name!r} closes over an array of shape {tuple(shape)}; the fused kernels "
                "cannot capture arrays: pass it through params (a per-channel array over the last axis), "
                "or use backend='xla'"
            )
        consts.append(c.item() if hasattr(c, "item") else c)
    return jcore.ClosedJaxpr(closed.jaxpr, consts)


@functools.cache
def check_captures(step: Callable, params_treedef, num_params: int, num_states: int, num_neurons: int) -> None:
    """Refuse a step that closes over an array (it would capture it into the kernel), tracing it at the
    neurons' own size ``[num_neurons]`` (where a captured per-neuron array still broadcasts)."""
    vec = jax.ShapeDtypeStruct((num_neurons,), _F32)

    def flat_step(*args):
        params = jax.tree.unflatten(params_treedef, args[:num_params])
        return step(params, tuple(args[num_params:num_params + num_states]), args[-1])

    try:
        closed = jax.make_jaxpr(flat_step)(*([vec] * (num_params + num_states + 1)))
    except Exception:  # noqa: BLE001 - tracing problems are reported by trace_step, with the reason
        return
    _scalar_consts(closed, step_name(step))


@functools.cache
def trace_step(step: Callable, params_treedef, num_params: int, num_states: int, block: int,
               lowering: str) -> StepProgram:
    """Trace ``step`` into a :class:`StepProgram` for ``[block]`` vectors (float32 everywhere).

    ``lowering`` is ``"triton"``, ``"mosaic_gpu"`` or ``"interpret"`` (checked against the Triton
    lowering's primitives, so CPU runs catch what the GPU would refuse).
    """
    name = step_name(step)
    vec = jax.ShapeDtypeStruct((block,), _F32)

    def flat_step(*args):
        params = jax.tree.unflatten(params_treedef, args[:num_params])
        state = tuple(args[num_params:num_params + num_states])
        s, new = step(params, state, args[-1])
        return (s, *_as_state(new, num_states, name))

    def flat_vjp(*args):
        P, n = num_params, num_states
        primals = args[:P + n + 1]
        g_s, g_new = args[P + n + 1], args[P + n + 2:]
        _, pull = jax.vjp(flat_step, *primals)
        return pull((g_s, *g_new))

    avals = [vec] * (num_params + num_states + 1)
    try:
        primal = jax.make_jaxpr(flat_step)(*avals)
    except StepError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's function failed to trace: say so, with why
        raise StepError(
            f"step function {name!r} could not be traced on per-neuron float32 [{block}] vectors "
            f"({type(err).__name__}: {err}); the fused kernels need an elementwise jnp function; "
            "backend='xla' runs any step"
        ) from None
    for i, aval in enumerate(primal.out_avals):
        what = "the spike" if i == 0 else f"state[{i - 1}]"
        if aval.shape != (block,) or not jnp.issubdtype(aval.dtype, jnp.floating):
            raise StepError(
                f"step function {name!r}: {what} has shape {aval.shape} and dtype {aval.dtype} for "
                f"per-neuron inputs of shape ({block},); a step must be elementwise and return floating "
                "values of its inputs' shape (backend='xla' runs other steps)"
            )
    coupled = sorted(_primitives(primal.jaxpr, lowering, set()) & _NOT_ELEMENTWISE)
    if coupled:
        raise StepError(
            f"step function {name!r} uses {', '.join(coupled)}, so it is not elementwise over the neurons "
            "(the kernels run blocks of neurons apart); backend='xla' runs it"
        )
    primal = _scalar_consts(primal, name)
    vjp = _scalar_consts(jax.make_jaxpr(flat_vjp)(*avals, *([vec] * (1 + num_states))), name)
    rules = _lowering_rules(lowering)
    if rules is not None:
        for closed, what in ((primal, "forward"), (vjp, "backward")):
            missing = sorted(_primitives(closed.jaxpr, lowering, set()) - rules)
            if missing:
                target = "Mosaic GPU" if lowering == "mosaic_gpu" else "Triton"
                raise StepError(
                    f"step function {name!r} uses {', '.join(missing)} in its {what} pass, which the Pallas "
                    f"{target} lowering does not implement; rewrite it with other jnp operations or use "
                    "backend='xla'"
                )
    return StepProgram(name, num_params, num_states, primal, vjp, lowering)


def _as_state(new, num_states: int, name: str) -> tuple:
    if not isinstance(new, (tuple, list)) or len(new) != num_states:
        got = f"a {type(new).__name__} of {len(new)}" if isinstance(new, (tuple, list)) else type(new).__name__
        raise StepError(
            f"step function {name!r} must return (spike, new_state) with new_state a tuple of {num_states} "
            f"arrays like the state it was given, got {got}"
        )
    return tuple(new)
