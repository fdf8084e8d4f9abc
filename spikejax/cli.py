"""The ``spikejax`` command line: ``spikejax demo [...]``."""

from __future__ import annotations

import sys

COMMANDS = {"demo": "spikejax.demo"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: spikejax {{{names}}} [options]   (spikejax <command> --help for options)")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    import importlib

    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
