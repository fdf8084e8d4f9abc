"""Checkpoints: exact resume, and clear errors for corrupt / mismatched / in-the-way checkpoints."""

import os
import shutil

import numpy as np
import pytest
from train_helpers import tiny_cfg, tiny_lm

from spikejax.train.checkpoint import CheckpointError
from spikejax.train.loop import fit

quiet = dict(print_fn=lambda *_: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 6-step run (checkpoints at 3 and 6), and the same run resumed from step 3."""
    root = tmp_path_factory.mktemp("ckpt")
    full = fit(tiny_lm(), tiny_cfg(out=str(root / "full")), **quiet)
    ck = root / "full" / "checkpoints"
    assert sorted(os.listdir(ck)) == ["3", "6"], os.listdir(ck)
    # A run killed during steps 4-6 leaves exactly checkpoint 3 of this run behind.
    shutil.copytree(root / "full", root / "killed")
    shutil.rmtree(root / "killed" / "checkpoints" / "6")
    resumed = fit(tiny_lm(), tiny_cfg(out=str(root / "killed"), resume=True), **quiet)
    return root, full, resumed


def test_resume_continues_exactly(runs):
    _, full, resumed = runs
    assert resumed["start_step"] == 3
    assert len(resumed["losses"]) == 3
    np.testing.assert_allclose(resumed["losses"], full["losses"][3:], rtol=1e-6, atol=0)
    for k in full["state"].params:
        np.testing.assert_allclose(np.asarray(resumed["state"].params[k]), np.asarray(full["state"].params[k]),
                                   rtol=1e-5, atol=1e-6)


def test_fresh_run_never_overwrites(runs):
    root, *_ = runs
    before = sorted(os.listdir(root / "full" / "checkpoints"))
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        fit(tiny_lm(), tiny_cfg(out=str(root / "full")), **quiet)
    assert sorted(os.listdir(root / "full" / "checkpoints")) == before


def test_mismatched_checkpoint_is_an_error(runs):
    root, *_ = runs
    with pytest.raises(CheckpointError, match="d_model"):
        fit(tiny_lm(d_model=32), tiny_cfg(out=str(root / "full"), resume=True), **quiet)
    with pytest.raises(CheckpointError, match="batch_size"):
        fit(tiny_lm(), tiny_cfg(out=str(root / "full"), resume=True, batch_size=4), **quiet)


def test_corrupt_checkpoint_is_an_error(runs, tmp_path):
    root, *_ = runs
    run = tmp_path / "corrupt"
    shutil.copytree(root / "full", run)
    step_dir = run / "checkpoints" / "6" / "state"
    victims = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
    assert victims
    for path in victims:
        with open(path, "wb") as f:
            f.write(b"garbage")
    mtimes = {p: os.path.getmtime(p) for p in victims}
    with pytest.raises(CheckpointError, match="step 6 .* is damaged: file state"):
        fit(tiny_lm(), tiny_cfg(out=str(run), resume=True), **quiet)
    assert {p: os.path.getmtime(p) for p in victims} == mtimes  # nothing rewritten
    assert sorted(os.listdir(run / "checkpoints")) == ["3", "6"]


# kill -9 of a real process and --resume: tests/test_resume_kill.py


def test_layer_line_names_every_layer_or_says_where(runs):
    from spikejax.train.loop import _layer_line

    rows = [(f"blocks.{i}.neuron", i / 10) for i in range(11)]
    assert _layer_line(rows[:8], "out") == "per-layer firing rate: " + ", ".join(f"{p}={r:.3f}" for p, r in rows[:8])
    line = _layer_line(rows, "runs/a")
    assert "blocks.7.neuron=0.700" in line and "blocks.8" not in line
    assert '3 more layers (all 11 in runs/a/summary.json under "layers")' in line
    root, full, _ = runs
    import json

    summary = json.load(open(root / "full" / "summary.json"))
    assert set(summary["layers"]) == set(full["layers"]) and len(summary["layers"]) >= 7
    assert all(0.0 <= v["rate"] <= 1.0 for v in summary["layers"].values())
