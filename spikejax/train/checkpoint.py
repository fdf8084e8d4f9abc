"""Checkpoints through orbax's ``CheckpointManager``, with an integrity record on every step.

Each checkpoint step ``DIR/<step>/`` holds two orbax items, ``state`` (a flat dict of arrays:
``step``, ``params.*``, ``stats.*``, ``opt.<i>`` for the optimizer-state leaves) and ``meta`` (JSON:
model config, training config, data description, data position), and one file of ours,
``integrity.json``. Orbax writes a step into a temporary directory and renames it when complete
(an atomic commit), so a run killed mid-save keeps its previous checkpoint.

Integrity, in two layers:

- ``meta["integrity"]``, committed by orbax together with the arrays: the sha256 of every array of
  the saved state (dtype, shape and bytes) and of the rest of ``meta``. Every restore recomputes
  both from what it read and refuses a difference.
- ``integrity.json``, written right after orbax commits the step (atomically: a temporary file then
  a rename): the relative path, size and sha256 of every file of the step. Every restore checks it
  before orbax reads anything, so a changed, truncated or deleted file is named (and never reaches
  TensorStore). A step whose ``integrity.json`` is missing (a run killed between the commit and that
  write) is still verified by the first layer.

Safety rules:

- a directory that already holds checkpoints is never written by a fresh run (``resume=False``):
  :class:`CheckpointError`;
- on resume, the stored model config, data fingerprint and the training settings that shape the
  loss curve must equal the current ones, else :class:`CheckpointError` naming the fields;
- an unreadable, damaged or incomplete checkpoint is a :class:`CheckpointError` of one paragraph
  naming the step, the array and the file; nothing is written afterwards;
- a state holding a NaN/inf is never saved (:class:`~spikejax.train.steps.NonFiniteError`), so
  orbax's pruning (``keep``) only ever deletes finite checkpoints older than a finite one;
- a failed save (a full disk, ...) is a :class:`CheckpointError` naming the step and the last
  complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from spikejax.train.steps import NonFiniteError, TrainState, first_nonfinite

__all__ = ["CheckpointError", "CheckpointManager", "flatten_state", "unflatten_state", "read_meta",
           "array_digest", "RECORD_NAME"]

RECORD_NAME = "integrity.json"
"""The per-step file record, next to orbax's items in ``DIR/<step>/``."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used or written: damaged, incomplete, from another model / data /
    settings, in the way, or a save that failed."""


def flatten_state(state: TrainState) -> dict[str, Any]:
    """``TrainState`` -> a flat ``{name: array}`` dict (what orbax stores)."""
    out: dict[str, Any] = {"step": state.step}
    out.update({f"params.{k}": v for k, v in state.params.items()})
    out.update({f"stats.{k}": v for k, v in state.stats.items()})
    out.update({f"opt.{i:04d}": v for i, v in enumerate(jax.tree.leaves(state.opt_state))})
    return out


def unflatten_state(flat: dict[str, Any], template: TrainState | None = None) -> TrainState:
    """Inverse of :func:`flatten_state` given a template with the same structure (``None``: the
    parameters and statistics by name, the optimizer state as the list of its leaves)."""
    if template is None:
        part = lambda prefix: {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        return TrainState(flat["step"], part("params."), part("stats."), [v for _, v in sorted(part("opt.").items())])
    opt_def = jax.tree.structure(template.opt_state)
    opt_leaves = [flat[f"opt.{i:04d}"] for i in range(opt_def.num_leaves)]
    return TrainState(
        flat["step"],
        {k: flat[f"params.{k}"] for k in template.params},
        {k: flat[f"stats.{k}"] for k in template.stats},
        jax.tree.unflatten(opt_def, opt_leaves),
    )


def _host(x) -> np.ndarray:
    """A host copy of ``x`` (a replicated global array is read from this process's first shard)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_shards[0].data
    return np.asarray(jax.device_get(x))


def array_digest(x) -> str:
    """sha256 of an array's dtype, shape and C-order bytes (``"sha256:<hex>"``)."""
    a = np.ascontiguousarray(_host(x))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "integrity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _step_files(step_dir: str) -> dict[str, str]:
    """``{relative path: absolute path}`` of every file of a step except the record itself."""
    out = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel != RECORD_NAME and not rel.startswith(RECORD_NAME + ".tmp"):
                out[rel] = path
    return out


def _write_record(step_dir: str) -> None:
    """Write ``integrity.json`` of a committed step: a temporary file, fsync, rename."""
    files = {rel: {"size": os.path.getsize(p), "sha256": _file_digest(p)} for rel, p in _step_files(step_dir).items()}
    record = {"format": 1, "files": dict(sorted(files.items()))}
    tmp = os.path.join(step_dir, f"{RECORD_NAME}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(record, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(step_dir, RECORD_NAME))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _damaged(step: int, step_dir: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint: step {step} in {os.path.dirname(step_dir)!r} is damaged: {what}. Nothing was restored or "
        f"written; delete {step_dir!r} to fall back to an earlier checkpoint, or restore it from a copy")


def _verify_files(step: int, step_dir: str) -> bool:
    """Check every file of the step against ``integrity.json``; ``False`` when the step has no record."""
    path = os.path.join(step_dir, RECORD_NAME)
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            files = json.load(f)["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _damaged(step, step_dir, f"its file record {RECORD_NAME} is unreadable ({type(e).__name__})") from None
    present = _step_files(step_dir)
    problems = []
    for rel, want in files.items():
        if rel not in present:
            problems.append(f"file {rel} is missing")
            continue
        if not isinstance(want, dict):
            problems.append(f"the record of file {rel} is garbled")
            continue
        size = os.path.getsize(present[rel])
        if size != want.get("size"):
            problems.append(f"file {rel} has {size} bytes, {want.get('size')} were written")
        elif _file_digest(present[rel]) != want.get("sha256"):
            problems.append(f"file {rel} differs from what was written (sha256)")
    problems += [f"file {rel} was not part of the checkpoint" for rel in sorted(set(present) - set(files))]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise _damaged(step, step_dir, shown)
    return True


def _step_dir(directory: str, step: int) -> str:
    return os.path.join(directory, str(step))


def _read_step_meta(mngr: ocp.CheckpointManager, directory: str, step: int) -> dict:
    step_dir = _step_dir(directory, step)
    _verify_files(step, step_dir)
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many kinds
        raise _damaged(step, step_dir, f"its meta item is unreadable ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(meta, dict):
        raise _damaged(step, step_dir, "its meta item is not a JSON object")
    record = meta.get("integrity")
    if record is not None:
        try:
            ok = record["meta_sha256"] == _meta_digest(meta)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _damaged(step, step_dir, "file meta/metadata differs from its sha256 in the integrity record")
    return meta


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _latest(mngr: ocp.CheckpointManager, directory: str) -> int | None:
    """The latest committed step; a newer step directory that orbax does not list is an error (a
    damaged commit must not silently fall back to an older step)."""
    latest = mngr.latest_step()
    newer = sorted(int(n) for n in os.listdir(directory)
                   if n.isdigit() and os.path.isdir(os.path.join(directory, n)) and (latest is None or int(n) > latest))
    if newer:
        raise _damaged(newer[-1], _step_dir(directory, newer[-1]),
                       "it is not a complete orbax checkpoint (its commit files are missing or unreadable)")
    return latest


def read_meta(directory: str | os.PathLike, step: int | None = None) -> tuple[int, dict]:
    """``(step, meta)`` of the latest (or given) checkpoint in ``directory``, verified against its
    integrity record; :class:`CheckpointError` when there is none or it cannot be read."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint: no such directory {directory!r}")
    with ocp.CheckpointManager(directory, item_names=("state", "meta"),
                               options=ocp.CheckpointManagerOptions(create=False)) as mngr:
        step = _latest(mngr, directory) if step is None else step
        if step is None:
            raise CheckpointError(f"checkpoint: {directory!r} holds no checkpoint")
        meta = _read_step_meta(mngr, directory, step)
    return step, meta


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


class CheckpointManager:
    """Save / restore :class:`TrainState` plus JSON metadata every ``save_every`` steps, verified.

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
        self.meta = json.loads(json.dumps(meta, allow_nan=False))
        self.must_match = must_match
        self.upgrade = upgrade
        self.resume = resume
        os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every, create=True)
        self._mngr = ocp.CheckpointManager(self.directory, item_names=("state", "meta"), options=options)
        self._unrecorded: int | None = None  # committed (or committing) step still without integrity.json
        try:
            latest = _latest(self._mngr, self.directory)
        except CheckpointError:
            self._mngr.close()
            raise
        if latest is not None and not resume:
            self._mngr.close()
            raise CheckpointError(
                f"out: {self.directory!r} already holds checkpoints (latest step {latest}); pass --resume "
                "to continue that run, or choose another --out (nothing was overwritten)")

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def stored_meta(self) -> tuple[int, dict] | None:
        """``(step, meta)`` of the latest checkpoint (verified, before any ``upgrade``), or ``None``."""
        step = _latest(self._mngr, self.directory)
        return None if step is None else (step, _read_step_meta(self._mngr, self.directory, step))

    def restore(self, template: TrainState | None, found: tuple[int, dict] | None = None
                ) -> tuple[TrainState, dict] | None:
        """The latest checkpoint as ``(state, meta)`` shaped and sharded like ``template``, or ``None``
        when there is none (``found``: :meth:`stored_meta`'s answer, when already read). ``template=None``
        restores the arrays as stored (on their saved devices where this machine has them, else on its
        first device), with no optimizer to describe the state (:func:`unflatten_state`; what loading
        a model for sampling or export needs). Mismatched, damaged or unreadable checkpoints raise
        :class:`CheckpointError`."""
        found = self.stored_meta() if found is None else found
        if found is None:
            return None
        step, stored = found
        step_dir = _step_dir(self.directory, step)
        if self.upgrade is not None:
            stored = self.upgrade(stored)
        problems = []
        for key in self.must_match:
            problems += _diff(stored.get(key, "<missing>"), self.meta.get(key, "<missing>"), key)
        if problems:
            raise CheckpointError(
                f"checkpoint: step {step} in {self.directory!r} does not match this run:\n  " + "\n  ".join(problems)
                + "\n(use the same flags as the original run, or another --out; nothing was overwritten)")
        if template is None:
            args = ocp.args.StandardRestore(fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
        else:
            args = ocp.args.StandardRestore(jax.tree.map(_abstract, flatten_state(template)))
        try:
            flat = self._mngr.restore(step, args=ocp.args.Composite(state=args))["state"]
        except Exception as e:
            raise _damaged(step, step_dir, f"its state item is unreadable ({type(e).__name__}: {_first_line(e)})") \
                from None
        record = (stored.get("integrity") or {}).get("arrays")
        if record is None:
            warnings.warn(f"checkpoint: step {step} in {self.directory!r} predates integrity records; its arrays "
                          "are restored unverified", stacklevel=2)
        else:
            if sorted(record) != sorted(flat):
                missing = sorted(set(flat) ^ set(record))
                raise _damaged(step, step_dir, f"its arrays {missing[:4]} do not match the integrity record")
            bad = [k for k in sorted(flat) if array_digest(flat[k]) != record[k]]
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise _damaged(step, step_dir, f"array {bad[0]}{more} read from the files under "
                                               f"{os.path.join(step_dir, 'state')} differs from its sha256 in the "
                                               "integrity record")
        state = unflatten_state(flat, template)
        if int(state.step) != step:
            raise _damaged(step, step_dir, f"it holds the state of step {int(state.step)}")
        return state, stored

    def due(self, step: int) -> bool:
        """Whether ``step`` is on the save interval (and not saved yet)."""
        return self._mngr.should_save(step) and self._mngr.latest_step() != step

    def save(self, step: int, state: TrainState, extra: dict | None = None, *, force: bool = False) -> bool:
        """Save if ``step`` is on the interval (or ``force``); returns whether a save started.

        Raises :class:`~spikejax.train.steps.NonFiniteError` (nothing saved) when the state holds a
        NaN/inf, and :class:`CheckpointError` when the save fails (e.g. the disk is full)."""
        if not force and not self._mngr.should_save(step):
            return False
        if self._mngr.latest_step() == step:
            return False
        self.finish()
        host = {k: _host(v) for k, v in flatten_state(state).items()}
        bad = first_nonfinite(host)
        if bad is not None:
            raise NonFiniteError(step, bad, detail=f"; not saved (the last checkpoint is step "
                                                   f"{self._mngr.latest_step()})")
        meta = {**self.meta, **(extra or {}), "step": int(step)}
        meta = json.loads(json.dumps(meta, allow_nan=False))
        meta["integrity"] = {"arrays": {k: array_digest(v) for k, v in host.items()}}
        meta["integrity"]["meta_sha256"] = _meta_digest(meta)
        try:
            started = bool(self._mngr.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(flatten_state(state)), meta=ocp.args.JsonSave(meta)), force=force))
        except Exception as e:
            raise self._save_failed(step, e) from None
        if started:
            self._unrecorded = step
        return started

    def poll(self) -> None:
        """Write the integrity record of a save that has committed since (cheap; call every step)."""
        if self._unrecorded is not None and not self._mngr.is_saving_in_progress():
            self.finish()

    def finish(self) -> None:
        """Wait for a pending save, surface its error, and write its integrity record."""
        if self._unrecorded is None:
            return
        step, self._unrecorded = self._unrecorded, None
        try:
            self._mngr.wait_until_finished()
            self._mngr.check_for_errors()
        except Exception as e:
            raise self._save_failed(step, e) from None
        step_dir = _step_dir(self.directory, step)
        if jax.process_index() == 0 and os.path.isdir(step_dir):
            try:
                _write_record(step_dir)
            except OSError as e:
                raise self._save_failed(step, e) from None

    def _save_failed(self, step: int, e: BaseException) -> CheckpointError:
        earlier = [s for s in self._mngr.all_steps() if s < step]
        kept = f"the last complete checkpoint is step {max(earlier)}" if earlier else "no earlier checkpoint exists"
        return CheckpointError(f"checkpoint: saving step {step} to {self.directory!r} failed "
                               f"({type(e).__name__}: {_first_line(e)}); {kept}")

    def close(self) -> None:
        """Wait for pending saves (writing their integrity records) and release the manager."""
        try:
            self.finish()
        finally:
            self._mngr.close()
