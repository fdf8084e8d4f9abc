"""Training tasks on the datasets of :mod:`spikejax.datasets` (the grain pipeline in the loop):

    spikejax train vision --dataset nmnist --data-dir data/NMNIST --model spikformer
    spikejax train audio --dataset shd --data-dir data/hsd --neuron alif
    spikejax train temporal --dataset randman --neuron alif          # generated, no download

- ``vision``: image sets (``uint8 [H, W, C]`` -> ``[0, 1]``, random crop + flip with ``--augment``)
  and event sets (tonic ``ToFrame`` over ``T = --time-steps`` bins -> spikes ``[T, B, H, W, P]``)
  with a zoo model (``spikejax.models.create(--model, ...)``; ``spikformer`` takes the
  ``--d-model/--layers/--heads/--patch-size`` flags, SpikingJelly-style zoo builders get ``T``, ``num_classes``,
  ``in_channels``).
- ``audio`` (SHD / SSC) and ``temporal`` (randman): events binned into ``[T, B, C]`` (fixed bins of
  ``--bin-us`` µs) and a :class:`SequenceClassifier`: ``--layers`` hidden layers of ``--d-model``
  spiking neurons (``--neuron lif``, ``alif``, ``adlif``, ``rlif``, ``radlif``) on ``nnx.Linear`` synapses and
  a linear readout averaged over time; ``adlif`` (learnable adaptive LIF), ``rlif`` / ``radlif``
  (recurrent, :class:`spikejax.nn.RecurrentSpiking`) are the recurrent / adaptive alternatives.

Batches are a pure function of ``(seed, step)`` (:class:`spikejax.datasets.Pipeline`), so
``--resume`` continues exactly. After training the run directory gets ``raster.png`` (input and
hidden spikes of one test sample), ``firing_rates.png``, ``readout.png`` (the readout potential
over time), ``frames.png`` for event vision sets and ``curves.png`` (loss / accuracy).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax import datasets as D
from spikejax.train import losses

__all__ = ["SequenceClassifierConfig", "SequenceClassifier", "ZooModelConfig", "sequence_task", "vision_data_task",
           "SEQUENCE_NEURONS", "RunPlots", "json_fingerprint"]

SEQUENCE_NEURONS = ("lif", "alif", "adlif", "rlif", "radlif")
"""Hidden neurons of :class:`SequenceClassifier`: ``lif`` / ``alif`` (:class:`spikejax.nn.LIF` /
:class:`~spikejax.nn.ALIF`, feed-forward), ``adlif`` (:class:`spikejax.nn.AdLIF`, learnable per-channel
α, β, a, b), and the recurrent ``rlif`` / ``radlif`` (:class:`spikejax.nn.RecurrentSpiking` over a
LIF, i.e. ``CubaLIF(alpha=0)``, or over the learnable adLIF)."""


# --- models ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SequenceClassifierConfig:
    """Config of :class:`SequenceClassifier`: ``num_inputs`` (C), ``num_classes``, ``hidden`` (width),
    ``num_layers``, ``time_steps`` (T of the input), ``neuron`` (``"lif"`` / ``"alif"``) and its
    ``neuron_kwargs``, ``backend``."""

    num_inputs: int
    num_classes: int
    hidden: int = 128
    num_layers: int = 1
    time_steps: int = 25
    neuron: str = "lif"
    neuron_kwargs: dict = dataclasses.field(default_factory=dict)
    backend: str = "xla"

    def __post_init__(self):
        for name in ("num_inputs", "num_classes", "hidden", "num_layers", "time_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if self.neuron not in SEQUENCE_NEURONS:
            raise ValueError(f"neuron: expected one of {SEQUENCE_NEURONS}, got {self.neuron!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequenceClassifierConfig:
        return cls(**d)

    def build(self, rngs: nnx.Rngs | None = None, *, seed: int = 0) -> SequenceClassifier:
        return SequenceClassifier(self, rngs=rngs if rngs is not None else nnx.Rngs(seed))


def _hidden_neuron(config: SequenceClassifierConfig, rngs: nnx.Rngs):
    from spikejax.nn import AdLIF, CubaLIF, RecurrentSpiking, make_neuron

    F, kw = config.hidden, dict(config.neuron_kwargs)
    if config.neuron in ("lif", "alif"):
        return make_neuron(config.neuron, num_channels=F, backend=config.backend, **kw)
    if config.neuron in ("adlif", "radlif"):
        cell = AdLIF(num_channels=F, learn=("alpha", "beta", "a", "b"), backend=config.backend, **kw)
    else:  # rlif: a LIF is the current-based LIF without a synaptic current
        cell = CubaLIF(alpha=0.0, num_channels=F, backend=config.backend, **kw)
    return cell if config.neuron == "adlif" else RecurrentSpiking(cell, F, rngs=rngs)


class SequenceClassifier(nnx.Module):
    """``x[T, B, C]`` -> ``num_layers`` x (``nnx.Linear`` -> spiking neuron ``[T, B, hidden]``, see
    :data:`SEQUENCE_NEURONS`) ->
    readout ``nnx.Linear`` -> mean over T -> ``logits[B, num_classes]``."""

    def __init__(self, config: SequenceClassifierConfig, *, rngs: nnx.Rngs):

        self.config = config
        widths = [config.num_inputs] + [config.hidden] * config.num_layers
        self.synapses = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)])
        self.neurons = nnx.List([_hidden_neuron(config, rngs) for _ in range(config.num_layers)])
        self.readout = nnx.Linear(config.hidden, config.num_classes, rngs=rngs)

    def forward(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """``(readout[T, B, classes], [spikes[T, B, hidden] per layer])``."""
        if x.ndim != 3 or x.shape[-1] != self.config.num_inputs:
            raise ValueError(f"x: expected [T, B, {self.config.num_inputs}], got shape {tuple(x.shape)}")
        spikes = []
        h = x
        for syn, neuron in zip(self.synapses, self.neurons, strict=True):
            h = neuron(syn(h))
            spikes.append(h)
        return self.readout(h), spikes

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)[0].mean(axis=0)


@dataclasses.dataclass(frozen=True)
class ZooModelConfig:
    """A :mod:`spikejax.models` zoo model by ``name`` with builder ``kwargs``; ``time_steps`` is T."""

    name: str
    kwargs: dict
    time_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs), "time_steps": self.time_steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ZooModelConfig:
        return cls(**d)

    def build(self, rngs: nnx.Rngs | None = None, *, seed: int = 0) -> nnx.Module:
        from spikejax import models

        return models.create(self.name, rngs=rngs, seed=seed, **self.kwargs)


def _zoo_config(model: str, *, image_size: int, in_channels: int, num_classes: int, time_steps: int, d_model: int,
                layers: int, heads: int, patch_size: int, neuron: str, neuron_kwargs: dict,
                backend: str) -> ZooModelConfig:
    from spikejax import models

    builder = models.get_builder(model)
    if model == "spikformer":
        if image_size % patch_size:
            raise ValueError(f"--patch-size: {patch_size} does not divide the {image_size}x{image_size} inputs")
        kw = dict(image_size=image_size, in_channels=in_channels, patch_size=patch_size, num_classes=num_classes,
                  d_model=d_model, num_heads=heads, num_layers=layers, time_steps=time_steps, neuron=neuron,
                  neuron_kwargs=dict(neuron_kwargs), backend=backend)
    else:
        names = inspect.signature(builder).parameters
        kw = {k: v for k, v in (("T", time_steps), ("num_classes", num_classes), ("in_channels", in_channels))
              if k in names}
    return ZooModelConfig(model, kw, time_steps)


# --- plots after training ----------------------------------------------------------------------------


class RunPlots:
    """The ``Task.after`` hook: writes the run's PNGs into the run directory ``out`` (none without one).

    ``sample``: one evaluation input (batch-major row), ``frames``: whether it is an event frame stack."""

    def __init__(self, sample: np.ndarray, frames: bool):
        self.sample, self.frames = sample, frames

    def __call__(self, model, say, out: str | None) -> dict:
        if out is None:
            return {}
        try:
            from spikejax import plot
        except ImportError:
            return {}
        written = []
        try:
            path = os.path.join(out, "metrics.jsonl")
            if os.path.exists(path):
                written.append(plot.save(plot.training_curves(path), os.path.join(out, "curves.png")))
            x = jnp.asarray(self.sample)
            if isinstance(model, SequenceClassifier):
                model.eval()
                readout, spikes = model.forward(x[:, None])
                plt = plot._plt()
                fig, axes = plt.subplots(1 + len(spikes), 1, figsize=(6, 2.2 * (1 + len(spikes))), sharex=True)
                plot.raster(np.asarray(x) > 0, ax=axes[0], title="input spikes")
                for i, s in enumerate(spikes):
                    plot.raster(np.asarray(s[:, 0]), ax=axes[i + 1], title=f"hidden layer {i} ({model.config.neuron})")
                written.append(plot.save(fig, os.path.join(out, "raster.png")))
                written.append(plot.save(plot.firing_rates({f"layer {i}": np.asarray(s) for i, s in enumerate(spikes)}),
                                         os.path.join(out, "firing_rates.png")))
                potential = np.cumsum(np.asarray(readout[:, 0]), 0) / np.arange(1, len(readout) + 1)[:, None]
                written.append(plot.save(plot.membrane(potential, title="readout (running mean of the logits)"),
                                         os.path.join(out, "readout.png")))
            elif self.frames:
                written.append(plot.save(plot.event_frames(np.asarray(self.sample)),
                                         os.path.join(out, "frames.png")))
        except Exception as e:  # plotting never fails a finished run
            say(f"plots: skipped ({type(e).__name__}: {e})")
            return {}
        say("plots: " + ", ".join(os.path.basename(p) for p in written))
        return {"plots": written}


# --- tasks --------------------------------------------------------------------------------------------


def _global_rows(pipe: D.Pipeline):
    """``Task.train_batch`` over a pipeline: this process's rows, placed in a global-sized batch at
    its offset (what :func:`spikejax.train.sharding.shard_batch` reads in a multi-process run)."""

    def train_batch(seed: int, step: int, batch_size: int):
        local = pipe.train_batch(seed, step, batch_size)
        if pipe.shard_count == 1:
            return local
        out = []
        for a in local:
            full = np.zeros((batch_size, *a.shape[1:]), a.dtype)
            full[pipe.shard_index * len(a):(pipe.shard_index + 1) * len(a)] = a
            out.append(full)
        return tuple(out)

    return train_batch


def _task(name: str, model_config, train_src, test_src, encode, *, augment, seed: int, batch_size: int,
          eval_batch_size: int, max_eval_batches: int | None, meta: dict, frames: bool, num_workers: int):
    from spikejax.train.loop import Task

    pipe = D.Pipeline(train_src, batch_size=batch_size, encode=encode, augment=augment, seed=seed,
                      num_workers=num_workers)
    evals = D.eval_batches(test_src, eval_batch_size, encode, max_batches=max_eval_batches)
    return Task(name=name, model_config=model_config, loss_fn=losses.classification_loss,
                eval_fn=losses.classification_eval, train_batch=_global_rows(pipe), eval_batches=evals,
                eval_summary=losses.classification_summary, units_per_batch=lambda b: b, unit="sample",
                data_meta=meta, after=RunPlots(evals[0][0][0], frames))


def sequence_task(dataset: str, *, data_dir: str | None = None, hidden: int = 128, layers: int = 1,
                  time_steps: int = 25, bin_us: float | None = None, downsample: float | None = None,
                  neuron: str = "lif", neuron_kwargs: dict | None = None, backend: str = "xla", seed: int = 0,
                  batch_size: int = 64, eval_batch_size: int = 100, max_eval_batches: int | None = None,
                  num_workers: int = 0, randman: dict | None = None):
    """``train audio`` (``shd`` / ``ssc`` from ``data_dir``) and ``train temporal`` (``randman``): events
    in ``time_steps`` bins of ``bin_us`` µs (default: the recording length / T: 1 s for SHD/SSC, the
    randman duration) -> :class:`SequenceClassifier`."""
    if dataset == "randman":
        cfg = D.RandmanConfig(**(randman or {}))
        train_src = D.randman(cfg, split="train")
        test_src = D.randman(cfg, split="test")
        default_bin = cfg.duration / time_steps
        meta = {"kind": "randman", "name": "randman", "fingerprint": json_fingerprint(dataclasses.asdict(cfg))}
    elif dataset in ("shd", "ssc"):
        train_src = D.load(dataset, data_dir, "train")
        test_src = D.load(dataset, data_dir, "test")
        default_bin = 1e6 / time_steps
        meta = {"kind": dataset, "name": dataset, "fingerprint": f"{dataset}:{len(train_src)}:{len(test_src)}"}
    else:
        raise ValueError(f"dataset: expected 'shd', 'ssc' or 'randman', got {dataset!r}")
    enc = D.EventFrames(train_src.sensor_size, time_bins=time_steps, time_window=bin_us or default_bin,
                        downsample=downsample)
    num_classes = D.info(dataset).num_classes if dataset != "randman" else cfg.num_classes
    model = SequenceClassifierConfig(num_inputs=enc.shape[-1], num_classes=num_classes, hidden=hidden,
                                     num_layers=layers, time_steps=time_steps, neuron=neuron,
                                     neuron_kwargs=dict(neuron_kwargs or {}), backend=backend)
    return _task("audio" if dataset != "randman" else "temporal", model, train_src, test_src, enc, augment=None,
                 seed=seed, batch_size=batch_size, eval_batch_size=eval_batch_size,
                 max_eval_batches=max_eval_batches, meta=meta, frames=False, num_workers=num_workers)


def json_fingerprint(d: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def vision_data_task(dataset: str, *, data_dir: str | None, model: str = "spikformer", d_model: int = 64,
                     layers: int = 1, heads: int = 4, patch_size: int = 2, time_steps: int = 4, neuron: str = "lif",
                     neuron_kwargs: dict | None = None, backend: str = "xla", seed: int = 0, batch_size: int = 32,
                     augment: bool = False, eval_batch_size: int = 100, max_eval_batches: int | None = None,
                     num_workers: int = 0):
    """``train vision --dataset NAME``: an image or event set with a zoo model."""
    info = D.info(dataset)
    if dataset in ("shd", "ssc", "randman"):
        raise ValueError(f"dataset: {dataset} is a 1-D spike set; use `spikejax train "
                         f"{'temporal' if dataset == 'randman' else 'audio'}`")
    train_src = D.load(dataset, data_dir, "train")
    test_split = "test" if "test" in info.splits else "train"
    test_src = D.load(dataset, data_dir, test_split)
    if info.kind == "events":
        W, H, P = info.sensor_size
        enc, aug = D.EventFrames(info.sensor_size, time_bins=time_steps), (
            D.EventAugment(info.sensor_size, drop=0.1, jitter=1.0) if augment else None)
        image_size, channels = (H if H == W else None), P
    else:
        H, W, C = info.sensor_size
        enc, aug = D.image_to_float, (D.ImageAugment(padding=max(1, H // 8)) if augment else None)
        image_size, channels = H, C
    if image_size is None:
        raise ValueError(f"dataset: {dataset} frames are {W}x{H}; the zoo's vision models take square inputs")
    cfg = _zoo_config(model, image_size=image_size, in_channels=channels, num_classes=info.num_classes,
                      time_steps=time_steps, d_model=d_model, layers=layers, heads=heads, patch_size=patch_size,
                      neuron=neuron,
                      neuron_kwargs=neuron_kwargs or {}, backend=backend)
    from spikejax.models.registry import min_image_size

    if model != "spikformer" and image_size < (side := min_image_size(model, **cfg.kwargs)):
        raise ValueError(f"--model: {model} needs images of at least {side}x{side}; {dataset} images are "
                         f"{image_size}x{image_size}")
    meta = {"kind": dataset, "name": dataset, "fingerprint": f"{dataset}:{len(train_src)}:{len(test_src)}",
            "test_split": test_split}
    return _task("vision", cfg, train_src, test_src, enc, augment=aug, seed=seed, batch_size=batch_size,
                 eval_batch_size=eval_batch_size, max_eval_batches=max_eval_batches, meta=meta,
                 frames=info.kind == "events", num_workers=num_workers)


# --- deprecated names --------------------------------------------------------------------------------


def __getattr__(name: str):
    """``TASK_DEFAULTS`` (deprecated): the defaults are :data:`spikejax.train.presets.PRESETS`."""
    if name != "TASK_DEFAULTS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from spikejax.train.presets import PRESETS

    warnings.warn("spikejax.train.tasks_data.TASK_DEFAULTS is deprecated; use spikejax.train.presets.PRESETS",
                  DeprecationWarning, stacklevel=2)
    return {task: dataclasses.asdict(PRESETS[task]["default"]) for task in ("temporal", "audio")}
