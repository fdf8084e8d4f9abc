"""A trained model from a ``spikejax train`` run directory, for sampling and export.

:func:`load_checkpoint` reads the latest checkpoint's metadata (verified), builds the model from its
stored config and restores the parameters and statistics into it, verified against the step's
integrity records (see :mod:`spikejax.train.checkpoint`). It needs neither the optimizer nor the
compiled steps: the optimizer state is read as stored and dropped. Resuming training goes through
:func:`spikejax.train.loop.fit` instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from spikejax.train.checkpoint import CheckpointError, CheckpointManager, read_meta
from spikejax.train.vocab import Vocabulary

__all__ = ["load_checkpoint", "load_lm", "model_config_class", "checkpoint_directory"]


def model_config_class(task: Any):
    """The model-config class of runs of ``task`` (``"lm"``: :class:`~spikejax.nn.SpikingLMConfig`,
    ``"vision"``: :class:`~spikejax.nn.SpikformerConfig`, ``"audio"`` / ``"temporal"``:
    :class:`~spikejax.train.tasks_data.SequenceClassifierConfig`), or ``None``."""
    from spikejax.nn import SpikformerConfig, SpikingLMConfig
    from spikejax.train.tasks_data import SequenceClassifierConfig

    return {"lm": SpikingLMConfig, "vision": SpikformerConfig, "audio": SequenceClassifierConfig,
            "temporal": SequenceClassifierConfig}.get(task) if isinstance(task, str) else None


def checkpoint_directory(checkpoint: str | os.PathLike) -> str:
    """``checkpoint/checkpoints`` for a run directory, else ``checkpoint`` itself."""
    inner = os.path.join(checkpoint, "checkpoints")
    return inner if os.path.isdir(inner) else os.fspath(checkpoint)


def load_checkpoint(checkpoint: str | os.PathLike, *, backend: str = "auto", merge_lora: bool = True):
    """``(model, meta)`` restored from a ``spikejax train`` run directory (or its ``checkpoints/``):
    the run's model (a :class:`~spikejax.nn.SpikingLM`, a :class:`~spikejax.nn.Spikformer`, ...) with
    the latest weights, and the stored metadata (``meta["model"]`` config, ``meta["data"]``,
    ``meta["train"]``).

    ``backend``: the kernel backend of the restored model's neurons (``"auto"``: the fastest that
    runs here; ``"xla"``, ``"pallas"``, ...), a run-time choice: a run trained with ``pallas`` on a
    GPU restores on a CPU (a backend stored by an older run is ignored). A missing, damaged or
    foreign checkpoint is a :class:`~spikejax.train.checkpoint.CheckpointError`.

    A ``spikejax finetune`` run (LoRA adapters, ``meta["train"]["lora"]``) is rebuilt with its adapters
    and, with ``merge_lora`` (the default: what sampling and export use), returned with them folded
    into the kernels (:func:`spikejax.nn.lora.merge_lora`); ``merge_lora=False`` keeps them."""
    from spikejax.nn import lora as lora_lib
    from spikejax.train.steps import ModelSplit

    directory = checkpoint_directory(checkpoint)
    step, meta = read_meta(directory)
    config_cls = model_config_class(meta.get("task"))
    if config_cls is None or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"checkpoint: {directory!r} has unknown task {meta.get('task')!r}")
    try:
        config = config_cls.from_dict({**meta["model"], "backend": backend})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint: {directory!r} holds a {meta['task']} model config that does not "
                              f"build ({e})") from None
    model = config.build(seed=0)
    lora = (meta.get("train") or {}).get("lora") if isinstance(meta.get("train"), dict) else None
    if lora:
        lora_lib.apply_lora(model, rank=lora["rank"], targets=lora["targets"], alpha=lora["alpha"])
    split = ModelSplit(model)
    mngr = CheckpointManager(directory, meta, save_every=1, resume=True)
    try:
        state, _ = mngr.restore(None, found=(step, meta))
    finally:
        mngr.close()
    for kind, built, restored in (("params", split.params, state.params), ("stats", split.stats, state.stats)):
        wrong = sorted(set(built) ^ set(restored)) or [
            k for k in sorted(built)
            if np.shape(restored[k]) != np.shape(built[k]) or restored[k].dtype != built[k].dtype]
        if wrong:
            raise CheckpointError(f"checkpoint: step {step} in {directory!r} does not fit the model its config "
                                  f"builds: {kind} {wrong[:4]} differ in name, shape or dtype")
    model = split.merge(state.params, state.stats)
    return (lora_lib.merge_lora(model) if lora and merge_lora else model), meta


def load_lm(checkpoint: str | os.PathLike, *, backend: str = "auto", merge_lora: bool = True):
    """``(SpikingLM, Vocabulary)`` restored from a ``spikejax train lm`` run directory (``backend``:
    see :func:`load_checkpoint`; ``merge_lora``: fold LoRA adapters into the kernels)."""
    model, meta = load_checkpoint(checkpoint, backend=backend, merge_lora=merge_lora)
    if meta.get("task") != "lm":
        raise CheckpointError(f"checkpoint: {checkpoint!r} is a {meta.get('task')!r} run, not a language model")
    return model, Vocabulary(json.loads(meta["data"]["chars"]))
