"""LoRA fine-tuning (issue 21): zero-initialised adapters give the base logits exactly, merged and
unmerged adapters the same logits, `spikejax finetune` trains only the adapters, saves them in the
run, merges them for sampling / export, and resumes exactly."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spikejax.nn import SpikingLMConfig
from spikejax.nn.lora import LoRALinear, apply_lora, merge_lora
from spikejax.train.commands import finetune_main, train_main
from spikejax.train.restore import load_checkpoint, load_lm
from spikejax.train.steps import ModelSplit

BASE = ["lm", "--steps", "4", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
        "--time-steps", "2", "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "2",
        "--eval-every", "0", "--checkpoint-every", "4", "--no-progress"]
TUNE = ["--steps", "6", "--batch-size", "4", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "3",
        "--eval-every", "0", "--checkpoint-every", "3", "--lr", "1e-2", "--warmup", "1", "--no-progress",
        "--lora-rank", "2"]


def _lm(seed=0, neuron="lif"):
    return SpikingLMConfig(vocab_size=13, d_model=16, num_heads=2, num_layers=2, time_steps=2, max_len=12,
                           attention="linear", neuron=neuron,
                           neuron_kwargs={"beta": 0.5, "threshold": 0.5}).build(seed=seed)


@pytest.mark.parametrize("targets", ["attn", "mlp", "all"])
def test_zero_initialised_adapters_give_the_base_logits_exactly(targets):
    model = _lm()
    x = jax.random.randint(jax.random.key(1), (3, 12), 0, 13)
    base = np.asarray(model(x))
    apply_lora(model, rank=3, targets=targets, seed=7)
    lora = [k for k in ModelSplit(model).params if "lora_" in k]
    names = {"attn": ("q_proj", "k_proj", "v_proj", "out_proj"), "mlp": ("fc1", "fc2")}
    want = names.get(targets, names["attn"] + names["mlp"])
    assert sorted({k.split(".")[-2] for k in lora}) == sorted(want) and len(lora) == 2 * 2 * len(want)
    np.testing.assert_array_equal(np.asarray(model(x)), base)


def test_merged_and_unmerged_logits_are_equal():
    model = apply_lora(_lm(), rank=2, targets="all", alpha=4.0)
    key = jax.random.key(3)
    layers = [n for _, n in nnx.iter_graph(model) if isinstance(n, LoRALinear)]
    for i, layer in enumerate(layers):  # trained-looking adapters: B no longer zero
        layer.lora_b[...] = 0.05 * jax.random.normal(jax.random.fold_in(key, i), layer.lora_b[...].shape)
        # the independent reference: W + (alpha / r) A B computed in NumPy
        want = np.asarray(layer.kernel[...], np.float64) + 2.0 * (
            np.asarray(layer.lora_a[...], np.float64) @ np.asarray(layer.lora_b[...], np.float64))
        np.testing.assert_allclose(np.asarray(layer.merged().kernel[...]), want, rtol=1e-5, atol=1e-6)
    x = jax.random.randint(jax.random.key(4), (3, 12), 0, 13)
    unmerged = np.asarray(model(x))
    merge_lora(model)
    assert not any(isinstance(n, LoRALinear) for _, n in nnx.iter_graph(model))
    assert not any("lora_" in k for k in ModelSplit(model).params)
    np.testing.assert_allclose(np.asarray(model(x)), unmerged, rtol=1e-4, atol=1e-4)


def test_bad_lora_arguments():
    with pytest.raises(ValueError, match="lora_targets"):
        apply_lora(_lm(), rank=2, targets="heads")
    with pytest.raises(ValueError, match="rank"):
        apply_lora(_lm(), rank=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    text = "".join(chr(c) for c in range(32, 127)) * 3 + "the quick brown fox jumps over the lazy dog. " * 60
    (root / "base.txt").write_text(text)
    (root / "new.txt").write_text("a lazy dog naps while the brown fox waits. " * 60)
    base = train_main([*BASE, "--data", str(root / "base.txt"), "--out", str(root / "base")])
    tune = finetune_main(["--checkpoint", str(root / "base"), "--data", str(root / "new.txt"),
                          "--lora-targets", "all", "--out", str(root / "tuned"), *TUNE])
    return root, base, tune


def test_finetune_changes_only_the_adapters(runs):
    root, base, tune = runs
    before, after = base["state"].params, tune["state"].params
    lora = sorted(k for k in after if "lora_" in k)
    assert lora and set(after) - set(lora) == set(before)
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(v), err_msg=k)
    assert any(not np.array_equal(np.asarray(after[k]), 0) for k in lora if k.endswith("lora_b"))
    meta = json.loads((root / "tuned" / "run.json").read_text())
    assert meta["train"]["lora"] == {"rank": 2, "targets": "all", "alpha": 2.0}
    assert meta["train"]["train_only"] == ["*.lora_a", "*.lora_b"]


def test_sample_and_export_merge_the_adapters(runs):
    root, _, tune = runs
    merged, vocab = load_lm(root / "tuned", backend="xla")
    unmerged, _ = load_checkpoint(root / "tuned", backend="xla", merge_lora=False)
    assert not any("lora_" in k for k in ModelSplit(merged).params)
    assert any("lora_" in k for k in ModelSplit(unmerged).params)
    for k, v in tune["state"].params.items():  # the adapters were saved in the run
        np.testing.assert_array_equal(np.asarray(ModelSplit(unmerged).params[k]), np.asarray(v), err_msg=k)
    x = jnp.asarray(vocab.encode("the lazy fox"))[None]
    np.testing.assert_allclose(np.asarray(merged(x)), np.asarray(unmerged(x)), rtol=1e-4, atol=1e-4)
    pytest.importorskip("torch")
    from spikejax.interop.cli import load_checkpoint_model

    exported = load_checkpoint_model(str(root / "tuned"), backend="xla")
    assert not any("lora_" in k for k in ModelSplit(exported).params)


def test_finetune_resume_is_exact(runs, tmp_path):
    root, _, tune = runs
    killed = tmp_path / "killed"
    shutil.copytree(root / "tuned", killed)
    shutil.rmtree(killed / "checkpoints" / "6")
    resumed = finetune_main(["--out", str(killed), "--resume", "--no-progress"])
    assert resumed["start_step"] == 3
    np.testing.assert_array_equal(resumed["losses"], tune["losses"][3:])
    for k, v in tune["state"].params.items():
        np.testing.assert_array_equal(np.asarray(resumed["state"].params[k]), np.asarray(v), err_msg=k)


def test_finetune_data_outside_the_vocabulary_is_refused(runs, tmp_path):
    root = runs[0]
    (tmp_path / "odd.txt").write_text("ünïcödé " * 100)
    with pytest.raises(SystemExit) as e:
        finetune_main(["--checkpoint", str(root / "base"), "--data", str(tmp_path / "odd.txt"),
                       "--out", str(tmp_path / "o"), *TUNE])
    assert e.value.code == 2
