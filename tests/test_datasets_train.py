"""`spikejax train audio / temporal / vision --dataset` end to end on CPU: synthetic SHD-format HDF5
files, randman, tiny N-MNIST files; plots in the run directory; --resume exact with grain in the loop."""

import shutil

import dataset_files as F
import numpy as np
import pytest

from spikejax.train.commands import train_main

pytest.importorskip("tonic")
pytest.importorskip("h5py")

QUICK = ["--no-progress", "--d-model", "16", "--batch-size", "8", "--log-every", "2", "--warmup", "1",
         "--eval-batches", "1"]


def _shd(root, n: int, rng):
    times = [np.sort(rng.uniform(0, 0.9, int(rng.integers(5, 60)))) for _ in range(n)]
    units = [rng.integers(0, 700, len(t)) for t in times]
    F.write_hsd_h5(str(root / "shd_train.h5"), times, units, rng.integers(0, 20, n))
    F.write_hsd_h5(str(root / "shd_test.h5"), times[:6], units[:6], rng.integers(0, 20, 6))


def test_train_audio_runs_on_shd_files_and_writes_plots(tmp_path):
    _shd(tmp_path, 16, np.random.default_rng(0))
    out = tmp_path / "run"
    s = train_main(["audio", "--dataset", "shd", "--data-dir", str(tmp_path), "--steps", "3", "--time-steps", "6",
                    "--downsample", "0.1", "--neuron", "alif", "--out", str(out), *QUICK])
    assert s["end_step"] == 3 and np.isfinite(s["final_train_loss"]) and 0 <= s["val_accuracy"] <= 1
    for name in ("raster.png", "firing_rates.png", "readout.png", "curves.png", "metrics.jsonl"):
        assert (out / name).is_file(), name
    # the model saw [T, B, 70] inputs: 700 channels downsampled by 0.1
    assert s["params"] == 70 * 16 + 16 + 16 * 20 + 20


def test_train_temporal_resume_is_exact_with_grain(tmp_path):
    args = ["temporal", "--steps", "4", "--checkpoint-every", "2", "--eval-every", "0", "--time-steps", "10",
            "--classes", "4", "--units", "12", "--per-class", "10", *QUICK]
    full = train_main([*args, "--out", str(tmp_path / "full")])
    shutil.copytree(tmp_path / "full", tmp_path / "killed")
    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "4")  # as if killed during steps 3-4
    resumed = train_main([*args, "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed["start_step"] == 2
    np.testing.assert_allclose(resumed["losses"], full["losses"][2:], rtol=1e-6)


def test_train_vision_on_event_files_with_a_zoo_model(tmp_path):
    rng = np.random.default_rng(1)
    for folder, n in (("Train", 3), ("Test", 1)):
        for label in range(10):
            for k in range(n):
                x, y, t, p = F.random_xytp(rng, 40, 34, 34, t_max=30_000)
                F.write_nmnist_bin(str(tmp_path / folder / str(label) / f"{k}.bin"), x, y, t, p)
    out = tmp_path / "run"
    s = train_main(["vision", "--dataset", "nmnist", "--data-dir", str(tmp_path), "--model", "spikformer",
                    "--steps", "2", "--time-steps", "2", "--heads", "2", "--patch-size", "17", "--augment",
                    "--out", str(out), *QUICK])
    assert s["end_step"] == 2 and np.isfinite(s["final_train_loss"])
    assert (out / "frames.png").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["audio", "--dataset", "shd", "--data-dir", str(tmp_path), "--steps", "1", "--no-progress"])
    assert e.value.code == 2
    assert "shd_train.h5" in capsys.readouterr().err
