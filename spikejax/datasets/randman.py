"""Random manifolds (randman; Zenke & Vogels 2021, "The remarkable robustness of surrogate gradient
learning..."): a spike-timing classification task generated locally from a seed.

Each class ``c`` is a smooth random map from the unit cube ``[0, 1]^d`` (the intrinsic manifold) to
the firing times of ``U`` input units:

    f_cj(z) = Σ_i Σ_{k=1..K} a_cjik / k^α · sin(2π (k z_i b_cjik + φ_cjik)),   a, b, φ ~ U(0, 1),

rescaled per unit to ``[0, 1)`` over reference points of the cube, so unit ``j`` of a sample
``z ~ U([0, 1]^d)`` fires once at ``t_j = f_cj(z) · duration``. Larger ``α`` gives smoother manifolds
and ``d`` sets the intrinsic dimension; classes differ only in *when* each unit fires, so a
classifier must read spike timing (rates are identical: one spike per unit).

Samples are event arrays with tonic's SHD fields and dtype (``t`` µs, ``x`` unit, ``p`` = 1), sorted
by time; train and test draw different points of the same manifolds (the manifolds depend on
``seed`` only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from spikejax.datasets.sources import EventSource

__all__ = ["RandmanConfig", "randman", "EVENT_DTYPE"]

EVENT_DTYPE = np.dtype([("t", int), ("x", int), ("p", int)])
"""tonic's SHD event dtype (``tonic.datasets.SHD.dtype``)."""


@dataclasses.dataclass(frozen=True)
class RandmanConfig:
    """Generator settings: ``num_classes``, ``num_units`` (input channels U), ``dim_manifold`` (d),
    ``alpha`` (smoothness α), ``num_freqs`` (K), ``duration`` (µs; spike times lie in
    ``[0, duration)``), ``train_per_class`` / ``test_per_class`` samples, ``seed``."""

    num_classes: int = 10
    num_units: int = 50
    dim_manifold: int = 1
    alpha: float = 2.0
    num_freqs: int = 3
    duration: int = 100_000
    train_per_class: int = 100
    test_per_class: int = 40
    seed: int = 0

    def __post_init__(self):
        for name in ("num_classes", "num_units", "dim_manifold", "num_freqs", "duration", "train_per_class",
                     "test_per_class"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha: expected >= 0, got {self.alpha}")


def _manifold(params: np.ndarray, z: np.ndarray, alpha: float) -> np.ndarray:
    """``f(z)[N, U]`` for ``params[3, U, d, K]`` (a, b, φ) at points ``z[N, d]``."""
    a, b, phi = params
    k = np.arange(1, a.shape[-1] + 1, dtype=np.float64)
    arg = 2 * np.pi * (k * z[:, None, :, None] * b[None] + phi[None])  # [N, U, d, K]
    return (a[None] / k**alpha * np.sin(arg)).sum(axis=(2, 3))


def randman(config: RandmanConfig = RandmanConfig(), *, split: str = "train",
            transform: Callable | None = None) -> EventSource:
    """The ``split`` (``"train"`` / ``"test"``) of the randman task as an :class:`EventSource` of
    ``num_classes · {train,test}_per_class`` samples ordered class by class."""
    if split not in ("train", "test"):
        raise ValueError(f"split: randman has splits ('train', 'test'), got {split!r}")
    c = config
    rng = np.random.default_rng((c.seed, 0))
    params = rng.uniform(size=(c.num_classes, 3, c.num_units, c.dim_manifold, c.num_freqs))
    ref = rng.uniform(size=(4096, c.dim_manifold))
    per_class = c.train_per_class if split == "train" else c.test_per_class
    points = np.random.default_rng((c.seed, 1 if split == "train" else 2)).uniform(
        size=(c.num_classes, per_class, c.dim_manifold))
    samples, labels = [], []
    units = np.arange(c.num_units)
    for cls in range(c.num_classes):
        lo_hi = _manifold(params[cls], ref, c.alpha)
        lo, hi = lo_hi.min(0), lo_hi.max(0)
        f = (_manifold(params[cls], points[cls], c.alpha) - lo) / np.maximum(hi - lo, 1e-12)
        times = np.clip(np.floor(f * c.duration), 0, c.duration - 1).astype(np.int64)  # [per_class, U]
        for row in times:
            order = np.argsort(row, kind="stable")
            ev = np.empty(c.num_units, EVENT_DTYPE)
            ev["t"], ev["x"], ev["p"] = row[order], units[order], 1
            samples.append(ev)
            labels.append(cls)
    return EventSource("randman", samples, labels, lambda ev: ev.copy(), sensor_size=(c.num_units, 1, 1),
                       dtype=EVENT_DTYPE, transform=transform)
