"""``spikejax export-torch --checkpoint DIR --out FILE``: export a trained checkpoint for PyTorch.

Writes ``FILE``'s ``<stem>.safetensors``, ``<stem>.pt`` (when torch is installed) and
``<stem>.json`` (see :func:`spikejax.interop.export_torch`); load them in PyTorch with
:func:`spikejax.interop.torch_modules.load_model`. The checkpoint is restored with
:func:`spikejax.train.restore.load_checkpoint` (no optimizer built), so runs of ``spikejax train lm`` (a
:class:`~spikejax.nn.SpikingLM`) and ``spikejax train vision`` (a :class:`~spikejax.nn.Spikformer`,
BatchNorm running statistics included) both export.
"""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from spikejax.interop.torch_export import WEIGHT_FORMATS, export_torch


def load_checkpoint_model(checkpoint: str, backend: str = "auto") -> nnx.Module:
    """The NNX model stored in a ``spikejax train`` run directory (or its ``checkpoints/``), latest step,
    with its neurons on ``backend`` (a run-time choice, see :func:`spikejax.train.restore.load_checkpoint`).

    Raises :class:`spikejax.train.CheckpointError` (naming ``checkpoint``) for a directory that holds
    no run or a run of an unknown task.
    """
    from spikejax.train.restore import load_checkpoint

    model, _ = load_checkpoint(checkpoint, backend=backend)
    return model


def _formats(text: str) -> tuple[str, ...]:
    """argparse type of ``--formats``: comma-separated ``safetensors`` and/or ``pt``."""
    import argparse

    names = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in names if f not in WEIGHT_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(unknown) or repr(text)}; expected a "
                                         f"comma-separated list of {' and/or '.join(WEIGHT_FORMATS)}")
    return names


def export_torch_main(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse ``argv``, restore the checkpoint, export it; prints and returns the written paths."""
    import argparse

    from spikejax.cli import HelpFormatter, add_backend_flag, check_backend, check_out_dir

    p = argparse.ArgumentParser(prog="spikejax export-torch", formatter_class=HelpFormatter,
                                description="Export a spikejax checkpoint as a PyTorch state dict (+ config JSON).")
    p.add_argument("--checkpoint", required=True,
                   help="run directory of `spikejax train lm` or `spikejax train vision` (or its checkpoints/)")
    p.add_argument("--out", required=True, help="output file: <stem>, <stem>.safetensors or <stem>.pt")
    p.add_argument("--formats", type=_formats, default="safetensors,pt",
                   help="comma-separated: safetensors and/or pt (pt only when torch is installed)")
    add_backend_flag(p, what="the model restored for the export")
    args = p.parse_args(argv)
    check_backend(p, args.backend)
    out = Path(args.out)
    if out.is_dir():
        p.error(f"argument --out: {args.out!r} is a directory; give a file name (<stem>, <stem>.safetensors)")
    check_out_dir(p, str(out.parent))
    model = load_checkpoint_model(args.checkpoint, backend=args.backend)
    written = export_torch(model, args.out, formats=args.formats)
    print(f"exported {type(model).__name__} from {args.checkpoint}")
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written
