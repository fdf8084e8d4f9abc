"""The ``spikejax train`` and ``spikejax sample`` commands: parse the flags, take the preset's values
for the flags not given, and call the library (:mod:`spikejax.train.tasks`,
:mod:`~spikejax.train.tasks_data`, :func:`~spikejax.train.loop.fit`, :mod:`~spikejax.train.restore`).

    spikejax train lm                                   # char-level SpikingLM on Python's own docs (CPU, < 3 min)
    spikejax train lm --data tinyshakespeare.txt --preset shakespeare --out runs/tiny   # the GPU set-up
    spikejax train lm --out runs/a --resume             # continue a run exactly where its checkpoint left it
    spikejax train vision                               # Spikformer on scikit-learn's digits
    spikejax train temporal --dataset randman           # a spiking sequence classifier (tasks_data)
    spikejax sample --checkpoint runs/a --prompt "def "

Defaults come from one place, :data:`spikejax.train.presets.PRESETS`: every preset-driven flag parses
to ``None`` when left out and takes the preset's value (:meth:`~spikejax.train.presets.Preset.override`),
so a preset can set any of them (β included) and a flag given overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from typing import Any

import jax

from spikejax.cli import (
    HelpFormatter,
    add_backend_flag,
    check_backend,
    check_out_dir,
    nonneg_int,
    number,
    positive_int,
)
from spikejax.train.presets import PRESETS, Preset, preset_for
from spikejax.train.restore import load_checkpoint, load_lm
from spikejax.train.tasks import lm_task, neuron_kwargs, vision_task
from spikejax.train.vocab import Vocabulary

__all__ = ["train_main", "sample_main", "finetune_main", "load_teacher", "lm_task", "vision_task", "load_checkpoint",
           "load_lm", "Vocabulary", "LM_PRESETS", "settings_of", "make_data_task"]

LM_PRESETS: dict[str, dict[str, Any]] = {name: dataclasses.asdict(p) for name, p in PRESETS["lm"].items()}
"""Deprecated: the language-model presets as dicts; :data:`spikejax.train.presets.PRESETS` ``["lm"]`` is the source."""
NEURON_DEFAULTS: dict[str, Any] = {"beta": PRESETS["lm"]["tiny"].beta, "threshold": PRESETS["lm"]["tiny"].threshold}
"""Deprecated: the tiny preset's (β, θ)."""


def _default_note(name: str, presets: dict[str, Preset]) -> str:
    """`` (default: ...)`` for a flag whose default comes from the preset (``presets``: name -> preset)."""
    values = {k: getattr(p, name) for k, p in presets.items()}
    if len(set(values.values())) == 1:
        return f" (default: {next(iter(values.values()))})"
    return " (default: the preset's: " + ", ".join(f"{k} {v}" for k, v in values.items()) + ")"


def _common_flags(p: argparse.ArgumentParser, presets: dict[str, Preset]) -> None:
    d = lambda name: _default_note(name, presets)
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=positive_int, help="optimizer steps in total" + d("steps"))
    g.add_argument("--batch-size", type=positive_int,
                   help="global batch size (divisible by the device count)" + d("batch_size"))
    g.add_argument("--lr", type=number(0, low_open=True),
                   help="peak learning rate (AdamW, warm-up then cosine to 0.1x)" + d("lr"))
    g.add_argument("--warmup", type=nonneg_int,
                   help="warm-up steps (at most --steps; a preset's is capped at --steps - 1)" + d("warmup"))
    g.add_argument("--weight-decay", type=number(0), help="AdamW weight decay of the matrices" + d("weight_decay"))
    g.add_argument("--clip", type=number(0, low_open=True), help="global gradient-norm clip" + d("clip"))
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
    m = p.add_argument_group("parallelism (spikejax.train.partition; same losses, less memory per device)")
    m.add_argument("--fsdp", action="store_true",
                   help="shard parameters and optimizer state over the data mesh axis (FSDP) instead of replicating")
    m.add_argument("--tensor-parallel", type=positive_int, default=1, metavar="N",
                   help="split attention heads and MLP columns over a 'model' mesh axis of N devices (divides the "
                        "device count, the heads and the MLP width); the batch splits over the other devices / N")


def _model_flags(p: argparse.ArgumentParser, presets: dict[str, Preset]) -> None:
    from spikejax.nn.attention import ATTENTIONS
    from spikejax.nn.config import DTYPES
    from spikejax.nn.neurons import NEURONS
    from spikejax.remat import REMAT_MODES

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
    g.add_argument("--beta", type=number(0, 1),
                   help="membrane decay of the neurons (lif, alif, ternary, multilevel)" + d("beta"))
    g.add_argument("--threshold", type=number(0, low_open=True), help="firing threshold" + d("threshold"))
    g.add_argument("--dtype", choices=DTYPES,
                   help="compute dtype of activations and matmuls (parameters and optimizer stay float32; "
                        "bfloat16 is faster on GPUs; stored in the run's model config)" + d("dtype"))
    g.add_argument("--remat", choices=REMAT_MODES,
                   help="training memory (spikejax.remat): what each block keeps for the backward pass; none: "
                        "everything; block: its input; spikes: its input, recomputing from bit-packed spikes; "
                        "offload: as spikes with the input in host memory. Same gradients" + d("remat"))


def _recipe_flags(p: argparse.ArgumentParser) -> None:
    """The language-model recipes (:mod:`spikejax.train.recipes`)."""
    from spikejax.train.recipes import ANNEALS

    g = p.add_argument_group("recipes (spikejax.train.recipes)")
    g.add_argument("--teacher", metavar="RUN_DIR",
                   help="distil from this spikejax LM run (same vocabulary): loss = CE + w T^2 KL(teacher_T || "
                        "student_T); the teacher runs in the same step, without gradients")
    g.add_argument("--distill-weight", type=number(0), default=1.0, help="w of the distillation term")
    g.add_argument("--distill-temperature", type=number(0, low_open=True), default=2.0,
                   help="T of the distillation softmaxes")
    g.add_argument("--target-rate", type=number(0, 1),
                   help="firing-rate control: add --rate-weight * mean over layers of (rate - R)^2 (logged as "
                        "rate_penalty, mean_rate; default: off)")
    g.add_argument("--rate-weight", type=number(0), default=1.0, help="weight of the firing-rate penalty")
    g.add_argument("--anneal", choices=ANNEALS, default="none",
                   help="soft-to-hard schedule; fp-warmup: each neuron outputs a*spikes + (1-a)*relu(input), a "
                        "rising linearly from 0 (an ANN) at step 0 to 1 (hard spikes) at --anneal-steps")
    g.add_argument("--anneal-steps", type=nonneg_int, default=0, help="length of the --anneal ramp in steps")
    g.add_argument("--layer-lr-decay", type=number(0, 1, low_open=True), default=1.0,
                   help="layer-wise learning rates: block i of L gets lr * d^(L-1-i), the embeddings lr * d^L, "
                        "the head lr (1: one rate)")
    g.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                   help="freeze the parameters whose dotted names match this glob (repeatable), e.g. "
                        "'token_embed.*' or 'blocks.0.*'")


def _data_flags(p: argparse.ArgumentParser, *, choices: tuple[str, ...], default: str | None = None) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=choices, default=default, help="dataset (spikejax.datasets.available())")
    g.add_argument("--data-dir", help="folder with the dataset's files in its published layout")
    g.add_argument("--num-workers", type=nonneg_int, default=0, help="grain worker processes (0: threads)")
    g.add_argument("--eval-batches", type=positive_int, help="evaluation batches (default: the whole test split)")


def _add_sequence_parsers(sub) -> None:
    """``spikejax train audio`` and ``spikejax train temporal`` (:func:`spikejax.train.tasks_data.sequence_task`)."""
    from spikejax.train.tasks_data import SEQUENCE_NEURONS

    for task, help_text, choices, default in (
            ("audio", "SHD / SSC spike trains with LIF or adaptive (ALIF) neurons", ("shd", "ssc"), None),
            ("temporal", "spike-timing tasks generated locally (randman)", ("randman",), "randman")):
        p = sub.add_parser(task, help=help_text, description=f"Train a spiking sequence classifier: {help_text}.")
        _data_flags(p, choices=choices, default=default)
        p.add_argument("--bin-us", type=number(0, low_open=True),
                       help="time bin in µs (default: the recording length / --time-steps)")
        p.add_argument("--downsample", type=number(0, 1, low_open=True),
                       help="scale the channel index with tonic's Downsample (e.g. 0.2: SHD's 700 -> 140)")
        if task == "temporal":
            p.add_argument("--classes", type=positive_int, default=10, help="randman classes")
            p.add_argument("--units", type=positive_int, default=50, help="randman input units")
            p.add_argument("--per-class", type=positive_int, default=100, help="randman training samples per class")
            p.add_argument("--dim", type=positive_int, default=1, help="randman manifold dimension (harder: 2, 3)")
            p.add_argument("--data-seed", type=int, default=0, help="randman manifold seed")
        _model_flags(p, PRESETS[task])
        _common_flags(p, PRESETS[task])
        for action in p._actions:  # the sequence model's neurons, not the transformer's
            if action.dest == "neuron":
                action.choices = SEQUENCE_NEURONS
                action.help = ("hidden neuron: lif, alif (feed-forward), adlif (learnable adaptive LIF), rlif, radlif "
                               "(recurrent LIF / adLIF, spikejax.nn.RecurrentSpiking)"
                               + _default_note("neuron", PRESETS[task]))


def _parser() -> argparse.ArgumentParser:
    from spikejax import datasets

    p = argparse.ArgumentParser(prog="spikejax train", description="Train a spiking model.",
                                formatter_class=HelpFormatter)
    # every task's parser shows its defaults in --help (HelpFormatter)
    sub = p.add_subparsers(dest="task", required=True,
                           parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter))
    lm = sub.add_parser("lm", help="character-level SpikingLM (default text: Python's pydoc topics)",
                        description="Train a character-level SpikingLM. The --preset gives every flag whose "
                                    "help says 'the preset's'; a flag given overrides it.",
                        formatter_class=HelpFormatter)
    presets = PRESETS["lm"]
    lm.add_argument("--data", help="a UTF-8 text file (e.g. tinyshakespeare.txt), split 90/10; "
                                   "default: Python's pydoc_data topics (no download)")
    lm.add_argument("--preset", choices=sorted(presets), default="tiny",
                    help="size preset; any flag below overrides it (tiny: a CPU run; shakespeare: one GPU)")
    lm.add_argument("--seq-len", type=positive_int, help="context length L" + _default_note("seq_len", presets))
    lm.add_argument("--eval-batches", type=positive_int, default=8, help="validation batches per evaluation")
    lm.add_argument("--window-softmax", action=argparse.BooleanOptionalAction, default=None,
                    help="softmax over the window of sliding / hybrid attention (default: on for hybrid, "
                         "off for sliding, i.e. the spike-driven window)")
    lm.add_argument("--mix-norm", choices=("none", "layer"),
                    help="LayerNorm on the attention's mixed output before its spiking neuron"
                         + _default_note("mix_norm", presets))
    lm.add_argument("--dropout", type=number(0, 1, high_open=True),
                    help="dropout rate on the embedding and every branch output (training only; one mask shared "
                         "over the T steps)" + _default_note("dropout", presets))
    lm.add_argument("--sample-chars", type=nonneg_int, default=120, help="characters sampled after training")
    _model_flags(lm, presets)
    _common_flags(lm, presets)
    _recipe_flags(lm)
    for action in lm._actions:  # the ANN twin: the same architecture without spikes
        if action.dest == "neuron":
            action.choices = sorted(action.choices) + ["none"]
            action.help += "; none: the ANN twin (non-spiking activations, T = 1, energy counted as MACs)"
    vi = sub.add_parser("vision", help="Spikformer on scikit-learn's 8x8 digits",
                        description="Train a Spikformer on scikit-learn's 8x8 digits.", formatter_class=HelpFormatter)
    vi.add_argument("--patch-size", type=positive_int, default=2, help="patch side (divides 8)")
    _model_flags(vi, PRESETS["vision"])
    _common_flags(vi, PRESETS["vision"])
    # --dataset / --model: an image or event set with a zoo model (spikejax.train.tasks_data.vision_data_task)
    _data_flags(vi, choices=tuple(n for n in datasets.available() if n not in ("shd", "ssc", "randman")))
    vi.add_argument("--model", default="spikformer", help="zoo model (spikejax.models.list_models()) for --dataset")
    vi.add_argument("--augment", action="store_true", help="random crop + flip (images), event drop + jitter (events)")
    _add_sequence_parsers(sub)
    return p


def _subparser(p: argparse.ArgumentParser, task: str) -> argparse.ArgumentParser:
    """The ``spikejax train <task>`` parser (its usage goes with its errors)."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[task]
    raise KeyError(task)


def settings_of(args: argparse.Namespace) -> Preset:
    """The values of the run: the task's preset (``--preset``, else its default) with every flag of
    ``args`` that is not ``None`` put in."""
    return preset_for(args.task, getattr(args, "preset", None)).override(**vars(args))


def _check_args(parser: argparse.ArgumentParser, args, settings: Preset) -> None:
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
    if args.warmup is not None and args.warmup > settings.steps:  # a preset's warm-up is capped at steps - 1
        parser.error(f"argument --warmup: {args.warmup} warm-up steps exceed --steps {settings.steps}")
    if settings.d_model % settings.heads:
        parser.error(f"argument --heads: {settings.heads} heads do not divide --d-model {settings.d_model}")
    if settings.heads % args.tensor_parallel:
        parser.error(f"argument --tensor-parallel: {args.tensor_parallel} does not divide the {settings.heads} heads")
    if args.resume and not args.out:
        parser.error("argument --resume: give --out DIR, the run directory to continue")
    check_out_dir(parser, args.out or "runs")


def _train_config(args, s: Preset):
    from spikejax.train.loop import TrainConfig

    out = args.out or os.path.join("runs", f"{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    return TrainConfig(
        steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup=s.warmup, weight_decay=s.weight_decay, clip=s.clip,
        seed=args.seed, log_every=s.log_every, eval_every=s.eval_every, checkpoint_every=s.checkpoint_every,
        out=out, resume=args.resume, progress=not args.no_progress, time_limit=args.time_limit,
        skip_nonfinite=args.skip_nonfinite, freeze=tuple(getattr(args, "freeze", None) or ()),
        layer_lr_decay=getattr(args, "layer_lr_decay", None) or 1.0, fsdp=args.fsdp,
        tensor_parallel=args.tensor_parallel)


def _lm_from_flags(args, s: Preset):
    from spikejax.train.data import CharDataset, default_text
    from spikejax.train.recipes import Recipe

    ds = CharDataset.from_file(args.data) if args.data else CharDataset(default_text(), name="pydoc_data.topics")
    ds.check_seq_len(s.seq_len)
    recipe = Recipe(distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
                    target_rate=args.target_rate, rate_weight=args.rate_weight, anneal=args.anneal,
                    anneal_steps=args.anneal_steps)
    teacher, teacher_meta = (load_teacher(args.teacher, ds, s.seq_len, backend=args.backend) if args.teacher
                             else (None, None))
    if teacher is None and not recipe.active:
        recipe = None  # a plain run: the plain loss and the stored description of every earlier run
    time_steps = s.time_steps
    if s.neuron == "none":
        if args.time_steps not in (None, 1):
            raise ValueError(f"--time-steps: the ANN twin (--neuron none) runs one step, got {args.time_steps}")
        time_steps = 1
    return lm_task(ds, d_model=s.d_model, layers=s.layers, heads=s.heads, time_steps=time_steps, seq_len=s.seq_len,
                   attention=s.attention, window=args.window, window_softmax=args.window_softmax,
                   mix_norm=s.mix_norm, mlp_ratio=s.mlp_ratio, neuron=s.neuron,
                   neuron_kwargs=neuron_kwargs(s.neuron, s.beta, s.threshold), backend=args.backend,
                   eval_batches=args.eval_batches, sample_chars=args.sample_chars, dtype=s.dtype, dropout=s.dropout,
                   recipe=recipe, teacher=teacher, teacher_meta=teacher_meta)


def load_teacher(run: str, ds, seq_len: int, *, backend: str = "auto"):
    """``(teacher model, {"run", "step"})`` from a ``spikejax train lm`` run directory for distilling
    into a model on ``ds``; ``ValueError`` naming ``--teacher`` when its vocabulary differs from the
    data's or its context is shorter than ``seq_len``."""
    from spikejax.train.checkpoint import CheckpointError, read_meta
    from spikejax.train.restore import checkpoint_directory

    try:
        model, vocab = load_lm(run, backend=backend)
        step, _ = read_meta(checkpoint_directory(run))
    except CheckpointError as e:
        raise ValueError(f"--teacher: {e}") from None
    if vocab.chars != list(ds.chars):
        only_t = sorted(set(vocab.chars) - set(ds.chars))
        only_d = sorted(set(ds.chars) - set(vocab.chars))
        raise ValueError(f"--teacher: {run!r} was trained on another vocabulary ({len(vocab.chars)} characters, the "
                         f"data has {len(ds.chars)}; only the teacher's: {only_t[:8]!r}, only the data's: "
                         f"{only_d[:8]!r})")
    if model.pos_embedding_enabled and model.config.max_len < seq_len:
        raise ValueError(f"--teacher: {run!r} has a context of {model.config.max_len}, shorter than --seq-len "
                         f"{seq_len}")
    return model, {"run": os.path.abspath(run), "step": int(step)}


def _vision_from_flags(args, s: Preset):
    if args.dataset or args.model != "spikformer":  # a zoo --model without --dataset trains on the digits set
        args.dataset = args.dataset or "digits"
        return make_data_task(args, s)
    from spikejax.train.data import DigitsDataset

    return vision_task(DigitsDataset(), d_model=s.d_model, layers=s.layers, heads=s.heads, time_steps=s.time_steps,
                       patch_size=args.patch_size, attention=s.attention, mlp_ratio=s.mlp_ratio, neuron=s.neuron,
                       neuron_kwargs=neuron_kwargs(s.neuron, s.beta, s.threshold), backend=args.backend,
                       dtype=s.dtype)


def make_data_task(args, s: Preset):
    """The task of ``spikejax train {audio,temporal}`` or ``vision --dataset`` (:mod:`spikejax.train.tasks_data`)."""
    from spikejax.train import tasks_data

    # rlif takes (β, θ) as lif does; adlif / radlif take θ (their α, β, a, b are learnable, adLIF's defaults)
    nkw = ({"threshold": s.threshold} if s.neuron in ("adlif", "radlif")
           else neuron_kwargs("lif" if s.neuron == "rlif" else s.neuron, s.beta, s.threshold))
    common = dict(time_steps=s.time_steps, neuron=s.neuron, neuron_kwargs=nkw, backend=args.backend, seed=args.seed,
                  batch_size=s.batch_size, max_eval_batches=args.eval_batches, num_workers=args.num_workers)
    if args.task == "vision":
        return tasks_data.vision_data_task(args.dataset, data_dir=args.data_dir, model=args.model, d_model=s.d_model,
                                           layers=s.layers, heads=s.heads, patch_size=args.patch_size,
                                           augment=args.augment, **common)
    if s.neuron not in tasks_data.SEQUENCE_NEURONS:
        raise ValueError(f"--neuron: {args.task} takes one of {tasks_data.SEQUENCE_NEURONS}, got {s.neuron!r}")
    randman = None
    if args.task == "temporal":
        randman = dict(num_classes=args.classes, num_units=args.units, train_per_class=args.per_class,
                       dim_manifold=args.dim, seed=args.data_seed)
    return tasks_data.sequence_task(args.dataset, data_dir=args.data_dir, hidden=s.d_model, layers=s.layers,
                                    bin_us=args.bin_us, downsample=args.downsample, randman=randman, **common)


def _with_remat(task, remat: str):
    """``task`` with ``--remat`` in its model config (the transformer configs' field, the zoo builders'
    keyword); a ``ValueError`` for a model without remat modes."""
    if remat == "none":
        return task
    cfg = task.model_config
    if hasattr(cfg, "remat"):
        task.model_config = cfg.replace(remat=remat)
    elif isinstance(getattr(cfg, "kwargs", None), dict) and getattr(cfg, "name", "") != "":
        task.model_config = dataclasses.replace(cfg, kwargs={**cfg.kwargs, "remat": remat})
    else:
        raise ValueError(f"--remat: the {task.name} task's model has no remat modes (use --remat none)")
    return task


TASKS = {"lm": _lm_from_flags, "vision": _vision_from_flags, "audio": make_data_task, "temporal": make_data_task}
"""``spikejax train <task>`` -> ``(args, settings) -> Task`` (data read and checked, config validated)."""


def train_main(argv: list[str] | None = None) -> dict[str, Any]:
    """``spikejax train {lm,vision,audio,temporal} [flags]``; returns the training summary."""
    from spikejax.train import loop
    from spikejax.train import sharding as shd
    from spikejax.train.recipes import RecipeError
    from spikejax.train.resume import apply_stored_flags, run_flags
    from spikejax.train.steps import NonFiniteError

    top = _parser()
    args = top.parse_args(argv)
    parser = _subparser(top, args.task)
    if args.resume and args.out:  # continue with the run's stored flags where argv gives none
        apply_stored_flags(parser, argv, args, args.task)
    try:
        settings = settings_of(args)
    except ValueError as e:  # a stored flag of an older run that no longer validates
        parser.error(str(e))
    _check_args(parser, args, settings)
    shd.init_distributed(args.coordinator, args.num_processes, args.process_id)
    if jax.device_count() % args.tensor_parallel:
        parser.error(f"argument --tensor-parallel: {args.tensor_parallel} does not divide the {jax.device_count()} "
                     "devices")
    data_devices = jax.device_count() // args.tensor_parallel
    if settings.batch_size % data_devices:
        parser.error(f"argument --batch-size: {settings.batch_size} is not divisible by the {data_devices} "
                     "devices" + (f" of the data axis (--tensor-parallel {args.tensor_parallel})"
                                  if args.tensor_parallel > 1 else ""))
    try:
        task = _with_remat(TASKS[args.task](args, settings), settings.remat)
    except (ValueError, FileNotFoundError) as e:  # data that cannot be used, a config that does not validate
        parser.error(" ".join(str(e).split("\n")))
    cfg = _train_config(args, settings)
    print(f"spikejax train {args.task}: data {task.data_meta['name']}, run directory {cfg.out}", flush=True)
    try:
        return loop.fit(task, cfg, run_flags=run_flags(args))
    except RecipeError as e:  # a --freeze pattern that does not fit the model
        parser.error(str(e))
    except NonFiniteError as e:  # a diverged run: one paragraph, exit status 1
        raise SystemExit(f"spikejax train: error: {e}") from None


def sample_main(argv: list[str] | None = None) -> str:
    """``spikejax sample --checkpoint DIR --prompt TEXT``: generate text from a trained SpikingLM."""
    from spikejax.train.sampling import generate_text

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
    model, vocab = load_lm(args.checkpoint, backend=args.backend)
    try:
        text = generate_text(model, vocab, args.prompt, args.chars, seed=args.seed, temperature=args.temperature,
                             top_k=args.top_k)
    except ValueError as e:
        p.error(str(e))
    print(text)
    return text


def _finetune_parser() -> argparse.ArgumentParser:
    from spikejax.nn.lora import LORA_TARGETS

    p = argparse.ArgumentParser(
        prog="spikejax finetune", formatter_class=HelpFormatter,
        description="Fine-tune a `spikejax train lm` run on new text with LoRA adapters (spikejax.nn.lora): the "
                    "base weights stay frozen, only the rank-R adapters train; they are saved in the run and "
                    "merged into the kernels by `spikejax sample` and `spikejax export-torch`. Training flags "
                    "left out take the base run's preset values.")
    p.add_argument("--checkpoint", help="the base run directory (`spikejax train lm`)")
    p.add_argument("--data", help="a UTF-8 text file, split 90/10 (its characters must be in the base vocabulary)")
    p.add_argument("--lora-rank", type=positive_int, default=8, help="adapter rank R")
    p.add_argument("--lora-targets", choices=sorted(LORA_TARGETS), default="attn",
                   help="the projections adapted: attn (q/k/v/out), mlp (fc1/fc2) or all")
    p.add_argument("--lora-alpha", type=number(0, low_open=True),
                   help="adapter scale alpha (the update is alpha/R * A B; default: R)")
    p.add_argument("--seq-len", type=positive_int, help="context length L (default: the base model's max_len)")
    p.add_argument("--eval-batches", type=positive_int, default=8, help="validation batches per evaluation")
    p.add_argument("--sample-chars", type=nonneg_int, default=120, help="characters sampled after training")
    _common_flags(p, PRESETS["lm"])
    return p


def finetune_main(argv: list[str] | None = None) -> dict[str, Any]:
    """``spikejax finetune --checkpoint DIR --data FILE --lora-rank R --lora-targets attn|mlp|all``;
    returns the training summary (``--out DIR --resume`` continues a fine-tuning run exactly)."""
    from spikejax.nn.lora import apply_lora, lora_parameter_patterns
    from spikejax.train import loop
    from spikejax.train.checkpoint import read_meta
    from spikejax.train.data import CharDataset
    from spikejax.train.restore import checkpoint_directory
    from spikejax.train.resume import apply_stored_flags, run_flags

    parser = _finetune_parser()
    args = parser.parse_args(argv)
    args.task = "lm"
    if args.resume and args.out:
        apply_stored_flags(parser, argv, args, "finetune")
    for flag in ("checkpoint", "data"):
        if not getattr(args, flag):
            parser.error(f"the following arguments are required: --{flag}")
    args.checkpoint = os.path.abspath(args.checkpoint)
    check_backend(parser, args.backend)
    if args.resume and not args.out:
        parser.error("argument --resume: give --out DIR, the run directory to continue")
    check_out_dir(parser, args.out or "runs")
    base, vocab = load_lm(args.checkpoint, backend=args.backend, merge_lora=False)
    base_step, base_meta = read_meta(checkpoint_directory(args.checkpoint))
    if (base_meta.get("train") or {}).get("lora"):
        parser.error(f"argument --checkpoint: {args.checkpoint!r} is already a LoRA run; fine-tune its base, or "
                     "merge it first")
    settings = preset_for("lm", (base_meta.get("cli") or {}).get("preset")).override(**vars(args))
    seq_len = args.seq_len or base.config.max_len
    if base.pos_embedding_enabled and seq_len > base.config.max_len:
        parser.error(f"argument --seq-len: {seq_len} exceeds the base model's max_len {base.config.max_len}")
    try:
        ds = CharDataset.from_file(args.data, chars=vocab.chars)
        ds.check_seq_len(seq_len)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    cfg_base = base.config
    lora = {"rank": args.lora_rank, "targets": args.lora_targets,
            "alpha": float(args.lora_alpha if args.lora_alpha is not None else args.lora_rank)}
    akw = dict(cfg_base.attention_kwargs)
    task = lm_task(ds, d_model=cfg_base.d_model, layers=cfg_base.num_layers, heads=cfg_base.num_heads,
                   time_steps=cfg_base.time_steps, seq_len=seq_len, attention=cfg_base.attention,
                   window=akw.get("window"), window_softmax=akw.get("softmax"), mix_norm=akw.get("mix_norm", "none"),
                   mlp_ratio=cfg_base.mlp_ratio, neuron=cfg_base.neuron, neuron_kwargs=cfg_base.neuron_kwargs,
                   backend=args.backend, eval_batches=args.eval_batches, sample_chars=args.sample_chars,
                   dtype=cfg_base.dtype, dropout=cfg_base.dropout)
    task.model_config = cfg_base  # the base model exactly (its max_len, norms, every field)
    task.spiking = cfg_base.neuron != "none"
    task.train_meta = {"lora": lora, "base": {"run": args.checkpoint, "step": int(base_step)}}

    def build(seed: int):
        model, _ = load_lm(args.checkpoint, backend=args.backend, merge_lora=False)
        return apply_lora(model, rank=lora["rank"], targets=lora["targets"], alpha=lora["alpha"], seed=seed)

    task.build = build
    cfg = dataclasses.replace(_train_config(args, settings), train_only=lora_parameter_patterns(),
                              out=args.out or os.path.join("runs", f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"))
    print(f"spikejax finetune: base {args.checkpoint} (step {base_step}), data {ds.name}, LoRA rank {lora['rank']} "
          f"on {lora['targets']}, run directory {cfg.out}", flush=True)
    return loop.fit(task, cfg, run_flags=run_flags(args))
