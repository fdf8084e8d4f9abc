"""The ``spikejax`` command line: dispatch to the commands, and the argument types they share.

    spikejax demo [...]                       quick LIF network on sklearn digits (spikejax.demo)
    spikejax train lm [--data FILE] [...]     char-level SpikingLM (spikejax.train.commands)
    spikejax train vision [...]               Spikformer on sklearn digits (--dataset: a zoo model on a data set)
    spikejax train audio|temporal [...]       spiking sequence classifiers (SHD / SSC, randman)
    spikejax sample --checkpoint DIR --prompt TEXT
    spikejax finetune --checkpoint DIR --data FILE --lora-rank R --lora-targets attn|mlp|all
    spikejax export-torch --checkpoint DIR --out FILE   PyTorch state dict + config (spikejax.interop)

Each command is ``"module"`` (its ``main(argv)``) or ``"module:function"`` in :data:`COMMANDS`,
with its one-line description. A user error (a bad flag value, a flag combination that cannot
work, input that cannot be read) is one line after the usage and exit status 2, found before
anything is built or written: the commands parse with the types below and call
``parser.error``. A checkpoint that cannot be used (:class:`spikejax.train.CheckpointError`) is
one line and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable

__all__ = ["COMMANDS", "main", "positive_int", "nonneg_int", "number", "HelpFormatter", "add_backend_flag",
           "check_backend", "check_out_dir"]

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("spikejax.demo", "train a two-layer LIF network on scikit-learn's digits (seconds, the quick start)"),
    "train": ("spikejax.train.commands:train_main",
              "train a char-level SpikingLM (train lm), a vision model (train vision) or a spiking "
              "sequence classifier (train audio / temporal)"),
    "sample": ("spikejax.train.commands:sample_main", "generate text from a `spikejax train lm` run"),
    "finetune": ("spikejax.train.commands:finetune_main",
                 "fine-tune a `spikejax train lm` run on new text with LoRA adapters (base frozen)"),
    "export-torch": ("spikejax.interop.cli:export_torch_main",
                     "export a trained run as a PyTorch state dict (.safetensors / .pt) and config (.json)"),
}


# --- argument types shared by the commands --------------------------------------------------------


def _integer(low: int, want: str) -> Callable[[str], int]:
    """argparse type: an integer >= ``low`` (``want`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text}")
        return v

    parse.__name__ = want
    return parse


positive_int = _integer(1, "a positive integer")
"""argparse type: an integer >= 1."""
nonneg_int = _integer(0, "an integer >= 0")
"""argparse type: an integer >= 0."""


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in ``[low, high]`` (``low_open`` / ``high_open``: that end excluded;
    None: unbounded). NaN and infinities are always refused."""
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    if low is not None and high is not None:
        want = f"a number in {lo}, {hi}"
    elif low is not None:
        want = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        want = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        want = "a finite number"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        ok = math.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text}")
        return v

    parse.__name__ = want
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` with every flag's default: ``(default: X)`` after the help text, except where the
    default is None (those flags say in their help where their value comes from, e.g. the preset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS) or action.option_strings == []:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def add_backend_flag(group, default: str = "auto", what: str = "the neuron scans") -> None:
    """``--backend`` with the choices of :data:`spikejax.backends.BACKENDS` (a run-time choice)."""
    from spikejax.backends import BACKENDS

    group.add_argument("--backend", choices=BACKENDS, default=default,
                       help=f"kernel backend of {what} (auto: the fastest that runs here; pallas / triton need "
                            "an NVIDIA GPU; a run-time choice, not stored in the run)")


def check_backend(parser: argparse.ArgumentParser, name: str) -> None:
    """``parser.error`` (exit 2) when backend ``name`` cannot run on this machine, saying why."""
    from spikejax.backends import unavailable_reason

    reason = unavailable_reason(name)
    if reason is not None:
        parser.error(f"argument --backend: {reason}")


def check_out_dir(parser: argparse.ArgumentParser, out: str, flag: str = "--out") -> None:
    """``parser.error`` (exit 2) unless ``out`` is, or can be created as, a writable directory."""
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"argument {flag}: {out!r} is a file, not a directory")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        parser.error(f"argument {flag}: cannot create {out!r}: {parent!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        parser.error(f"argument {flag}: {parent!r} is not writable")


# --- dispatch -------------------------------------------------------------------------------------


def _top_parser() -> argparse.ArgumentParser:
    from spikejax import __version__

    width = max(len(n) for n in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="spikejax", usage="spikejax [--version] [--help] <command> [options]",
        description="Spiking neural networks in JAX: train, sample and export from the command line.",
        epilog=f"commands:\n{listing}\n\n`spikejax <command> --help` lists a command's options and their defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"spikejax {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command; returns the exit status (argparse errors raise
    ``SystemExit(2)``, as ``spikejax`` on the command line exits)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv:
        top.print_help(sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    if argv[0] == "--version":
        from spikejax import __version__

        print(f"spikejax {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        top.print_usage(sys.stderr)
        what = "option" if argv[0].startswith("-") else "command"
        print(f"spikejax: error: unknown {what} {argv[0]!r}; expected a command: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    target, _ = COMMANDS[argv[0]]
    module, _, func = target.partition(":")
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
