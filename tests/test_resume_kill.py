"""kill -9 at random moments of a real `spikejax train lm` process (during a save too), then
`--resume` with no other flag: the final parameters are bit-identical to an uninterrupted run's and
so is metrics.jsonl (issue 15, defect 3). The grain version: tests/test_resume_kill_grain.py."""

import random
import shutil
import signal

import pytest
from train_helpers import assert_same_run, kill_moment, kill_when, spawn_train

from spikejax.train.commands import train_main

FLAGS = ["lm", "--steps", "30", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
         "--time-steps", "2", "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "4",
         "--eval-every", "0", "--checkpoint-every", "3", "--lr", "5e-3", "--warmup", "3"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "full"
    summary = train_main([*FLAGS, "--no-progress", "--out", str(out)])
    assert summary["end_step"] == 30
    return out, summary


@pytest.mark.parametrize("trial", ["random", "during-save"])
def test_kill_and_resume_is_the_uninterrupted_run(full, tmp_path, trial):
    # during-save: SIGKILL while orbax writes a step after 3; random: up to 2 s after step 3 was committed
    out = tmp_path / "run"
    rc = kill_when(spawn_train(FLAGS, out), kill_moment(out / "checkpoints", trial, 3, random.uniform(0.0, 2.0)))
    assert rc == -signal.SIGKILL, f"the run ended (rc {rc}) before it was killed"
    resumed = train_main(["lm", "--out", str(out), "--resume", "--no-progress"])  # the run's own flags
    assert resumed["end_step"] == 30
    assert_same_run(*full, out, resumed, 30)


def test_resume_without_checkpoints_starts_clean(full, tmp_path):
    """checkpoints/ deleted: --resume starts from step 0 (it says so) and rewrites the log instead of
    appending a second curve."""
    out = tmp_path / "nockpt"
    shutil.copytree(full[0], out)
    shutil.rmtree(out / "checkpoints")
    resumed = train_main(["lm", "--out", str(out), "--resume", "--no-progress"])
    assert resumed["start_step"] == 0
    assert_same_run(*full, out, resumed, 30)
