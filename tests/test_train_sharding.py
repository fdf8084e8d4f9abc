"""Data parallelism: a 4-device CPU mesh (forced host devices, in a subprocess) gives the same
losses and parameters as one device."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from train_helpers import tiny_cfg, tiny_lm
    from spikejax.train import sharding as shd
    from spikejax.train.loop import fit

    assert len(jax.devices()) == 4, jax.devices()
    out = {{}}
    for n in (1, 4):
        mesh = shd.make_mesh(jax.devices()[:n])
        res = fit(tiny_lm(), tiny_cfg(steps=4, batch_size=8, checkpoint_every=0), mesh=mesh, print_fn=lambda *_: None)
        p = res["state"].params
        if n == 4:
            leaf = next(iter(p.values()))
            assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
        out[n] = {{"losses": res["losses"], "val_loss": res["val_loss"],
                  "w": np.asarray(p["head.kernel"]).ravel()[:64].tolist()}}
    print("RESULT" + json.dumps(out))
""")


def test_four_device_mesh_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    tests = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(tests)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    one, four = res["1"], res["4"]
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=2e-5)
    np.testing.assert_allclose(four["val_loss"], one["val_loss"], rtol=2e-5)
    np.testing.assert_allclose(four["w"], one["w"], rtol=1e-4, atol=1e-6)


def test_batch_size_must_divide_devices():
    import jax
    import pytest

    from spikejax.train import sharding as shd

    mesh = shd.make_mesh(jax.devices()[:1])
    shd.check_batch_size(3, mesh)
    with pytest.raises(ValueError, match="coordinator"):
        shd.init_distributed("localhost:1234", None, None)
    with pytest.raises(ValueError, match="process_id"):
        shd.init_distributed("localhost:1234", 2, 5)
