"""``spikejax export-torch --checkpoint DIR --out FILE``: export a trained checkpoint for PyTorch.

Writes ``FILE``'s ``<stem>.safetensors``, ``<stem>.pt`` (when torch is installed) and
``<stem>.json`` (see :func:`spikejax.interop.export_torch`); load them in PyTorch with
:func:`spikejax.interop.torch_modules.load_model`. The checkpoint is restored through
:mod:`spikejax.train` (``spikejax.train.commands.load_lm`` for ``spikejax train lm`` runs).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from spikejax.interop.torch_export import export_torch


def load_checkpoint_model(checkpoint: str):
    """The NNX model stored in a ``spikejax train`` run directory (or its ``checkpoints/``)."""
    from spikejax.train.checkpoint import CheckpointError, read_meta
    from spikejax.train.commands import load_lm

    directory = os.path.join(checkpoint, "checkpoints") if os.path.isdir(os.path.join(checkpoint, "checkpoints")) \
        else checkpoint
    _, meta = read_meta(directory)
    task = meta.get("task")
    if task == "lm":
        model, _ = load_lm(checkpoint)
        return model
    raise CheckpointError(f"checkpoint: {directory!r} is a {task!r} run; spikejax.train exposes a model loader only "
                          "for 'lm' runs so far (export a model object with spikejax.interop.export_torch instead)")


def export_torch_main(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse ``argv``, restore the checkpoint, export it; prints and returns the written paths."""
    p = argparse.ArgumentParser(prog="spikejax export-torch",
                                description="Export a spikejax checkpoint as a PyTorch state dict (+ config JSON).")
    p.add_argument("--checkpoint", required=True, help="run directory of `spikejax train` (or its checkpoints/)")
    p.add_argument("--out", required=True, help="output file: <stem>, <stem>.safetensors or <stem>.pt")
    p.add_argument("--formats", default="safetensors,pt",
                   help="comma-separated: safetensors and/or pt (pt only when torch is installed)")
    args = p.parse_args(argv)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    model = load_checkpoint_model(args.checkpoint)
    written = export_torch(model, args.out, formats=formats)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written
