"""The training loop shared by ``spikejax train lm`` and ``spikejax train vision``.

:func:`fit` builds the model from a :class:`Task`, replicates it over the data mesh, restores the
latest checkpoint when resuming, and runs ``steps`` jit-compiled train steps with a progress bar.
Every ``log_every`` steps it records loss, accuracy (or bits per character), tokens/s and the
spiking metrics (per-layer firing rate, dead-neuron fraction, surrogate-gradient magnitude) into
``OUT/metrics.jsonl``; every ``eval_every`` steps it evaluates; every ``checkpoint_every`` steps it
checkpoints. At the end it prints a summary table and the energy report and writes
``OUT/summary.json``.
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
from spikejax.train import sharding as shd
from spikejax.train.checkpoint import CheckpointManager
from spikejax.train.probes import dotted, summarize_layers
from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

__all__ = ["TrainConfig", "Task", "fit"]


@dataclasses.dataclass
class TrainConfig:
    """Training settings. ``steps`` total optimizer steps; ``batch_size`` global batch; ``lr`` peak
    learning rate after ``warmup`` steps, cosine to ``0.1·lr``; ``weight_decay``; ``clip`` (global
    gradient norm); ``seed`` (init and data); ``log_every`` (metrics), ``eval_every``,
    ``checkpoint_every`` (steps; 0 disables eval / checkpoints); ``out`` directory (None: nothing
    written); ``resume``; ``progress`` (show a bar); ``time_limit`` (seconds: stop cleanly after
    this much training time, checkpoint, and leave the rest of the schedule to ``--resume``)."""

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

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        for name in ("log_every", "eval_every", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")

    def curve_fields(self) -> dict[str, Any]:
        """The settings that shape the loss curve (must match to resume)."""
        return {k: getattr(self, k) for k in ("steps", "batch_size", "lr", "warmup", "weight_decay", "clip", "seed")}


@dataclasses.dataclass
class Task:
    """What :func:`fit` trains.

    Attributes:
      name: ``"lm"`` or ``"vision"``.
      model_config: a config with ``build(seed=...)``, ``to_dict()`` and ``time_steps``.
      loss_fn: ``(model, batch) -> (loss, {"accuracy": ...})``.
      eval_fn: ``(model, batch) -> {sums}`` accumulated over :attr:`eval_batches`.
      train_batch: ``(seed, step, batch_size) -> batch`` (tuple of numpy arrays).
      eval_batches: the fixed evaluation batches.
      eval_summary: ``{sums} -> {"val_loss": ..., ...}``.
      units_per_batch: tokens (or images) in one training batch of ``batch_size``.
      unit: ``"token"`` or ``"image"``.
      data_meta: description of the data stored in checkpoints (vocabulary, fingerprint).
      after: optional ``(model, print_fn) -> dict`` run at the end (e.g. a text sample).
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


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    w = max(len(k) for k, _ in rows)
    line = "+" + "-" * (w + 2) + "+" + "-" * 24 + "+"
    body = [f"| {k:<{w}} | {_fmt(v):>22} |" for k, v in rows]
    return "\n".join([line, *body, line])


def _upgrade_meta(config_cls, stored: dict) -> dict:
    """A checkpoint's meta with its model config re-read through ``config_cls`` (fields added since
    that checkpoint was written get their defaults, e.g. ``dtype="float32"``), so older runs resume.
    A config that does not parse is left as stored (the comparison then names the difference)."""
    model = stored.get("model")
    if not isinstance(model, dict):
        return stored
    try:
        model = config_cls.from_dict(model).to_dict()
    except (TypeError, ValueError):
        return stored
    return {**stored, "model": model}


def fit(task: Task, cfg: TrainConfig, *, mesh=None, print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``task`` under ``cfg``; returns the summary (final metrics, energy report, the per-step
    losses of this invocation as ``"losses"`` and the step it started from as ``"start_step"``)."""
    is_main = jax.process_index() == 0
    say = print_fn if is_main else (lambda *_: None)
    mesh = shd.make_mesh() if mesh is None else mesh
    shd.check_batch_size(cfg.batch_size, mesh)

    model = task.model_config.build(seed=cfg.seed)
    split = ModelSplit(model)
    tx = make_optimizer(cfg.lr, cfg.steps, warmup=cfg.warmup, weight_decay=cfg.weight_decay, clip=cfg.clip)
    steps = make_steps(split, tx, task.loss_fn, task.eval_fn, None, seed=cfg.seed)
    state = shd.replicate(steps.init(), mesh)
    T = task.model_config.time_steps

    meta = {"task": task.name, "model": task.model_config.to_dict(), "model_class": type(model).__name__,
            "train": cfg.curve_fields(), "data": task.data_meta}
    ckpt = None
    if cfg.out is not None:
        os.makedirs(cfg.out, exist_ok=True)
        ckpt = CheckpointManager(os.path.join(cfg.out, "checkpoints"), meta,
                                 save_every=cfg.checkpoint_every or cfg.steps, resume=cfg.resume,
                                 upgrade=functools.partial(_upgrade_meta, type(task.model_config)))
        if cfg.resume:
            restored = ckpt.restore(state)
            if restored is None:
                say(f"resume: no checkpoint in {ckpt.directory}; starting from step 0")
            else:
                state = restored[0]
                say(f"resume: continuing from step {int(state.step)} ({ckpt.directory})")
        if is_main:
            with open(os.path.join(cfg.out, "run.json"), "w") as f:
                json.dump(meta, f, indent=2)
    start = int(state.step)

    say(f"{task.name}: {type(model).__name__} {split.num_params:,} parameters, T={T}, "
        f"{mesh.devices.size} device(s) ({jax.devices()[0].platform}), batch {cfg.batch_size}, "
        f"steps {start}->{cfg.steps}")
    log_path = os.path.join(cfg.out, "metrics.jsonl") if cfg.out and is_main else None

    def log(record: dict) -> None:
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def evaluate(state) -> dict:
        sums: dict[str, float] = {}
        for b in task.eval_batches:
            out = steps.eval(state, shd.shard_batch(b, mesh))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return task.eval_summary(sums)

    def probe(state, batch) -> tuple[dict[str, SpikeStats], dict[str, SynOpStats], dict]:
        spikes, synops, grads = jax.device_get(steps.probe(state, batch))
        return reduce_spike_stats(spikes), reduce_synops(synops), grads

    bar = None
    if cfg.progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {task.name}", dynamic_ncols=True, file=sys.stderr)
    pending: list = []
    losses: list[float] = []
    last_eval: dict = {}
    last_spiking: dict = {}
    t_mark, units_mark = time.perf_counter(), 0
    train_time = 0.0
    batch = None
    step = start
    t_start = time.perf_counter()
    stopped_early = False
    for step in range(start, cfg.steps):
        batch = shd.shard_batch(task.train_batch(cfg.seed, step, cfg.batch_size), mesh)
        state, metrics = steps.train(state, batch)
        pending.append(metrics)
        units_mark += task.units_per_batch(cfg.batch_size)
        done = step + 1
        if (cfg.log_every and done % cfg.log_every == 0) or done == cfg.steps or done == start + 1:
            fetched = jax.device_get(pending)
            pending.clear()
            losses.extend(float(m["loss"]) for m in fetched)
            now = time.perf_counter()
            m = {k: float(v) for k, v in fetched[-1].items()}
            record = {"step": done, **m, f"{task.unit}s_per_s": units_mark / max(now - t_mark, 1e-9)}
            if done > start + 1:
                train_time += now - t_mark
            if task.name == "lm":
                record["bpc"] = m["loss"] / math.log(2)
            neurons, _, grads = probe(state, batch)
            last_spiking = summarize_layers(neurons, grads)
            record.update(last_spiking)
            record["layers"] = {dotted(p): {"rate": s.firing_rate, "dead": s.dead_fraction,
                                            "grad_in": float(grads[p]["in"])} for p, s in neurons.items()}
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                last_eval = evaluate(state)
                record.update(last_eval)
            log(record)
            if bar is not None:
                post = {"loss": f"{m['loss']:.3f}", f"{task.unit[:3]}/s": f"{record[f'{task.unit}s_per_s']:.0f}",
                        "fire": f"{last_spiking.get('firing_rate', 0):.3f}",
                        "dead": f"{last_spiking.get('dead_fraction', 0):.2f}",
                        "sg": f"{last_spiking.get('surrogate_grad', 0):.1e}"}
                post.update({k: f"{v:.3f}" for k, v in last_eval.items()})
                bar.set_postfix(post, refresh=False)
            t_mark, units_mark = time.perf_counter(), 0
        if bar is not None:
            bar.update(1)
        out_of_time = cfg.time_limit is not None and time.perf_counter() - t_start > cfg.time_limit
        if ckpt is not None:
            ckpt.save(done, state, {"data_position": {"seed": cfg.seed, "next_step": done}},
                      force=done == cfg.steps or out_of_time)
        if out_of_time and done < cfg.steps:
            stopped_early = True
            say(f"\ntime limit of {cfg.time_limit:g}s reached after step {done}; continue with --resume")
            break
    if pending:
        losses.extend(float(m["loss"]) for m in jax.device_get(pending))
    if bar is not None:
        bar.close()
    if ckpt is not None:
        ckpt.close()

    if batch is None:  # already finished: evaluate the restored state
        batch = shd.shard_batch(task.train_batch(cfg.seed, max(cfg.steps - 1, 0), cfg.batch_size), mesh)
    final_eval = evaluate(state) if task.eval_batches else {}
    if final_eval:
        log({"step": int(state.step), "final": True, **final_eval})
    neurons, synops, grads = probe(state, batch)
    spiking = summarize_layers(neurons, grads)
    energy = EnergyReport.from_layers(synops, time_steps=T, samples=task.units_per_batch(cfg.batch_size),
                                      unit=task.unit)
    summary: dict[str, Any] = {
        "task": task.name, "params": split.num_params, "steps": cfg.steps, "start_step": start,
        "end_step": int(state.step), "stopped_early": stopped_early,
        "final_train_loss": losses[-1] if losses else float("nan"), **final_eval, **spiking,
        "train_seconds": train_time,
    }
    rows = [(k, v) for k, v in summary.items() if k not in ("task",)]
    say("\n" + _table(rows))
    layer_rows = sorted((dotted(p), s.firing_rate) for p, s in neurons.items())
    say("per-layer firing rate: " + ", ".join(f"{p}={r:.3f}" for p, r in layer_rows[:8])
        + (f", ... ({len(layer_rows)} layers)" if len(layer_rows) > 8 else ""))
    say(energy.table())
    model_final = split.merge(jax.device_get(state.params), jax.device_get(state.stats))
    if task.after is not None and is_main:
        summary.update(task.after(model_final, say))
    summary["energy"] = energy.to_dict()
    summary["losses"] = losses
    if cfg.out and is_main:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({k: v for k, v in summary.items() if k != "losses"}, f, indent=2, default=float)
        _plot(cfg.out)
    summary["state"] = state
    return summary


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


def np_batch(*arrays) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a) for a in arrays)
