"""Training memory: rematerialisation modes for backpropagation through time.

BPTT keeps every intermediate of every time step for the backward pass, so training memory grows
with ``T · layers``. A model config's ``remat`` field (``spikejax.models.create(name, remat=...)``,
``spikejax train --remat``) picks what each block keeps instead; every mode computes the same
gradients (the forward is recomputed, not changed; see "Gradients" below for the rounding):

=============  ======================================================================================
mode           what each block keeps for the backward pass (the rest is recomputed, neurons included)
=============  ======================================================================================
``"none"``     everything (plain autodiff; the fastest step, the largest peak)
``"block"``    its input; the backward recomputes the whole block, then differentiates it (a model's last
               block runs plainly: :func:`remat_modes`)
``"spikes"``   its input and the spikes of its neurons, bit-packed: binary spikes 1 bit each (32 to a
               ``uint32``), ternary ``a·S`` 2 bits (non-zero, sign; the amplitude ``a`` is re-applied),
               multi-level counts ``bit_length(L)`` bits (:mod:`spikejax.packing`); the backward
               recomputes one stretch between neurons at a time from them, last first (the last
               block runs plainly, as in ``"block"``)
``"offload"``  the block input alone, moved to host memory (``pinned_host``) after the forward and
               brought back for the backward, which reruns the block as ``"spikes"`` does (for long T
               on one GPU; pays the transfers and one more forward)
=============  ======================================================================================

Usage (a block is any NNX module called as ``block(x, **kwargs)``)::

    y = remat_call("spikes", block, x, dropout_key=key)   # == block(x, dropout_key=key), less memory

How. ``"block"``: the block runs as a pure function of its NNX state inside a ``jax.custom_vjp`` whose
forward keeps the inputs and whose backward reruns the block under ``jax.vjp`` once the cotangent
exists (fenced so that the compiler cannot move the recomputation, or its buffers, into the forward
pass; see :func:`_fenced`). ``"spikes"``: the block is traced once with each packed neuron's output
``s`` replaced by ``unpack(pack(s))`` (equal to ``s`` bit for bit) and its jaxpr is cut at those
boundaries into stretches: stretch k computes neuron k's spikes from the block's inputs and the
spikes of earlier neurons (recomputing shared values such as the block input's LayerNorm in each
stretch that reads it). Each stretch is a ``jax.custom_vjp`` whose forward keeps the packed words of
the spikes it reads (``uint32``, named :data:`PACKED_SPIKES`) and the block inputs, not the float
spikes, and whose backward unpacks them, recomputes the stretch and differentiates it, fenced on its
cotangent, so the backward holds one stretch's intermediates at a time. The residuals of a block are
its arguments and the packed words alone (``jax.ad_checkpoint.print_saved_residuals`` shows them).
Layers that are not known spiking kinds (:class:`~spikejax.nn.NonSpiking`'s relu, a recurrent layer
over a user step function) are not packed: they are recomputed inside their stretch.

Gradients: ``"block"`` reruns the same program (bit-identical in float32 on CPU for the LM);
``"spikes"`` / ``"offload"`` give the same loss bit for bit and the gradients to float32 rounding: a
value read by several stretches gets its cotangent summed after each stretch's VJP rather than
before one VJP, so reductions round differently (relative differences ~1e-7, tests/test_remat*.py).

:func:`packed_spike_boundary` with :data:`SPIKES_POLICY` is the same idea for binary spikes inside a
``jax.checkpoint`` of one's own (which leaves the order of the recomputation to the compiler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from spikejax.metrics import intercept_calls
from spikejax.nn.neurons import ALIF, IF, LIF, PLIF, DynamicsNeuron, MultiLevel, SpikingNeuron, Ternary
from spikejax.packing import (
    PACKED_SPIKES,
    pack_levels,
    pack_spikes,
    pack_ternary,
    unpack_levels,
    unpack_spikes,
    unpack_ternary,
)

Array = jax.Array

__all__ = ["REMAT_MODES", "PACKED_SPIKES", "SPIKES_POLICY", "check_remat", "remat_call", "remat_modes",
           "packed_spike_boundary"]

REMAT_MODES = ("none", "block", "spikes", "offload")
"""The rematerialisation modes a model's ``remat`` field accepts (see the module docstring)."""


def check_remat(remat: Any, name: str = "remat") -> str:
    """``remat`` if it is one of :data:`REMAT_MODES`, else a ``ValueError`` naming ``name``."""
    if not isinstance(remat, str) or remat not in REMAT_MODES:
        raise ValueError(f"{name}: unknown remat mode {remat!r}; expected one of {REMAT_MODES}")
    return remat


SPIKES_POLICY = jax.checkpoint_policies.save_only_these_names(PACKED_SPIKES)
"""A ``jax.checkpoint`` policy saving the packed spikes (:data:`PACKED_SPIKES`) and nothing else, for
:func:`packed_spike_boundary` inside a checkpoint of one's own (``remat_call`` cuts the block itself)."""


def remat_modes(mode: str, n: int) -> list[str]:
    """The modes of a model's ``n`` consecutive blocks (its last ``n`` rematerialised calls, in forward
    order): ``mode`` for each, except that in ``"block"`` and ``"spikes"`` mode the last block runs
    plainly (``"none"``).

    The backward pass starts with that block, right after the forward pass, so recomputing it saves
    little peak memory but costs one forward of the block, as PyTorch's ``checkpoint_sequential`` notes.
    H200, batch 64, T = 16 (BENCHMARKS.md, issue 20): ``"block"``, LM preset: step 511 -> 489 ms,
    compiled temp 30.9 -> 31.7 GiB; ``"spikes"`` recomputing every block: LM 1.31x and Spikformer 1.35x
    the step of ``"none"``. ``"offload"`` (for the longest T) keeps recomputing it.
    """
    check_remat(mode, "mode")
    if n < 0:
        raise ValueError(f"n: expected a number of blocks >= 0, got {n}")
    return [mode] * (n - 1) + ["none" if mode in ("block", "spikes") else mode] if n else []


@jax.custom_vjp
def packed_spike_boundary(spikes: Array) -> Array:
    """``spikes[..., n]`` (0/1) -> the same values, rebuilt from their bit-packed copy.

    Forward: ``unpack_spikes(checkpoint_name(pack_spikes(s), PACKED_SPIKES))`` (exact for 0/1 spikes;
    any non-zero value becomes 1); gradient: the identity, ``∂L/∂s = ∂L/∂y``. Under
    ``jax.checkpoint`` with a policy saving :data:`PACKED_SPIKES` the packed words are the residual
    and everything computed from the spikes is recomputed from them.
    """
    return _rebuild(spikes)


def _rebuild(spikes: Array) -> Array:
    packed = checkpoint_name(pack_spikes(spikes, axis=-1), PACKED_SPIKES)
    return unpack_spikes(packed, spikes.shape[-1], axis=-1, dtype=spikes.dtype)


def _boundary_fwd(spikes):
    return _rebuild(spikes), None


def _boundary_bwd(_, g):
    return (g,)


packed_spike_boundary.defvjp(_boundary_fwd, _boundary_bwd)


def _rebuild_ternary(spikes: Array, amplitude: Array) -> Array:
    packed = checkpoint_name(pack_ternary(spikes, axis=-1), PACKED_SPIKES)
    return unpack_ternary(packed, spikes.shape[-1], axis=-1, amplitude=amplitude, dtype=spikes.dtype)


def _rebuild_levels(spikes: Array, levels: int) -> Array:
    packed = checkpoint_name(pack_levels(spikes, levels, axis=-1), PACKED_SPIKES)
    return unpack_levels(packed, spikes.shape[-1], axis=-1, dtype=spikes.dtype)


def _param(neuron: nnx.Module, name: str):
    value = getattr(neuron, name)
    return value[...] if isinstance(value, nnx.Variable) else value


def _binary(neuron: nnx.Module) -> bool:
    """Layers whose spikes are 0/1: the built-in binary kinds, the dynamics models (Θ spikes), a
    one-level :class:`MultiLevel`, a :class:`RecurrentSpiking` over a dynamics model. Anything else
    (:class:`NonSpiking`'s relu, a recurrent layer over a user step function, other subclasses) is
    not known to be binary and is left unpacked."""
    from spikejax.nn.recurrent import RecurrentSpiking  # imports spikejax.nn.dynamics: not at module import

    if isinstance(neuron, (IF, LIF, ALIF, PLIF, DynamicsNeuron)):
        return True
    if isinstance(neuron, MultiLevel):
        return neuron.levels == 1
    return isinstance(neuron, RecurrentSpiking) and isinstance(neuron.neuron, DynamicsNeuron)


def _rebuilder(neuron: nnx.Module) -> Callable[[Array], Array] | None:
    """``out -> unpack(name(pack(out), PACKED_SPIKES))`` (equal values) for the layers whose spikes are
    packed: ternary (two planes and the layer's amplitude), multi-level (``bit_length(L)`` planes),
    binary (one plane); None for the others."""
    from spikejax.quant import ChannelTernary  # spikejax.quant imports the layers: not at module import

    if isinstance(neuron, Ternary):
        return lambda out: _rebuild_ternary(out, jnp.asarray(neuron.param_values()["amplitude"]))
    if isinstance(neuron, ChannelTernary):
        return lambda out: _rebuild_ternary(out, jnp.asarray(_param(neuron, "amplitude")))
    if isinstance(neuron, MultiLevel) and neuron.levels > 1:
        return lambda out: _rebuild_levels(out, int(neuron.levels))
    return _rebuild if _binary(neuron) else None


BOUNDARY_IN = "spikejax_boundary_spikes"
BOUNDARY_OUT = "spikejax_boundary_rebuilt"


def _mark_outputs(neuron: nnx.Module, args: tuple, out):
    """The ``after`` hook of ``"spikes"`` mode: ``out`` -> ``mark(rebuild(pack(mark(out))))`` for a packed
    neuron (:func:`_rebuilder`, values unchanged), read by :func:`_segmented` off the traced block:
    ``name[BOUNDARY_IN]`` (the spikes), ``name[PACKED_SPIKES]`` (their packed words), ``name[BOUNDARY_OUT]``
    (what the rest of the block reads)."""
    if not isinstance(out, jax.Array) or out.ndim < 1:
        return out
    rebuild = _rebuilder(neuron)
    if rebuild is None:
        return out  # not packed: an ordinary value of its stretch
    return checkpoint_name(rebuild(checkpoint_name(out, BOUNDARY_IN)), BOUNDARY_OUT)


def _noop(module, args, out) -> None:
    return None


def remat_call(mode: str, block: nnx.Module, x: Array, *, method: Callable[..., Any] | None = None, **kwargs: Any):
    """``block(x, **kwargs)`` under the rematerialisation ``mode`` (:data:`REMAT_MODES`).

    Args:
      mode: ``"none"`` (a plain call), ``"block"``, ``"spikes"`` or ``"offload"`` (module docstring).
      block: an NNX module (BatchNorm statistics and other state updates carry over as in a plain
        call: the block runs as a pure function of its state).
      x: the block input (an array, or a pytree of arrays).
      method: ``method(block, x, **kwargs)`` computes the block (default ``block(x, **kwargs)``), e.g.
        for a run of layers held in an ``nnx.List``.
      **kwargs: keyword arguments of the call; arrays (e.g. a ``dropout_key``) are traced, other
        values (flags) are static.

    Returns:
      ``block(x, **kwargs)``: equal values and gradients in every mode.
    """
    check_remat(mode, "mode")
    call = method if method is not None else (lambda module, x, **kw: module(x, **kw))
    if mode == "none":
        return call(block, x, **kwargs)
    static = {k: v for k, v in kwargs.items() if not isinstance(v, jax.Array)}
    dynamic = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array)}
    graphdef, state = nnx.split(block)

    def run(state, x, dynamic):
        module = nnx.merge(graphdef, state)
        if mode == "block":
            y = call(module, x, **static, **dynamic)
        else:
            with intercept_calls(module, _noop, (SpikingNeuron,), after=_mark_outputs):
                y = call(module, x, **static, **dynamic)
        return y, nnx.state(module, _updated)

    if mode == "spikes":  # the forward keeps the packed spikes (and the block input); the backward
        y, new_state = _segmented(run)(state, x, dynamic)  # recomputes one stretch at a time
    else:  # the forward keeps the block input; the backward recomputes the block (offload: in stretches)
        run = _segmented(run) if mode == "offload" else run
        y, new_state = _recompute_in_backward(run, offload=mode == "offload")(state, x, dynamic)
    nnx.update(block, new_state)  # BatchNorm statistics, carried neuron state, sown intermediates
    return y


# --- "spikes": the block as a chain of stretches between packed spikes --------------------------------


def _is_name(eqn, name: str) -> bool:
    return eqn.primitive.name == "name" and eqn.params.get("name") == name


def _slice(eqns: list, targets: list, sources: set) -> tuple[list, set]:
    """The equations (in program order) computing ``targets`` from ``sources``, and the sources they read."""
    need = {v for v in targets if isinstance(v, jex.Var) and v not in sources}
    used = {v for v in targets if isinstance(v, jex.Var) and v in sources}
    picked = []
    for eqn in reversed(eqns):
        if not any(v in need for v in eqn.outvars):
            continue
        picked.append(eqn)
        for v in eqn.invars:
            if isinstance(v, jex.Var):
                (used if v in sources else need).add(v)
    return picked[::-1], used


def _evaluate(eqns: list, env: dict, targets: list) -> list:
    """Bind ``eqns`` on the values in ``env`` (as ``jax.core.eval_jaxpr``) and read ``targets``."""
    env = dict(env)

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    for eqn in eqns:
        params = eqn.primitive.get_bind_params(eqn.params)
        subfuns, params = params if isinstance(params, tuple) else ((), params)  # older jax: (subfuns, params)
        with eqn.ctx.manager:
            outs = eqn.primitive.bind(*subfuns, *map(read, eqn.invars), **params)
        for v, o in zip(eqn.outvars, outs if eqn.primitive.multiple_results else [outs], strict=True):
            if not isinstance(v, jex.DropVar):
                env[v] = o
    return [read(v) for v in targets]


def _stretch(eqns: list, targets: list, sources: set, boundaries: dict, rank: dict):
    """``f(packed, rebuilt, ext) -> targets``: the equations computing ``targets`` from the rebuilt spikes
    of earlier boundaries and the block's other inputs ``ext``, as a ``jax.custom_vjp`` whose forward
    keeps the packed words (not the float spikes) and ``ext``, and whose backward rebuilds the spikes
    from the words, recomputes the stretch and differentiates it, once the cotangent exists (fenced,
    :func:`_fenced`). Returns ``(f, rebuilt vars, packed vars, ext vars)``."""
    body, used = _slice(eqns, targets, sources)
    rebuilt = [u for u in boundaries if u in used]
    # each rebuilt input u_j comes back from its words P_j (and, ternary, the amplitude: ext)
    unpack, unpack_used = _slice(eqns, [boundaries[u][1] for u in rebuilt],
                                 (sources - set(boundaries)) | {boundaries[u][0] for u in rebuilt})
    packed = [boundaries[u][0] for u in rebuilt]
    ext = sorted((used | unpack_used) - set(rebuilt) - set(packed), key=rank.__getitem__)

    def value(u_vals, e_vals):
        return _evaluate(body, dict(zip(rebuilt, u_vals, strict=True)) | dict(zip(ext, e_vals, strict=True)), targets)

    def rebuild(p_vals, e_vals):
        return _evaluate(unpack, dict(zip(packed, p_vals, strict=True)) | dict(zip(ext, e_vals, strict=True)),
                         [boundaries[u][1] for u in rebuilt])

    @jax.custom_vjp
    def f(p_vals, u_vals, e_vals):
        return value(u_vals, e_vals)

    def fwd(p_vals, u_vals, e_vals):  # fenced: its scan buffers are not hoisted out of the stretch
        return _fenced(value, (u_vals, e_vals), (u_vals, e_vals)), (p_vals, e_vals)

    def grads(p_vals, e_vals, ct):
        _, vjp = jax.vjp(value, rebuild(p_vals, e_vals), e_vals)
        g_u, g_e = vjp(ct)
        return [np.zeros(p.shape, jax.dtypes.float0) for p in p_vals], g_u, g_e

    def bwd(res, ct):
        p_vals, e_vals = res
        return _fenced(grads, (p_vals, e_vals, ct), ct)

    f.defvjp(fwd, bwd)
    return f, rebuilt, packed, ext


def _segmented(fn: Callable) -> Callable:
    """``fn(state, x, dynamic)`` (traced with :func:`_mark_outputs` on its neurons) as a chain of
    stretches: each packed neuron's spikes are computed by one :func:`_stretch` from the earlier
    boundaries, packed (the words are what the stretches after it keep); each output of ``fn`` comes from
    the first stretch that can compute it (a BatchNorm's running statistics from its neuron's stretch, the
    block output from a last one). The backward of the chain recomputes one stretch at a time, last
    first, from packed words; the values are those of ``fn`` (the rebuilt spikes equal the spikes bit
    for bit)."""

    def run(*args):
        leaves, tree = jax.tree.flatten(args)
        closed, out_shape = jax.make_jaxpr(lambda *a: fn(*jax.tree.unflatten(tree, a)), return_shape=True)(*leaves)
        jaxpr = closed.jaxpr
        eqns = list(jaxpr.eqns)
        order, boundaries, spikes_of, pending = [], {}, {}, {}
        for eqn in eqns:  # IN (spikes), PACKED (words), OUT (rebuilt), in this order per neuron
            if _is_name(eqn, BOUNDARY_IN):
                pending = {"spikes": eqn.outvars[0]}
            elif _is_name(eqn, PACKED_SPIKES) and "spikes" in pending:
                pending["packed"] = eqn.outvars[0]
            elif _is_name(eqn, BOUNDARY_OUT) and "packed" in pending:
                u = eqn.outvars[0]
                boundaries[u] = (pending["packed"], eqn.invars[0])  # words, the unpacked value
                spikes_of[u] = pending["spikes"]
                order.append(u)
                pending = {}
        inputs = set(jaxpr.invars) | set(jaxpr.constvars)
        rank = {v: i for i, v in enumerate([*jaxpr.invars, *jaxpr.constvars, *(o for e in eqns for o in e.outvars)])}
        env = dict(zip(jaxpr.invars, leaves, strict=True)) | dict(zip(jaxpr.constvars, closed.consts, strict=True))
        sources = inputs | set(boundaries)
        groups = [[spikes_of[u]] for u in order] + [[]]
        index = {u: k for k, u in enumerate(order)}
        for v in jaxpr.outvars:  # each output (BatchNorm statistics too) from the first stretch that can
            if isinstance(v, jex.Var) and v not in inputs:  # compute it, not all of them from the last one
                _, used = _slice(eqns, [v], sources)
                groups[1 + max((index[u] for u in used if u in index), default=-1)].append(v)
        shared = _shared_products(eqns, groups, sources)
        for k, u in enumerate([*order, None]):
            targets = groups[k] + shared[k]
            if not targets:
                continue
            f, rebuilt, packed, ext = _stretch(eqns, targets, sources, boundaries, rank)
            outs = f([env[p] for p in packed], [env[r] for r in rebuilt], [env[e] for e in ext])
            env.update(zip(targets, outs, strict=True))
            sources = sources | set(shared[k])  # the later stretches read these products, not recompute them
            if u is not None:
                words, _ = _slice(eqns, [boundaries[u][0]], inputs | {spikes_of[u]})
                (env[boundaries[u][0]],) = _evaluate(words, env, [boundaries[u][0]])
                env[u] = env[spikes_of[u]]  # == unpack(words): the spikes themselves in the forward
        outs = [v.val if isinstance(v, jex.Literal) else env[v] for v in jaxpr.outvars]
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return run


_PRODUCTS = ("dot_general", "conv_general_dilated")


def _shared_products(eqns: list, groups: list, sources: set) -> list[list]:
    """Per stretch (``groups``: the targets of each, in order), the matmul / convolution results it
    computes that a later stretch would compute again (e.g. a block's residual stream ``x + W s``, read
    by the next neuron's stretch and by the block output's). The first stretch computing one returns it
    as well, and the later ones read it (kept, in float, for their backward) instead of recomputing the
    product forward and backward; cheaper shared values (norms, adds) are recomputed."""
    seen: dict = {}  # product eqn -> the first stretch computing it
    shared: list[list] = [[] for _ in groups]
    for k, targets in enumerate(groups):
        body, _ = _slice(eqns, targets, sources)
        for eqn in body:
            if eqn.primitive.name not in _PRODUCTS:
                continue
            if id(eqn) not in seen:
                seen[id(eqn)] = k
            elif eqn.outvars[0] not in shared[seen[id(eqn)]]:
                shared[seen[id(eqn)]].append(eqn.outvars[0])
    return shared


def _updated(path, variable) -> bool:
    """State a block call may change: everything but the parameters, and no empty (None) variables."""
    return not isinstance(variable, nnx.Param) and variable.get_value() is not None


def _to_memory(tree, kind: str):
    """Move the array leaves of ``tree`` to memory ``kind`` (``"pinned_host"`` / ``"device"``) under jit."""
    def move(a):
        if not isinstance(a, jax.Array) or jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            return a
        return jax.device_put(a, jax.memory.Space.Host if kind == "pinned_host" else jax.memory.Space.Device)
    return jax.tree.map(move, tree)


def _fenced(fn, args: tuple, after):
    """``fn(*args)``, computed where it stands in the program: not before ``after`` exists and with
    none of its buffers allocated earlier (values unchanged).

    XLA may otherwise start a block's recomputation (or allocate the buffers of its ``lax.scan``
    outputs) as soon as its inputs exist, i.e. during the forward pass, which keeps every block's
    activations alive at once again. ``fn`` therefore runs as a branch of a ``lax.cond`` whose predicate
    (``c != c``, ``c`` one element of ``after``) cannot be folded: nothing leaves a conditional's
    branch, on any backend. An ``optimization_barrier`` tying ``args`` to
    ``after`` (what ``jax.checkpoint`` does) is not enough: the CPU compiler removes it before
    scheduling, and on an H200 (jax 0.11.2) the LM's compiled temp memory at T = 4 was 20.7 GiB in
    ``"block"`` mode and 23.4 GiB in ``"spikes"`` with the barrier, 7.7 and 3.9 GiB with the
    conditional (``"none"``: 33.6 GiB; BENCHMARKS.md, issue 20).

    The branch taken when ``c`` is NaN fills the outputs with NaN (integers with 0) instead of
    computing ``fn`` a second time, which halves the compile time; a NaN there has already poisoned
    the loss or the gradients.
    """
    leaves = [a for a in jax.tree.leaves(after) if jnp.issubdtype(a.dtype, jnp.inexact) and a.size]
    if not leaves:
        return fn(*args)
    c = leaves[0].ravel()[0]

    def poisoned(*args):
        return jax.tree.map(_nan_like, jax.eval_shape(fn, *args))

    return jax.lax.cond(c != c, poisoned, fn, *args)


def _nan_like(aval) -> Array:
    if aval.dtype == jax.dtypes.float0:
        return np.zeros(aval.shape, jax.dtypes.float0)
    fill = np.nan if jnp.issubdtype(aval.dtype, jnp.inexact) else 0
    return jnp.full(aval.shape, fill, aval.dtype)


def _recompute_in_backward(fn, *, offload: bool):
    """``fn(state, x, dynamic)`` whose backward pass recomputes it (a ``jax.custom_vjp``): the forward
    keeps only the inputs (``x`` in host memory with ``offload``), the backward reruns ``fn`` under
    ``jax.vjp`` once the cotangent exists, so the gradients are those of ``fn`` itself."""

    @jax.custom_vjp
    def call(state, x, dynamic):
        return fn(state, x, dynamic)

    def fwd(state, x, dynamic):
        out = _fenced(fn, (state, x, dynamic), x)
        return out, (state, _to_memory(x, "pinned_host") if offload else x, dynamic)

    def grads(state, x, dynamic, ct):
        _, vjp = jax.vjp(fn, state, x, dynamic)
        return vjp(ct)

    def bwd(res, ct):
        state, x, dynamic = res
        if offload:
            x = _to_memory(x, "device")
        return _fenced(grads, (state, x, dynamic, ct), ct)

    call.defvjp(fwd, bwd)
    return call
