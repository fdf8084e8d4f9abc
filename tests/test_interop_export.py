"""State-dict export / import without torch: names, layouts, exact round trip, all-or-nothing errors."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax.nn as snn
from spikejax.interop import (
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


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64])
def test_non_float_values_are_refused_by_key(dtype, tmp_path):
    target = _lm(seed=1)
    sd = to_torch_state_dict(_lm(seed=2))
    sd["head.bias"] = np.ones(sd["head.bias"].shape, dtype)
    before = _snapshot(target)
    with pytest.raises(TypeError, match=rf"head\.bias \({np.dtype(dtype)}\)"):
        load_torch_state_dict(target, sd)
    for k, v in _snapshot(target).items():  # nothing loaded
        np.testing.assert_array_equal(before[k], v)
    # the same through a file: the error names the file too
    from safetensors.numpy import save_file

    written = export_torch(_lm(seed=2), tmp_path / "m", formats="safetensors")
    save_file(sd, str(written["safetensors"]))
    with pytest.raises(TypeError, match=r"m\.safetensors.*head\.bias"):
        import_torch(written["safetensors"])


def test_float16_and_float64_values_load(tmp_path):
    src, target = _lm(seed=2), _lm(seed=1)
    sd = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in to_torch_state_dict(src).items()}
    load_torch_state_dict(target, sd)
    for k, v in to_torch_state_dict(target).items():
        np.testing.assert_array_equal(v, to_torch_state_dict(src)[k])


def test_formats_is_one_name_a_list_or_a_sequence(tmp_path):
    m = _lm()
    assert set(export_torch(m, tmp_path / "a", formats="safetensors")) == {"safetensors", "json"}
    assert set(export_torch(m, tmp_path / "b", formats=["safetensors"])) == {"safetensors", "json"}
    for bad in ("onnx", "safetensors,onnx", "", ()):
        with pytest.raises(ValueError, match="formats"):
            export_torch(m, tmp_path / "c", formats=bad)
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(TypeError, match="formats"):
        export_torch(m, tmp_path / "c", formats=3)


def test_export_leaves_out_the_backend_and_import_takes_one(tmp_path):
    m = _lm(backend="pallas_interpret")
    written = export_torch(m, tmp_path / "m", formats="safetensors")
    assert "backend" not in json.loads(written["json"].read_text())["config"]
    back = import_torch(written["safetensors"])  # default "auto": xla on this CPU machine
    assert back.config.backend == "auto"
    assert import_torch(tmp_path / "m", backend="xla").config.backend == "xla"
    with pytest.raises(ValueError, match="backend"):
        import_torch(tmp_path / "m", backend="cuda")


def _damaged_exports(tmp_path):
    written = export_torch(_lm(), tmp_path / "m", formats="safetensors")
    st, js = written["safetensors"], written["json"]
    raw = st.read_bytes()
    cases = {}
    for name, data in (("empty", b""), ("truncated", raw[: len(raw) // 2]), ("garbage", b"\x00not a file" * 9)):
        f = tmp_path / f"{name}.safetensors"
        f.write_bytes(data)
        (tmp_path / f"{name}.json").write_text(js.read_text())
        cases[name] = f
    return js, cases


def test_damaged_files_are_errors_naming_the_file(tmp_path):
    js, cases = _damaged_exports(tmp_path)
    for name, f in cases.items():
        with pytest.raises(ValueError, match=rf"{name}\.safetensors"):
            import_torch(f)
    js.write_text('{"format": "spikejax-torch", "model": ')  # garbled JSON
    with pytest.raises(ValueError, match=r"m\.json.*not valid JSON"):
        import_torch(tmp_path / "m")
    js.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"m\.json.*not a spikejax-torch export"):
        import_torch(tmp_path / "m")
    txt = js.with_suffix(".txt")
    txt.write_text("x")
    with pytest.raises(ValueError, match=r"m\.txt"):
        read_state_dict(txt)


def test_pt_files_that_are_not_state_dicts_name_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    good = to_torch_state_dict(_lm())
    for name, obj in (("ints", {"head.weight": 3}), ("list", [torch.zeros(2)])):
        f = tmp_path / f"{name}.pt"
        torch.save(obj, str(f))
        with pytest.raises(ValueError, match=rf"{name}\.pt"):
            read_state_dict(f)
    f = tmp_path / "broken.pt"
    torch.save({k: torch.from_numpy(v.copy()) for k, v in good.items()}, str(f))
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"broken\.pt.*not a readable PyTorch state dict"):
        read_state_dict(f)
    f.write_bytes(b"")
    with pytest.raises(ValueError, match=r"broken\.pt.* is empty"):
        read_state_dict(f)
