"""spikejax.datasets loaders against tonic (event sets) and hand-written NumPy readers (static sets) on
tiny files written in each dataset's published on-disk format (tests/dataset_files.py)."""

import os

import dataset_files as F
import numpy as np
import pytest

from spikejax import datasets

tonic = pytest.importorskip("tonic")


def _same_events(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert len(a) == len(b)
    for f in a.dtype.names:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)


def _local(monkeypatch, cls) -> None:
    """tonic's classes download unless the archive and thousands of files exist: trust the tiny tree."""
    monkeypatch.setattr(cls, "_check_exists", lambda self: True)


def test_available_lists_every_dataset():
    assert set(datasets.available()) == {"nmnist", "dvs_gesture", "cifar10_dvs", "shd", "ssc", "mnist",
                                         "fashion_mnist", "cifar10", "cifar100", "digits", "randman"}


def test_nmnist_bin_files_read_as_tonic_reads_them(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    root = tmp_path / "NMNIST"
    for folder in ("Train", "Test"):
        for label in (0, 3, 7):
            for k in range(2):
                x, y, t, p = F.random_xytp(rng, int(rng.integers(5, 60)), 34, 34, t_max=40_000)
                F.write_nmnist_bin(str(root / folder / str(label) / f"{k:05d}.bin"), x, y, t, p)
    _local(monkeypatch, tonic.datasets.NMNIST)
    for split in ("train", "test"):
        ours = datasets.load("nmnist", root, split)
        ref = tonic.datasets.NMNIST(str(tmp_path), train=split == "train")
        assert len(ours) == len(ref) == 6
        for i in range(len(ref)):
            (ev, lab), (ev_ref, lab_ref) = ours[i], ref[i]
            _same_events(ev, ev_ref)
            assert lab == lab_ref
    # the overflow records (y == 240) carry the timestamps past 2^13 µs: check one file by hand
    x, y, t, p = F.random_xytp(rng, 40, 34, 34, t_max=40_000)
    F.write_nmnist_bin(str(tmp_path / "one" / "Train" / "5" / "a.bin"), x, y, t, p)
    ev, lab = datasets.load("nmnist", tmp_path / "one", "train")[0]
    np.testing.assert_array_equal(ev["t"], t)
    np.testing.assert_array_equal(ev["x"], x)
    np.testing.assert_array_equal(ev["p"], p)
    assert lab == 5 and ev.dtype.names == ("x", "y", "t", "p")


def test_dvs_gesture_npy_files_read_as_tonic_reads_them(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = tmp_path / "DVSGesture"
    for user, light in ((1, "fluorescent"), (2, "led")):
        for label in (0, 4, 10):
            x, y, t, p = F.random_xytp(rng, int(rng.integers(5, 50)), 128, 128, t_max=6000)
            F.write_gesture_npy(str(root / "ibmGestureTrain" / f"user{user:02d}_{light}" / f"{label}.npy"), x, y, t, p)
    _local(monkeypatch, tonic.datasets.DVSGesture)
    ours = datasets.load("dvs_gesture", root, "train")
    ref = tonic.datasets.DVSGesture(str(tmp_path), train=True)
    assert len(ours) == len(ref) == 6
    for j in range(len(ref)):  # tonic lists files in directory order; match by path
        i = ours.items.index(ref.data[j])
        (ev, lab), (ev_ref, lab_ref) = ours[i], ref[j]
        _same_events(ev, ev_ref)
        assert lab == lab_ref
    assert ours.sensor_size == (128, 128, 2)


def test_cifar10_dvs_aedat4_files_read_as_tonic_reads_them(tmp_path, monkeypatch):
    pytest.importorskip("aedat")
    rng = np.random.default_rng(3)
    root = tmp_path / "CIFAR10DVS"
    for cls in ("airplane", "cat", "truck"):
        for k in range(2):
            n = int(rng.integers(5, 80))
            x, y, t, p = F.random_xytp(rng, n, 128, 128, t_max=10**6)
            F.write_aedat4(str(root / cls / f"cifar10_{cls}_{k}.aedat4"), t, x, y, p)
    _local(monkeypatch, tonic.datasets.CIFAR10DVS)
    ours = datasets.load("cifar10_dvs", root, "train")
    ref = tonic.datasets.CIFAR10DVS(str(tmp_path))
    assert len(ours) == len(ref) == 6
    for j in range(len(ref)):
        i = ours.items.index(ref.data[j])
        (ev, lab), (ev_ref, lab_ref) = ours[i], ref[j]
        _same_events(ev, ev_ref)
        assert lab == lab_ref
    assert {ours[i][1] for i in range(len(ours))} == {0, 3, 9}
    with pytest.raises(ValueError, match="split"):
        datasets.load("cifar10_dvs", root, "test")


@pytest.mark.parametrize("name,split", [("shd", "train"), ("shd", "test"), ("ssc", "valid")])
def test_shd_ssc_hdf5_read_as_tonic_reads_them(tmp_path, monkeypatch, name, split):
    rng = np.random.default_rng(4)
    root = tmp_path / "hsd"
    root.mkdir()
    n = 5
    times = [np.sort(rng.uniform(0, 1.0, int(rng.integers(1, 40)))) for _ in range(n)]
    units = [rng.integers(0, 700, len(t)) for t in times]
    labels = rng.integers(0, 20, n)
    F.write_hsd_h5(str(root / f"{name}_{split}.h5"), times, units, labels)
    cls = tonic.datasets.SHD if name == "shd" else tonic.datasets.SSC
    _local(monkeypatch, cls)
    ours = datasets.load(name, root, split)
    ref_root = tmp_path / "ref"
    (ref_root / cls.__name__).mkdir(parents=True)
    os.symlink(root / f"{name}_{split}.h5", ref_root / cls.__name__ / f"{name}_{split}.h5")
    ref = cls(str(ref_root), train=split == "train") if name == "shd" else cls(str(ref_root), split=split)
    assert len(ours) == len(ref) == n
    for i in range(n):
        (ev, lab), (ev_ref, lab_ref) = ours[i], ref[i]
        _same_events(ev, ev_ref)
        assert lab == lab_ref
    assert ours.sensor_size == (700, 1, 1)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, name, gz):
    rng = np.random.default_rng(5)
    sfx = ".gz" if gz else ""
    imgs = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 7), ("t10k", 3))}
    labs = {s: rng.integers(0, 10, len(v), dtype=np.uint8) for s, v in imgs.items()}
    for s in imgs:
        F.write_idx(str(tmp_path / f"{s}-images-idx3-ubyte{sfx}"), imgs[s])
        F.write_idx(str(tmp_path / f"{s}-labels-idx1-ubyte{sfx}"), labs[s])
    for split, s in (("train", "train"), ("test", "t10k")):
        src = datasets.load(name, tmp_path, split)
        assert len(src) == len(imgs[s])
        for i in range(len(src)):
            img, lab = src[i]
            assert img.dtype == np.uint8 and img.shape == (28, 28, 1)
            np.testing.assert_array_equal(img[..., 0], imgs[s][i])
            assert lab == labs[s][i]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, name):
    rng = np.random.default_rng(6)
    folder, train_files, key = (("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels")
                                if name == "cifar10" else ("cifar-100-python", ["train"], b"fine_labels"))
    expected = []
    for f in train_files:
        img = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        lab = rng.integers(0, 10 if name == "cifar10" else 100, 2)
        F.write_cifar_pickle(str(tmp_path / folder / f), img, lab, key)
        expected += list(zip(img, lab, strict=True))
    src = datasets.load(name, tmp_path, "train")
    assert len(src) == len(expected)
    for i, (img, lab) in enumerate(expected):
        got, got_lab = src[i]
        assert got.dtype == np.uint8 and got.shape == (32, 32, 3)
        # the reference: pixel (r, c) of channel k is byte k*1024 + r*32 + c of the row
        np.testing.assert_array_equal(got, img)
        assert got_lab == lab
    with pytest.raises(FileNotFoundError, match="test_batch|test"):
        datasets.load(name, tmp_path, "test")


def test_digits_and_randman_need_no_files():
    tr, te = datasets.load("digits", split="train"), datasets.load("digits", split="test")
    assert len(tr) + len(te) == 1797
    img, lab = tr[0]
    assert img.dtype == np.uint8 and img.shape == (8, 8, 1) and 0 <= lab < 10 and img.max() <= 255
    cfg = dict(num_classes=3, num_units=12, train_per_class=4, test_per_class=2, seed=7)
    a, b = datasets.load("randman", **cfg), datasets.load("randman", **cfg)
    other = datasets.load("randman", **{**cfg, "seed": 8})
    assert len(a) == 12 and len(datasets.load("randman", split="test", **cfg)) == 6
    ev, lab = a[5]
    assert ev.dtype == tonic.datasets.SHD.dtype and lab == 1
    _same_events(ev, b[5][0])
    assert not np.array_equal(ev["t"], other[5][0]["t"])
    # every unit fires exactly once, in time order, inside the duration
    assert sorted(ev["x"]) == list(range(12)) and np.all(np.diff(ev["t"]) >= 0)
    assert ev["t"].min() >= 0 and ev["t"].max() < 100_000


def test_missing_files_and_bad_arguments_name_what_is_expected(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match=r"Train/<label>/<id>\.bin.*download=True"):
        datasets.load("nmnist", tmp_path, "train")
    with pytest.raises(datasets.DatasetNotFoundError, match=r"shd_train\.h5.*zenkelab"):
        datasets.load("shd", tmp_path, "train")
    with pytest.raises(datasets.DatasetNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load("mnist", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        datasets.load("imagenet", tmp_path)
    with pytest.raises(ValueError, match="split: shd has splits"):
        datasets.load("shd", tmp_path, "valid")
    with pytest.raises(ValueError, match="root: nmnist needs"):
        datasets.load("nmnist")
    with pytest.raises(TypeError, match="transform"):
        datasets.load("digits", transform=3)
    with pytest.raises(ValueError, match="num_units"):
        datasets.load("randman", num_units=0)
