"""``spikejax train lm``, ``spikejax train vision`` and ``spikejax sample``.

    spikejax train lm                                   # char-level SpikingLM on Python's own docs (CPU, < 3 min)
    spikejax train lm --data tinyshakespeare.txt --preset shakespeare --out runs/tiny   # the GPU set-up
    spikejax train lm --out runs/a --resume             # continue a run exactly where its checkpoint left it
    spikejax train vision                               # Spikformer on scikit-learn's digits
    spikejax sample --checkpoint runs/a --prompt "def "
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spikejax.cli import (
    HelpFormatter,
    add_backend_flag,
    check_backend,
    check_out_dir,
    nonneg_int,
    number,
    positive_int,
)

__all__ = ["train_main", "sample_main", "lm_task", "vision_task", "load_checkpoint", "load_lm", "Vocabulary",
           "LM_PRESETS"]

LM_PRESETS: dict[str, dict[str, Any]] = {
    # CPU quick run: ~118k parameters, about two minutes on two cores.
    "tiny": dict(d_model=64, layers=2, heads=4, time_steps=4, seq_len=64, batch_size=32, steps=150, lr=3e-3,
                 warmup=15, eval_every=150, log_every=25, checkpoint_every=50, attention="linear"),
    # One GPU, TinyShakespeare: 10.8M parameters (6 x 384, MLP 3.5x), ternary spikes, T=4, context 256,
    # dropout 0.2, 3000 steps (~55 ms per step on one H100 with --dtype bfloat16 --backend pallas; val 1.57
    # in under 3 minutes of training, BENCHMARKS.md). Binary LIF spikes reached only 1.65 in 6600 steps.
    "shakespeare": dict(d_model=384, layers=6, heads=6, time_steps=4, seq_len=256, batch_size=64, steps=3000,
                        lr=2e-3, warmup=200, eval_every=500, log_every=250, checkpoint_every=1000,
                        attention="hybrid", mlp_ratio=3.5, dropout=0.2, neuron="ternary"),
}
NEURON_DEFAULTS: dict[str, Any] = {"beta": 0.5, "threshold": 0.5}


FALLBACKS: dict[str, Any] = {"neuron": "lif", "mix_norm": "none", "mlp_ratio": 4.0, "dropout": 0.0}
"""Values of the preset-driven flags that a preset leaves out."""


def _default_note(name: str, presets: dict[str, dict]) -> str:
    """`` (default: ...)`` for a flag whose default comes from the preset (``presets``: name -> values;
    one unnamed entry for a task without presets)."""
    values = {k: v.get(name, FALLBACKS.get(name)) for k, v in presets.items()}
    if len(values) == 1:
        return f" (default: {next(iter(values.values()))})"
    return " (default: the preset's: " + ", ".join(f"{k} {v}" for k, v in values.items()) + ")"


def _common_flags(p: argparse.ArgumentParser, presets: dict[str, dict]) -> None:
    d = lambda name: _default_note(name, presets)
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=positive_int, help="optimizer steps in total" + d("steps"))
    g.add_argument("--batch-size", type=positive_int,
                   help="global batch size (divisible by the device count)" + d("batch_size"))
    g.add_argument("--lr", type=number(0, low_open=True),
                   help="peak learning rate (AdamW, warm-up then cosine to 0.1x)" + d("lr"))
    g.add_argument("--warmup", type=nonneg_int,
                   help="warm-up steps (at most --steps; a preset's is capped at --steps - 1)" + d("warmup"))
    g.add_argument("--weight-decay", type=number(0), default=0.1, help="AdamW weight decay of the matrices")
    g.add_argument("--clip", type=number(0, low_open=True), default=1.0, help="global gradient-norm clip")
    g.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    add_backend_flag(g, default="xla")
    g.add_argument("--out", help="run directory: checkpoints, metrics.jsonl, summary.json (default runs/<task>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    g.add_argument("--eval-every", type=nonneg_int,
                   help="evaluate every N steps (0: only at the end)" + d("eval_every"))
    g.add_argument("--log-every", type=nonneg_int, help="log metrics every N steps" + d("log_every"))
    g.add_argument("--checkpoint-every", type=nonneg_int,
                   help="checkpoint every N steps (0: only at the end)" + d("checkpoint_every"))
    g.add_argument("--time-limit", type=number(0, low_open=True),
                   help="stop after this many seconds of training (checkpointed; --resume continues the same "
                        "schedule; default: no limit)")
    g.add_argument("--skip-nonfinite", type=nonneg_int, default=0, metavar="N",
                   help="skip up to N consecutive updates whose gradients hold NaN/inf (optax.apply_if_finite) "
                        "instead of stopping the run at the first (0: stop; stored with the run)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("multi-host (jax.distributed.initialize; give all three or none)")
    m.add_argument("--coordinator", help="host:port of process 0")
    m.add_argument("--num-processes", type=positive_int, help="number of processes")
    m.add_argument("--process-id", type=nonneg_int, help="this process's index in [0, --num-processes)")


def _model_flags(p: argparse.ArgumentParser, presets: dict[str, dict]) -> None:
    from spikejax.nn.attention import ATTENTIONS
    from spikejax.nn.config import DTYPES
    from spikejax.nn.neurons import NEURONS

    d = lambda name: _default_note(name, presets)
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=positive_int, help="model width D" + d("d_model"))
    g.add_argument("--layers", type=positive_int, help="transformer blocks" + d("layers"))
    g.add_argument("--heads", type=positive_int, help="attention heads (divide D)" + d("heads"))
    g.add_argument("--time-steps", type=positive_int, help="SNN time steps T" + d("time_steps"))
    g.add_argument("--mlp-ratio", type=number(0, low_open=True), help="MLP hidden width / D" + d("mlp_ratio"))
    g.add_argument("--attention", choices=sorted(ATTENTIONS), help="attention kind" + d("attention"))
    g.add_argument("--window", type=positive_int,
                   help="window of sliding / hybrid attention (default: min(64, --seq-len))")
    g.add_argument("--neuron", choices=sorted(NEURONS), help="spiking neuron of every layer" + d("neuron"))
    g.add_argument("--beta", type=number(0, 1), default=NEURON_DEFAULTS["beta"],
                   help="membrane decay of the neurons (lif, alif, ternary, multilevel)")
    g.add_argument("--threshold", type=number(0, low_open=True), default=NEURON_DEFAULTS["threshold"],
                   help="firing threshold")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="compute dtype of activations and matmuls (parameters and optimizer stay float32; "
                        "bfloat16 is faster on GPUs; stored in the run's model config)")


def neuron_kwargs(neuron: str, beta: float, threshold: float) -> dict[str, Any]:
    """The constructor arguments among (β, θ) that ``neuron`` takes."""
    if neuron in ("lif", "alif", "ternary", "multilevel"):
        return {"beta": beta, "threshold": threshold}
    if neuron in ("if", "plif"):
        return {"threshold": threshold}
    return {}


def _pick(args, preset: dict, name: str):
    v = getattr(args, name, None)
    return preset[name] if v is None else v


def _train_config(args, preset: dict, task: str):
    from spikejax.train.loop import TrainConfig

    out = args.out or os.path.join("runs", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    return TrainConfig(
        steps=_pick(args, preset, "steps"), batch_size=_pick(args, preset, "batch_size"),
        lr=_pick(args, preset, "lr"), warmup=_pick(args, preset, "warmup"), weight_decay=args.weight_decay,
        clip=args.clip, seed=args.seed, log_every=_pick(args, preset, "log_every"),
        eval_every=_pick(args, preset, "eval_every"), checkpoint_every=_pick(args, preset, "checkpoint_every"),
        out=out, resume=args.resume, progress=not args.no_progress, time_limit=args.time_limit,
        skip_nonfinite=args.skip_nonfinite)


# --- language model ------------------------------------------------------------------------------


def _lm_loss(model, batch, key=None):
    x, y = batch
    logits = model(x, dropout_key=key)  # float32 (the models' readout)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": (logits.argmax(-1) == y).mean()}


def _lm_eval(model, batch):
    x, y = batch
    logits = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"loss_sum": ce.sum(), "count": jnp.asarray(ce.size, jnp.float32),
            "correct": (logits.argmax(-1) == y).sum().astype(jnp.float32)}


def _lm_summary(s: dict) -> dict:
    loss = s["loss_sum"] / s["count"]
    return {"val_loss": loss, "val_bpc": loss / math.log(2), "val_accuracy": s["correct"] / s["count"]}


def _generate(model, ds, prompt: str, n: int, seed: int, temperature: float, top_k: int | None) -> str:
    """``prompt`` followed by exactly ``n`` sampled characters.

    A model with learned positions sees at most ``max_len`` tokens, so the context window slides:
    the first chunk continues the prompt's last ``max_len - 1`` characters (at most) up to
    ``max_len`` tokens; every further chunk re-reads the last ``C = max_len // 2`` characters
    (at positions 0..C-1, as in training, where every window starts at position 0) and samples
    ``max_len - C`` more. ``ValueError`` when the prompt is empty or holds characters outside the
    vocabulary, or when ``max_len = 1`` leaves no room to continue a context.
    """
    ids = np.asarray(ds.encode(prompt), np.int32)
    if ids.size == 0:
        raise ValueError("prompt: expected at least one character")
    model.eval()
    max_len = model.config.max_len if model.pos_embedding_enabled else None
    if max_len is not None and max_len < 2 and n > 0:
        raise ValueError(f"chars: the model's max_len={max_len} leaves no room to continue a context")
    out, key = ids, jax.random.key(seed)
    while len(out) - len(ids) < n:
        remaining = n - (len(out) - len(ids))
        if max_len is None:
            context, k = out, remaining
        else:
            context = out[-(max_len - 1):] if len(out) == len(ids) else out[-(max_len // 2):]
            k = min(remaining, max_len - len(context))
        key, sub = jax.random.split(key)
        new = model.generate(jnp.asarray(context)[None], k, key=sub, temperature=temperature, top_k=top_k)
        out = np.concatenate([out, np.asarray(new)[0, len(context):]])
    return ds.decode(out)


def lm_task(ds, *, d_model: int, layers: int, heads: int, time_steps: int, seq_len: int, attention: str,
            window: int | None = None, window_softmax: bool | None = None, mix_norm: str = "none",
            mlp_ratio: float = 4.0, neuron: str = "lif", neuron_kwargs: dict | None = None, backend: str = "xla",
            eval_batches: int = 8, eval_batch_size: int = 32, sample_chars: int = 0,
            sample_prompt: str | None = None, dtype: str = "float32", dropout: float = 0.0):
    """The char-level language-model :class:`~spikejax.train.loop.Task` on a :class:`CharDataset`
    (``dtype``: the model's compute dtype, ``"float32"`` or ``"bfloat16"``; ``dropout``: the
    model's training dropout rate; ``mix_norm``: the attention's norm before its ``attn_neuron``)."""
    from spikejax.nn import SpikingLMConfig
    from spikejax.train.loop import Task

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

    def after(model, say):
        if not sample_chars:
            return {}
        say(f"sampling {sample_chars} characters ...")
        prompt = sample_prompt if sample_prompt is not None else ds.decode(ds.val[:max(1, min(16, seq_len // 4))])
        text = _generate(model, ds, prompt, sample_chars, 0, 0.8, None)
        say("sample:\n" + text)
        return {"sample": text}

    return Task(
        name="lm", model_config=cfg, loss_fn=_lm_loss, eval_fn=_lm_eval,
        train_batch=lambda seed, step, b: ds.batch(seed, step, b, seq_len),
        eval_batches=ds.eval_batches(eval_batch_size, seq_len, eval_batches),
        eval_summary=_lm_summary, units_per_batch=lambda b: b * seq_len, unit="token",
        data_meta=ds.meta(), after=after)


# --- vision ----------------------------------------------------------------------------------------


def _vision_loss(model, batch, key=None):
    del key  # no stochastic regulariser in the vision model
    x, y = batch
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), {
        "accuracy": (logits.argmax(-1) == y).mean()}


def _vision_eval(model, batch):
    x, y, mask = batch
    logits = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"loss_sum": (ce * mask).sum(), "count": mask.sum(), "correct": ((logits.argmax(-1) == y) * mask).sum()}


def _vision_summary(s: dict) -> dict:
    return {"val_loss": s["loss_sum"] / s["count"], "val_accuracy": s["correct"] / s["count"]}


def vision_task(ds, *, d_model: int, layers: int, heads: int, time_steps: int, patch_size: int = 2,
                attention: str = "ssa", mlp_ratio: float = 4.0, neuron: str = "lif",
                neuron_kwargs: dict | None = None, backend: str = "xla", eval_batch_size: int = 120,
                dtype: str = "float32"):
    """Spikformer on :class:`DigitsDataset` (8×8×1 images, 10 classes; ``dtype`` the compute dtype)."""
    from spikejax.nn import SpikformerConfig
    from spikejax.train.loop import Task

    cfg = SpikformerConfig(image_size=8, in_channels=1, patch_size=patch_size, num_classes=10, d_model=d_model,
                           num_heads=heads, num_layers=layers, mlp_ratio=mlp_ratio, time_steps=time_steps,
                           attention=attention, neuron=neuron, neuron_kwargs=dict(neuron_kwargs or {}),
                           backend=backend, dtype=dtype)
    return Task(
        name="vision", model_config=cfg, loss_fn=_vision_loss, eval_fn=_vision_eval,
        train_batch=lambda seed, step, b: ds.batch(seed, step, b), eval_batches=ds.eval_batches(eval_batch_size),
        eval_summary=_vision_summary, units_per_batch=lambda b: b, unit="image", data_meta=ds.meta())


VISION_DEFAULTS = dict(d_model=64, layers=1, heads=4, time_steps=4, batch_size=64, steps=300, lr=2e-3, warmup=20,
                       eval_every=100, log_every=50, checkpoint_every=100, attention="ssa")


# --- commands ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikejax train", description="Train a spiking model.",
                                formatter_class=HelpFormatter)
    # every task's parser shows its defaults in --help (HelpFormatter), also those added by tasks_data
    sub = p.add_subparsers(dest="task", required=True,
                           parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter))
    lm = sub.add_parser("lm", help="character-level SpikingLM (default text: Python's pydoc topics)",
                        description="Train a character-level SpikingLM. The --preset gives every flag whose "
                                    "help says 'the preset's'; a flag given overrides it.",
                        formatter_class=HelpFormatter)
    lm.add_argument("--data", help="a UTF-8 text file (e.g. tinyshakespeare.txt), split 90/10; "
                                   "default: Python's pydoc_data topics (no download)")
    lm.add_argument("--preset", choices=sorted(LM_PRESETS), default="tiny",
                    help="size preset; any flag below overrides it (tiny: a CPU run; shakespeare: one GPU)")
    lm.add_argument("--seq-len", type=positive_int, help="context length L" + _default_note("seq_len", LM_PRESETS))
    lm.add_argument("--eval-batches", type=positive_int, default=8, help="validation batches per evaluation")
    lm.add_argument("--window-softmax", action=argparse.BooleanOptionalAction, default=None,
                    help="softmax over the window of sliding / hybrid attention (default: on for hybrid, "
                         "off for sliding, i.e. the spike-driven window)")
    lm.add_argument("--mix-norm", choices=("none", "layer"),
                    help="LayerNorm on the attention's mixed output before its spiking neuron"
                         + _default_note("mix_norm", LM_PRESETS))
    lm.add_argument("--dropout", type=number(0, 1, high_open=True),
                    help="dropout rate on the embedding and every branch output (training only; one mask shared "
                         "over the T steps)" + _default_note("dropout", LM_PRESETS))
    lm.add_argument("--sample-chars", type=nonneg_int, default=120, help="characters sampled after training")
    _model_flags(lm, LM_PRESETS)
    _common_flags(lm, LM_PRESETS)
    vi = sub.add_parser("vision", help="Spikformer on scikit-learn's 8x8 digits",
                        description="Train a Spikformer on scikit-learn's 8x8 digits.", formatter_class=HelpFormatter)
    vi.add_argument("--patch-size", type=positive_int, default=2, help="patch side (divides 8)")
    _model_flags(vi, {"": VISION_DEFAULTS})
    _common_flags(vi, {"": VISION_DEFAULTS})
    from spikejax.train import tasks_data  # --dataset/--model on vision; train audio, train temporal

    tasks_data.add_vision_flags(vi)
    tasks_data.add_parsers(sub, _model_flags, _common_flags)
    return p


def _subparser(p: argparse.ArgumentParser, task: str) -> argparse.ArgumentParser:
    """The ``spikejax train <task>`` parser (its usage goes with its errors)."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[task]
    raise KeyError(task)


def _check_args(parser: argparse.ArgumentParser, args, preset: dict) -> None:
    """The user errors that the flags alone reveal (``parser.error``, exit 2), found before anything
    is built or written: flag combinations, the backend on this machine, the run directory."""
    given = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
    if any(given) and not all(given):
        missing = [f for f, g in zip(("--coordinator", "--num-processes", "--process-id"), given, strict=True)
                   if not g]
        parser.error("a multi-host run needs --coordinator, --num-processes and --process-id together; "
                     f"missing {' and '.join(missing)}")
    if all(given) and args.process_id >= args.num_processes:
        parser.error(f"argument --process-id: expected 0 <= --process-id < --num-processes={args.num_processes}, "
                     f"got {args.process_id}")
    check_backend(parser, args.backend)
    steps = _pick(args, preset, "steps")
    if args.warmup is not None and args.warmup > steps:  # a preset's warm-up is capped at steps - 1
        parser.error(f"argument --warmup: {args.warmup} warm-up steps exceed --steps {steps}")
    d_model, heads = _pick(args, preset, "d_model"), _pick(args, preset, "heads")
    if d_model % heads:
        parser.error(f"argument --heads: {heads} heads do not divide --d-model {d_model}")
    if args.resume and not args.out:
        parser.error("argument --resume: give --out DIR, the run directory to continue")
    check_out_dir(parser, args.out or "runs")


def train_main(argv: list[str] | None = None) -> dict[str, Any]:
    """``spikejax train {lm,vision} [flags]``; returns the training summary."""
    top = _parser()
    args = top.parse_args(argv)
    parser = _subparser(top, args.task)
    if args.resume and args.out:  # continue with the run's stored flags where argv gives none
        from spikejax.train.resume import apply_stored_flags

        apply_stored_flags(parser, argv, args, args.task)
    from spikejax.train.tasks_data import TASK_DEFAULTS

    preset = LM_PRESETS[args.preset] if args.task == "lm" else TASK_DEFAULTS.get(args.task, VISION_DEFAULTS)
    _check_args(parser, args, preset)
    from spikejax.train import sharding as shd
    from spikejax.train.loop import fit

    shd.init_distributed(args.coordinator, args.num_processes, args.process_id)
    batch_size = _pick(args, preset, "batch_size")
    if batch_size % jax.device_count():
        parser.error(f"argument --batch-size: {batch_size} is not divisible by the {jax.device_count()} devices")
    try:
        task = _make_task(args, preset)
    except (ValueError, FileNotFoundError) as e:  # data that cannot be used, a config that does not validate
        parser.error(" ".join(str(e).split("\n")))
    cfg = _train_config(args, preset, args.task)
    if getattr(task.after, "wants_run_dir", False):  # tasks_data.RunPlots: plots into the run directory
        task.after.out = cfg.out
    print(f"spikejax train {args.task}: data {task.data_meta['name']}, run directory {cfg.out}", flush=True)
    from spikejax.train.resume import run_flags
    from spikejax.train.steps import NonFiniteError

    try:
        return fit(task, cfg, run_flags=run_flags(args))
    except NonFiniteError as e:  # a diverged run: one paragraph, exit status 1
        raise SystemExit(f"spikejax train: error: {e}") from None


def _make_task(args, preset: dict):
    """The :class:`~spikejax.train.loop.Task` of the parsed flags (data read and checked, config validated)."""
    from spikejax.train.data import CharDataset, DigitsDataset, default_text

    if args.task in ("audio", "temporal") or getattr(args, "dataset", None):
        from spikejax.train import tasks_data

        return tasks_data.make_task(args, preset, _pick, neuron_kwargs)
    neuron = _pick(args, {"neuron": "lif", **preset}, "neuron")
    nkw = neuron_kwargs(neuron, args.beta, args.threshold)
    if args.task == "lm":
        ds = CharDataset.from_file(args.data) if args.data else CharDataset(default_text(), name="pydoc_data.topics")
        seq_len = _pick(args, preset, "seq_len")
        ds.check_seq_len(seq_len)
        return lm_task(ds, d_model=_pick(args, preset, "d_model"), layers=_pick(args, preset, "layers"),
                       heads=_pick(args, preset, "heads"), time_steps=_pick(args, preset, "time_steps"),
                       seq_len=seq_len, attention=_pick(args, preset, "attention"),
                       window=args.window, window_softmax=args.window_softmax,
                       mix_norm=_pick(args, {"mix_norm": "none", **preset}, "mix_norm"),
                       mlp_ratio=_pick(args, {"mlp_ratio": 4.0, **preset}, "mlp_ratio"),
                       neuron=neuron, neuron_kwargs=nkw, backend=args.backend,
                       eval_batches=args.eval_batches, sample_chars=args.sample_chars, dtype=args.dtype,
                       dropout=_pick(args, {"dropout": 0.0, **preset}, "dropout"))
    return vision_task(DigitsDataset(), d_model=_pick(args, preset, "d_model"),
                       layers=_pick(args, preset, "layers"), heads=_pick(args, preset, "heads"),
                       time_steps=_pick(args, preset, "time_steps"),
                       patch_size=args.patch_size, attention=_pick(args, preset, "attention"),
                       mlp_ratio=args.mlp_ratio or 4.0, neuron=neuron,
                       neuron_kwargs=nkw, backend=args.backend, dtype=args.dtype)


def sample_main(argv: list[str] | None = None) -> str:
    """``spikejax sample --checkpoint DIR --prompt TEXT``: generate text from a trained SpikingLM."""
    p = argparse.ArgumentParser(prog="spikejax sample", description="Generate text from a SpikingLM checkpoint.",
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory of `spikejax train lm` (or its checkpoints/)")
    p.add_argument("--prompt", default="\n", help="text to continue (characters of the training vocabulary)")
    p.add_argument("--chars", type=positive_int, default=200,
                   help="characters to generate (beyond the context length the window slides)")
    p.add_argument("--temperature", type=number(0), default=0.8, help="softmax temperature (0: greedy)")
    p.add_argument("--top-k", type=positive_int, help="sample among the k most likely characters (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_backend_flag(p)
    args = p.parse_args(argv)
    check_backend(p, args.backend)
    model, ds = load_lm(args.checkpoint, backend=args.backend)
    try:
        text = _generate(model, ds, args.prompt, args.chars, args.seed, args.temperature, args.top_k)
    except ValueError as e:
        p.error(str(e))
    print(text)
    return text


def load_checkpoint(checkpoint: str, *, backend: str = "auto"):
    """``(model, meta)`` restored from a ``spikejax train`` run directory (or its ``checkpoints/``):
    a :class:`~spikejax.nn.SpikingLM` or :class:`~spikejax.nn.Spikformer` with the latest weights
    and the stored metadata (``meta["model"]`` config, ``meta["data"]``, ``meta["train"]``).

    ``backend``: the kernel backend of the restored model's neurons (``"auto"``: the fastest that
    runs here; ``"xla"``, ``"pallas"``, ...), a run-time choice: a run trained with ``pallas`` on a
    GPU restores on a CPU (a backend stored by an older run is ignored)."""
    from spikejax.nn import SpikformerConfig, SpikingLMConfig
    from spikejax.train.checkpoint import CheckpointError, CheckpointManager, read_meta
    from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

    directory = os.path.join(checkpoint, "checkpoints") if os.path.isdir(os.path.join(checkpoint, "checkpoints")) \
        else checkpoint
    _, meta = read_meta(directory)
    configs = {"lm": (SpikingLMConfig, _lm_loss, _lm_eval), "vision": (SpikformerConfig, _vision_loss, _vision_eval)}
    if meta.get("task") not in configs:
        raise CheckpointError(f"checkpoint: {directory!r} has unknown task {meta.get('task')!r}")
    config_cls, loss_fn, eval_fn = configs[meta["task"]]
    split = ModelSplit(config_cls.from_dict({**meta["model"], "backend": backend}).build(seed=0))
    t = meta["train"]
    tx = make_optimizer(t["lr"], t["steps"], warmup=t["warmup"], weight_decay=t["weight_decay"], clip=t["clip"],
                        skip_nonfinite=t.get("skip_nonfinite", 0))  # the optimizer-state structure of the run
    template = make_steps(split, tx, loss_fn, eval_fn, None).init()
    mngr = CheckpointManager(directory, meta, save_every=1, resume=True)
    try:
        state, _ = mngr.restore(template)
    finally:
        mngr.close()
    return split.merge(state.params, state.stats), meta


class Vocabulary:
    """The character vocabulary stored in a language-model checkpoint's metadata."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        missing = sorted({c for c in text if c not in self.stoi})
        if missing:
            raise ValueError(f"prompt: characters {missing!r} are not in the training vocabulary")
        return np.array([self.stoi[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def load_lm(checkpoint: str, *, backend: str = "auto"):
    """``(SpikingLM, Vocabulary)`` restored from a ``spikejax train lm`` run directory (``backend``:
    see :func:`load_checkpoint`)."""
    import json

    from spikejax.train.checkpoint import CheckpointError

    model, meta = load_checkpoint(checkpoint, backend=backend)
    if meta.get("task") != "lm":
        raise CheckpointError(f"checkpoint: {checkpoint!r} is a {meta.get('task')!r} run, not a language model")
    return model, Vocabulary(json.loads(meta["data"]["chars"]))
