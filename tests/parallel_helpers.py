"""Shared by tests/test_fsdp*.py and tests/test_tensor_parallel*.py: run a script in a subprocess with
forced CPU host devices (the test process itself has one device), and train a tiny SpikingLM for a
few steps under a given mesh and sharding."""

import json
import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def run_forced(script: str, devices: int = 8, timeout: int = 300) -> dict:
    """Run ``script`` (Python) with ``devices`` forced CPU devices; returns the JSON it prints after
    ``RESULT``."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def train_losses(layouts, steps: int = 3, batch_size: int = 8) -> dict:
    """For each ``(devices, tensor_parallel, fsdp)`` of ``layouts``: the losses of ``steps`` train
    steps of a tiny SpikingLM (D=32, 4 heads, MLP 128) on the first ``devices`` devices, the final
    parameters (a slice of each) and each parameter's ``PartitionSpec``. Runs inside the subprocess."""
    import jax
    import numpy as np
    from train_helpers import tiny_lm

    from spikejax.train import partition
    from spikejax.train import sharding as shd
    from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

    task = tiny_lm(d_model=32, heads=4)
    out = {}
    for n, tp, fsdp in layouts:
        mesh = shd.make_mesh(jax.devices()[:n], tensor_parallel=tp)
        split = ModelSplit(task.model_config.build(seed=0))
        tx = make_optimizer(1e-2, steps, warmup=1)
        st = make_steps(split, tx, task.loss_fn, task.eval_fn, seed=0)
        state = partition.place_state(st.init(), mesh, fsdp=fsdp)
        st = partition.shard_steps(st, state, mesh)
        losses = []
        for step in range(steps):
            state, metrics = st.train(state, shd.shard_batch(task.train_batch(0, step, batch_size), mesh))
            losses.append(float(metrics["loss"]))
        out[f"{n}x{tp}{'f' if fsdp else ''}"] = {
            "losses": losses,
            "params": {k: np.asarray(v).ravel()[:32].tolist() for k, v in state.params.items()},
            "specs": {k: str(v.sharding.spec) for k, v in state.params.items()},
            "mu_specs": {k: str(v.sharding.spec) for k, v in state.opt_state[1][0].mu.items()},
            "devices": len(state.params["head.kernel"].sharding.device_set),
        }
    return out
