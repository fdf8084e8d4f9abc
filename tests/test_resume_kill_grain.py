"""kill -9 a real `spikejax train temporal --dataset randman` process (the grain pipeline in the loop,
in this process or in a grain worker process) at a random moment and during a checkpoint save, then
`--resume` with only `--out`: the final parameters are bit-identical to an uninterrupted run's and so
is metrics.jsonl (issue 19). The LM version: tests/test_resume_kill.py."""

import os
import random
import signal
import time

import pytest
from train_helpers import assert_same_run, kill_moment, kill_when, session_pids, spawn_train

from spikejax.train.commands import train_main

pytest.importorskip("grain")
pytest.importorskip("tonic")

STEPS = 30
# 12 training samples in batches of 4: 10 epochs, so the kills land in reshuffled epochs too
FLAGS = ["temporal", "--dataset", "randman", "--steps", str(STEPS), "--batch-size", "4", "--d-model", "8",
         "--time-steps", "5", "--classes", "3", "--units", "6", "--per-class", "4", "--eval-batches", "1",
         "--eval-every", "15", "--log-every", "4", "--checkpoint-every", "3", "--lr", "5e-3", "--warmup", "3"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run (grain reading in this process)."""
    out = tmp_path_factory.mktemp("kill_grain") / "full"
    summary = train_main([*FLAGS, "--no-progress", "--out", str(out)])
    assert summary["end_step"] == STEPS
    return out, summary


@pytest.mark.parametrize("trial, workers", [("random", 0), ("during-save", 0), ("random", 1)])
def test_kill_and_resume_is_the_uninterrupted_run(full, tmp_path, trial, workers):
    # random: SIGKILL up to 0.5 s after a random checkpoint of steps 3..24 was committed;
    # during-save: while orbax writes a step after a random one of them (its temporary directory)
    out = tmp_path / "run"
    proc = spawn_train([*FLAGS, "--num-workers", str(workers)], out)
    moment = kill_moment(out / "checkpoints", trial, random.randrange(3, 25, 3), random.uniform(0.0, 0.5))
    alive = []  # the run's processes (itself, grain's worker and multiprocessing's tracker) when killed

    def ready():
        if moment():
            alive.extend(session_pids(proc.pid))
            return True
        return False

    try:
        rc = kill_when(proc, ready)
        assert rc == -signal.SIGKILL, f"the run ended (rc {rc}) before it was killed"
        if workers:  # grain's worker saw its parent go and left (it would otherwise run forever)
            assert len(alive) > 1, "no grain worker process was running"
            deadline = time.time() + 10
            while session_pids(proc.pid) and time.time() < deadline:
                time.sleep(0.1)
            assert not session_pids(proc.pid), "grain's worker outlived the killed run"
    finally:
        for pid in session_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
    resumed = train_main(["temporal", "--out", str(out), "--resume", "--no-progress"])  # the run's own flags
    assert resumed["start_step"] > 0 and resumed["end_step"] == STEPS
    assert_same_run(*full, out, resumed, STEPS)
