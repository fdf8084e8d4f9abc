"""The training loop shared by every ``spikejax train`` task.

:func:`fit` builds the model from a :class:`Task`, replicates it over the data mesh, restores the
latest checkpoint when resuming, and runs ``steps`` jit-compiled train steps with a progress bar.
``OUT/metrics.jsonl`` gets one line per step (loss, grad norm, accuracy or bits per character);
every ``log_every`` steps that line also holds tokens/s and the spiking metrics (per-layer firing
rate, dead-neuron fraction, surrogate-gradient magnitude); every ``eval_every`` steps it evaluates;
every ``checkpoint_every`` steps it checkpoints. At the end it prints a summary table and the energy
report and writes ``OUT/summary.json``. Both files are strict JSON (NaN/inf written as ``null``).

Guarantees: a non-finite loss or gradient norm stops the run (:class:`NonFiniteError`) before
anything non-finite is saved; on resume ``metrics.jsonl`` is cut back to the restored step, so an
interrupted and resumed run leaves the same log as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from spikejax.metrics import EnergyReport, SpikeStats, SynOpStats, reduce_spike_stats, reduce_synops
from spikejax.train import partition
from spikejax.train import sharding as shd
from spikejax.train.checkpoint import CheckpointManager
from spikejax.train.probes import dotted, summarize_layers
from spikejax.train.recipes import RecipeError, freeze_mask, layer_lr_scales
from spikejax.train.steps import ModelSplit, NonFiniteError, make_optimizer, make_steps

__all__ = ["TrainConfig", "Task", "fit", "model_meta", "dumps"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings. ``steps`` total optimizer steps; ``batch_size`` global batch; ``lr`` peak
    learning rate after ``warmup`` steps, cosine to ``0.1·lr``; ``weight_decay``; ``clip`` (global
    gradient norm); ``seed`` (init and data); ``log_every`` (metrics), ``eval_every``,
    ``checkpoint_every`` (steps; 0 disables eval / checkpoints); ``out`` directory (None: nothing
    written); ``resume``; ``progress`` (show a bar); ``time_limit`` (seconds: stop cleanly after
    this much training time, checkpoint, and leave the rest of the schedule to ``--resume``);
    ``skip_nonfinite`` (N > 0: skip up to N consecutive updates with non-finite gradients through
    ``optax.apply_if_finite`` instead of stopping; 0, the default: stop at the first); ``fsdp``
    (shard parameters and optimizer state over the ``"data"`` mesh axis) and ``tensor_parallel``
    (size of the ``"model"`` mesh axis over heads and MLP columns) pick the sharding
    (:mod:`spikejax.train.partition`; neither changes the losses)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    eval_every: int = 100
    checkpoint_every: int = 100
    out: str | None = None
    resume: bool = False
    progress: bool = True
    time_limit: float | None = None
    skip_nonfinite: int = 0
    freeze: tuple[str, ...] = ()
    train_only: tuple[str, ...] = ()
    layer_lr_decay: float = 1.0
    fsdp: bool = False
    tensor_parallel: int = 1

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if isinstance(self.tensor_parallel, bool) or not isinstance(self.tensor_parallel, int) \
                or self.tensor_parallel < 1:
            raise ValueError(f"tensor_parallel: expected a positive integer, got {self.tensor_parallel!r}")
        for name in ("log_every", "eval_every", "checkpoint_every", "skip_nonfinite"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")

    def curve_fields(self) -> dict[str, Any]:
        """The settings that shape the loss curve (must match to resume); ``freeze``, ``train_only`` and
        ``layer_lr_decay`` only when set (so runs without them compare as before)."""
        out = {k: getattr(self, k) for k in ("steps", "batch_size", "lr", "warmup", "weight_decay", "clip", "seed",
                                               "skip_nonfinite")}
        for k, default in (("freeze", ()), ("train_only", ()), ("layer_lr_decay", 1.0)):
            if getattr(self, k) != default:
                out[k] = list(getattr(self, k)) if isinstance(default, tuple) else getattr(self, k)
        return out


@dataclasses.dataclass
class Task:
    """What :func:`fit` trains (everything task-specific: :func:`fit` has no branch on the task).

    Attributes:
      name: the task's name (``"lm"``, ``"vision"``, ``"audio"``, ``"temporal"``), stored with the run.
      model_config: a config with ``build(seed=...)``, ``to_dict()`` and ``time_steps``.
      loss_fn: ``(model, batch) -> (loss, {"accuracy": ...})``.
      eval_fn: ``(model, batch) -> {sums}`` accumulated over :attr:`eval_batches`.
      train_batch: ``(seed, step, batch_size) -> batch`` (tuple of numpy arrays).
      eval_batches: the fixed evaluation batches.
      eval_summary: ``{sums} -> {"val_loss": ..., ...}``.
      units_per_batch: tokens (or images) in one training batch of ``batch_size``.
      unit: ``"token"``, ``"image"`` or ``"sample"``.
      data_meta: description of the data stored in checkpoints (vocabulary, fingerprint).
      after: optional ``(model, print_fn, out) -> dict`` run at the end (e.g. a text sample, plots into
        the run directory ``out``, ``None`` when there is none); its values join the summary.
      step_extras: optional ``{metrics} -> {extra values}`` of every step's ``metrics.jsonl`` line
        (e.g. bits per character from the loss).
      build: optional ``seed -> model`` used instead of ``model_config.build`` (e.g. a fine-tuned
        model: a restored run with LoRA adapters).
      step_arg: ``loss_fn`` takes ``step=`` too (:func:`~spikejax.train.steps.make_steps`).
      spiking: ``False`` for a model without spiking neurons (the ANN twin): the energy report counts
        MACs only.
      train_meta: optional JSON fields stored in (and compared on resume under) ``meta["train"]``,
        e.g. the recipe, the teacher, the LoRA adapters.
    """

    name: str
    model_config: Any
    loss_fn: Callable
    eval_fn: Callable
    train_batch: Callable[[int, int, int], tuple]
    eval_batches: list
    eval_summary: Callable[[dict], dict]
    units_per_batch: Callable[[int], int]
    unit: str
    data_meta: dict
    after: Callable | None = None
    step_extras: Callable[[dict[str, float]], dict[str, float]] | None = None
    build: Callable[[int], Any] | None = None
    step_arg: bool = False
    spiking: bool = True
    train_meta: dict | None = None


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    w = max(len(k) for k, _ in rows)
    line = "+" + "-" * (w + 2) + "+" + "-" * 24 + "+"
    body = [f"| {k:<{w}} | {_fmt(v):>22} |" for k, v in rows]
    return "\n".join([line, *body, line])


def _upgrade_meta(config_cls, stored: dict) -> dict:
    """A checkpoint's meta in this version's form, for the resume comparison: the model config re-read
    through ``config_cls`` (fields added since that checkpoint was written get their defaults, e.g.
    ``dtype="float32"``) and without ``backend`` (a run-time choice, which older runs stored); training
    fields added since (``skip_nonfinite``, ``schedule``) get their defaults. A config that does not
    parse is left as stored (the comparison then names the difference)."""
    out = dict(stored)
    model = stored.get("model")
    if isinstance(model, dict):
        try:
            model = config_cls.from_dict(model).to_dict()
        except (TypeError, ValueError):
            pass
        out["model"] = {k: v for k, v in model.items() if k != "backend"}
    train = stored.get("train")
    if isinstance(train, dict):
        out["train"] = {"skip_nonfinite": 0, **train}
        if not out["train"].get("schedule") and isinstance(train.get("steps"), int):
            out["train"]["schedule"] = [[0, train["steps"]]]
    return out


def model_meta(model_config) -> dict:
    """The stored form of a model config: ``to_dict()`` without the kernel ``backend``."""
    return {k: v for k, v in model_config.to_dict().items() if k != "backend"}


def _json_safe(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers and NaN/inf as ``None`` (valid JSON)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def dumps(x: Any, **kw) -> str:
    """``json.dumps`` of :func:`_json_safe` ``(x)`` with ``allow_nan=False``."""
    return json.dumps(_json_safe(x), allow_nan=False, **kw)


def _truncate_log(path: str, step: int) -> int:
    """Keep the lines of ``metrics.jsonl`` up to training step ``step`` (dropping later steps, final
    evaluations and a torn last line); returns how many lines were dropped."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
                ok = isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step \
                    and not rec.get("final") and line.endswith("\n")
            except ValueError:
                ok = False
            if ok:
                kept.append(line)
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def _schedule_plan(stored: dict, step: int, cfg: TrainConfig) -> list[list[int]]:
    """The schedule ``[[0, steps], [at, total], ...]`` of a resumed run: the stored run's, plus an
    extension from the restored ``step`` to ``cfg.steps`` when ``--steps`` grew (else unchanged; a
    smaller ``--steps`` is refused by the comparison)."""
    train = stored.get("train") if isinstance(stored.get("train"), dict) else {}
    stored_steps = train.get("steps")
    plan = [list(map(int, seg)) for seg in train.get("schedule") or []] or [[0, int(stored_steps or cfg.steps)]]
    if isinstance(stored_steps, int) and cfg.steps > stored_steps:
        plan.append([step, cfg.steps])
    elif not isinstance(stored_steps, int) or cfg.steps != stored_steps:
        plan = [[0, cfg.steps]]  # refused by the comparison; any well-formed schedule will do until then
    return plan


def fit(task: Task, cfg: TrainConfig, *, mesh=None, print_fn: Callable[[str], None] = print,
        run_flags: dict | None = None) -> dict[str, Any]:
    """Train ``task`` under ``cfg``; returns the summary (final metrics, energy report, the per-step
    losses of this invocation as ``"losses"`` and the step it started from as ``"start_step"``).

    ``run_flags`` (JSON) is stored with every checkpoint as ``meta["cli"]`` (the command line that
    ``--resume`` continues with). A non-finite loss or gradient norm (not skipped by
    ``skip_nonfinite``), or a non-finite state at a checkpoint, raises
    :class:`~spikejax.train.steps.NonFiniteError` after writing ``metrics.jsonl`` up to that step and
    ``summary.json`` (``"stopped"``); the checkpoints hold only finite states."""
    is_main = jax.process_index() == 0
    say = print_fn if is_main else (lambda *_: None)
    mesh = shd.make_mesh(tensor_parallel=cfg.tensor_parallel) if mesh is None else mesh
    shd.check_batch_size(cfg.batch_size, mesh)

    model = task.build(cfg.seed) if task.build is not None else task.model_config.build(seed=cfg.seed)
    split = ModelSplit(model)
    T = task.model_config.time_steps
    plan: list[list[int]] = [[0, cfg.steps]]  # the schedule: [[0, steps], [at, extended total], ...]
    meta = {"task": task.name, "model": model_meta(task.model_config), "model_class": type(model).__name__,
            "train": {**cfg.curve_fields(), **(task.train_meta or {}), "schedule": plan}, "data": task.data_meta}
    if run_flags is not None:
        meta["cli"] = run_flags
    ckpt = found = None
    log_path = os.path.join(cfg.out, "metrics.jsonl") if cfg.out and is_main else None
    if cfg.out is not None:
        os.makedirs(cfg.out, exist_ok=True)
        upgrade = functools.partial(_upgrade_meta, type(task.model_config))
        ckpt = CheckpointManager(os.path.join(cfg.out, "checkpoints"), meta,
                                 save_every=cfg.checkpoint_every or cfg.steps, resume=cfg.resume, upgrade=upgrade)
        found = ckpt.stored_meta() if cfg.resume else None
        if found is not None:
            plan = _schedule_plan(upgrade(found[1]), found[0], cfg)
            meta["train"]["schedule"] = plan
            ckpt.meta = json.loads(json.dumps(meta))
            stored_steps = upgrade(found[1]).get("train", {}).get("steps")
            if len(plan) > 1 and plan[-1] == [found[0], cfg.steps] and isinstance(stored_steps, int) \
                    and stored_steps < cfg.steps:
                say(f"resume: extending the schedule from {stored_steps} to {cfg.steps} steps at step {found[0]} "
                    "(the learning rate continues from its value there along a cosine to 0.1x lr)")

                def upgrade(stored, _base=upgrade):
                    out = _base(stored)
                    return {**out, "train": {**out["train"], "steps": cfg.steps, "schedule": plan}}

                ckpt.upgrade = upgrade
    frozen = freeze_mask(split.params, cfg.freeze, cfg.train_only) if cfg.freeze or cfg.train_only else None
    if frozen is not None and all(frozen.values()):
        raise RecipeError("freeze: every parameter is frozen; nothing would train")
    lr_scales = layer_lr_scales(split.params, cfg.layer_lr_decay) if cfg.layer_lr_decay != 1.0 else None
    tx = make_optimizer(cfg.lr, plan[0][1], warmup=cfg.warmup, weight_decay=cfg.weight_decay, clip=cfg.clip,
                        segments=[tuple(seg) for seg in plan[1:]], skip_nonfinite=cfg.skip_nonfinite,
                        lr_scales=lr_scales, frozen=frozen)
    steps = make_steps(split, tx, task.loss_fn, task.eval_fn, seed=cfg.seed, step_arg=task.step_arg, frozen=frozen)
    state = partition.place_state(steps.init(), mesh, fsdp=cfg.fsdp)
    steps = partition.shard_steps(steps, state, mesh)
    if ckpt is not None:
        if found is not None:
            state = ckpt.restore(state, found=found)[0]
            say(f"resume: continuing from step {int(state.step)} ({ckpt.directory})")
        elif cfg.resume:
            say(f"resume: no checkpoint in {ckpt.directory}; starting from step 0")
        if log_path:
            dropped = _truncate_log(log_path, int(state.step))
            if dropped:
                say(f"{log_path}: dropped {dropped} line(s) past step {int(state.step)}, written by an interrupted "
                    "attempt after its last checkpoint; this run writes them again")
        if is_main:
            with open(os.path.join(cfg.out, "run.json"), "w") as f:
                f.write(dumps(meta, indent=2))
    start = int(state.step)

    say(f"{task.name}: {type(model).__name__} {split.num_params:,} parameters, T={T}, "
        f"{mesh.devices.size} device(s) ({jax.devices()[0].platform}), batch {cfg.batch_size}, "
        f"steps {start}->{cfg.steps}")

    def log(record: dict) -> None:
        if log_path:
            with open(log_path, "a") as f:
                f.write(dumps(record) + "\n")

    def evaluate(state) -> dict:
        sums: dict[str, float] = {}
        for b in task.eval_batches:
            out = steps.eval(state, shd.shard_batch(b, mesh))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return task.eval_summary(sums)

    def probe(state, batch) -> tuple[dict[str, SpikeStats], dict[str, SynOpStats], dict]:
        spikes, synops, grads = jax.device_get(steps.probe(state, batch))
        return reduce_spike_stats(spikes), reduce_synops(synops, all_macs=not task.spiking), grads

    show_progress = cfg.progress and is_main
    bar = None  # opened after the first step, so that compilation is in its description, not in its rate / ETA

    def status(text: str) -> None:  # what is happening outside the bar (compiling, final evaluation, ...)
        if show_progress:
            print(text, file=sys.stderr, flush=True)

    if start < cfg.steps:
        status(f"train {task.name}: compiling the train step (the first step) ...")
    pending: list[tuple[int, dict]] = []
    losses: list[float] = []
    skipped = 0
    last_eval: dict = {}
    last_spiking: dict = {}
    t_mark, units_mark = time.perf_counter(), 0
    t_first = None
    batch = None
    step = start
    t_start = time.perf_counter()
    stopped_early = False

    def flush(state, full: bool) -> None:
        """Write one ``metrics.jsonl`` line per pending step (the training loss of every step); the last
        one with the full record when ``full``. Stops at a non-finite step that was not skipped."""
        nonlocal skipped, last_eval, last_spiking, t_mark, units_mark
        fetched = jax.device_get([m for _, m in pending])
        done_steps = [d for d, _ in pending]
        pending.clear()
        for i, (done, raw) in enumerate(zip(done_steps, fetched, strict=True)):
            m = {k: (bool(v) if k == "skipped" else float(v)) for k, v in raw.items()}
            record = {"step": done, **m}
            if task.step_extras is not None:
                record.update(task.step_extras(m))
            bad = next((q for q in ("loss", "grad_norm") if not math.isfinite(m[q])), None)
            if bad is not None and not m.get("skipped"):
                log(record)
                raise NonFiniteError(done, bad, m[bad])
            skipped += bool(m.get("skipped"))
            losses.append(m["loss"])
            if full and i == len(fetched) - 1:
                now = time.perf_counter()
                record[f"{task.unit}s_per_s"] = units_mark / max(now - t_mark, 1e-9)
                neurons, _, grads = probe(state, batch)
                last_spiking = summarize_layers(neurons, grads)
                record.update(last_spiking)
                record["layers"] = {dotted(p): {"rate": s.firing_rate, "dead": s.dead_fraction,
                                                "grad_in": float(grads[p]["in"])} for p, s in neurons.items()}
                if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                    last_eval = evaluate(state)
                    record.update(last_eval)
                if bar is not None:
                    post = {"loss": f"{m['loss']:.3f}", f"{task.unit[:3]}/s": f"{record[f'{task.unit}s_per_s']:.0f}",
                            "fire": f"{last_spiking.get('firing_rate', 0):.3f}",
                            "dead": f"{last_spiking.get('dead_fraction', 0):.2f}",
                            "sg": f"{last_spiking.get('surrogate_grad', 0):.1e}"}
                    post.update({k: f"{v:.3f}" for k, v in last_eval.items()})
                    bar.set_postfix(post, refresh=False)
                t_mark, units_mark = time.perf_counter(), 0
            log(record)

    try:
        for step in range(start, cfg.steps):
            batch = shd.shard_batch(task.train_batch(cfg.seed, step, cfg.batch_size), mesh)
            state, metrics = steps.train(state, batch)
            pending.append((step + 1, metrics))
            units_mark += task.units_per_batch(cfg.batch_size)
            done = step + 1
            if t_first is None:
                jax.block_until_ready(metrics["loss"])
                t_first = time.perf_counter()
            out_of_time = cfg.time_limit is not None and time.perf_counter() - t_start > cfg.time_limit
            full = bool(cfg.log_every and done % cfg.log_every == 0) or done == cfg.steps
            save = ckpt is not None and (ckpt.due(done) or done == cfg.steps or out_of_time)
            if full or save or out_of_time:
                flush(state, full)
            if bar is not None:
                bar.update(1)
            elif show_progress:
                from tqdm.auto import tqdm

                compiled = time.perf_counter() - t_start
                bar = tqdm(total=cfg.steps, initial=done, desc=f"train {task.name} (compiled in {compiled:.1f}s)",
                           dynamic_ncols=True, file=sys.stderr)
            if ckpt is not None:
                ckpt.save(done, state, {"data_position": {"seed": cfg.seed, "next_step": done}},
                          force=done == cfg.steps or out_of_time)
                ckpt.poll()
            if out_of_time and done < cfg.steps:
                stopped_early = True
                say(f"\ntime limit of {cfg.time_limit:g}s reached after step {done}; continue with --resume")
                break
        if pending:
            flush(state, False)
    except NonFiniteError as e:
        if bar is not None:
            bar.close()
        last = None
        if ckpt is not None:
            ckpt.close()
            last = ckpt.latest_step()
        where = f"the last checkpoint, step {last}, is finite" if last is not None else "no checkpoint was written"
        e.args = (f"{e.args[0]}; training stopped, nothing non-finite was saved ({where})",)
        if cfg.out and is_main:
            with open(os.path.join(cfg.out, "summary.json"), "w") as f:
                f.write(dumps({"task": task.name, "steps": cfg.steps, "start_step": start, "end_step": e.step,
                               "stopped": str(e), "last_checkpoint": last, "skipped_steps": skipped}, indent=2))
        raise
    if bar is not None:
        bar.close()
    if ckpt is not None:
        ckpt.close()
    train_time = time.perf_counter() - t_first if t_first is not None else 0.0

    if batch is None:  # already finished: evaluate the restored state
        batch = shd.shard_batch(task.train_batch(cfg.seed, max(cfg.steps - 1, 0), cfg.batch_size), mesh)
    if task.eval_batches:
        status(f"final evaluation ({len(task.eval_batches)} batches) ...")
    final_eval = evaluate(state) if task.eval_batches else {}
    if final_eval:
        log({"step": int(state.step), "final": True, **final_eval})
    status("spike statistics and energy (one probe pass) ...")
    neurons, synops, grads = probe(state, batch)
    spiking = summarize_layers(neurons, grads)
    energy = EnergyReport.from_layers(synops, time_steps=T, samples=task.units_per_batch(cfg.batch_size),
                                      unit=task.unit)
    summary: dict[str, Any] = {
        "task": task.name, "params": split.num_params, "steps": cfg.steps, "start_step": start,
        "end_step": int(state.step), "stopped_early": stopped_early,
        "final_train_loss": losses[-1] if losses else float("nan"), **final_eval, **spiking,
        "skipped_steps": skipped, "train_seconds": train_time,
    }
    rows = [(k, v) for k, v in summary.items() if k not in ("task",)]
    say("\n" + _table(rows))
    layer_rows = sorted((dotted(p), s.firing_rate) for p, s in neurons.items())
    say(_layer_line(layer_rows, cfg.out))
    say(energy.table())
    model_final = split.merge(jax.device_get(state.params), jax.device_get(state.stats))
    if task.after is not None and is_main:
        summary.update(task.after(model_final, say, cfg.out))
    summary["layers"] = {dotted(p): {"rate": s.firing_rate, "dead": s.dead_fraction} for p, s in neurons.items()}
    summary["energy"] = energy.to_dict()
    summary["losses"] = losses
    if cfg.out and is_main:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            f.write(dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
        _plot(cfg.out)
    summary["state"] = state
    return summary


def _layer_line(rows: list[tuple[str, float]], out: str | None, shown: int = 8) -> str:
    """``per-layer firing rate: a=0.1, b=0.2, ...`` naming every layer, or the first ``shown`` and
    how many more there are and where all of them are (``summary.json``)."""
    text = "per-layer firing rate: " + ", ".join(f"{p}={r:.3f}" for p, r in rows[:shown])
    if len(rows) > shown:
        where = f"all {len(rows)} in {os.path.join(out, 'summary.json')} under \"layers\"" if out else \
            "run with an output directory to get all of them in summary.json"
        text += f", ... and {len(rows) - shown} more layers ({where})"
    return text


def _plot(out: str) -> None:
    """``OUT/loss.png`` from ``metrics.jsonl`` when matplotlib is installed (optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return
    recs = [json.loads(line) for line in open(path)]
    fig, ax = plt.subplots(figsize=(6, 4))
    train = [r for r in recs if "loss" in r]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    ev = [r for r in recs if "val_loss" in r]
    if ev:
        ax.plot([r["step"] for r in ev], [r["val_loss"] for r in ev], "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=100)
    plt.close(fig)
