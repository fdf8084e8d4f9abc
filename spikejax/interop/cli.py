"""``spikejax export-torch --checkpoint DIR --out FILE``: export a trained checkpoint for PyTorch.

Writes ``FILE``'s ``<stem>.safetensors``, ``<stem>.pt`` (when torch is installed) and
``<stem>.json`` (see :func:`spikejax.interop.export_torch`); load them in PyTorch with
:func:`spikejax.interop.torch_modules.load_model`. The checkpoint is restored with
:func:`spikejax.train.commands.load_checkpoint`, so runs of ``spikejax train lm`` (a
:class:`~spikejax.nn.SpikingLM`) and ``spikejax train vision`` (a :class:`~spikejax.nn.Spikformer`,
BatchNorm running statistics included) both export.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flax import nnx

from spikejax.interop.torch_export import export_torch


def load_checkpoint_model(checkpoint: str) -> nnx.Module:
    """The NNX model stored in a ``spikejax train`` run directory (or its ``checkpoints/``), latest step.

    Raises :class:`spikejax.train.CheckpointError` (naming ``checkpoint``) for a directory that holds
    no run or a run of an unknown task.
    """
    from spikejax.train.commands import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    return model


def export_torch_main(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse ``argv``, restore the checkpoint, export it; prints and returns the written paths."""
    p = argparse.ArgumentParser(prog="spikejax export-torch",
                                description="Export a spikejax checkpoint as a PyTorch state dict (+ config JSON).")
    p.add_argument("--checkpoint", required=True,
                   help="run directory of `spikejax train lm` or `spikejax train vision` (or its checkpoints/)")
    p.add_argument("--out", required=True, help="output file: <stem>, <stem>.safetensors or <stem>.pt")
    p.add_argument("--formats", default="safetensors,pt",
                   help="comma-separated: safetensors and/or pt (pt only when torch is installed)")
    args = p.parse_args(argv)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    model = load_checkpoint_model(args.checkpoint)
    written = export_torch(model, args.out, formats=formats)
    print(f"exported {type(model).__name__} from {args.checkpoint}")
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written
