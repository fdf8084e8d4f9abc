"""kill -9 at random moments of a real `spikejax train lm` process (during a save too), then
`--resume` with no other flag: the final parameters are bit-identical to an uninterrupted run's and
so is metrics.jsonl (issue 15, defect 3)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spikejax.train.commands import train_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["lm", "--steps", "30", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
         "--time-steps", "2", "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "4",
         "--eval-every", "0", "--checkpoint-every", "3", "--lr", "5e-3", "--warmup", "3"]
TIMING = ("tokens_per_s",)


def log_of(out):
    """metrics.jsonl without the wall-clock fields (which no two runs share)."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in open(out / "metrics.jsonl")]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "full"
    summary = train_main([*FLAGS, "--no-progress", "--out", str(out)])
    assert summary["end_step"] == 30
    return out, summary


def _same_run(full, out, resumed):
    f_out, f_sum = full
    for k, v in f_sum["state"].params.items():
        assert np.array_equal(np.asarray(resumed["state"].params[k]), np.asarray(v)), k
    assert log_of(out) == log_of(f_out)
    steps = [r["step"] for r in log_of(out) if not r.get("final")]
    assert steps == list(range(1, 31))  # the training loss of every step, once


def _spawn(out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "spikejax.cli", "train", *FLAGS, "--no-progress", "--out",
                             str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc, ready, timeout=150):
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and not ready() and time.time() < deadline:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode


@pytest.mark.parametrize("trial", ["random", "during-save"])
def test_kill_and_resume_is_the_uninterrupted_run(full, tmp_path, trial):
    out = tmp_path / "run"
    ck = out / "checkpoints"
    proc = _spawn(out)
    if trial == "during-save":  # SIGKILL while orbax writes a step after the first (its temporary directory)
        ready = lambda: ck.is_dir() and any("tmp" in n and not n.startswith("3") for n in os.listdir(ck))
    else:  # SIGKILL a random time after training has started (the first checkpoint committed)
        delay, started = random.uniform(0.0, 2.0), []

        def ready():
            if not started and (ck / "3").is_dir():
                started.append(time.time())
            return bool(started) and time.time() - started[0] > delay
    rc = _kill_when(proc, ready)
    assert rc == -signal.SIGKILL, f"the run ended (rc {rc}) before it was killed"
    resumed = train_main(["lm", "--out", str(out), "--resume", "--no-progress"])  # the run's own flags
    assert resumed["end_step"] == 30
    _same_run(full, out, resumed)


def test_resume_without_checkpoints_starts_clean(full, tmp_path):
    """checkpoints/ deleted: --resume starts from step 0 (it says so) and rewrites the log instead of
    appending a second curve."""
    out = tmp_path / "nockpt"
    shutil.copytree(full[0], out)
    shutil.rmtree(out / "checkpoints")
    resumed = train_main(["lm", "--out", str(out), "--resume", "--no-progress"])
    assert resumed["start_step"] == 0
    _same_run(full, out, resumed)
