"""Plots of spiking runs (matplotlib; ``pip install 'spikejax[plot]'``): spike rasters, per-layer
firing-rate histograms, membrane traces, event frames and training curves.

Each function takes NumPy/JAX arrays, draws into ``ax`` (a new figure when None) and returns the
figure; :func:`save` writes it as PNG with the Agg backend (no display needed). Shapes are
time-major like the rest of spikejax: ``spikes[T, N]``, ``v[T, N]``, ``frames[T, H, W, P]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["raster", "firing_rates", "membrane", "event_frames", "training_curves", "save"]


def _plt():
    try:
        import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg itself
    except ImportError as e:
        raise ImportError("spikejax.plot needs matplotlib: pip install 'spikejax[plot]'") from e
    return plt


def _axes(ax, figsize):
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _array(name: str, x, ndim: int | tuple[int, ...]) -> np.ndarray:
    a = np.asarray(x)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise ValueError(f"{name}: expected rank {' or '.join(map(str, dims))}, got shape {a.shape}")
    return a


def raster(spikes, *, dt: float = 1.0, ax=None, title: str | None = None, color: str = "k", unit: str = "step"):
    """Spike raster of ``spikes[T, N]`` (nonzero = a spike of neuron ``n`` at step ``t``; ``dt`` scales
    the time axis). Also accepts a tonic 1-D event array (fields ``t``, ``x``): one dot per event."""
    fig, ax = _axes(ax, (6, 3))
    s = np.asarray(spikes)
    if s.dtype.names is not None:
        t, n = s["t"] * dt, s["x"]
    else:
        s = _array("spikes", s, 2)
        t, n = np.nonzero(s)
        t = t * dt
    ax.scatter(t, n, s=8 if len(t) < 5000 else 1, c=color, marker="|" if len(t) < 5000 else ".", linewidths=1.0)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("neuron")
    if title:
        ax.set_title(title)
    return fig


def firing_rates(layers: Mapping[str, object], *, bins: int = 30, ax=None,
                 title: str | None = "firing rate per neuron"):
    """Histograms of the per-neuron firing rate (spikes per step) of each layer: ``{name: spikes[T, ..., N]}``
    (rates averaged over every axis but the last) or ``{name: rates[N]}``."""
    fig, ax = _axes(ax, (6, 3))
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError("layers: expected a non-empty mapping of layer name -> spikes or rates")
    for name, s in layers.items():
        a = np.asarray(s, np.float64)
        rates = a.reshape(-1, a.shape[-1]).mean(0) if a.ndim > 1 else a
        ax.hist(rates, bins=bins, range=(0, max(1e-6, float(rates.max(initial=0)))), alpha=0.6, label=name)
    ax.set_xlabel("firing rate (spikes / step)")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return fig


def membrane(v, *, threshold: float | None = None, spikes=None, neurons: Sequence[int] | None = None, ax=None,
             title: str | None = None, dt: float = 1.0):
    """Membrane traces ``v[T, N]`` of (up to 8, or the given) neurons, the threshold as a dashed line
    and spikes (``spikes[T, N]``) as ticks."""
    fig, ax = _axes(ax, (6, 3))
    v = _array("v", v, (1, 2))
    v = v[:, None] if v.ndim == 1 else v
    idx = list(range(min(8, v.shape[1]))) if neurons is None else list(neurons)
    t = np.arange(v.shape[0]) * dt
    for i in idx:
        line, = ax.plot(t, v[:, i], lw=1, label=f"n{i}")
        if spikes is not None:
            st = np.nonzero(np.asarray(spikes)[:, i])[0]
            ax.plot(st * dt, np.full(len(st), v[:, i].max()), "|", color=line.get_color(), ms=8)
    if threshold is not None:
        ax.axhline(threshold, ls="--", c="gray", lw=0.8)
    ax.set_xlabel("time step" if dt == 1 else "time")
    ax.set_ylabel("membrane")
    if title:
        ax.set_title(title)
    return fig


def event_frames(frames, *, max_frames: int = 8, title: str | None = None):
    """Frames ``[T, H, W, P]`` (or ``[T, H, W]``) side by side; two polarities as red (ON) / blue (OFF)."""
    plt = _plt()
    f = _array("frames", frames, (3, 4)).astype(np.float64)
    f = f[..., None] if f.ndim == 3 else f
    n = min(max_frames, len(f))
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.8), squeeze=False)
    scale = max(float(f[:n].max()), 1e-9)
    for i, ax in enumerate(axes[0]):
        img = np.zeros((*f.shape[1:3], 3))
        if f.shape[-1] >= 2:
            img[..., 0], img[..., 2] = f[i, ..., 1] / scale, f[i, ..., 0] / scale
        else:
            img[...] = (f[i, ..., 0] / scale)[..., None]
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"t={i}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def training_curves(metrics, *, ax=None, keys: Sequence[str] = ("loss", "val_loss", "accuracy", "val_accuracy")):
    """Loss (left axis) and accuracy (right axis) over steps from a run's ``metrics.jsonl`` (path) or
    its records (a list of dicts with ``step``)."""
    if isinstance(metrics, str | os.PathLike):
        with open(metrics) as fh:
            records = [json.loads(line) for line in fh if line.strip()]
    else:
        records = list(metrics)
    fig, ax = _axes(ax, (6, 3.5))
    acc_ax = None
    for i, k in enumerate(keys):
        color = f"C{i}"
        pts = [(r["step"], r[k]) for r in records if k in r and isinstance(r[k], int | float)]
        if not pts:
            continue
        x, y = zip(*pts, strict=True)
        if "acc" in k:
            acc_ax = acc_ax or ax.twinx()
            acc_ax.plot(x, y, "--" if k.startswith("val") else ":", color=color, label=k)
            acc_ax.set_ylabel("accuracy")
        else:
            ax.plot(x, y, "-o" if k.startswith("val") else "-", ms=3, color=color, label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles = ax.get_legend_handles_labels()
    if acc_ax is not None:
        h2 = acc_ax.get_legend_handles_labels()
        handles = (handles[0] + h2[0], handles[1] + h2[1])
    if handles[0]:
        ax.legend(*handles, fontsize=7)
    return fig


def save(fig, path: str | os.PathLike, *, dpi: int = 100) -> str:
    """Write ``fig`` as PNG to ``path`` (directories created) and close it; returns the path."""
    plt = _plt()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return os.fspath(path)
