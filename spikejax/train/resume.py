"""``spikejax train ... --out DIR --resume`` continues with the flags stored in the run.

Every checkpoint stores the command line it was trained with (``meta["cli"]``: the parsed flags,
:func:`run_flags`). On ``--resume``, :func:`apply_stored_flags` fills every flag that the command line
does not give with the stored value, so ``spikejax train lm --out DIR --resume`` alone continues a
run started with any preset and flags. Flags that are given explicitly keep their value; the
checkpoint comparison then refuses the ones that would change the model, the data or the loss
curve (except a larger ``--steps``, which extends the schedule: see
:func:`spikejax.train.steps.make_schedule`).

Not stored (run-time choices of each invocation): the kernel ``--backend``, ``--time-limit``,
``--no-progress``, ``--out``/``--resume`` and the multi-host flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["NOT_STORED", "run_flags", "given_flags", "stored_flags", "apply_stored_flags"]

NOT_STORED = frozenset({"task", "out", "resume", "backend", "time_limit", "no_progress", "coordinator",
                        "num_processes", "process_id"})
"""Flags that each invocation chooses afresh (not taken from the run on ``--resume``)."""


def run_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of ``args`` that a resume continues with (JSON values; ``data`` and ``teacher`` as
    absolute paths)."""
    out = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_STORED}
    for name in ("data", "teacher"):
        if out.get(name):
            out[name] = os.path.abspath(out[name])
    return json.loads(json.dumps(out))


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The ``dest`` names that ``argv`` sets explicitly (abbreviations and ``--flag=value`` included):
    ``argv`` parsed again with every default suppressed."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        ns, _ = parser.parse_known_args(argv)
    finally:
        for a, default in saved:
            a.default = default
    return set(vars(ns))


def stored_flags(out: str) -> dict[str, Any] | None:
    """The flags stored in run directory ``out``: its latest checkpoint's (verified), else its
    ``run.json``'s (a run interrupted before its first checkpoint); ``None`` when neither has any."""
    from spikejax.train.checkpoint import read_meta

    ckpt = os.path.join(out, "checkpoints")
    if os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt)):
        return read_meta(ckpt)[1].get("cli")
    path = os.path.join(out, "run.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                flags = json.load(f).get("cli")
        except (OSError, ValueError, AttributeError):
            return None
        return flags if isinstance(flags, dict) else None
    return None


def apply_stored_flags(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace,
                       task: str) -> dict[str, Any] | None:
    """Set each flag of ``args`` that ``argv`` (the ``spikejax train`` arguments, ``task`` first) does
    not give to the value stored in ``args.out``; returns the stored flags (``None``: nothing stored)."""
    stored = stored_flags(args.out)
    if not stored:
        return None
    argv = list(sys.argv[1:] if argv is None else argv)
    sub_argv = argv[argv.index(task) + 1:] if task in argv else argv
    given = given_flags(parser, sub_argv)
    for name, value in stored.items():
        if name not in given and name not in NOT_STORED and hasattr(args, name):
            setattr(args, name, value)
    return stored
