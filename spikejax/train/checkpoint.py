"""Checkpoints through orbax's ``CheckpointManager``.

Each checkpoint step holds two items: ``state`` (a flat dict of arrays: ``step``, ``params.*``,
``stats.*``, ``opt.<i>`` for the optimizer-state leaves) and ``meta`` (JSON: model config, training
config, data description and the data position). Orbax writes a step into a temporary directory
and renames it when complete, so a run killed mid-save keeps its previous checkpoint and loses at
most the steps since then.

Safety rules:

- a directory that already holds checkpoints is never written by a fresh run (``resume=False``):
  :class:`CheckpointError`;
- on resume, the stored model config, data fingerprint and the training settings that shape the
  loss curve must equal the current ones, else :class:`CheckpointError` naming the fields;
- an unreadable (corrupt, truncated) checkpoint is a :class:`CheckpointError` naming the step and
  directory; nothing is written afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from spikejax.train.steps import TrainState

__all__ = ["CheckpointError", "CheckpointManager", "flatten_state", "unflatten_state", "read_meta"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, from another model / data / settings, or in the way."""


def flatten_state(state: TrainState) -> dict[str, Any]:
    """``TrainState`` -> a flat ``{name: array}`` dict (what orbax stores)."""
    out: dict[str, Any] = {"step": state.step}
    out.update({f"params.{k}": v for k, v in state.params.items()})
    out.update({f"stats.{k}": v for k, v in state.stats.items()})
    out.update({f"opt.{i:04d}": v for i, v in enumerate(jax.tree.leaves(state.opt_state))})
    return out


def unflatten_state(flat: dict[str, Any], template: TrainState) -> TrainState:
    """Inverse of :func:`flatten_state` given a template with the same structure."""
    opt_def = jax.tree.structure(template.opt_state)
    opt_leaves = [flat[f"opt.{i:04d}"] for i in range(opt_def.num_leaves)]
    return TrainState(
        flat["step"],
        {k: flat[f"params.{k}"] for k in template.params},
        {k: flat[f"stats.{k}"] for k in template.stats},
        jax.tree.unflatten(opt_def, opt_leaves),
    )


def _abstract(x) -> jax.ShapeDtypeStruct:
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype if sharding is None else x.dtype, sharding=sharding)


def _diff(stored: Any, current: Any, prefix: str) -> list[str]:
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(stored) | set(current)):
            out += _diff(stored.get(k, "<missing>"), current.get(k, "<missing>"), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if stored == current else [f"{prefix}: checkpoint has {stored!r}, this run has {current!r}"]


def read_meta(directory: str | os.PathLike, step: int | None = None) -> tuple[int, dict]:
    """``(step, meta)`` of the latest (or given) checkpoint in ``directory``; :class:`CheckpointError`
    when there is none or it cannot be read."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint: no such directory {directory!r}")
    with ocp.CheckpointManager(directory, item_names=("state", "meta"),
                               options=ocp.CheckpointManagerOptions(create=False)) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"checkpoint: {directory!r} holds no checkpoint")
        try:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # orbax raises many kinds
            raise CheckpointError(f"checkpoint: step {step} in {directory!r} is unreadable ({type(e).__name__}: "
                                  f"{e}); delete that step's directory to fall back to an earlier one") from e
    return step, meta


class CheckpointManager:
    """Save / restore :class:`TrainState` plus JSON metadata every ``save_every`` steps.

    Args:
      directory: where checkpoints live (created).
      meta: this run's description: ``{"model": ..., "train": ..., "data": ...}``; the keys listed
        in ``must_match`` are compared on resume.
      save_every: checkpoint interval in steps (the final step is always saved by the loop).
      keep: how many recent checkpoints to keep.
      resume: continue from the latest checkpoint; without it, existing checkpoints are an error.
      must_match: meta keys (top level) that must be equal to resume.
      upgrade: optional ``stored_meta -> meta`` applied to a checkpoint's meta before that comparison,
        to bring an older checkpoint's description to this version's form (e.g. fill a model-config
        field added since with its default, so an old run resumes).
    """

    def __init__(self, directory: str | os.PathLike, meta: dict, *, save_every: int, keep: int = 2,
                 resume: bool = False, must_match: tuple[str, ...] = ("model", "data", "train"),
                 upgrade: Callable[[dict], dict] | None = None):
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise ValueError(f"checkpoint_every: expected a positive integer, got {save_every!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.meta = json.loads(json.dumps(meta))
        self.must_match = must_match
        self.upgrade = upgrade
        self.resume = resume
        os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every, create=True)
        self._mngr = ocp.CheckpointManager(self.directory, item_names=("state", "meta"), options=options)
        latest = self._mngr.latest_step()
        if latest is not None and not resume:
            self._mngr.close()
            raise CheckpointError(
                f"out: {self.directory!r} already holds checkpoints (latest step {latest}); pass --resume "
                "to continue that run, or choose another --out (nothing was overwritten)")

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def restore(self, template: TrainState) -> tuple[TrainState, dict] | None:
        """The latest checkpoint as ``(state, meta)`` shaped and sharded like ``template``, or ``None``
        when there is none. Mismatched or unreadable checkpoints raise :class:`CheckpointError`."""
        step = self._mngr.latest_step()
        if step is None:
            return None
        _, stored = read_meta(self.directory, step)
        if self.upgrade is not None:
            stored = self.upgrade(stored)
        problems = []
        for key in self.must_match:
            problems += _diff(stored.get(key, "<missing>"), self.meta.get(key, "<missing>"), key)
        if problems:
            raise CheckpointError(
                f"checkpoint: step {step} in {self.directory!r} does not match this run:\n  " + "\n  ".join(problems)
                + "\n(use the same flags as the original run, or another --out; nothing was overwritten)")
        target = jax.tree.map(_abstract, flatten_state(template))
        try:
            flat = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        except Exception as e:
            raise CheckpointError(f"checkpoint: step {step} in {self.directory!r} is unreadable ({type(e).__name__}: "
                                  f"{e}); delete that step's directory to fall back to an earlier one") from e
        state = unflatten_state(flat, template)
        if int(state.step) != step:
            raise CheckpointError(
                f"checkpoint: step {step} in {self.directory!r} holds the state of step {int(state.step)}")
        return state, stored

    def save(self, step: int, state: TrainState, extra: dict | None = None, *, force: bool = False) -> bool:
        """Save if ``step`` is on the interval (or ``force``); returns whether a save started."""
        if not force and not self._mngr.should_save(step):
            return False
        if self._mngr.latest_step() == step:
            return False
        meta = {**self.meta, **(extra or {}), "step": int(step)}
        return bool(self._mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(flatten_state(state)), meta=ocp.args.JsonSave(meta)), force=force))

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        self._mngr.wait_until_finished()
        self._mngr.close()
