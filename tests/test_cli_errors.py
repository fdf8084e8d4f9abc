"""Every user error of the ``spikejax`` command line is one line after the usage and exit status 2,
found before anything is built or written; ``--help`` / ``--version`` / a bare ``spikejax``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spikejax import cli


def _usage_error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``spikejax argv``; assert exit 2, no traceback, and exactly one error line (the last one,
    after the usage) containing every needle. Returns that line."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage: spikejax")
    errors = [line for line in lines if ": error: " in line]
    assert errors == [lines[-1]], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


TRAIN_FLAG_ERRORS = [
    (["--neuron", "lifx"], ["--neuron", "invalid choice", "'lifx'"]),
    (["--attention", "softmax"], ["--attention", "invalid choice"]),
    (["--backend", "cuda"], ["--backend", "invalid choice"]),
    (["--dtype", "float16"], ["--dtype", "invalid choice", "bfloat16"]),
    (["--threshold", "-1"], ["--threshold", "> 0", "-1"]),
    (["--threshold", "nan"], ["--threshold", "nan"]),
    (["--beta", "2"], ["--beta", "[0, 1]", "2"]),
    (["--beta", "nan"], ["--beta", "nan"]),
    (["--lr", "inf"], ["--lr", "inf"]),
    (["--lr", "nan"], ["--lr", "nan"]),
    (["--weight-decay", "nan"], ["--weight-decay", "nan"]),
    (["--time-limit", "nan"], ["--time-limit", "nan"]),
    (["--steps", "0"], ["--steps", "positive integer"]),
    (["--steps", "ten"], ["--steps", "positive integer", "'ten'"]),
    (["--dropout", "1.5"], ["--dropout", "[0, 1)"]),
    (["--backend", "pallas"], ["--backend", "pallas", "GPU"]),
    (["--heads", "3"], ["--heads", "3", "--d-model 64"]),
    (["--d-model", "30", "--heads", "4"], ["--heads", "4", "--d-model 30"]),
    (["--coordinator", "localhost:1234"], ["--coordinator", "--num-processes and --process-id"]),
    (["--num-processes", "2", "--process-id", "0"], ["missing --coordinator"]),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], ["--process-id", "2"]),
    (["--warmup", "20", "--steps", "10"], ["--warmup", "20", "--steps 10"]),
    (["--resume"], ["--resume", "--out"]),
]


@pytest.mark.parametrize("task", ["lm", "vision"])
@pytest.mark.parametrize("flags,needles", TRAIN_FLAG_ERRORS, ids=[" ".join(f) for f, _ in TRAIN_FLAG_ERRORS])
def test_train_flag_errors(task, flags, needles, capsys, tmp_path):
    if task == "vision" and flags[0] == "--dropout":
        pytest.skip("--dropout is a train lm flag")
    out = tmp_path / "run"
    argv = ["train", task, *flags] + ([] if "--resume" in flags else ["--out", str(out)])
    _usage_error(capsys, argv, *needles)
    assert not out.exists()  # nothing written


def test_out_that_is_a_file_or_under_a_file(capsys, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    _usage_error(capsys, ["train", "lm", "--out", str(f)], "--out", "is a file")
    _usage_error(capsys, ["train", "vision", "--out", str(f / "run")], "--out", "is a file")
    assert f.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_out_not_writable(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _usage_error(capsys, ["train", "lm", "--out", str(ro / "run")], "--out", "not writable")
    finally:
        ro.chmod(0o700)


def test_data_errors_name_the_file(capsys, tmp_path):
    out = tmp_path / "run"
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    _usage_error(capsys, ["train", "lm", "--data", str(empty), "--out", str(out)], "empty.txt", "empty")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("abc déf".encode("latin-1"))  # 'é' is byte 0xe9 at offset 5
    _usage_error(capsys, ["train", "lm", "--data", str(latin), "--out", str(out)],
                 "latin1.txt", "UTF-8", "byte offset 5", "0xe9")
    short = tmp_path / "short.txt"
    short.write_text("hello world, " * 10)  # 130 characters: a 13-character validation split
    _usage_error(capsys, ["train", "lm", "--data", str(short), "--seq-len", "16", "--out", str(out)],
                 "short.txt", "too short", "seq_len=16")
    _usage_error(capsys, ["train", "lm", "--data", str(tmp_path / "missing.txt"), "--out", str(out)],
                 "missing.txt", "no such file")
    _usage_error(capsys, ["train", "lm", "--data", str(tmp_path), "--out", str(out)], "is a directory")
    _usage_error(capsys, ["train", "vision", "--patch-size", "3", "--out", str(out)], "patch_size=3")
    assert not out.exists()


def test_batch_size_not_divisible_by_the_device_count(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "spikejax.cli", "train", "vision", "--batch-size", "3",
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("--batch-size: 3 is not divisible by the 2 devices")
    assert not out.exists()


def test_other_commands(capsys, tmp_path):
    _usage_error(capsys, ["export-torch", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m"),
                          "--formats", "onnx"], "--formats", "onnx", "safetensors and/or pt")
    _usage_error(capsys, ["export-torch", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m"),
                          "--backend", "pallas"], "--backend", "GPU")
    f = tmp_path / "file.txt"
    f.write_text("x")
    _usage_error(capsys, ["export-torch", "--checkpoint", str(tmp_path), "--out", str(f / "m")], "--out", "is a file")
    _usage_error(capsys, ["export-torch", "--checkpoint", str(tmp_path), "--out", str(tmp_path)],
                 "--out", "is a directory")
    _usage_error(capsys, ["sample", "--checkpoint", str(tmp_path), "--temperature", "nan"], "--temperature", "nan")
    _usage_error(capsys, ["sample", "--checkpoint", str(tmp_path), "--chars", "0"], "--chars")
    _usage_error(capsys, ["demo", "--batch-size", "0"], "--batch-size", "positive integer")
    _usage_error(capsys, ["demo", "--steps", "0"], "--steps", "positive integer")
    _usage_error(capsys, ["demo", "--backend", "triton"], "--backend", "triton")
    assert not (tmp_path / "m.json").exists()


def test_top_level_help_version_and_bare(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:  # each command on one line with its description
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split()) > 3
    assert cli.main(["--version"]) == 0
    import spikejax

    assert capsys.readouterr().out.strip() == f"spikejax {spikejax.__version__}"
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert "commands:" in captured.err and "export-torch" in captured.err
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,shown", [
    (["train", "lm"], ["(default: the preset's: tiny 64, shakespeare 384)", "(default: tiny)",
                       "(default: 0.5)", "(default: 0.1)", "(default: xla)"]),
    (["train", "vision"], ["model width D (default: 64)", "(default: 300)", "(default: 2)"]),
    (["train", "temporal"], ["optimizer steps in total (default: 400)", "(default: 50)"]),
    (["sample"], ["(default: 0.8)", "(default: 200)", "(default: auto)"]),
    (["export-torch"], ["(default: safetensors,pt)", "(default: auto)"]),
    (["demo"], ["(default: 400)", "(default: 128)"]),
])
def test_help_shows_defaults(argv, shown, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for s in shown:
        assert s in text, s
