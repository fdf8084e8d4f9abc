"""Defaults of ``spikejax train`` come from the presets (an explicit flag overrides them), and loading a
checkpoint for sampling / export builds no optimizer and no compiled steps (issue 17, item 5)."""

import dataclasses

import numpy as np
import pytest
from train_helpers import tiny_cfg, tiny_lm

import spikejax.train.loop as loop
from spikejax.train.commands import settings_of, train_main
from spikejax.train.presets import PRESETS, Preset, preset_for

TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--time-steps", "2", "--steps", "2",
        "--batch-size", "4", "--no-progress"]


@pytest.fixture
def seen(monkeypatch):
    """The (task, TrainConfig) of every ``train_main`` call, with ``fit`` stubbed out."""
    calls = []
    monkeypatch.setattr(loop, "fit", lambda task, cfg, **kw: calls.append((task, cfg)))
    return calls


@pytest.mark.parametrize("task,argv", [("lm", ["--seq-len", "16", "--sample-chars", "0"]), ("vision", []),
                                       ("temporal", ["--per-class", "2"])])
def test_a_preset_sets_beta_and_a_flag_overrides_it(task, argv, monkeypatch, seen, tmp_path):
    rng = np.random.default_rng()
    beta, threshold, flag_beta = (float(round(v, 3)) for v in rng.uniform(0.05, 0.95, 3))
    name = "tiny" if task == "lm" else "default"
    monkeypatch.setitem(PRESETS[task], name, dataclasses.replace(PRESETS[task][name], beta=beta,
                                                                 threshold=threshold, weight_decay=0.03))
    base = [task, *TINY, *argv, "--out", str(tmp_path / "a")]
    train_main(base)
    train_main([*base[:-1], str(tmp_path / "b"), "--beta", str(flag_beta), "--weight-decay", "0.2"])
    (t1, c1), (t2, c2) = seen
    assert t1.model_config.neuron_kwargs == {"beta": beta, "threshold": threshold}
    assert t2.model_config.neuron_kwargs == {"beta": flag_beta, "threshold": threshold}
    assert (c1.weight_decay, c2.weight_decay) == (0.03, 0.2)
    assert c1.steps == c2.steps == 2  # the flag, not the preset's


def test_lm_preset_values_reach_the_model(seen, tmp_path):
    """--preset shakespeare gives its neuron, MLP ratio and dropout; the flags given win."""
    train_main(["lm", "--preset", "shakespeare", *TINY, "--seq-len", "16", "--sample-chars", "0",
                "--attention", "linear", "--out", str(tmp_path / "s")])
    (task, cfg), = seen
    want = PRESETS["lm"]["shakespeare"]
    m = task.model_config
    assert (m.neuron, m.mlp_ratio, m.dropout, m.d_model) == (want.neuron, want.mlp_ratio, want.dropout, 16)
    assert (cfg.lr, cfg.warmup, cfg.eval_every) == (want.lr, want.warmup, want.eval_every)


def test_settings_of_namespace_and_preset_validation():
    import argparse

    ns = argparse.Namespace(task="lm", preset="shakespeare", beta=None, lr=1e-4, seed=3, out=None)
    s = settings_of(ns)
    assert s == dataclasses.replace(PRESETS["lm"]["shakespeare"], lr=1e-4)
    assert preset_for("vision") is PRESETS["vision"]["default"]
    with pytest.raises(ValueError, match="preset"):
        preset_for("lm", "huge")
    with pytest.raises(ValueError, match="task"):
        preset_for("speech")
    with pytest.raises(ValueError, match="steps"):
        dataclasses.replace(PRESETS["vision"]["default"], steps=0)
    with pytest.raises(ValueError, match="beta"):
        PRESETS["vision"]["default"].override(beta=float("nan"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["vision"]["default"].beta = 0.1
    assert isinstance(s, Preset)


def test_load_checkpoint_builds_no_optimizer_or_steps(tmp_path, monkeypatch, capsys):
    import optax

    import spikejax.train.steps as steps
    from spikejax.train.commands import load_checkpoint, load_lm, sample_main
    from spikejax.train.steps import ModelSplit

    out = tmp_path / "run"
    summary = loop.fit(tiny_lm(), tiny_cfg(out=str(out), steps=2, checkpoint_every=2), print_fn=lambda *_: None)

    def refuse(*a, **k):
        raise AssertionError("an optimizer or the train steps were built")

    for module, name in ((optax, "adamw"), (optax, "chain"), (steps, "make_optimizer"), (steps, "make_steps"),
                         (loop, "make_optimizer"), (loop, "make_steps")):
        monkeypatch.setattr(module, name, refuse)
    model, meta = load_checkpoint(str(out))
    assert meta["step"] == 2 and meta["task"] == "lm"
    restored = ModelSplit(model)
    assert sorted(restored.params) == sorted(summary["state"].params)
    for k, v in summary["state"].params.items():
        np.testing.assert_array_equal(np.asarray(restored.params[k]), np.asarray(v), err_msg=k)
    lm, vocab = load_lm(str(out / "checkpoints"))
    assert vocab.decode(vocab.encode("def ")) == "def "
    text = sample_main(["--checkpoint", str(out), "--prompt", "The ", "--chars", "3", "--backend", "xla"])
    assert len(text) == 7 and text.startswith("The ")


def test_fit_reads_everything_task_specific_from_the_task(tmp_path):
    """A task under another name keeps its per-step extras (bits per character) and its after-hook gets the
    run directory: fit has no branch on the task's name."""
    import json
    import math

    from spikejax.train.checkpoint import CheckpointError
    from spikejax.train.commands import load_checkpoint

    seen = []
    task = dataclasses.replace(tiny_lm(), name="renamed", after=lambda model, say, out: seen.append(out) or {"x": 1})
    out = tmp_path / "r"
    summary = loop.fit(task, tiny_cfg(out=str(out), steps=2, checkpoint_every=2), print_fn=lambda *_: None)
    assert seen == [str(out)] and summary["x"] == 1
    lines = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [r for r in lines if not r.get("final")]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["bpc"] == pytest.approx(r["loss"] / math.log(2), rel=1e-12)
    with pytest.raises(CheckpointError, match="unknown task 'renamed'"):
        load_checkpoint(str(out))


def test_remat_comes_from_the_preset_unless_given(monkeypatch, seen, tmp_path):
    monkeypatch.setitem(PRESETS["lm"], "tiny", dataclasses.replace(PRESETS["lm"]["tiny"], remat="block"))
    base = ["lm", *TINY, "--seq-len", "16", "--sample-chars", "0"]
    train_main([*base, "--out", str(tmp_path / "a")])
    train_main([*base, "--remat", "spikes", "--out", str(tmp_path / "b")])
    assert [t.model_config.remat for t, _ in seen] == ["block", "spikes"]
