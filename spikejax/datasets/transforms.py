"""Per-sample transforms for the input pipeline, over :mod:`tonic`'s event transforms.

- Encoders (sample -> fixed-shape ``float32`` array the models take):
  :class:`EventFrames` (tonic ``ToFrame``, cropped / zero-padded to ``T`` bins, channels last),
  :func:`voxel_grid` and :func:`time_surface` (tonic ``ToVoxelGrid`` / ``ToTimesurface``),
  :func:`image_to_float` (``uint8 [H, W, C]`` -> ``[0, 1]``).
- Augmentations ``(sample, rng) -> sample`` (``rng`` a ``numpy.random.Generator``; grain's
  ``random_map`` passes one derived from the pipeline seed and the element index, so augmented
  batches stay a pure function of ``(seed, step)``): :class:`ImageAugment` (random crop with
  zero padding, horizontal flip) and :class:`EventAugment` (tonic's ``DropEvent`` and
  ``SpatialJitter``, run under a NumPy global state seeded from ``rng``: tonic draws from
  ``numpy.random``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

__all__ = ["EventFrames", "voxel_grid", "time_surface", "image_to_float", "ImageAugment", "EventAugment",
           "seeded"]


def _tonic_transforms():
    try:
        import tonic.transforms as tt
    except ImportError as e:
        raise ImportError("event transforms need tonic: pip install 'spikejax[events]'") from e
    return tt


def _fit_time(frames: np.ndarray, T: int) -> np.ndarray:
    """Crop or zero-pad the leading (time) axis to ``T``."""
    if len(frames) >= T:
        return frames[:T]
    return np.concatenate([frames, np.zeros((T - len(frames), *frames.shape[1:]), frames.dtype)])


@dataclasses.dataclass(frozen=True)
class EventFrames:
    """Events -> ``float32`` frames with channels last, exactly ``time_bins`` long.

    ``time_window=None``: tonic ``ToFrame(n_time_bins=time_bins)`` (every recording stretched over
    ``T`` bins); otherwise ``ToFrame(time_window=...)`` cropped / zero-padded to ``T`` bins (a fixed
    bin width in µs, the usual choice for SHD: 1 s / 100 bins). ``downsample`` (< 1) scales the
    spatial coordinates with tonic's ``Downsample`` first (e.g. 0.2: SHD's 700 channels -> 140).

    Output: ``[T, H, W, P]`` for 2-D sensors, ``[T, W·P]`` for 1-D ones (``H == 1``, SHD / SSC).
    """

    sensor_size: tuple[int, int, int]
    time_bins: int
    time_window: float | None = None
    downsample: float | None = None

    def __post_init__(self):
        if isinstance(self.time_bins, bool) or not isinstance(self.time_bins, int) or self.time_bins < 1:
            raise ValueError(f"time_bins: expected a positive integer, got {self.time_bins!r}")
        if len(tuple(self.sensor_size)) != 3:
            raise ValueError(f"sensor_size: expected tonic's (W, H, P), got {self.sensor_size!r}")
        if self.downsample is not None and not 0 < self.downsample <= 1:
            raise ValueError(f"downsample: expected a factor in (0, 1], got {self.downsample}")

    @property
    def out_sensor_size(self) -> tuple[int, int, int]:
        W, H, P = self.sensor_size
        if self.downsample is None:
            return (W, H, P)
        f = self.downsample
        return (int(np.ceil(W * f)), 1 if H == 1 else int(np.ceil(H * f)), P)

    @property
    def shape(self) -> tuple[int, ...]:
        W, H, P = self.out_sensor_size
        return (self.time_bins, W * P) if H == 1 else (self.time_bins, H, W, P)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        tt = _tonic_transforms()
        if self.downsample is not None:
            factor = (self.downsample, 1.0) if "y" in events.dtype.names else self.downsample
            events = tt.Downsample(spatial_factor=factor)(events)
        size = self.out_sensor_size
        if len(events) == 0:
            return np.zeros(self.shape, np.float32)
        if self.time_window is None:
            frames = tt.ToFrame(size, n_time_bins=self.time_bins)(events)
        else:
            frames = tt.ToFrame(size, time_window=self.time_window)(events)
        frames = _fit_time(frames.astype(np.float32), self.time_bins)  # [T, P, H, W] or [T, P, W]
        if frames.ndim == 3:
            return np.ascontiguousarray(frames.transpose(0, 2, 1).reshape(self.time_bins, -1))
        return np.ascontiguousarray(frames.transpose(0, 2, 3, 1))


def voxel_grid(sensor_size: tuple[int, int, int], n_time_bins: int) -> Callable[[np.ndarray], np.ndarray]:
    """tonic ``ToVoxelGrid``: events -> ``float [T, 1, H, W]`` (bilinear in time, polarity signed)."""
    return _tonic_transforms().ToVoxelGrid(sensor_size=tuple(sensor_size), n_time_bins=n_time_bins)


def time_surface(sensor_size: tuple[int, int, int], dt: float, tau: float) -> Callable[[np.ndarray], np.ndarray]:
    """tonic ``ToTimesurface``: events -> ``float [⌈t_max / dt⌉, P, H, W]`` exponential time surfaces."""
    return _tonic_transforms().ToTimesurface(sensor_size=tuple(sensor_size), dt=dt, tau=tau)


def image_to_float(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, C]`` -> ``float32 [H, W, C]`` in ``[0, 1]``."""
    return np.asarray(image, np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class ImageAugment:
    """Random crop of ``[H, W, C]`` after ``padding`` zero pixels on each side, then a horizontal flip
    with probability 1/2 (``flip``): the CIFAR recipe."""

    padding: int = 4
    flip: bool = True

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        H, W = image.shape[:2]
        if self.padding:
            p = self.padding
            padded = np.pad(image, ((p, p), (p, p)) + ((0, 0),) * (image.ndim - 2))
            i, j = rng.integers(0, 2 * p + 1, 2)
            image = padded[i:i + H, j:j + W]
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)


def seeded(fn: Callable, rng: np.random.Generator, *args):
    """``fn(*args)`` with NumPy's legacy global generator seeded from ``rng`` (state restored after)."""
    saved = np.random.get_state()
    np.random.seed(int(rng.integers(2**32)))
    try:
        return fn(*args)
    finally:
        np.random.set_state(saved)


@dataclasses.dataclass(frozen=True)
class EventAugment:
    """tonic's ``DropEvent(p=drop)`` then ``SpatialJitter(var_x=var_y=jitter, clip_outliers=True)`` on
    2-D sensors (skipped when ``drop`` / ``jitter`` are 0), seeded from the element's ``rng``."""

    sensor_size: tuple[int, int, int]
    drop: float = 0.1
    jitter: float = 0.0

    def __call__(self, events: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tt = _tonic_transforms()
        steps = []
        if self.drop:
            steps.append(tt.DropEvent(p=self.drop))
        if self.jitter and "y" in events.dtype.names:
            steps.append(tt.SpatialJitter(sensor_size=tuple(self.sensor_size), var_x=self.jitter,
                                          var_y=self.jitter, clip_outliers=True))
        return seeded(tt.Compose(steps), rng, events) if steps else events
