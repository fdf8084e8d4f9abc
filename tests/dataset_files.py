"""Writers of tiny files in the published on-disk formats of the datasets (for the loader tests).

Each writes the bytes the real dataset files hold, from the format descriptions: N-MNIST's 5-byte
events, DVS Gesture's preprocessed ``.npy`` (tonic's), AEDAT4 (CIFAR10-DVS; flatbuffers laid out by
hand), SHD/SSC HDF5, idx (MNIST) and CIFAR's python pickles.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np


def random_xytp(rng, n: int, w: int, h: int, t_max: int = 300_000):
    """Sorted random events as columns ``(x, y, t, p)``."""
    t = np.sort(rng.integers(0, t_max, n))
    return rng.integers(0, w, n), rng.integers(0, h, n), t, rng.integers(0, 2, n)


def write_nmnist_bin(path: str, x, y, t, p) -> None:
    """N-MNIST ``.bin``: 5 bytes per event: x, y, then p (bit 7) and a 23-bit timestamp (µs) big-endian;
    timestamps past 2^13 wrap with overflow records ``y == 240`` as in the published files."""
    out = bytearray()
    base = 0
    for xi, yi, ti, pi in zip(x, y, t, p, strict=True):
        while ti - base >= 2**13:  # an overflow event advances the base by 2^13 µs
            out += bytes([0, 240, 0, 0, 0])
            base += 2**13
        ts = int(ti - base)
        out += bytes([int(xi), int(yi), (int(pi) << 7) | (ts >> 16), (ts >> 8) & 255, ts & 255])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes(out))


def write_gesture_npy(path: str, x, y, t_ms, p) -> None:
    """tonic's preprocessed DVS Gesture ``.npy``: float64 ``[N, 4]`` columns x, y, p, t (ms)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.stack([x, y, p, t_ms], 1).astype(np.float64))


def _flatbuffer_events(t, x, y, on) -> bytes:
    """A size-prefixed flatbuffer ``EventPacket {elements: [Event{t:int64, x:int16, y:int16, on:bool}]}``
    with file identifier ``EVTS`` (positions counted from the size prefix; structs 8-aligned)."""
    n = len(t)
    head = struct.pack("<I", 16) + b"EVTS"          # at 4: root offset -> table at 20; at 8: the identifier
    vtable = struct.pack("<HHH", 6, 8, 4) + b"\0\0"  # at 12: vtable size, table size, field 0 at +4
    table = struct.pack("<iI", 20 - 12, 28 - 24)     # at 20: soffset to the vtable, offset to the vector
    elems = np.zeros(n, np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")]))
    elems["t"], elems["x"], elems["y"], elems["on"] = t, x, y, on
    body = head + vtable + table + struct.pack("<I", n) + elems.tobytes()  # vector length at 28, data at 32
    return struct.pack("<I", len(body)) + body


def _flatbuffer_ioheader(description: str) -> bytes:
    """``Ioheader {compression: None (default), file_data_position: -1 (default), description}``."""
    text = description.encode() + b"\0"
    buf = struct.pack("<I", 20) + b"IOHE"
    buf += struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\0\0"  # at 8: fields 0, 1 absent; description at +4
    buf += struct.pack("<iI", 20 - 8, 28 - 24)              # at 20
    buf += struct.pack("<I", len(text) - 1) + text
    buf += b"\0" * (-len(buf) % 4)
    return struct.pack("<I", len(buf)) + buf


def write_aedat4(path: str, t, x, y, on, width: int = 128, height: int = 128, packets: int = 2) -> None:
    """An uncompressed AEDAT4 file with one event stream split into ``packets`` packets."""
    description = (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalModuleName" type="string">capture</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
        '<attr key="source" type="string">DVS128</attr></node></node></node></dv>')
    out = b"#!AER-DAT4.0\r\n" + _flatbuffer_ioheader(description)
    for chunk in np.array_split(np.arange(len(t)), packets):
        payload = _flatbuffer_events(t[chunk], x[chunk], y[chunk], on[chunk])
        out += struct.pack("<iI", 0, len(payload)) + payload
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(out)


def write_hsd_h5(path: str, times: list, units: list, labels, *, num_keys: int = 20) -> None:
    """SHD/SSC HDF5: ``spikes/times`` (vlen float, s), ``spikes/units`` (vlen uint16), ``labels``
    (uint16), ``extra/keys``, ``extra/speaker``."""
    import h5py

    with h5py.File(path, "w") as f:
        ft = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.float32))
        fu = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (tt, uu) in enumerate(zip(times, units, strict=True)):
            ft[i], fu[i] = np.asarray(tt, np.float32), np.asarray(uu, np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        f.create_dataset("extra/keys", data=np.array([f"key{i}".encode() for i in range(num_keys)]))
        f.create_dataset("extra/speaker", data=np.zeros(len(labels), np.uint16))


def write_idx(path: str, array: np.ndarray) -> None:
    """idx: ``0x00 0x00 0x08 ndim``, big-endian int32 dims, uint8 data (``.gz`` paths gzip it)."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(raw)


def write_cifar_pickle(path: str, images_nhwc: np.ndarray, labels, label_key: bytes = b"labels") -> None:
    """CIFAR python batch: ``{b"data": uint8 [N, 3072] (R, G, B planes, row-major), label_key: [...]}``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, label_key: list(map(int, labels)), b"batch_label": b"test"}, f)
