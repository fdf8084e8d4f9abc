"""FSDP (spikejax.train.partition): the sharding rules by parameter path, and 1, 2, 4 and 8 forced CPU
devices (a subprocess) giving the same losses as one device under data parallelism and FSDP."""

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from parallel_helpers import run_forced

from spikejax.train.partition import param_spec

LOSS_RTOL = 1e-5
"""Losses (float32) of N devices vs one: only the summation order differs (measured: ~2e-7)."""

SCRIPT = """
import json
from parallel_helpers import train_losses
print("RESULT" + json.dumps(train_losses({layouts!r})))
"""


def assert_same_as_one_device(res: dict, keys) -> None:
    """Every layout of ``keys``: the losses (rtol :data:`LOSS_RTOL`) and final parameters (rtol 1e-4)
    of the one-device run ``"1x1"``."""
    one = res["1x1"]
    for key in keys:
        got = res[key]
        np.testing.assert_allclose(got["losses"], one["losses"], rtol=LOSS_RTOL, err_msg=key)
        for k, v in one["params"].items():
            np.testing.assert_allclose(got["params"][k], v, rtol=1e-4, atol=1e-6, err_msg=f"{key} {k}")
        assert got["devices"] == int(key.split("x")[0]), key


def test_param_spec_rules():
    # FSDP: the largest dimension divisible by the data axis; none divisible: replicated
    assert param_spec("token_embed.embedding", (65, 64), data=4, fsdp=True) == P(None, "data")
    assert param_spec("blocks.0.mlp.fc1.kernel", (64, 256), data=4, fsdp=True) == P(None, "data")
    assert param_spec("blocks.0.mlp.fc2.kernel", (256, 64), data=4, fsdp=True) == P("data")
    assert param_spec("blocks.0.mlp.fc1.bias", (256,), data=4, fsdp=True) == P("data")
    assert param_spec("head.bias", (65,), data=4, fsdp=True) == P()
    assert param_spec("head.kernel", (64, 65), data=4, fsdp=False) == P()
    # tensor parallelism: column-parallel q/k/v/fc1 (kernel and bias), row-parallel out_proj/fc2 (kernel)
    for layer in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "mlp.fc1"):
        assert param_spec(f"blocks.1.{layer}.kernel", (64, 128), model=2) == P(None, "model")
        assert param_spec(f"blocks.1.{layer}.kernel", (64, 128), data=4, model=2, fsdp=True) == P("data", "model")
        assert param_spec(f"blocks.1.{layer}.bias", (128,), model=2) == P("model")
    for layer in ("attn.out_proj", "mlp.fc2"):
        assert param_spec(f"blocks.1.{layer}.kernel", (128, 64), model=2) == P("model")
        assert param_spec(f"blocks.1.{layer}.kernel", (128, 64), data=4, model=2, fsdp=True) == P("model", "data")
        assert param_spec(f"blocks.1.{layer}.bias", (64,), model=2) == P()
    assert param_spec("blocks.0.attn_norm.scale", (64,), model=2) == P()
    with pytest.raises(ValueError, match="tensor_parallel"):
        param_spec("blocks.0.attn.q_proj.kernel", (64, 60), model=8)


def test_data_parallel_matches_one_device():
    res = run_forced(SCRIPT.format(layouts=[(1, 1, False), (2, 1, False), (4, 1, False), (8, 1, False)]))
    assert_same_as_one_device(res, ("2x1", "4x1", "8x1"))
    assert set(res["8x1"]["specs"].values()) == {"P()"}  # data parallel: everything replicated


def test_fsdp_matches_one_device():
    res = run_forced(SCRIPT.format(layouts=[(1, 1, False), (2, 1, True), (4, 1, True), (8, 1, True)]))
    assert_same_as_one_device(res, ("2x1f", "4x1f", "8x1f"))
    fsdp = res["8x1f"]
    assert fsdp["specs"]["blocks.0.mlp.fc1.kernel"] == "P(None, 'data')"
    assert fsdp["specs"]["token_embed.embedding"] == "P(None, 'data')"
    assert fsdp["mu_specs"] == fsdp["specs"]  # AdamW moments sharded like their parameters
