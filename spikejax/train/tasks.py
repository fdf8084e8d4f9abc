"""The built-in training tasks: a char-level :class:`~spikejax.nn.SpikingLM` (:func:`lm_task`) and a
:class:`~spikejax.nn.Spikformer` on scikit-learn's digits (:func:`vision_task`), each a
:class:`~spikejax.train.loop.Task` for :func:`~spikejax.train.loop.fit`. The dataset tasks (event /
image sets, SHD, randman) are in :mod:`spikejax.train.tasks_data`."""

from __future__ import annotations

from typing import Any

from spikejax.train import losses

__all__ = ["lm_task", "vision_task", "neuron_kwargs"]


def neuron_kwargs(neuron: str, beta: float, threshold: float) -> dict[str, Any]:
    """The constructor arguments among (β, θ) that ``neuron`` takes: ``lif``, ``alif``, ``ternary`` and
    ``multilevel`` both, ``if`` and ``plif`` θ, the others neither."""
    if neuron in ("lif", "alif", "ternary", "multilevel"):
        return {"beta": beta, "threshold": threshold}
    if neuron in ("if", "plif"):
        return {"threshold": threshold}
    return {}


def lm_task(ds, *, d_model: int, layers: int, heads: int, time_steps: int, seq_len: int, attention: str,
            window: int | None = None, window_softmax: bool | None = None, mix_norm: str = "none",
            mlp_ratio: float = 4.0, neuron: str = "lif", neuron_kwargs: dict | None = None, backend: str = "xla",
            eval_batches: int = 8, eval_batch_size: int = 32, sample_chars: int = 0,
            sample_prompt: str | None = None, dtype: str = "float32", dropout: float = 0.0, recipe=None,
            teacher=None, teacher_meta: dict | None = None):
    """The char-level language-model :class:`~spikejax.train.loop.Task` on a
    :class:`~spikejax.train.data.CharDataset` ``ds``: windows ``x[B, seq_len]`` -> next characters.

    ``attention``: the SpikingLM attention kind (``window`` for sliding / hybrid, default
    ``min(64, seq_len)``; ``window_softmax`` default on for hybrid, off for sliding); ``mix_norm``:
    the attention's norm before its ``attn_neuron``; ``dtype``: the compute dtype (``"float32"`` or
    ``"bfloat16"``); ``dropout``: the training dropout rate; ``sample_chars`` characters are sampled
    after training (from ``sample_prompt``, default the start of the validation text).

    Recipes (:mod:`spikejax.train.recipes`): ``recipe`` (a :class:`~spikejax.train.recipes.Recipe`:
    rate control, annealing, the distillation weight and temperature) and ``teacher``, a trained
    language model over the same vocabulary (``ValueError`` otherwise) distilled into this one;
    ``teacher_meta`` describes it in the run (``meta["train"]["teacher"]``). ``neuron="none"`` is the
    ANN twin (non-spiking activations; its energy report counts MACs only)."""
    from spikejax.nn import SpikingLMConfig
    from spikejax.train.loop import Task
    from spikejax.train.sampling import generate_text

    akw: dict[str, Any] = {}
    if attention in ("linear", "hybrid"):
        akw["eps"] = 1.0  # the nn default, stored explicitly so run configs say it
    if attention in ("sliding", "hybrid"):
        akw["window"] = window or min(64, seq_len)
        # hybrid: softmax window + linear long range; sliding: the spike-driven (no softmax) window unless asked
        akw["softmax"] = attention == "hybrid" if window_softmax is None else bool(window_softmax)
    if mix_norm != "none":
        akw["mix_norm"] = mix_norm
    cfg = SpikingLMConfig(vocab_size=ds.vocab_size, d_model=d_model, num_heads=heads, num_layers=layers,
                          mlp_ratio=mlp_ratio, time_steps=time_steps, max_len=seq_len, attention=attention,
                          attention_kwargs=akw, neuron=neuron, neuron_kwargs=dict(neuron_kwargs or {}),
                          backend=backend, dtype=dtype, dropout=dropout)

    loss_fn, step_arg, train_meta = losses.lm_loss, False, None
    if recipe is not None or teacher is not None:
        from spikejax.train.recipes import Recipe, recipe_lm_loss

        recipe = Recipe() if recipe is None else recipe
        teacher_fn = None
        if teacher is not None:
            teacher_fn = _teacher_forward(teacher, ds.vocab_size)
        loss_fn, step_arg = recipe_lm_loss(recipe, teacher_fn), True
        train_meta = {"recipe": recipe.to_dict(teacher=teacher is not None)}
        if teacher is not None:
            train_meta["teacher"] = dict(teacher_meta or {})
        if neuron == "none" and recipe.active:
            raise ValueError("neuron: the ANN twin (--neuron none) has no spikes to anneal or rate-control")

    def after(model, say, out):  # out: the run directory (the sample is returned, not written there)
        if not sample_chars:
            return {}
        say(f"sampling {sample_chars} characters ...")
        prompt = sample_prompt if sample_prompt is not None else ds.decode(ds.val[:max(1, min(16, seq_len // 4))])
        text = generate_text(model, ds, prompt, sample_chars, seed=0, temperature=0.8)
        say("sample:\n" + text)
        return {"sample": text}

    return Task(
        name="lm", model_config=cfg, loss_fn=loss_fn, eval_fn=losses.lm_eval, step_arg=step_arg,
        train_meta=train_meta, spiking=neuron != "none",
        train_batch=lambda seed, step, b: ds.batch(seed, step, b, seq_len),
        eval_batches=ds.eval_batches(eval_batch_size, seq_len, eval_batches),
        eval_summary=losses.lm_summary, units_per_batch=lambda b: b * seq_len, unit="token",
        data_meta=ds.meta(), after=after, step_extras=losses.lm_step_extras)


def _teacher_forward(teacher, vocab_size: int):
    """``x[B, L] -> logits[B, L, V]`` of a frozen ``teacher`` (evaluation mode; its weights split out
    once and merged inside the step, so no module state is shared with the caller)."""
    import jax

    from spikejax.train.steps import ModelSplit

    if teacher.config.vocab_size != vocab_size:
        raise ValueError(f"teacher: its vocabulary has {teacher.config.vocab_size} characters, the data's "
                         f"{vocab_size}")
    split = ModelSplit(teacher)
    params, stats = jax.device_get(split.params), jax.device_get(split.stats)

    def forward(x):
        model = split.merge(params, stats)
        model.eval()
        return model(x)

    return forward


def vision_task(ds, *, d_model: int, layers: int, heads: int, time_steps: int, patch_size: int = 2,
                attention: str = "ssa", mlp_ratio: float = 4.0, neuron: str = "lif",
                neuron_kwargs: dict | None = None, backend: str = "xla", eval_batch_size: int = 120,
                dtype: str = "float32"):
    """Spikformer on a :class:`~spikejax.train.data.DigitsDataset` ``ds`` (images ``[B, 8, 8, 1]``,
    10 classes; ``dtype`` the compute dtype)."""
    from spikejax.nn import SpikformerConfig
    from spikejax.train.loop import Task

    cfg = SpikformerConfig(image_size=8, in_channels=1, patch_size=patch_size, num_classes=10, d_model=d_model,
                           num_heads=heads, num_layers=layers, mlp_ratio=mlp_ratio, time_steps=time_steps,
                           attention=attention, neuron=neuron, neuron_kwargs=dict(neuron_kwargs or {}),
                           backend=backend, dtype=dtype)
    return Task(
        name="vision", model_config=cfg, loss_fn=losses.classification_loss, eval_fn=losses.classification_eval,
        train_batch=lambda seed, step, b: ds.batch(seed, step, b), eval_batches=ds.eval_batches(eval_batch_size),
        eval_summary=losses.classification_summary, units_per_batch=lambda b: b, unit="image", data_meta=ds.meta())
