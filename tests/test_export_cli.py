"""``spikejax export-torch`` end to end: train tiny LM and vision runs through the CLI, export them, load the
export into the PyTorch mirror (``load_model``, strict) and compare logits with the JAX model (1e-4 relative)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spikejax import cli  # noqa: E402
from spikejax.interop import torch_modules as tm  # noqa: E402
from spikejax.train.commands import load_checkpoint  # noqa: E402

TINY = ["--steps", "3", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2", "--time-steps", "2",
        "--log-every", "3", "--eval-every", "3", "--checkpoint-every", "3", "--no-progress"]
RUNS = {
    "lm": ["--seq-len", "8", "--eval-batches", "1", "--sample-chars", "0"],
    "vision": ["--patch-size", "4"],
}


@pytest.mark.parametrize("task", list(RUNS))
def test_train_export_and_load_in_pytorch(task, tmp_path, capsys):
    run = tmp_path / task
    assert cli.main(["train", task, *TINY, *RUNS[task], "--out", str(run)]) == 0
    out = tmp_path / "export" / task
    assert cli.main(["export-torch", "--checkpoint", str(run), "--out", str(out), "--backend", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "safetensors:" in printed and "json:" in printed
    only_pt = tmp_path / "export" / f"{task}-pt"
    assert cli.main(["export-torch", "--checkpoint", str(run), "--out", str(only_pt), "--formats", "pt"]) == 0
    assert "pt:" in capsys.readouterr().out and not only_pt.with_name(only_pt.name + ".safetensors").exists()

    jmodel, meta = load_checkpoint(str(run))
    assert meta["task"] == task
    jmodel.eval()  # the mirror loads in eval mode (BatchNorm on running statistics)
    if task == "lm":
        assert type(jmodel).__name__ == "SpikingLM"
        inputs = np.random.default_rng(0).integers(0, jmodel.config.vocab_size, (2, 8))
    else:
        assert type(jmodel).__name__ == "Spikformer"
        inputs = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
    jl = np.asarray(jmodel(jnp.asarray(inputs)))
    for suffix in (".safetensors", ".pt"):
        tmodel = tm.load_model(out.with_name(out.name + suffix), strict=True)
        assert type(tmodel).__name__ == type(jmodel).__name__
        with torch.no_grad():
            tl = tmodel(torch.from_numpy(inputs)).numpy()
        np.testing.assert_allclose(tl, jl, rtol=1e-4, atol=1e-4 * np.abs(jl).max())


def test_export_of_a_directory_without_a_run_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["export-torch", "--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 1
    assert "checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
