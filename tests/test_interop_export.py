"""State-dict export / import without torch: names, layouts, exact round trip, all-or-nothing errors."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("safetensors")

import spikejax.nn as snn  # noqa: E402
from spikejax.interop import (  # noqa: E402
    StateDictError,
    export_torch,
    import_torch,
    load_torch_state_dict,
    read_state_dict,
    to_torch_state_dict,
)


def _lm(seed=0, **kw):
    cfg = snn.SpikingLMConfig(vocab_size=13, d_model=8, num_heads=2, num_layers=1, mlp_ratio=2.0, time_steps=2,
                              max_len=8, **kw)
    return cfg.build(seed=seed)


def test_names_and_layouts_are_pytorch_ones():
    m = _lm(attention="ssa", norm="bn", neuron="plif")
    sd = to_torch_state_dict(m)
    k = np.asarray(m.blocks[0].attn.q_proj.kernel[...])
    np.testing.assert_array_equal(sd["blocks.0.attn.q_proj.weight"], k.T)  # Linear weight[out, in]
    np.testing.assert_array_equal(sd["token_embed.weight"], np.asarray(m.token_embed.embedding[...]))
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert f"blocks.0.attn.q_norm.{name}" in sd
    assert sd["blocks.0.attn.q_norm.num_batches_tracked"].dtype == np.int64
    assert sd["final_norm.weight"].shape == (8,)
    assert sd["blocks.0.mlp.hidden_neuron.decay_logit"].shape == (16,)
    f = snn.SpikformerConfig(image_size=8, in_channels=3, patch_size=4, d_model=8, num_heads=2, num_layers=1).build()
    sd = to_torch_state_dict(f)
    kernel = np.asarray(f.patch_embed.conv.kernel[...])  # [kh, kw, in, out]
    np.testing.assert_array_equal(sd["patch_embed.conv.weight"], kernel.transpose(3, 2, 0, 1))  # OIHW
    assert sd["pos_embed"].shape == (4, 8)


def test_export_import_round_trip_is_exact(tmp_path):
    m = _lm(attention="hybrid", attention_kwargs={"window": 2}, neuron="ternary")
    written = export_torch(m, tmp_path / "sub" / "model.safetensors", formats=("safetensors",))
    meta = json.loads(written["json"].read_text())
    assert meta["model"] == "SpikingLM" and meta["config"]["attention"] == "hybrid"
    back = import_torch(written["safetensors"])
    a, b = nnx.state(m, nnx.Param), nnx.state(back, nnx.Param)
    for (pa, va), (pb, vb) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b), strict=True):
        assert pa == pb
        np.testing.assert_array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value()))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 13, (2, 5)))
    np.testing.assert_array_equal(np.asarray(m(tokens)), np.asarray(back(tokens)))
    assert set(read_state_dict(written["safetensors"])) == set(to_torch_state_dict(m))


def _snapshot(model):
    return {k: v.copy() for k, v in to_torch_state_dict(model).items()}


@pytest.mark.parametrize("problem", ["missing", "extra", "shape"])
def test_bad_state_dict_is_reported_by_name_and_nothing_is_loaded(problem):
    target = _lm(seed=1, attention="linear")
    sd = to_torch_state_dict(_lm(seed=2, attention="linear"))
    if problem == "missing":
        del sd["blocks.0.mlp.fc1.bias"]
        match = "missing keys.*blocks.0.mlp.fc1.bias"
    elif problem == "extra":
        sd["blocks.0.attn.extra.weight"] = np.zeros(3, np.float32)
        match = "unexpected keys.*blocks.0.attn.extra.weight"
    else:
        sd["head.weight"] = np.zeros((13, 9), np.float32)
        match = r"head.weight: expected shape \(13, 8\), got \(13, 9\)"
    before = _snapshot(target)
    with pytest.raises(StateDictError, match=match):
        load_torch_state_dict(target, sd)
    after = _snapshot(target)
    for k in before:  # every valid key was in sd with other values, and none was assigned
        np.testing.assert_array_equal(before[k], after[k])


def test_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="model"):
        to_torch_state_dict(object())
    with pytest.raises(ValueError, match="formats"):
        export_torch(_lm(), tmp_path / "m", formats=("onnx",))
    with pytest.raises(FileNotFoundError, match="path"):
        import_torch(tmp_path / "nothing.safetensors")
    with pytest.raises(TypeError, match="state_dict"):
        load_torch_state_dict(_lm(), [1, 2])
