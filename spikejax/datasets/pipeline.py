"""The input pipeline on grain: shuffled, augmented, encoded, batched, sharded over processes.

Every batch is a pure function of ``(seed, step)``, as in :mod:`spikejax.train.data`: the element
order is grain's ``MapDataset.shuffle`` of the source, reshuffled every epoch (``repeat()``), and
augmentations draw from grain's per-element generator (seed, element index). So the global batch of
``step`` holds elements ``[step·B, (step+1)·B)`` of that endless order, whichever process reads it,
and ``--resume`` at step ``s`` reads exactly the batches an uninterrupted run reads.

Process sharding (multi-host): with ``shard_count = P`` processes, process ``p`` reads the local rows
``[p·B/P, (p+1)·B/P)`` of each global batch (grain slice ``[p::P]`` over local batches of ``B/P``
elements), so concatenating the shards of all processes in order gives the single-process batch.

:meth:`Pipeline.iterate` streams batches from ``start_step`` with grain's worker processes
(``mp_prefetch``) or threads; :meth:`Pipeline.batch` reads one step by random access (same values).
:func:`device_prefetch` keeps a few batches already on the device ahead of a custom training loop.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["Pipeline", "eval_batches", "device_prefetch"]


def _grain():
    try:
        import grain
    except ImportError as e:
        raise ImportError("the input pipeline needs grain: pip install grain") from e
    return grain


def _absl_flags_parsed() -> None:
    """grain 0.2.18's worker processes read an Abseil flag, which raises unless flags were parsed
    (google/grain#1355, fixed after 0.2.18): outside ``absl.app`` mark them parsed (defaults)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _exit_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
    """grain ``worker_init_fn``: end this worker process once its parent process ``parent`` is gone.
    grain 0.2.18's workers never notice a parent killed by SIGKILL (they wait on their full buffer),
    so a ``kill -9`` of a training run would leave them and multiprocessing's resource tracker
    running forever."""
    del worker_index, worker_count

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="spikejax-exit-with-parent", daemon=True).start()


class _Encode:
    """``(sample, label) -> (encode(sample), int32 label)`` (a class, so worker processes can pickle it)."""

    def __init__(self, encode: Callable):
        self.encode = encode

    def __call__(self, element):
        sample, label = element
        return np.asarray(self.encode(sample)), np.int32(label)


class _AugmentEncode(_Encode):
    """``(sample, label), rng -> (encode(augment(sample, rng)), int32 label)``."""

    def __init__(self, encode: Callable, augment: Callable):
        super().__init__(encode)
        self.augment = augment

    def __call__(self, element, rng):
        sample, label = element
        return np.asarray(self.encode(self.augment(sample, rng))), np.int32(label)


def _int(name: str, v, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
    return int(v)


class Pipeline:
    """Training batches ``(x[b, ...], y[b] int32)`` of a random-access source.

    Args:
      source: ``len(source)`` and ``source[i] -> (sample, label)`` (:func:`spikejax.datasets.load`).
      batch_size: global batch ``B`` (divisible by ``shard_count``); each process gets ``b = B / P``.
      encode: ``sample -> array`` of one fixed shape (e.g.
        :class:`~spikejax.datasets.transforms.EventFrames`).
      augment: optional ``(sample, rng) -> sample`` applied before ``encode``.
      seed: shuffling and augmentation seed.
      shard_index, shard_count: this process and the number of processes (default
        ``jax.process_index()``, ``jax.process_count()``).
      num_workers: grain worker processes for :meth:`iterate` (0: read in this process with
        ``num_threads`` threads).
      prefetch: batches buffered ahead per worker.
      shuffle: shuffle (and reshuffle each epoch); False keeps the source order.
    """

    def __init__(self, source, *, batch_size: int, encode: Callable, augment: Callable | None = None,
                 seed: int = 0, shard_index: int | None = None, shard_count: int | None = None,
                 num_workers: int = 0, num_threads: int = 4, prefetch: int = 2, shuffle: bool = True):
        grain = _grain()
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise TypeError(f"source: expected a random-access source (len, [i]), got {type(source).__name__}")
        if len(source) == 0:
            raise ValueError("source: the dataset is empty")
        if shard_index is None or shard_count is None:
            import jax

            shard_index = jax.process_index() if shard_index is None else shard_index
            shard_count = jax.process_count() if shard_count is None else shard_count
        self.batch_size = _int("batch_size", batch_size)
        self.shard_count = _int("shard_count", shard_count)
        self.shard_index = _int("shard_index", shard_index, 0)
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index: expected < shard_count={self.shard_count}, got {self.shard_index}")
        if self.batch_size % self.shard_count:
            raise ValueError(f"batch_size: {batch_size} is not divisible by shard_count={self.shard_count}")
        self.local_batch_size = self.batch_size // self.shard_count
        self.seed, self.source = int(seed), source
        self.num_workers = _int("num_workers", num_workers, 0)
        self.num_threads = _int("num_threads", num_threads)
        self.prefetch = _int("prefetch", prefetch)
        ds = grain.MapDataset.source(source).seed(self.seed)
        if shuffle:
            ds = ds.shuffle()
        ds = ds.repeat()
        ds = ds.random_map(_AugmentEncode(encode, augment)) if augment is not None else ds.map(_Encode(encode))
        self.dataset = ds.batch(self.local_batch_size)[self.shard_index::self.shard_count]
        self._it: Iterator | None = None
        self._next_step: int | None = None

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's rows of the global batch of ``step`` (random access)."""
        return self.dataset[_int("step", step, 0)]

    def iterate(self, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of steps ``start_step, start_step + 1, ...`` read ahead by grain (workers or threads)."""
        grain = _grain()
        start = _int("start_step", start_step, 0)
        it = self.dataset[start:].to_iter_dataset(
            grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.prefetch * self.local_batch_size))
        if self.num_workers:
            _absl_flags_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers,
                                                             per_worker_buffer_size=self.prefetch),
                                worker_init_fn=functools.partial(_exit_with_parent, os.getpid()))
        return iter(it)

    def train_batch(self, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`spikejax.train.loop.Task.train_batch`: the batch of ``step``, streamed through
        :meth:`iterate` while steps are consecutive (a jump restarts the stream there)."""
        if int(seed) != self.seed or int(batch_size) != self.batch_size:
            raise ValueError(f"seed, batch_size: this pipeline was built for seed={self.seed}, "
                             f"batch_size={self.batch_size}; got {seed}, {batch_size}")
        if self._it is None or step != self._next_step:
            self._it = self.iterate(step)
        self._next_step = step + 1
        return next(self._it)


def eval_batches(source, batch_size: int, encode: Callable, *, max_batches: int | None = None
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``max_batches`` (default all) batches ``(x, y, mask)`` of ``source`` in order; the
    last is padded by wrapping around and weighted out by ``mask`` (float32 0/1)."""
    grain = _grain()
    n = len(source)
    if n == 0:
        raise ValueError("source: the evaluation set is empty")
    batch_size = _int("batch_size", batch_size)
    num = -(-n // batch_size) if max_batches is None else min(-(-n // batch_size), _int("max_batches", max_batches))
    ds = grain.MapDataset.source(source).map(_Encode(encode))
    out = []
    for b in range(num):
        idx = np.arange(b * batch_size, (b + 1) * batch_size)
        rows = [ds[int(i % n)] for i in idx]
        out.append((np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), (idx < n).astype(np.float32)))
    return out


def device_prefetch(batches, sharding=None, size: int = 2) -> Iterator[Any]:
    """Yield the batches of an iterable already transferred with ``jax.device_put(batch, sharding)``,
    keeping ``size`` of them in flight (the host->device copy overlaps the previous step)."""
    import jax

    queue: collections.deque = collections.deque()
    it = iter(batches)
    for b in itertools.islice(it, size):
        queue.append(jax.device_put(b, sharding))
    while queue:
        yield queue.popleft()
        for b in itertools.islice(it, 1):
            queue.append(jax.device_put(b, sharding))
