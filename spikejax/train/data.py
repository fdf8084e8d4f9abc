"""Data pipelines. Every batch is a pure function of ``(seed, step)`` (a fresh
``numpy.random.default_rng((seed, step))``), so the data position of a run is its step count:
resuming at step ``s`` draws exactly the batches an uninterrupted run would have drawn.

- :class:`CharDataset`: character-level text, split 90/10 into train/validation; batches of
  ``(x[B, L], y[B, L])`` token ids with ``y`` the next character.
- :class:`DigitsDataset`: scikit-learn's 8×8 digits as ``images[B, 8, 8, 1]`` in [0, 1] and labels.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

__all__ = ["CharDataset", "DigitsDataset", "default_text", "batch_rng"]


def batch_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator for the batch of ``step`` (``stream`` separates train from eval draws)."""
    return np.random.default_rng((int(seed), int(stream), int(step)))


def default_text() -> str:
    """Text that ships with Python itself: the ``pydoc_data.topics`` help pages (~460k characters)."""
    from pydoc_data import topics

    return "\n".join(topics.topics[k] for k in sorted(topics.topics))


class CharDataset:
    """Character-level corpus with a vocabulary of the characters it contains.

    Args:
      text: the corpus (at least ``2 * (seq_len + 1)`` characters).
      val_fraction: the tail fraction held out for validation (0.1: the classic 90/10 split).
      name: a label for reports.
      chars: the vocabulary to use (e.g. a trained model's, for fine-tuning on new text); default the
        sorted characters of ``text``. A character of ``text`` outside it is a ``ValueError``.
    """

    def __init__(self, text: str, *, val_fraction: float = 0.1, name: str = "text", chars: list[str] | None = None):
        if not isinstance(text, str) or len(text) < 4:
            raise ValueError(f"text: expected a string of at least 4 characters, got {type(text).__name__} "
                             f"of length {len(text) if isinstance(text, str) else 'n/a'}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
        self.name = name
        self.chars = sorted(set(text)) if chars is None else list(chars)
        if chars is not None:
            missing = sorted(set(text) - set(self.chars))
            if missing:
                raise ValueError(f"data: {name!r} holds {len(missing)} character(s) outside the model's vocabulary: "
                                 f"{missing[:8]!r}")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        ids = np.array([self.stoi[c] for c in text], dtype=np.int32)
        n = int(round(len(ids) * (1.0 - val_fraction)))
        self.train, self.val = ids[:n], ids[n:]
        self.fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> CharDataset:
        """Read a UTF-8 text file (e.g. TinyShakespeare's ``input.txt``). A missing file is a
        ``FileNotFoundError``, an empty or too short one or one that is not UTF-8 a ``ValueError``
        naming the file (and the offset of the first byte that does not decode)."""
        name = os.fspath(path)
        if os.path.isdir(name):
            raise ValueError(f"data: {name!r} is a directory; expected a UTF-8 text file")
        if not os.path.isfile(name):
            raise FileNotFoundError(f"data: no such file {name!r}")
        with open(name, "rb") as f:
            raw = f.read()
        if not raw:
            raise ValueError(f"data: {name!r} is empty")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"data: {name!r} is not UTF-8 text: byte {raw[e.start]:#04x} at byte offset {e.start} "
                             f"does not decode ({e.reason})") from None
        if len(text) < 4:
            raise ValueError(f"data: {name!r} holds {len(text)} characters; expected at least 4")
        return cls(text, name=os.path.basename(name), **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Characters -> ids; a character outside the vocabulary is a ``ValueError`` naming it."""
        missing = sorted({c for c in text if c not in self.stoi})
        if missing:
            raise ValueError(f"prompt: characters {missing!r} are not in the training vocabulary")
        return np.array([self.stoi[c] for c in text], dtype=np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def check_seq_len(self, seq_len: int) -> None:
        """``ValueError`` (naming the data) unless both splits hold a window of ``seq_len + 1``
        characters and a choice of start (at least ``seq_len + 2`` characters each)."""
        for split, data in (("training", self.train), ("validation", self.val)):
            if len(data) < seq_len + 2:
                n = len(self.train) + len(self.val)
                raise ValueError(f"data: {self.name!r} ({n} characters) is too short for sequences of seq_len="
                                 f"{seq_len}: its {split} split holds {len(data)} characters, and each split "
                                 f"needs at least seq_len + 2 = {seq_len + 2}")

    def batch(self, seed: int, step: int, batch_size: int, seq_len: int, split: str = "train"):
        """``(x[B, L], y[B, L])`` int32 for ``step``: random windows of the split."""
        data = self.train if split == "train" else self.val
        self.check_seq_len(seq_len)
        rng = batch_rng(seed, step, 0 if split == "train" else 1)
        starts = rng.integers(0, len(data) - seq_len - 1, batch_size)
        idx = starts[:, None] + np.arange(seq_len + 1)[None]
        chunk = data[idx]
        return chunk[:, :-1], chunk[:, 1:]

    def eval_batches(self, batch_size: int, seq_len: int, max_batches: int):
        """Fixed validation batches (the same every evaluation): up to ``max_batches`` of them."""
        return [self.batch(0, i, batch_size, seq_len, split="val") for i in range(max_batches)]

    def meta(self) -> dict:
        """What a checkpoint stores to rebuild / check the data: vocabulary and text fingerprint."""
        return {"kind": "char", "name": self.name, "chars": json.dumps(self.chars), "fingerprint": self.fingerprint}


class DigitsDataset:
    """scikit-learn's digits (1797 images, 8×8, 10 classes): a fixed 80/20 split by ``split_seed``."""

    def __init__(self, split_seed: int = 0):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
        y = d.target.astype(np.int32)
        order = np.random.default_rng(split_seed).permutation(len(x))
        x, y = x[order], y[order]
        n_test = len(x) // 5
        self.x_train, self.y_train = x[n_test:], y[n_test:]
        self.x_test, self.y_test = x[:n_test], y[:n_test]
        self.name = "sklearn-digits"
        self.fingerprint = f"digits-{split_seed}"

    def batch(self, seed: int, step: int, batch_size: int):
        idx = batch_rng(seed, step).integers(0, len(self.x_train), batch_size)
        return self.x_train[idx], self.y_train[idx]

    def eval_batches(self, batch_size: int):
        """The whole test split in batches of ``batch_size`` (the last one padded by repetition and
        weighted out through a mask)."""
        out = []
        n = len(self.x_test)
        for s in range(0, n, batch_size):
            idx = np.arange(s, s + batch_size) % n
            mask = (np.arange(s, s + batch_size) < n).astype(np.float32)
            out.append((self.x_test[idx], self.y_test[idx], mask))
        return out

    def meta(self) -> dict:
        return {"kind": "digits", "name": self.name, "fingerprint": self.fingerprint}
