"""Datasets and the input pipeline.

    from spikejax import datasets
    src = datasets.load("nmnist", "data/NMNIST", "train")        # tonic events, src[i] -> (events, label)
    enc = datasets.EventFrames(src.sensor_size, time_bins=16)    # -> float32 [T, H, W, P]
    pipe = datasets.Pipeline(src, batch_size=64, encode=enc, seed=0)
    x, y = pipe.batch(step)                                     # a pure function of (seed, step)

- :mod:`~spikejax.datasets.sources`: :func:`load`, :func:`available`, :func:`info` over the
  published on-disk layouts (tonic's readers for event sets);
- :mod:`~spikejax.datasets.randman`: the locally generated random-manifold spike-timing task;
- :mod:`~spikejax.datasets.transforms`: frames / voxel grids / time surfaces (tonic) and augmentations;
- :mod:`~spikejax.datasets.frames`: :func:`to_frame`, tonic's ``ToFrame`` binning in JAX;
- :mod:`~spikejax.datasets.pipeline`: the grain :class:`Pipeline`.
"""

from spikejax.datasets.frames import pad_events, to_frame
from spikejax.datasets.pipeline import Pipeline, device_prefetch, eval_batches
from spikejax.datasets.randman import RandmanConfig, randman
from spikejax.datasets.sources import (
    ArraySource,
    DatasetInfo,
    DatasetNotFoundError,
    EventSource,
    available,
    info,
    load,
    read_idx,
)
from spikejax.datasets.transforms import (
    EventAugment,
    EventFrames,
    ImageAugment,
    image_to_float,
    time_surface,
    voxel_grid,
)

__all__ = [
    "ArraySource",
    "DatasetInfo",
    "DatasetNotFoundError",
    "EventAugment",
    "EventFrames",
    "EventSource",
    "ImageAugment",
    "Pipeline",
    "RandmanConfig",
    "available",
    "device_prefetch",
    "eval_batches",
    "image_to_float",
    "info",
    "load",
    "pad_events",
    "randman",
    "read_idx",
    "time_surface",
    "to_frame",
    "voxel_grid",
]
