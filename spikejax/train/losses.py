"""The training objectives and evaluation sums of the ``spikejax train`` tasks.

Every task supplies three pure functions to :func:`spikejax.train.loop.fit`:

- ``loss(model, batch, key) -> (loss, {"accuracy": ...})``, minimised (``key``: the step's PRNG key for
  dropout, ``None`` outside training);
- ``eval(model, batch) -> {sums}``, accumulated over the evaluation batches;
- ``summary({sums}) -> {"val_loss": ..., ...}``, the evaluation's means.

The language model's are over ``x[B, L]`` token ids and ``y[B, L]`` next tokens; the classifiers'
over ``x`` (images ``[B, H, W, C]`` or batch-major spikes ``[B, T, ...]``), labels ``y[B]`` and, for
evaluation, a ``mask[B]`` that weights out the padding of the last batch. Cross-entropy is
``-log softmax(logits)[y]`` in nats.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

__all__ = ["lm_loss", "lm_eval", "lm_summary", "lm_step_extras", "to_model_layout", "classification_loss",
           "classification_eval", "classification_summary"]


def lm_loss(model, batch: tuple, key: jax.Array | None = None):
    """Mean next-token cross-entropy of ``model(x, dropout_key=key)`` (float32 logits ``[B, L, V]``)."""
    x, y = batch
    logits = model(x, dropout_key=key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": (logits.argmax(-1) == y).mean()}


def lm_eval(model, batch: tuple) -> dict[str, jax.Array]:
    """Sums of the cross-entropy, the token count and the correct next-token guesses."""
    x, y = batch
    logits = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"loss_sum": ce.sum(), "count": jnp.asarray(ce.size, jnp.float32),
            "correct": (logits.argmax(-1) == y).sum().astype(jnp.float32)}


def lm_summary(sums: dict) -> dict:
    """``val_loss`` (nats per token), ``val_bpc = val_loss / ln 2`` and ``val_accuracy``."""
    loss = sums["loss_sum"] / sums["count"]
    return {"val_loss": loss, "val_bpc": loss / math.log(2), "val_accuracy": sums["correct"] / sums["count"]}


def lm_step_extras(metrics: dict[str, float]) -> dict[str, float]:
    """The bits per character of a training step's loss, ``bpc = loss / ln 2`` (a ``metrics.jsonl`` field)."""
    return {"bpc": metrics["loss"] / math.log(2)}


def to_model_layout(x: jax.Array) -> jax.Array:
    """Batch-major pipeline arrays in the models' layout: images ``[B, H, W, C]`` stay, spikes
    ``[B, T, ...]`` become time-major ``[T, B, ...]``."""
    return x if x.ndim == 4 else jnp.swapaxes(x, 0, 1)


def classification_loss(model, batch: tuple, key: jax.Array | None = None):
    """Mean cross-entropy of ``model(x)`` (``logits[B, classes]``) against the labels ``y[B]`` (``key``
    unused: the classifiers have no stochastic regulariser)."""
    x, y = batch
    logits = model(to_model_layout(x))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), {
        "accuracy": (logits.argmax(-1) == y).mean()}


def classification_eval(model, batch: tuple) -> dict[str, jax.Array]:
    """Masked sums of the cross-entropy, the sample count and the correct predictions."""
    x, y, mask = batch
    logits = model(to_model_layout(x))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"loss_sum": (ce * mask).sum(), "count": mask.sum(), "correct": ((logits.argmax(-1) == y) * mask).sum()}


def classification_summary(sums: dict) -> dict:
    """``val_loss`` (nats per sample) and ``val_accuracy``."""
    return {"val_loss": sums["loss_sum"] / sums["count"], "val_accuracy": sums["correct"] / sums["count"]}
