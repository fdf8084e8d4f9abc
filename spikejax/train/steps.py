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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from spikejax.metrics import record_layers
from spikejax.train.probes import probe_shapes

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]

__all__ = ["TrainState", "ModelSplit", "make_optimizer", "make_steps"]


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


def make_optimizer(lr: float, steps: int, *, warmup: int = 100, weight_decay: float = 0.1, clip: float = 1.0,
                   b2: float = 0.99, min_lr_ratio: float = 0.1) -> optax.GradientTransformation:
    """AdamW with linear warm-up over ``warmup`` steps then cosine decay to ``min_lr_ratio · lr`` at
    ``steps``, after clipping the global gradient norm to ``clip``. Weight decay applies to
    matrices only (parameters of rank ≥ 2)."""
    if not lr > 0:
        raise ValueError(f"lr: expected > 0, got {lr}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    if warmup < 0:
        raise ValueError(f"warmup: expected >= 0, got {warmup}")
    if not clip > 0:
        raise ValueError(f"clip: expected > 0, got {clip}")
    warmup = min(warmup, steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup, steps,
                                                  end_value=lr * min_lr_ratio)
    mask = lambda params: {k: v.ndim >= 2 for k, v in params.items()}
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.adamw(schedule, b1=0.9, b2=b2, weight_decay=weight_decay, mask=mask))


def _norm(tree) -> Array:
    """Global L2 norm of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(tree)))


class Steps(NamedTuple):
    """The compiled steps: ``train(state, batch) -> (state, metrics)``, ``eval(state, batch) -> aux``
    (a dict of sums), ``probe(state, batch) -> (spikes, synops, grads)``: the partial sums of
    :func:`spikejax.metrics.record_layers` per neuron / synaptic layer (reduce them with
    :func:`spikejax.metrics.reduce_spike_stats` / :func:`~spikejax.metrics.reduce_synops`) and
    ``{neuron path: {"in": mean |∂L/∂x|, "out": mean |∂L/∂s|}}``."""

    init: Callable[[], TrainState]
    train: Callable
    eval: Callable
    probe: Callable


def make_steps(split: ModelSplit, tx: optax.GradientTransformation, loss_fn: LossFn, eval_fn: LossFn,
               example_batch: tuple, *, seed: int = 0) -> Steps:
    """Build the jit-compiled steps of a model split.

    ``loss_fn(model, batch, key) -> (loss, aux)`` is minimised (``key``: the step's PRNG key, derived
    from ``seed``); ``eval_fn(model, batch) -> (count, sums)`` gives sums to be accumulated over
    evaluation batches.
    """

    def init() -> TrainState:
        return TrainState(jnp.zeros((), jnp.int32), split.params, split.stats, tx.init(split.params))

    def train(state: TrainState, batch):
        key = jax.random.fold_in(jax.random.key(seed), state.step)

        def objective(params):
            model = split.merge(params, state.stats)
            loss, aux = loss_fn(model, batch, key)
            return loss, (aux, split.stats_of(model))

        (loss, (aux, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": _norm(grads), **aux}
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
            shapes_cache["shapes"] = probe_shapes(split.merge, lambda m: loss_fn(m, batch, None), state.params,
                                                  state.stats)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes_cache["shapes"])

        def objective(probes):
            model = split.merge(state.params, state.stats)
            with record_layers(model, probes=probes) as rec:
                loss, _ = loss_fn(model, batch, None)
            return loss, (rec.spikes, rec.synops)

        (_, (spikes, synops)), g = jax.value_and_grad(objective, has_aux=True)(zeros)
        grads = {p: {"in": jnp.abs(v["in"]).mean(), "out": jnp.abs(v["out"]).mean()} for p, v in g.items()}
        return spikes, synops, grads

    del example_batch
    return Steps(init, jax.jit(train, donate_argnums=0), jax.jit(evaluate), jax.jit(probe))
