"""The character vocabulary of a language-model run (stored in its checkpoints' metadata)."""

from __future__ import annotations

import numpy as np

__all__ = ["Vocabulary"]


class Vocabulary:
    """Characters ``chars`` and their ids (``chars[i]`` has id ``i``): what ``spikejax sample`` encodes
    a prompt with and decodes the sampled ids with."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        """``int32 [len(text)]`` ids; ``ValueError`` naming the characters outside the vocabulary."""
        missing = sorted({c for c in text if c not in self.stoi})
        if missing:
            raise ValueError(f"prompt: characters {missing!r} are not in the training vocabulary")
        return np.array([self.stoi[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        """The text of an array of ids (any shape, read in C order)."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))
