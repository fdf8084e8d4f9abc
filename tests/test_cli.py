"""The ``spikejax`` command line end to end with tiny flags: train lm, sample, train vision, errors."""

import json
import os

import pytest

from spikejax import cli
from spikejax.train.commands import sample_main

TINY = ["--steps", "4", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2", "--time-steps", "2",
        "--log-every", "2", "--eval-every", "4", "--checkpoint-every", "2", "--no-progress"]


def test_train_lm_then_sample(tmp_path, capsys):
    out = tmp_path / "lm"
    args = ["train", "lm", *TINY, "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "8", "--out", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "val_loss" in text and "ANN / SNN energy" in text and "sample:" in text
    summary = json.load(open(out / "summary.json"))
    assert summary["steps"] == 4 and summary["val_bpc"] > 0 and summary["energy"]["sops"] > 0
    records = [json.loads(l) for l in open(out / "metrics.jsonl")]
    logged = [r for r in records if "loss" in r]
    assert {1, 2, 4} <= {r["step"] for r in logged} <= {1, 2, 3, 4}  # every --log-every steps (or every step)
    assert {"loss", "bpc", "tokens_per_s", "firing_rate", "dead_fraction", "surrogate_grad"} <= set(logged[-1])
    assert logged[-1]["layers"]
    assert records[-1]["final"] and records[-1]["val_loss"] == summary["val_loss"]
    assert sorted(os.listdir(out / "checkpoints")) == ["2", "4"]

    assert cli.main(["sample", "--checkpoint", str(out), "--prompt", "The ", "--chars", "6"]) == 0
    assert capsys.readouterr().out.startswith("The ")
    # exactly --chars characters, also beyond the context length (seq_len 16: the window slides)
    for prompt, n in (("The ", 6), ("The ", 40), ("x" * 30, 5)):
        text = sample_main(["--checkpoint", str(out), "--prompt", prompt, "--chars", str(n), "--backend", "auto"])
        assert text.startswith(prompt) and len(text) == len(prompt) + n
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", "--checkpoint", str(out), "--prompt", "\u03a9"])
    assert exc.value.code == 2 and "vocabulary" in capsys.readouterr().err.splitlines()[-1]

    # a second fresh run into the same directory is refused (nothing overwritten) ...
    assert cli.main(args) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    # ... and --resume of a finished run just reports it
    assert cli.main([*args, "--resume"]) == 0


def test_train_vision(tmp_path, capsys):
    args = ["train", "vision", *[a for a in TINY if a != "--no-progress"], "--out", str(tmp_path / "v")]
    assert cli.main(args) == 0
    err = capsys.readouterr().err  # the progress display: compilation apart from the bar, then the final passes
    assert "compiling the train step" in err and "(compiled in " in err
    assert err.index("compiling") < err.index("compiled in") < err.index("final evaluation (")
    assert "spike statistics and energy" in err
    summary = json.load(open(tmp_path / "v" / "summary.json"))
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["energy"]["unit"] == "image"


def test_usage_and_flag_errors(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "sample" in out and "demo" in out
    with pytest.raises(SystemExit):
        cli.main(["train", "lm", "--steps", "0"])
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "lm", "--dropout", "1.5"])
    assert "--dropout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "lm", "--resume"])
    assert "--resume" in capsys.readouterr().err


def test_shakespeare_preset_builds_ternary_with_dropout_and_flags_override(tmp_path, capsys):
    """The GPU preset (ternary spikes, dropout 0.2; BENCHMARKS.md) shrunk by flags to a CPU size; an
    explicit --neuron wins over the preset."""
    data = tmp_path / "text.txt"
    data.write_text("To be, or not to be, that is the question.\n" * 40)
    small = ["--d-model", "16", "--layers", "1", "--heads", "2", "--seq-len", "16", "--batch-size", "4",
             "--steps", "1", "--warmup", "0", "--eval-every", "0", "--checkpoint-every", "0", "--sample-chars", "0",
             "--eval-batches", "1", "--no-progress", "--data", str(data)]
    for extra, neuron in (([], "ternary"), (["--neuron", "lif"], "lif")):
        out = tmp_path / neuron
        assert cli.main(["train", "lm", "--preset", "shakespeare", *small, *extra, "--out", str(out)]) == 0
        model = json.load(open(out / "run.json"))["model"]
        assert model["neuron"] == neuron and model["dropout"] == 0.2 and model["attention"] == "hybrid"
    capsys.readouterr()
