"""Event binning on the device: :func:`to_frame` is tonic's ``ToFrame`` (``n_time_bins`` or
``time_window`` slicing) as a jit-able JAX function over fixed-size (padded) event arrays, and
:func:`pad_events` makes those arrays from tonic's variable-length structured arrays.

Binning (equal to ``tonic.transforms.ToFrame`` for sorted integer timestamps): with ``t0`` the first
and ``t1`` the last valid timestamp,

- ``n_time_bins=T``: window ``w = (t1 - t0) // T``; event ``e`` goes to bin ``(t_e - t0) // w`` if that
  is ``< T`` (so events in the remainder past ``t0 + T·w`` are dropped, as tonic drops them; ``w = 0``
  gives empty frames);
- ``time_window=w``: bin ``(t_e - t0) // w`` among the ``n = max(⌊(t1 - t0 - w) / w⌋ + 1, 1)`` complete
  windows; the result has ``num_frames`` frames (tonic's ``n`` frames cropped or zero-padded).

``frames[bin, p, y, x] += 1`` (``[T, P, H, W]``, tonic's layout; ``layout="THWP"`` gives channels last
for the NHWC models; 1-D sensors such as SHD's give ``[T, P, W]`` / ``[T, W, P]``).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["to_frame", "pad_events"]

Array = jax.Array


def pad_events(events: np.ndarray, max_events: int, *, fields: tuple[str, ...] | None = None):
    """``({field: int32 [max_events]}, valid[max_events])`` from a tonic structured array: the first
    ``max_events`` events (a longer stream is cropped), zero-padded, ``valid`` marking real events."""
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise TypeError(f"events: expected a structured numpy array (tonic events), got {type(events).__name__}")
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise ValueError(f"max_events: expected a positive integer, got {max_events!r}")
    fields = events.dtype.names if fields is None else fields
    n = min(len(events), max_events)
    out = {}
    for f in fields:
        col = np.zeros(max_events, np.int32)
        col[:n] = events[f][:n]
        out[f] = col
    valid = np.zeros(max_events, bool)
    valid[:n] = True
    return out, valid


def _as_columns(events) -> dict[str, Array]:
    if isinstance(events, np.ndarray) and events.dtype.names is not None:
        return {f: jnp.asarray(events[f].astype(np.int64) if events[f].dtype == bool else events[f])
                for f in events.dtype.names}
    if isinstance(events, Mapping):
        return {k: jnp.asarray(v) for k, v in events.items()}
    raise TypeError(f"events: expected a tonic structured array or a mapping of field -> array, "
                    f"got {type(events).__name__}")


def to_frame(events, sensor_size: tuple[int, int, int], *, n_time_bins: int | None = None,
             time_window: int | None = None, num_frames: int | None = None, valid: Array | None = None,
             layout: str = "TPHW", dtype=jnp.float32) -> Array:
    """Event counts per time bin, pixel and polarity (see the module docs for the binning).

    Args:
      events: fields ``x``, ``t``, ``p`` (and ``y`` for 2-D sensors) as a tonic structured array or a
        mapping of equal-length arrays ``[N]`` (integer, sorted by ``t``); may be traced.
      sensor_size: tonic's ``(W, H, P)``.
      n_time_bins: number of frames ``T`` (exactly one of ``n_time_bins`` / ``time_window``).
      time_window: window length in the units of ``t`` (µs); then ``num_frames`` is required.
      num_frames: frames returned with ``time_window`` (crop / zero-pad).
      valid: ``bool [N]`` marking real events of a padded array (:func:`pad_events`); default all.
      layout: ``"TPHW"`` (tonic's) or ``"THWP"`` (channels last).
      dtype: dtype of the counts.

    Returns:
      ``frames[T, P, H, W]`` (``[T, P, W]`` without ``y``), or the ``THWP`` transpose.
    """
    if (n_time_bins is None) == (time_window is None):
        raise ValueError("n_time_bins, time_window: give exactly one of them")
    if layout not in ("TPHW", "THWP"):
        raise ValueError(f"layout: expected 'TPHW' or 'THWP', got {layout!r}")
    if len(tuple(sensor_size)) != 3:
        raise ValueError(f"sensor_size: expected tonic's (W, H, P), got {sensor_size!r}")
    W, H, P = (int(v) for v in sensor_size)
    cols = _as_columns(events)
    missing = [f for f in ("x", "t", "p") if f not in cols]
    if missing:
        raise ValueError(f"events: missing fields {missing}; got {sorted(cols)}")
    has_y = "y" in cols and H > 1
    t = cols["t"]
    if t.ndim != 1:
        raise ValueError(f"events: expected 1-D fields [N], got t of shape {t.shape}")
    valid = jnp.ones(t.shape, bool) if valid is None else jnp.asarray(valid, bool)
    if valid.shape != t.shape:
        raise ValueError(f"valid: expected shape {t.shape}, got {valid.shape}")
    big = jnp.iinfo(t.dtype).max if jnp.issubdtype(t.dtype, jnp.integer) else jnp.inf
    t0 = jnp.min(jnp.where(valid, t, big))
    t1 = jnp.max(jnp.where(valid, t, -big))
    if n_time_bins is not None:
        if isinstance(n_time_bins, bool) or not isinstance(n_time_bins, int) or n_time_bins < 1:
            raise ValueError(f"n_time_bins: expected a positive integer, got {n_time_bins!r}")
        T = n_time_bins
        w = (t1 - t0) // T
        limit = jnp.where(w > 0, T, 0)
    else:
        if not time_window or time_window <= 0:
            raise ValueError(f"time_window: expected > 0, got {time_window!r}")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames: expected a positive integer with time_window, got {num_frames!r}")
        T = num_frames
        w = jnp.asarray(time_window, t.dtype)
        n_slices = jnp.maximum((t1 - t0 - w) // w + 1, 1)
        limit = jnp.minimum(n_slices, T)
    b = (t - t0) // jnp.maximum(w, 1)
    keep = valid & (b < limit) & (b >= 0)
    b = jnp.where(keep, b, T).astype(jnp.int32)  # out of range: dropped by the scatter
    p = cols["p"].astype(jnp.int32) if P > 1 else jnp.zeros_like(b)  # tonic: single polarity -> 0
    x = cols["x"].astype(jnp.int32)
    if has_y:
        frames = jnp.zeros((T, P, H, W), dtype).at[b, p, cols["y"].astype(jnp.int32), x].add(
            keep.astype(dtype), mode="drop")
        return frames if layout == "TPHW" else frames.transpose(0, 2, 3, 1)
    frames = jnp.zeros((T, P, W), dtype).at[b, p, x].add(keep.astype(dtype), mode="drop")
    return frames if layout == "TPHW" else frames.transpose(0, 2, 1)
