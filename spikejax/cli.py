"""The ``spikejax`` command line.

    spikejax demo [...]                       quick LIF network on sklearn digits (spikejax.demo)
    spikejax train lm [--data FILE] [...]     char-level SpikingLM (spikejax.train.commands)
    spikejax train vision [...]               Spikformer on sklearn digits
    spikejax sample --checkpoint DIR --prompt TEXT
    spikejax export-torch --checkpoint DIR --out FILE   PyTorch state dict + config (spikejax.interop)

Each command is ``"module"`` (its ``main(argv)``) or ``"module:function"`` in :data:`COMMANDS`;
further commands (e.g. ``export-torch``) register there.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, str] = {
    "demo": "spikejax.demo",
    "train": "spikejax.train.commands:train_main",
    "sample": "spikejax.train.commands:sample_main",
    "export-torch": "spikejax.interop.cli:export_torch_main",  # spikejax.interop (issue 7)
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: spikejax {{{names}}} [options]   (spikejax <command> --help for options)")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"spikejax: unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module, _, func = COMMANDS[argv[0]].partition(":")
    entry = getattr(importlib.import_module(module), func or "main")
    try:
        entry(argv[1:])
    except Exception as e:
        if type(e).__name__ != "CheckpointError":  # spikejax.train.checkpoint.CheckpointError: a clear message
            raise
        print(f"spikejax {argv[0]}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
