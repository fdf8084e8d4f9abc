"""Tiny tasks shared by the training tests (CPU, seconds), and the kill -9 / --resume helpers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from spikejax.train.commands import lm_task, train_main
from spikejax.train.data import CharDataset, default_text
from spikejax.train.loop import TrainConfig

TEXT = default_text()[:20000]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_lm(**overrides):
    ds = CharDataset(TEXT)
    kw = dict(d_model=16, layers=1, heads=2, time_steps=2, seq_len=16, attention="linear",
              neuron_kwargs={"beta": 0.5, "threshold": 0.5}, eval_batches=2, eval_batch_size=8)
    kw.update(overrides)
    return lm_task(ds, **kw)


def tiny_cfg(**overrides):
    kw = dict(steps=6, batch_size=8, lr=1e-2, warmup=2, log_every=2, eval_every=0, checkpoint_every=3,
              progress=False)
    kw.update(overrides)
    return TrainConfig(**kw)


# --- kill -9 a real `spikejax train` process, then --resume (tests/test_resume_kill*.py) ---------------

TIMING = ("tokens_per_s", "samples_per_s")
"""metrics.jsonl's wall-clock fields, which no two runs share."""


def log_of(out):
    """metrics.jsonl of run directory ``out`` without the :data:`TIMING` fields."""
    with open(out / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def assert_same_run(full_out, full_summary, out, resumed, steps: int):
    """``resumed`` (the summary of run ``out``) has the parameters of the uninterrupted run bit for bit,
    and the same metrics.jsonl, with the training record of every step 1..steps exactly once."""
    for k, v in full_summary["state"].params.items():
        assert np.array_equal(np.asarray(resumed["state"].params[k]), np.asarray(v)), k
    assert log_of(out) == log_of(full_out)
    assert [r["step"] for r in log_of(out) if not r.get("final")] == list(range(1, steps + 1))


def spawn_train(flags, out):
    """``python -m spikejax.cli train *flags --no-progress --out out`` in its own session (so that
    :func:`kill_when` can find the worker processes it leaves)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "spikejax.cli", "train", *flags, "--no-progress", "--out",
                             str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid`` (a :func:`spawn_train` process and its children)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, s, st in (line.split()[:3] for line in out.splitlines()) if int(s) == sid
            and not st.startswith("Z")]


def kill_when(proc, ready, timeout: float = 150):
    """SIGKILL ``proc`` once ``ready()`` holds (or it has run ``timeout`` s); its return code."""
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and not ready() and time.time() < deadline:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode


def kill_moment(ck, trial: str, after: int, delay: float):
    """``ready()`` for :func:`kill_when` on checkpoint folder ``ck``: ``"during-save"``: while orbax
    writes (its temporary directory) a step later than ``after``; ``"random"``: ``delay`` s after step
    ``after`` was committed."""
    if trial == "during-save":
        return lambda: ck.is_dir() and any("tmp" in n and n.split(".")[0].isdigit()
                                           and int(n.split(".")[0]) > after for n in os.listdir(ck))
    started = []

    def ready():
        if not started and (ck / str(after)).is_dir():
            started.append(time.time())
        return bool(started) and time.time() - started[0] > delay

    return ready


def resume_without_checkpoint(out, dst, step: int, full: dict, start_step: int) -> dict:
    """Copy the finished ``train lm`` run ``out`` to ``dst`` without its checkpoint ``step`` (as if killed
    before writing it), ``--resume`` it, and check that it is the uninterrupted run ``full`` (a
    ``train_main`` summary): it starts at ``start_step`` and has the same losses and final parameters."""
    shutil.copytree(out, dst)
    shutil.rmtree(dst / "checkpoints" / str(step))
    resumed = train_main(["lm", "--out", str(dst), "--resume", "--no-progress"])
    assert resumed["start_step"] == start_step
    np.testing.assert_array_equal(resumed["losses"], full["losses"][start_step - full["start_step"]:])
    for k, v in full["state"].params.items():
        np.testing.assert_array_equal(np.asarray(resumed["state"].params[k]), np.asarray(v), err_msg=k)
    return resumed
