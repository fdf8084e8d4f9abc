"""Spiking-LM training recipes: distillation from a teacher, firing-rate control, annealing from
soft to hard spikes, layer-wise learning rates and freezing (pure functions, composed into a task's
loss by :func:`recipe_lm_loss`).

- **Distillation** (Hinton et al. 2015): with student logits ``s`` and teacher logits ``t`` over the
  vocabulary and temperature ``τ``, ``KL_τ = Σ_v p_t(v) (log p_t(v) - log p_s(v))`` with
  ``p_t = softmax(t / τ)``, ``p_s = softmax(s / τ)``, averaged over tokens (:func:`distill_kl`); the
  loss is ``CE + w · τ² · KL_τ``. The teacher runs in the same jitted step in evaluation mode,
  behind ``stop_gradient`` (no gradient reaches it; its weights are constants of the step).
- **Firing-rate control**: per neuron layer ``l`` its mean rate ``r_l = mean |s| / a_l`` (``a_l``
  the layer's spike amplitude: 1, or the ternary neuron's learnable amplitude, held constant), and
  ``penalty = mean_l (r_l - R)²``; the loss adds ``λ · penalty`` (:func:`rate_penalty`). The rates
  are differentiable through the surrogate.
- **Annealing** ``fp-warmup`` (:func:`anneal_mix`): every neuron layer's output is
  ``y = α · s + (1 - α) · f(x)``, ``f`` the non-spiking activation of its input (``relu``; the
  identity for signed ternary spikes), with ``α(step) = clip(step / N, 0, 1)`` over ``N =
  anneal_steps``. Phases: step 0, a full-precision (ANN) network; ``0 < step < N``, soft spikes, the
  blend moving linearly to the spikes; ``step ≥ N``, hard spikes only, the model evaluated
  (validation, sampling, export) at every step. ``none``: hard spikes from the start.
- **Layer-wise learning rates**: ``lr_scale(name) = decay^(L - 1 - i)`` for parameters of block ``i``
  of ``L`` (``blocks.i.*``), ``decay^L`` for the embeddings, 1 for the rest (final norm, head);
  freezing by glob patterns over the dotted parameter names (:func:`freeze_mask`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spikejax.metrics.intercept import intercept_calls
from spikejax.nn.neurons import NonSpiking, SpikingNeuron, Ternary

Array = jax.Array

__all__ = ["ANNEALS", "Recipe", "RecipeError", "distill_kl", "anneal_alpha", "anneal_mix", "rate_penalty",
           "recipe_lm_loss", "layer_lr_scales", "freeze_mask"]

ANNEALS = ("none", "fp-warmup")
"""The annealing schedules (see the module docstring)."""


class RecipeError(ValueError):
    """A recipe setting that does not fit the model (a freeze pattern that matches nothing, every
    parameter frozen): a user error, found when the model is built."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The recipe settings of a language-model run (the flags of the same names; stored with the run).

    ``distill_weight`` ``w`` and ``distill_temperature`` ``τ`` (used with a teacher); ``target_rate``
    ``R`` in ``[0, 1]`` (``None``: no rate control) and ``rate_weight`` ``λ``; ``anneal``
    (:data:`ANNEALS`) over ``anneal_steps`` steps."""

    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    target_rate: float | None = None
    rate_weight: float = 1.0
    anneal: str = "none"
    anneal_steps: int = 0

    def __post_init__(self):
        for name in ("distill_weight", "rate_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        t = self.distill_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not t > 0:
            raise ValueError(f"distill_temperature: expected a finite number > 0, got {t!r}")
        r = self.target_rate
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1):
            raise ValueError(f"target_rate: expected a number in [0, 1], got {r!r}")
        if self.anneal not in ANNEALS:
            raise ValueError(f"anneal: expected one of {ANNEALS}, got {self.anneal!r}")
        n = self.anneal_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"anneal_steps: expected an integer >= 0, got {n!r}")
        if self.anneal != "none" and n < 1:
            raise ValueError(f"anneal_steps: anneal={self.anneal!r} needs anneal_steps >= 1, got {n}")

    def to_dict(self, *, teacher: bool) -> dict[str, Any]:
        """The fields that shape the loss curve (distillation's only with a teacher)."""
        d = dataclasses.asdict(self)
        if not teacher:
            d.pop("distill_weight"), d.pop("distill_temperature")
        return d

    @property
    def active(self) -> bool:
        """Whether anything but distillation is on (rate control or annealing)."""
        return self.target_rate is not None or self.anneal != "none"


def distill_kl(student_logits: Array, teacher_logits: Array, temperature: float) -> Array:
    """``mean over tokens of KL(softmax(t/τ) || softmax(s/τ))`` for logits ``[..., V]`` (float32)."""
    s = student_logits.astype(jnp.float32) / temperature
    t = teacher_logits.astype(jnp.float32) / temperature
    log_pt = jax.nn.log_softmax(t, axis=-1)
    log_ps = jax.nn.log_softmax(s, axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1))


def anneal_alpha(step: Array | int, anneal: str, anneal_steps: int) -> Array:
    """``α(step)``: 1 (hard spikes) for ``none``; ``clip(step / N, 0, 1)`` for ``fp-warmup``."""
    if anneal == "none":
        return jnp.asarray(1.0, jnp.float32)
    return jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)


def _activation(module: SpikingNeuron, x: Array) -> Array:
    return x if isinstance(module, Ternary) else jax.nn.relu(x)


def anneal_mix(module: SpikingNeuron, x: Array, spikes: Array, alpha: Array) -> Array:
    """``α · spikes + (1 - α) · f(x)`` (``f``: ``relu``, the identity for ternary spikes)."""
    return (alpha * spikes + (1 - alpha) * _activation(module, x)).astype(spikes.dtype)


def _rate(module: SpikingNeuron, s: Array) -> Array:
    a = jnp.abs(s.astype(jnp.float32))
    if isinstance(module, Ternary):
        amp = jnp.abs(jnp.asarray(module.param_values()["amplitude"], jnp.float32))
        a = a / jax.lax.stop_gradient(jnp.maximum(amp, 1e-6))
    return jnp.mean(a)


def rate_penalty(rates: Iterable[Array], target: float) -> Array:
    """``mean_l (r_l - R)²`` over the layers' rates."""
    rates = list(rates)
    if not rates:
        return jnp.asarray(0.0, jnp.float32)
    return jnp.mean(jnp.stack([(r - target) ** 2 for r in rates]))


def recipe_lm_loss(recipe: Recipe, teacher: Callable[[Array], Array] | None = None):
    """The language model's training loss with the recipe: ``loss(model, batch, key, step) ->
    (loss, aux)`` over ``x[B, L]``, ``y[B, L]``. ``teacher(x) -> logits[B, L, V]`` (a frozen model's
    forward; wrapped in ``stop_gradient`` here). ``aux``: ``accuracy``, and ``ce``, ``distill_kl``
    (with a teacher), ``rate_penalty`` and ``mean_rate`` (rate control), ``anneal_alpha`` (annealing)."""

    def loss_fn(model, batch, key=None, step=0):
        x, y = batch
        alpha = anneal_alpha(step, recipe.anneal, recipe.anneal_steps)
        rates: dict[int, list[Array]] = {}

        def after(module, args, out):
            if recipe.anneal == "none" or isinstance(module, NonSpiking):
                return out
            if isinstance(out, tuple):
                return (anneal_mix(module, args[0], out[0], alpha), *out[1:])
            return anneal_mix(module, args[0], out, alpha)

        def record(module, args, out):
            if recipe.target_rate is not None:
                rates.setdefault(id(module), []).append(_rate(module, out[0] if isinstance(out, tuple) else out))

        with intercept_calls(model, record, (SpikingNeuron,), after=after):
            logits = model(x, dropout_key=key)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss = ce
        aux = {"accuracy": (logits.argmax(-1) == y).mean()}
        if teacher is not None:
            t_logits = jax.lax.stop_gradient(teacher(x))
            kl = distill_kl(logits, t_logits, recipe.distill_temperature)
            loss = loss + recipe.distill_weight * recipe.distill_temperature ** 2 * kl
            aux.update(ce=ce, distill_kl=kl)
        if recipe.target_rate is not None:
            per_layer = [jnp.mean(jnp.stack(v)) for v in rates.values()]
            pen = rate_penalty(per_layer, recipe.target_rate)
            loss = loss + recipe.rate_weight * pen
            aux.update(rate_penalty=pen, mean_rate=jnp.mean(jnp.stack(per_layer)) if per_layer else jnp.zeros(()))
        if recipe.anneal != "none":
            aux["anneal_alpha"] = alpha
        return loss, aux

    return loss_fn


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def layer_lr_scales(names: Iterable[str], decay: float) -> dict[str, float]:
    """``{name: lr multiplier}``: ``decay^(L-1-i)`` for ``blocks.i.*`` (``L`` blocks), ``decay^L`` for
    the embeddings (``*embed*``), 1 for the rest."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"layer_lr_decay: expected a number in (0, 1], got {decay!r}")
    names = list(names)
    blocks = [int(m.group(1)) for n in names if (m := _BLOCK.match(n))]
    L = max(blocks) + 1 if blocks else 0
    out = {}
    for n in names:
        m = _BLOCK.match(n)
        if m:
            out[n] = float(decay ** (L - 1 - int(m.group(1))))
        elif "embed" in n.split(".")[0]:
            out[n] = float(decay ** L)
        else:
            out[n] = 1.0
    return out


def freeze_mask(names: Iterable[str], patterns: Iterable[str] = (), train_only: Iterable[str] = ()) -> dict[str, bool]:
    """``{name: frozen}``: a name is frozen when it matches a glob of ``patterns`` (``fnmatch`` over the
    dotted name, e.g. ``"token_embed.*"``, ``"blocks.0.*"``) or, when ``train_only`` is given, matches
    none of ``train_only``. A pattern that matches no parameter is a :class:`RecipeError` naming it."""
    names, patterns, train_only = list(names), list(patterns), list(train_only)
    for flag, pats in (("freeze", patterns), ("train_only", train_only)):
        for p in pats:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                raise RecipeError(f"{flag}: pattern {p!r} matches no parameter (names look like {names[:3]})")
    out = {}
    for n in names:
        frozen = any(fnmatch.fnmatchcase(n, p) for p in patterns)
        if train_only and not any(fnmatch.fnmatchcase(n, p) for p in train_only):
            frozen = True
        out[n] = frozen
    return out
