"""Optimizer, train state and the jit-compiled train / eval / metrics steps for NNX models.

The model is split once into a static ``graphdef``, its ``nnx.Param`` leaves (trained), its
``nnx.BatchStat`` leaves (running statistics, updated by the forward) and the rest (stateless
neuron carries, kept as built). Parameters and statistics live in flat ``{path: array}`` dicts
(:class:`TrainState`), which is what checkpoints store and what the device mesh replicates.

A task supplies ``loss_fn(model, batch, key) -> (loss, aux)`` with ``aux`` a dict of scalars
(e.g. ``{"accuracy": ...}``) and ``key`` a PRNG key for stochastic regularisers such as dropout
(``fold_in(key(seed), step)``, so a resumed run draws the same masks; ``None`` outside training);
everything else is generic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from spikejax.metrics import record_layers
from spikejax.train.probes import probe_shapes

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]

__all__ = ["TrainState", "ModelSplit", "NonFiniteError", "make_schedule", "make_optimizer", "make_steps",
           "first_nonfinite"]


class TrainState(NamedTuple):
    """Everything a step changes: ``step`` (int32), ``params`` and ``stats`` (flat dicts), ``opt_state``."""

    step: Array
    params: dict[str, Array]
    stats: dict[str, Array]
    opt_state: Any


def _flat(state: nnx.State) -> tuple[dict[str, Array], Any, list[str]]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = [jax.tree_util.keystr(p, simple=True, separator=".") for p, _ in leaves]
    names = [n[: -len(".value")] if n.endswith(".value") else n for n in names]  # "head.kernel"
    if len(set(names)) != len(names):
        raise ValueError("model: two parameters share a path name")
    return dict(zip(names, (v for _, v in leaves), strict=True)), treedef, names


class ModelSplit:
    """A model split into ``graphdef`` + flat params / stats, and the way back (:meth:`merge`)."""

    def __init__(self, model: nnx.Module):
        self.graphdef, params, stats, self.rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        self.params, self._ptree, self._pnames = _flat(params)
        self.stats, self._stree, self._snames = _flat(stats)

    def merge(self, params: dict[str, Array], stats: dict[str, Array]) -> nnx.Module:
        """The model with these parameters and statistics (inside or outside ``jit``)."""
        p = jax.tree_util.tree_unflatten(self._ptree, [params[k] for k in self._pnames])
        s = jax.tree_util.tree_unflatten(self._stree, [stats[k] for k in self._snames])
        return nnx.merge(self.graphdef, p, s, self.rest)

    def stats_of(self, model: nnx.Module) -> dict[str, Array]:
        """The current statistics of a merged model as a flat dict."""
        return _flat(nnx.state(model, nnx.BatchStat))[0]

    @property
    def num_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite value: ``step`` (the optimizer step, 1-based, after which it was
    seen), ``quantity`` (``"loss"``, ``"grad_norm"``, or a state array such as ``"params.head.kernel"``)
    and its ``value``. Nothing non-finite is saved; the run's last checkpoint stays the latest."""

    def __init__(self, step: int, quantity: str, value: float | None = None, detail: str = ""):
        self.step, self.quantity, self.value = int(step), quantity, value
        shown = "" if value is None else f" ({value})"
        super().__init__(f"non-finite {quantity}{shown} at step {step}{detail}")


def _check_positive_finite(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not v > 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")


def make_schedule(lr: float, steps: int, *, warmup: int = 100, min_lr_ratio: float = 0.1,
                  segments: Sequence[tuple[int, int]] = ()) -> optax.Schedule:
    """The learning rate at optimizer step ``count``: linear warm-up from 0 to ``lr`` over ``warmup``
    steps, then a cosine down to ``min_lr_ratio · lr`` at ``steps``.

    ``segments`` extends a schedule (``spikejax train --resume --steps N`` with ``N`` beyond the run's
    total): each ``(at, total)`` means "at step ``at`` the run was extended to ``total`` steps". From
    ``at`` on, the rate continues from its value ``v = lr(at)`` and follows a cosine down to
    ``min_lr_ratio · lr`` at ``total``: ``lr(t) = e + (v - e)·(1 + cos(π (t - at) / (total - at))) / 2``
    (``e = min_lr_ratio · lr``), so it never jumps; a finished run (``v = e``) continues at ``e``. An
    extension during warm-up (``at < warmup``) is the original schedule laid over ``total``.
    """
    _check_positive_finite("lr", lr)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an integer >= 0, got {warmup!r}")
    end = lr * min_lr_ratio
    first = min(warmup, steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0 if first else lr, lr, first, steps, end_value=end)
    last_at, last_total = 0, steps
    for at, total in segments:
        if not (isinstance(at, int) and isinstance(total, int) and last_at <= at <= last_total < total):
            raise ValueError(f"segments: ({at}, {total}) does not extend a schedule of {last_total} steps "
                             f"from a step in [{last_at}, {last_total}]")
        if at < first:
            first = min(warmup, total - 1)
            schedule = optax.warmup_cosine_decay_schedule(0.0, lr, first, total, end_value=end)
        else:
            v = float(schedule(at))
            tail = lambda t, v=v, at=at, total=total: end + (v - end) * 0.5 * (
                1 + jnp.cos(jnp.pi * jnp.clip(t, 0, total - at) / (total - at)))
            schedule = optax.join_schedules([schedule, tail], [at])
        last_at, last_total = at, total
    return schedule


def make_optimizer(lr: float, steps: int, *, warmup: int = 100, weight_decay: float = 0.1, clip: float = 1.0,
                   b2: float = 0.99, min_lr_ratio: float = 0.1, segments: Sequence[tuple[int, int]] = (),
                   skip_nonfinite: int = 0, lr_scales: dict[str, float] | None = None,
                   frozen: dict[str, bool] | None = None) -> optax.GradientTransformation:
    """AdamW on the rate of :func:`make_schedule` (linear warm-up over ``warmup`` steps, cosine decay to
    ``min_lr_ratio · lr`` at ``steps``; ``segments`` extend it), after clipping the global gradient
    norm to ``clip``. Weight decay applies to matrices only (parameters of rank ≥ 2).

    ``skip_nonfinite = N > 0`` wraps it in ``optax.apply_if_finite``: an update whose gradients hold a
    NaN/inf is skipped (parameters and optimizer state unchanged), up to ``N`` in a row; the
    optimizer state then carries the counts (a different checkpoint structure).

    ``lr_scales`` (``{name: multiplier}``, e.g. :func:`spikejax.train.recipes.layer_lr_scales`) and
    ``frozen`` (``{name: bool}``, :func:`spikejax.train.recipes.freeze_mask`) group the parameters
    with ``optax.multi_transform``: each multiplier ``m`` gets AdamW on ``m · schedule``, frozen
    parameters ``optax.set_to_zero`` (no update and no optimizer state). Without either (or with all
    multipliers 1 and nothing frozen) the optimizer and its state are the plain one's.
    """
    schedule = make_schedule(lr, steps, warmup=warmup, min_lr_ratio=min_lr_ratio, segments=segments)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay: expected a finite number >= 0, got {weight_decay!r}")
    _check_positive_finite("clip", clip)
    if isinstance(skip_nonfinite, bool) or not isinstance(skip_nonfinite, int) or skip_nonfinite < 0:
        raise ValueError(f"skip_nonfinite: expected an integer >= 0, got {skip_nonfinite!r}")
    mask = lambda params: {k: getattr(v, "ndim", 0) >= 2 for k, v in params.items()}
    adamw = lambda rate: optax.adamw(rate, b1=0.9, b2=b2, weight_decay=weight_decay, mask=mask)
    labels = _param_labels(lr_scales or {}, frozen or {})
    if labels is None:
        inner = adamw(schedule)
    else:
        groups = {}
        for label in set(labels.values()):
            if label == "frozen":
                groups[label] = optax.set_to_zero()
            else:
                groups[label] = adamw(lambda count, m=float(label[1:]): m * schedule(count))
        inner = optax.multi_transform(groups, lambda params: {k: labels[k] for k in params})
    tx = optax.chain(optax.clip_by_global_norm(clip), inner)
    return optax.apply_if_finite(tx, skip_nonfinite) if skip_nonfinite else tx


def _param_labels(lr_scales: dict[str, float], frozen: dict[str, bool]) -> dict[str, str] | None:
    """``{name: "frozen" | "x<multiplier>"}``, or ``None`` when every multiplier is 1 and nothing is frozen."""
    names = set(lr_scales) | set(frozen)
    for k, m in lr_scales.items():
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
            raise ValueError(f"lr_scales: expected finite multipliers >= 0, got {m!r} for {k!r}")
    labels = {k: "frozen" if frozen.get(k) else f"x{float(lr_scales.get(k, 1.0))!r}" for k in names}
    return None if all(v == "x1.0" for v in labels.values()) else labels


def _norm(tree) -> Array:
    """Global L2 norm of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(tree)))


def first_nonfinite(flat: dict[str, Any]) -> str | None:
    """The first name (sorted) of a flat ``{name: array}`` dict whose inexact array holds a NaN/inf
    (host or device arrays), or ``None``."""
    for name in sorted(flat):
        x = flat[name]
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact) and not bool(jnp.all(jnp.isfinite(x))):
            return name
    return None


class Steps(NamedTuple):
    """The compiled steps: ``train(state, batch) -> (state, metrics)``, ``eval(state, batch) -> aux``
    (a dict of sums), ``probe(state, batch) -> (spikes, synops, grads)``: the partial sums of
    :func:`spikejax.metrics.record_layers` per neuron / synaptic layer (reduce them with
    :func:`spikejax.metrics.reduce_spike_stats` / :func:`~spikejax.metrics.reduce_synops`) and
    ``{neuron path: {"in": mean |∂L/∂x|, "out": mean |∂L/∂s|}}``. ``train``'s metrics are ``loss``,
    ``grad_norm``, the task's aux values and, with ``optax.apply_if_finite``, ``skipped`` (this step's
    update was dropped for non-finite gradients)."""

    init: Callable[[], TrainState]
    train: Callable
    eval: Callable
    probe: Callable


def make_steps(split: ModelSplit, tx: optax.GradientTransformation, loss_fn: LossFn, eval_fn: LossFn,
               example_batch: None = None, *, seed: int = 0, step_arg: bool = False,
               frozen: dict[str, bool] | None = None) -> Steps:
    """Build the jit-compiled steps of a model split.

    ``loss_fn(model, batch, key) -> (loss, aux)`` is minimised (``key``: the step's PRNG key, derived
    from ``seed``); ``eval_fn(model, batch) -> {sums}`` gives sums to be accumulated over
    evaluation batches. ``example_batch`` is deprecated (it was never read: the probe takes its
    shapes from its first batch); leave it out. ``step_arg``: ``loss_fn`` also takes ``step=`` (the
    state's optimizer step, traced: a schedule inside the loss, e.g. annealing). ``frozen``
    (``{name: bool}``): those parameters enter the loss behind ``stop_gradient`` (their gradients are
    zeros; pair it with the optimizer's ``frozen``).
    """
    if example_batch is not None:
        warnings.warn("make_steps: example_batch is deprecated and unused; leave it out", DeprecationWarning,
                      stacklevel=2)

    frozen_names = dict(frozen or {})

    def call_loss(model, batch, key, step):
        return loss_fn(model, batch, key, step=step) if step_arg else loss_fn(model, batch, key)

    def init() -> TrainState:
        return TrainState(jnp.zeros((), jnp.int32), split.params, split.stats, tx.init(split.params))

    def train(state: TrainState, batch):
        key = jax.random.fold_in(jax.random.key(seed), state.step)

        def objective(params):
            params = {k: jax.lax.stop_gradient(v) if frozen_names.get(k) else v for k, v in params.items()}
            model = split.merge(params, state.stats)
            loss, aux = call_loss(model, batch, key, state.step)
            return loss, (aux, split.stats_of(model))

        (loss, (aux, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": _norm(grads), **aux}
        if isinstance(opt_state, optax.ApplyIfFiniteState):
            metrics["skipped"] = jnp.logical_not(opt_state.last_finite)
        return TrainState(state.step + 1, params, stats, opt_state), metrics

    def evaluate(state: TrainState, batch):
        model = split.merge(state.params, state.stats)
        model.eval()
        return eval_fn(model, batch)

    shapes_cache: dict[str, Any] = {}

    def probe(state: TrainState, batch):
        """Forward + backward with zero probes on every neuron: per-layer spike and synaptic-operation
        partial sums, and mean |∂L/∂x|, |∂L/∂s|."""
        if "shapes" not in shapes_cache:
            shapes_cache["shapes"] = probe_shapes(split.merge, lambda m: call_loss(m, batch, None, state.step),
                                                  state.params, state.stats)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes_cache["shapes"])

        def objective(probes):
            model = split.merge(state.params, state.stats)
            with record_layers(model, probes=probes) as rec:
                loss, _ = call_loss(model, batch, None, state.step)
            return loss, (rec.spikes, rec.synops)

        (_, (spikes, synops)), g = jax.value_and_grad(objective, has_aux=True)(zeros)
        grads = {p: {"in": jnp.abs(v["in"]).mean(), "out": jnp.abs(v["out"]).mean()} for p, v in g.items()}
        return spikes, synops, grads

    return Steps(init, jax.jit(train, donate_argnums=0), jax.jit(evaluate), jax.jit(probe))
