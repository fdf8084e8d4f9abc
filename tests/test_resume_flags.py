"""`spikejax train lm --out DIR --resume` continues with the run's stored flags; explicit flags that
differ are refused, except a larger --steps, which extends the schedule; the kernel backend is not
part of the run (issue 15, "runs that move between machines")."""

import json
import math
import shutil

import numpy as np
import pytest
from train_helpers import resume_without_checkpoint

from spikejax.train.checkpoint import CheckpointError, read_meta
from spikejax.train.commands import train_main
from spikejax.train.loop import _upgrade_meta
from spikejax.train.steps import make_schedule

FLAGS = ["lm", "--steps", "6", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
         "--time-steps", "2", "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "3",
         "--checkpoint-every", "3", "--lr", "4e-3", "--warmup", "2", "--no-progress"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("flags") / "full"
    return out, train_main([*FLAGS, "--out", str(out)])


def test_bare_resume_uses_the_stored_flags(full, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(full[0], out)
    shutil.rmtree(out / "checkpoints" / "6")
    resumed = train_main(["lm", "--out", str(out), "--resume", "--no-progress", "--backend", "auto"])
    assert resumed["start_step"] == 3 and resumed["params"] == full[1]["params"]
    for k, v in full[1]["state"].params.items():
        assert np.array_equal(np.asarray(resumed["state"].params[k]), np.asarray(v)), k
    meta = read_meta(out / "checkpoints")[1]
    assert "backend" not in meta["model"] and "backend" not in meta["cli"]  # a run-time choice
    assert meta["cli"]["d_model"] == 16 and meta["cli"]["lr"] == 4e-3


def test_explicit_flags_that_differ_are_refused(full, tmp_path):
    out = tmp_path / "differ"
    shutil.copytree(full[0], out)
    for flag, value, field in (("--d-model", "32", "d_model"), ("--lr", "1e-3", "lr"), ("--steps", "5", "steps")):
        with pytest.raises(CheckpointError, match=field):
            train_main(["lm", "--out", str(out), "--resume", "--no-progress", flag, value])


def test_larger_steps_extends_a_finished_run(full, tmp_path):
    """--steps 12 on a finished 6-step run: 6 more steps at the final rate 0.1·lr (the cosine from the
    rate at the restored step, which is already its end value); the extended schedule is stored, so a
    later bare --resume continues it exactly."""
    out = tmp_path / "extend"
    shutil.copytree(full[0], out)
    ext = train_main(["lm", "--out", str(out), "--resume", "--no-progress", "--steps", "12"])
    assert ext["start_step"] == 6 and ext["end_step"] == 12 and len(ext["losses"]) == 6
    meta = read_meta(out / "checkpoints")[1]
    assert meta["train"]["steps"] == 12 and meta["train"]["schedule"] == [[0, 6], [6, 12]]
    again = tmp_path / "extend2"  # the extended run killed after its checkpoint at 9
    resume_without_checkpoint(out, again, 12, ext, start_step=9)
    lines = [json.loads(line) for line in open(again / "metrics.jsonl")]
    assert [r["step"] for r in lines if not r.get("final")] == list(range(1, 13))


def test_schedule_extension_by_hand():
    lr, end = 1.0, 0.1
    base = lambda t: lr * t / 2 if t < 2 else end + (lr - end) * 0.5 * (1 + math.cos(math.pi * (t - 2) / 8))
    finished = make_schedule(lr, 10, warmup=2, segments=[(10, 20)])
    mid = make_schedule(lr, 10, warmup=2, segments=[(6, 16)])
    warm = make_schedule(lr, 10, warmup=4, segments=[(2, 20)])
    for t in range(0, 21):
        want_f = base(t) if t <= 10 else end
        assert float(finished(t)) == pytest.approx(want_f, abs=1e-6), t
        v = base(6)
        want_m = base(t) if t <= 6 else end + (v - end) * 0.5 * (1 + math.cos(math.pi * min(t - 6, 10) / 10))
        assert float(mid(t)) == pytest.approx(want_m, abs=1e-6), t
        want_w = lr * t / 4 if t < 4 else end + (lr - end) * 0.5 * (1 + math.cos(math.pi * (t - 4) / 16))
        assert float(warm(t)) == pytest.approx(want_w, abs=1e-6), t
    with pytest.raises(ValueError, match="segments"):
        make_schedule(lr, 10, segments=[(12, 20)])


def test_backend_is_not_part_of_the_run():
    """A run trained with backend="pallas" (stored by older versions in the model config) compares
    equal to this machine's run with any backend, and the parameter tree does not depend on it."""
    from train_helpers import tiny_lm

    from spikejax.nn import SpikingLMConfig
    from spikejax.train.loop import model_meta
    from spikejax.train.steps import ModelSplit

    xla, pallas = tiny_lm(backend="xla").model_config, tiny_lm(backend="pallas").model_config
    assert model_meta(xla) == model_meta(pallas) and "backend" not in model_meta(xla)
    old = {"model": pallas.to_dict(), "train": {"steps": 6}}
    assert old["model"]["backend"] == "pallas"
    assert _upgrade_meta(SpikingLMConfig, old)["model"] == model_meta(xla)
    a, b = ModelSplit(xla.build(seed=0)), ModelSplit(pallas.build(seed=0))
    assert {k: v.shape for k, v in a.params.items()} == {k: v.shape for k, v in b.params.items()}
    for k in a.params:
        assert np.array_equal(np.asarray(a.params[k]), np.asarray(b.params[k]))
