"""Text generation from a trained :class:`~spikejax.nn.SpikingLM` with a sliding context window."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["generate_text"]


def generate_text(model, vocab, prompt: str, n: int, *, seed: int = 0, temperature: float = 0.8,
                  top_k: int | None = None) -> str:
    """``prompt`` followed by exactly ``n`` sampled characters.

    ``vocab``: anything with ``encode(text) -> ids`` and ``decode(ids) -> text`` (a
    :class:`~spikejax.train.vocab.Vocabulary`, a :class:`~spikejax.train.data.CharDataset`).
    A model with learned positions sees at most ``max_len`` tokens, so the context window slides:
    the first chunk continues the prompt's last ``max_len - 1`` characters (at most) up to
    ``max_len`` tokens; every further chunk re-reads the last ``C = max_len // 2`` characters
    (at positions 0..C-1, as in training, where every window starts at position 0) and samples
    ``max_len - C`` more. ``ValueError`` when the prompt is empty or holds characters outside the
    vocabulary, or when ``max_len = 1`` leaves no room to continue a context.
    """
    ids = np.asarray(vocab.encode(prompt), np.int32)
    if ids.size == 0:
        raise ValueError("prompt: expected at least one character")
    model.eval()
    max_len = model.config.max_len if model.pos_embedding_enabled else None
    if max_len is not None and max_len < 2 and n > 0:
        raise ValueError(f"chars: the model's max_len={max_len} leaves no room to continue a context")
    out, key = ids, jax.random.key(seed)
    while len(out) - len(ids) < n:
        remaining = n - (len(out) - len(ids))
        if max_len is None:
            context, k = out, remaining
        else:
            context = out[-(max_len - 1):] if len(out) == len(ids) else out[-(max_len // 2):]
            k = min(remaining, max_len - len(context))
        key, sub = jax.random.split(key)
        new = model.generate(jnp.asarray(context)[None], k, key=sub, temperature=temperature, top_k=top_k)
        out = np.concatenate([out, np.asarray(new)[0, len(context):]])
    return vocab.decode(out)
