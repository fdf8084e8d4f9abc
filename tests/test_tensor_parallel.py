"""Tensor parallelism (a "model" mesh axis over heads and MLP columns), alone and with FSDP: 2, 4 and 8
forced CPU devices (a subprocess) give the same losses as one device."""

from parallel_helpers import run_forced
from test_fsdp import SCRIPT, assert_same_as_one_device


def test_fsdp_with_tensor_parallel_matches_one_device():
    res = run_forced(SCRIPT.format(layouts=[(1, 1, False), (2, 2, True), (4, 2, True), (8, 2, True)]))
    assert_same_as_one_device(res, ("2x2f", "4x2f", "8x2f"))
    both = res["8x2f"]
    assert both["specs"]["blocks.0.mlp.fc1.kernel"] == "P('data', 'model')"
    assert both["specs"]["blocks.0.mlp.fc2.kernel"] == "P('model', 'data')"
    assert both["specs"]["blocks.0.attn.q_proj.bias"] == "P('model',)"
    assert both["mu_specs"] == both["specs"]


def test_tensor_parallel_alone_matches_one_device():
    res = run_forced(SCRIPT.format(layouts=[(1, 1, False), (4, 4, False), (8, 4, True)]))
    assert_same_as_one_device(res, ("4x4", "8x4f"))
    tp = res["4x4"]["specs"]
    assert tp["blocks.0.attn.q_proj.kernel"] == "P(None, 'model')"
    assert tp["blocks.0.attn.out_proj.kernel"] == "P('model',)"
    assert tp["blocks.0.mlp.fc1.bias"] == "P('model',)"
    assert tp["token_embed.embedding"] == "P()"


def test_cli_fsdp_tensor_parallel_run_resumes(tmp_path):
    """``spikejax train lm --fsdp --tensor-parallel 2`` on 4 forced devices trains, checkpoints the
    sharded state, stores the flags, and ``--resume`` restores into the same shardings."""
    import json
    import os
    import subprocess
    import sys

    from parallel_helpers import ROOT

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    small = ["--d-model", "32", "--heads", "4", "--layers", "1", "--time-steps", "2", "--seq-len", "16",
             "--eval-batches", "1", "--sample-chars", "0", "--eval-every", "0", "--log-every", "1"]
    cmd = [sys.executable, "-m", "spikejax.cli", "train", "lm", "--no-progress", "--out", str(out)]
    first = subprocess.run(cmd + ["--steps", "2", "--batch-size", "4", "--fsdp", "--tensor-parallel", "2",
                                  "--checkpoint-every", "1", *small], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["cli"]["tensor_parallel"] == 2
    resumed = subprocess.run(cmd + ["--steps", "3", "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing from step 2" in resumed.stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if isinstance(s, int)][:3] == [1, 2, 3]
    bad = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "bad"), "--tensor-parallel", "3", *small], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--tensor-parallel: 3 does not divide the 4 heads" in bad.stderr.splitlines()[-1]
