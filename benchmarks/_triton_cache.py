"""A Triton cache manager that always has a directory, for the SpikingJelly peer rows.

On the benchmark machine Triton's ``knobs.cache.dir`` reads back empty inside the benchmark process
(even with ``TRITON_CACHE_DIR`` exported and the knob assigned), and ``FileCacheManager`` then
raises "Could not create or locate cache dir" while SpikingJelly's Triton LIF builds its launcher.
``TRITON_CACHE_MANAGER=benchmarks._triton_cache:WritableCacheManager`` swaps in this subclass,
which falls back to ``$SPIKEJAX_TRITON_CACHE`` (or a temp dir) when the knob is empty.
"""

from __future__ import annotations

import os
import tempfile

from triton.runtime.cache import FileCacheManager


class WritableCacheManager(FileCacheManager):
    def __init__(self, key, override=False, dump=False):
        try:
            super().__init__(key, override=override, dump=dump)
            return
        except RuntimeError:
            if override or dump:
                raise
        root = os.environ.get("SPIKEJAX_TRITON_CACHE") or os.path.join(tempfile.gettempdir(), "spikejax-triton")
        self.key = key
        self.cache_dir = os.path.join(root, key)
        self.lock_path = os.path.join(self.cache_dir, "lock")
        os.makedirs(self.cache_dir, exist_ok=True)
