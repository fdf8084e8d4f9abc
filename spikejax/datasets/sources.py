"""Random-access sources over the published on-disk layouts of the standard SNN benchmarks.

A source has ``len(source)`` and ``source[i] -> (sample, label)``; ``label`` is an ``int``.

- Event sets (read with :mod:`tonic`'s own readers, ``tonic.io``; events are tonic's structured
  arrays exactly as tonic returns them):

  ====================  =====================================================  ======================
  name                  files under ``root``                                   sample fields
  ====================  =====================================================  ======================
  ``nmnist``            ``Train|Test/<label>/<id>.bin`` (the extracted zips)   ``x, y, t, p`` (34x34x2)
  ``dvs_gesture``       ``ibmGestureTrain|ibmGestureTest/userNN_<light>/<label>.npy``  ``x, y, p, t`` (128x128x2)
  ``cifar10_dvs``       ``<class name>/<id>.aedat4`` (the extracted class zips)  ``t, x, y, p`` (128x128x2)
  ``shd`` / ``ssc``     ``shd_train.h5``, ``shd_test.h5`` / ``ssc_{train,valid,test}.h5``  ``t, x, p`` (700x1x1)
  ====================  =====================================================  ======================

  Timestamps are microseconds (tonic's convention: DVS Gesture's milliseconds and SHD's seconds are
  converted as tonic converts them).

- Static image sets (``uint8 [H, W, C]`` images, read by hand from the published formats):
  ``mnist`` / ``fashion_mnist`` (idx files, raw or ``.gz``, at ``root/``), ``cifar10`` / ``cifar100``
  (python pickles under ``root/cifar-10-batches-py/`` / ``root/cifar-100-python/``), ``digits``
  (scikit-learn's 8x8 digits, values scaled from 0..16 to 0..255; fixed 80/20 split).
- ``randman``: generated (:mod:`spikejax.datasets.randman`).

Nothing is downloaded unless ``download=True`` (tonic's download helper with the dataset's own URL);
a missing dataset is a :class:`DatasetNotFoundError` naming the expected files and their origin.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["DatasetInfo", "DatasetNotFoundError", "EventSource", "ArraySource", "load", "available", "info", "read_idx",
           "SPLITS"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not under the given root (the message names them and their origin)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset: ``kind`` (``"events"`` or ``"image"``), ``sensor_size``
    (tonic's ``(W, H, P)`` for events; ``(H, W, C)`` for images), ``num_classes``, ``splits``, the
    ``origin`` (where the files come from) and the ``layout`` expected under ``root``."""

    name: str
    kind: str
    sensor_size: tuple[int, int, int]
    num_classes: int
    splits: tuple[str, ...]
    origin: str
    layout: str


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for this dataset: pip install 'spikejax[{extra}]'") from e


def _missing(name: str, root: str, expected: str, origin: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name}: no data under root={root!r}; expected {expected} (from {origin}; "
        f"pass download=True to fetch it, or extract it there)")


class EventSource:
    """Event recordings read by ``reader(path_or_index) -> events``; ``labels[i]`` is an int.

    Attributes: ``items`` (file paths, or indices into an HDF5 file), ``labels``, ``sensor_size``
    (tonic's ``(W, H, P)``), ``dtype`` (the structured event dtype), ``transform`` applied to each
    sample."""

    def __init__(self, name: str, items: list, labels: list[int], reader: Callable[[Any], np.ndarray], *,
                 sensor_size: tuple[int, int, int], dtype: np.dtype, transform: Callable | None = None):
        self.name, self.items, self.labels, self._reader = name, list(items), [int(v) for v in labels], reader
        self.sensor_size, self.dtype, self.transform = tuple(sensor_size), dtype, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"index: {i} is out of range for {self.name} of length {len(self)}")
        events = self._reader(self.items[int(i)])
        return (events if self.transform is None else self.transform(events)), self.labels[int(i)]

    def __repr__(self) -> str:
        return f"EventSource({self.name!r}, {len(self)} recordings, sensor_size={self.sensor_size})"


class ArraySource:
    """In-memory samples ``data[i]`` with ``labels[i]`` (images ``uint8 [N, H, W, C]``)."""

    def __init__(self, name: str, data: np.ndarray, labels: np.ndarray, *, transform: Callable | None = None):
        if len(data) != len(labels):
            raise ValueError(f"labels: {len(labels)} labels for {len(data)} samples")
        self.name, self.data, self.labels, self.transform = name, data, np.asarray(labels, np.int64), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x = self.data[int(i)]
        return (x if self.transform is None else self.transform(x)), int(self.labels[int(i)])

    def __repr__(self) -> str:
        return f"ArraySource({self.name!r}, {len(self)} samples, shape={tuple(self.data.shape[1:])})"


# --- event sets (tonic) ----------------------------------------------------------------------------


def _walk(folder: str, suffix: str) -> list[tuple[str, str]]:
    """``(directory, file)`` of every ``*suffix`` file under ``folder``, in sorted order."""
    out = []
    for path, dirs, files in os.walk(folder):
        dirs.sort()
        out.extend((path, f) for f in sorted(files) if f.endswith(suffix))
    return out


def _download(cls, root: str, which: str = "") -> None:
    """Fetch and extract ``cls``'s archive(s) into ``root`` with tonic's helper and URLs."""
    from tonic.download_utils import download_and_extract_archive

    url = getattr(cls, f"{which}_url", None) if which else cls.url
    filename = getattr(cls, f"{which}_filename", None) if which else cls.filename
    md5 = getattr(cls, f"{which}_md5", None) if which else cls.file_md5
    download_and_extract_archive(url, root, filename=filename, md5=md5)


def _nmnist(root: str, split: str, transform, download: bool) -> EventSource:
    tonic = _require("tonic", "events")
    from tonic.io import read_mnist_file

    cls = tonic.datasets.NMNIST
    folder = os.path.join(root, cls.train_folder if split == "train" else cls.test_folder)
    if download and not os.path.isdir(folder):
        _download(cls, root, split)
    files = _walk(folder, ".bin")
    if not files:
        raise _missing("nmnist", root, f"{os.path.basename(folder)}/<label>/<id>.bin files", cls.base_url)
    return EventSource("nmnist", [os.path.join(p, f) for p, f in files], [int(p[-1]) for p, _ in files],
                       lambda path: read_mnist_file(path, dtype=cls.dtype), sensor_size=cls.sensor_size,
                       dtype=cls.dtype, transform=transform)


def _read_gesture(path: str, dtype: np.dtype) -> np.ndarray:
    from numpy.lib import recfunctions

    events = np.load(path)  # columns x, y, p, t (milliseconds) as tonic's preprocessed files store them
    events[:, 3] *= 1000
    return recfunctions.unstructured_to_structured(events, dtype)


def _dvs_gesture(root: str, split: str, transform, download: bool) -> EventSource:
    tonic = _require("tonic", "events")
    cls = tonic.datasets.DVSGesture
    folder = os.path.join(root, "ibmGestureTrain" if split == "train" else "ibmGestureTest")
    if download and not os.path.isdir(folder):
        _download(cls, root, split)
    files = [(p, f) for p, f in _walk(folder, ".npy") if os.path.relpath(p, folder) != "."]
    if not files:
        raise _missing("dvs_gesture", root, f"{os.path.basename(folder)}/userNN_<lighting>/<label>.npy files",
                       cls.train_url if split == "train" else cls.test_url)
    return EventSource("dvs_gesture", [os.path.join(p, f) for p, f in files], [int(f[:-4]) for _, f in files],
                       lambda path: _read_gesture(path, cls.dtype), sensor_size=cls.sensor_size, dtype=cls.dtype,
                       transform=transform)


def _read_aedat4(path: str) -> np.ndarray:
    from tonic.io import read_aedat4

    events = read_aedat4(path)
    events.dtype.names = ["t", "x", "y", "p"]
    return events


def _cifar10_dvs(root: str, split: str, transform, download: bool) -> EventSource:
    tonic = _require("tonic", "events")
    _require("aedat", "events")
    cls = tonic.datasets.CIFAR10DVS
    if split != "train":
        raise ValueError(f"split: CIFAR10-DVS is published as one set (split='train'); got {split!r} "
                         "(hold out a part of it yourself, e.g. the last 10% of each class)")
    if download and not any(os.path.isdir(os.path.join(root, c)) for c in cls.classes):
        from tonic.download_utils import extract_archive

        _download(cls, root)
        for filename in cls.data_filename:
            extract_archive(os.path.join(root, filename))
    files = [(p, f) for p, f in _walk(root, ".aedat4") if os.path.basename(p) in cls.classes]
    if not files:
        raise _missing("cifar10_dvs", root, "<class name>/<id>.aedat4 files (airplane/, automobile/, ...)", cls.url)
    return EventSource("cifar10_dvs", [os.path.join(p, f) for p, f in files],
                       [cls.classes[os.path.basename(p)] for p, _ in files], _read_aedat4,
                       sensor_size=cls.sensor_size, dtype=cls.dtype, transform=transform)


class _HDF5Spikes:
    """Reader of one SHD/SSC file (opened once per process, lazily: picklable for worker processes)."""

    def __init__(self, path: str, dtype: np.dtype):
        self.path, self.dtype, self._file = path, dtype, None

    def __getstate__(self):
        return {"path": self.path, "dtype": self.dtype, "_file": None}

    def __call__(self, index: int) -> np.ndarray:
        from tonic.io import make_structured_array

        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        spikes = self._file["spikes"]
        # as tonic.datasets.hsd: seconds -> microseconds, polarity 1
        return make_structured_array(spikes["times"][index].astype(np.float64) * 1e6, spikes["units"][index], 1,
                                     dtype=self.dtype)


def _hsd(name: str):
    def make(root: str, split: str, transform, download: bool) -> EventSource:
        tonic = _require("tonic", "events")
        h5py = _require("h5py", "events")
        cls = tonic.datasets.SHD if name == "shd" else tonic.datasets.SSC
        zip_name = getattr(cls, f"{split}_zip")
        path = os.path.join(root, zip_name[:-4])
        if download and not os.path.isfile(path):
            from tonic.download_utils import download_and_extract_archive

            download_and_extract_archive(cls.base_url + zip_name, root, filename=zip_name,
                                         md5=getattr(cls, f"{split}_md5"))
        if not os.path.isfile(path):
            raise _missing(name, root, f"{zip_name[:-4]} (spikes/times, spikes/units, labels)",
                           cls.base_url + zip_name)
        with h5py.File(path, "r") as f:
            for key in ("spikes/times", "spikes/units", "labels"):
                if key not in f:
                    raise ValueError(f"root: {path!r} has no {key!r} dataset; not an SHD/SSC file")
            labels = f["labels"][()].astype(int).tolist()
        return EventSource(name, list(range(len(labels))), labels, _HDF5Spikes(path, cls.dtype),
                           sensor_size=cls.sensor_size, dtype=cls.dtype, transform=transform)

    return make


# --- static image sets ---------------------------------------------------------------------------


_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MNIST_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
               "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}


def read_idx(path: str) -> np.ndarray:
    """An idx file (raw or gzip): magic ``0x0000 <type> <ndim>``, big-endian int32 dims, then data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"root: {path!r} is not an idx file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"root: {path!r} has unknown idx type code {raw[2]:#x}")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, dtypes[raw[2]], int(np.prod(shape)), 4 + 4 * ndim)
    return data.reshape(shape).astype(np.dtype(dtypes[raw[2]]).newbyteorder("="))


def _find_idx(root: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _mnist(name: str):
    def make(root: str, split: str, transform, download: bool) -> ArraySource:
        stems = _MNIST_FILES[split]
        paths = [_find_idx(root, s) for s in stems]
        if download and None in paths:
            from urllib.request import urlretrieve

            os.makedirs(root, exist_ok=True)
            for s in stems:
                urlretrieve(_MNIST_URLS[name] + s + ".gz", os.path.join(root, s + ".gz"))
            paths = [_find_idx(root, s) for s in stems]
        if None in paths:
            raise _missing(name, root, " and ".join(f"{s}[.gz]" for s in stems), _MNIST_URLS[name])
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"root: {paths[0]!r} / {paths[1]!r}: expected images [N, 28, 28] and labels [N], "
                             f"got {images.shape} and {labels.shape}")
        return ArraySource(name, images.astype(np.uint8)[..., None], labels, transform=transform)

    return make


_CIFAR = {"cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                      {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, b"labels"),
          "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                       {"train": ["train"], "test": ["test"]}, b"fine_labels")}


def _cifar(name: str):
    folder, url, files, label_key = _CIFAR[name]

    def make(root: str, split: str, transform, download: bool) -> ArraySource:
        paths = [os.path.join(root, folder, f) for f in files[split]]
        if download and not all(os.path.isfile(p) for p in paths):
            from tonic.download_utils import download_and_extract_archive

            download_and_extract_archive(url, root)
        if not all(os.path.isfile(p) for p in paths):
            raise _missing(name, root, ", ".join(f"{folder}/{f}" for f in files[split]), url)
        data, labels = [], []
        for p in paths:
            with open(p, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            data.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(d[label_key])
        images = np.concatenate(data).transpose(0, 2, 3, 1)  # NCHW rows -> NHWC
        return ArraySource(name, np.ascontiguousarray(images), np.asarray(labels), transform=transform)

    return make


def _digits(root: str | None, split: str, transform, download: bool) -> ArraySource:
    del root, download
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    n_test = len(images) // 5
    idx = order[n_test:] if split == "train" else order[:n_test]
    return ArraySource("digits", images[idx], d.target[idx], transform=transform)


def _randman(root, split: str, transform, download: bool, **kwargs):
    del root, download
    from spikejax.datasets.randman import RandmanConfig, randman

    return randman(RandmanConfig(**kwargs), split=split, transform=transform)


_SHD_ORIGIN = "https://zenkelab.org/datasets/"
_INFO: dict[str, DatasetInfo] = {
    "nmnist": DatasetInfo("nmnist", "events", (34, 34, 2), 10, ("train", "test"),
                          "https://www.garrickorchard.com/datasets/n-mnist", "Train|Test/<label>/<id>.bin"),
    "dvs_gesture": DatasetInfo("dvs_gesture", "events", (128, 128, 2), 11, ("train", "test"),
                               "https://research.ibm.com/interactive/dvsgesture/ (tonic's preprocessed .npy)",
                               "ibmGestureTrain|ibmGestureTest/userNN_<lighting>/<label>.npy"),
    "cifar10_dvs": DatasetInfo("cifar10_dvs", "events", (128, 128, 2), 10, ("train",),
                               "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
                               "<class name>/<id>.aedat4"),
    "shd": DatasetInfo("shd", "events", (700, 1, 1), 20, ("train", "test"), _SHD_ORIGIN, "shd_{split}.h5"),
    "ssc": DatasetInfo("ssc", "events", (700, 1, 1), 35, ("train", "valid", "test"), _SHD_ORIGIN,
                       "ssc_{split}.h5"),
    "mnist": DatasetInfo("mnist", "image", (28, 28, 1), 10, ("train", "test"), _MNIST_URLS["mnist"],
                         "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
    "fashion_mnist": DatasetInfo("fashion_mnist", "image", (28, 28, 1), 10, ("train", "test"),
                                 _MNIST_URLS["fashion_mnist"], "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
    "cifar10": DatasetInfo("cifar10", "image", (32, 32, 3), 10, ("train", "test"), _CIFAR["cifar10"][1],
                           "cifar-10-batches-py/{data_batch_1..5,test_batch}"),
    "cifar100": DatasetInfo("cifar100", "image", (32, 32, 3), 100, ("train", "test"), _CIFAR["cifar100"][1],
                            "cifar-100-python/{train,test}"),
    "digits": DatasetInfo("digits", "image", (8, 8, 1), 10, ("train", "test"), "scikit-learn (bundled)", "-"),
    "randman": DatasetInfo("randman", "events", (50, 1, 1), 10, ("train", "test"),
                           "generated (Zenke & Vogels 2021)", "-"),
}
_LOADERS: dict[str, Callable] = {
    "nmnist": _nmnist, "dvs_gesture": _dvs_gesture, "cifar10_dvs": _cifar10_dvs, "shd": _hsd("shd"),
    "ssc": _hsd("ssc"), "mnist": _mnist("mnist"), "fashion_mnist": _mnist("fashion_mnist"),
    "cifar10": _cifar("cifar10"), "cifar100": _cifar("cifar100"), "digits": _digits, "randman": _randman,
}
SPLITS = {k: v.splits for k, v in _INFO.items()}


def available() -> list[str]:
    """The dataset names :func:`load` accepts."""
    return sorted(_LOADERS)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``."""
    if name not in _INFO:
        raise ValueError(f"name: unknown dataset {name!r}; expected one of {available()}")
    return _INFO[name]


def load(name: str, root: str | os.PathLike | None = None, split: str = "train", transform: Callable | None = None,
         *, download: bool = False, **kwargs):
    """A random-access source of ``name``'s ``split``: ``len(src)``, ``src[i] -> (sample, label)``.

    Args:
      name: one of :func:`available`.
      root: the folder holding the dataset's files in its published layout (see the module docs;
        not needed for ``digits`` and ``randman``).
      split: ``"train"`` or ``"test"`` (SSC also ``"valid"``).
      transform: applied to each sample (e.g. a tonic transform, or
        :func:`spikejax.datasets.transforms.to_frames`).
      download: fetch missing files from the dataset's own URL (never by default).
      **kwargs: generator settings for ``randman`` (:class:`~spikejax.datasets.randman.RandmanConfig`).
    """
    ds = info(name)
    if split not in ds.splits:
        raise ValueError(f"split: {name} has splits {ds.splits}, got {split!r}")
    if kwargs and name != "randman":
        raise TypeError(f"load: unexpected keyword arguments {sorted(kwargs)} for {name}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform: expected a callable, got {type(transform).__name__}")
    if name in ("digits", "randman"):
        return _LOADERS[name](root, split, transform, download, **kwargs)
    if root is None:
        raise ValueError(f"root: {name} needs the folder with its files ({ds.layout}; from {ds.origin})")
    return _LOADERS[name](os.fspath(root), split, transform, download)
