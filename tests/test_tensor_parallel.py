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
