"""Spiking VGG of SpikingJelly 2.0's zoo (``spiking_vgg11/13/16/19`` and their ``_bn`` variants).

torchvision's VGG with each ReLU replaced by a spiking neuron, over time:
``features`` (3x3 convs with bias [+ BN] + neuron, 2x2 max-pools at the ``"M"`` entries of the
configuration) -> ``avgpool`` (adaptive, 7x7) -> flatten (PyTorch's ``c, h, w`` order) ->
``classifier = [Linear(512·7·7, 4096), SN, Dropout, Linear(4096, 4096), SN, Dropout,
Linear(4096, classes)]`` -> mean over T. The module tree (``features.0``, ``features.1``, ...,
``classifier.6``) mirrors SpikingJelly's, so its ``state_dict`` loads by name
(:func:`spikejax.interop.load_spikingjelly`). Dropout masks are shared over time steps, as
SpikingJelly's multi-step ``layer.Dropout``.

Takes ``images[B, H, W, C]`` (repeated over ``T`` steps) or ``x[T, B, H, W, C]`` with
``H, W >= 32`` (five 2x2 pools) and returns ``logits[B, num_classes]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.models.config import VisionConfig, check_int
from spikejax.models.registry import register
from spikejax.models.resnet import to_time_major
from spikejax.models.sj_neurons import fire, neuron_spec, spikingjelly_keys
from spikejax.nn import temporal as tl
from spikejax.nn.neurons import SpikingNeuron
from spikejax.remat import remat_call, remat_modes

Array = jax.Array

__all__ = ["VGG_CONFIGS", "VGGConfig", "SpikingVGG"]

VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
_KAIMING_FAN_OUT = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # untruncated


@dataclasses.dataclass(frozen=True)
class VGGConfig(VisionConfig):
    """Spiking VGG hyper-parameters (SpikingJelly's ``SpikingVGG``).

    Attributes (and :class:`~spikejax.models.config.VisionConfig`'s ``num_classes``, ``T``,
    ``in_channels``, ``neuron``, ``dtype``, keyword-only):
      cfg: conv widths and ``"M"`` (2x2 max-pool) entries (:data:`VGG_CONFIGS`).
      batch_norm: BN after every conv (the ``_bn`` models).
      pool_size: the adaptive average pool's output side (7); classifier_hidden: the two hidden
        classifier widths (4096); dropout: their dropout rate (0.5). Smaller values give small
        test models (SpikingJelly's class fixes 7, 4096 and 0.5).
    """

    cfg: tuple[int | str, ...] = VGG_CONFIGS["A"]
    batch_norm: bool = False
    pool_size: int = 7
    classifier_hidden: int = 4096
    dropout: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        cfg = tuple(self.cfg)
        if not cfg or not any(v != "M" for v in cfg) or not all(
                v == "M" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in cfg):
            raise ValueError(f"cfg: expected conv widths (positive ints) and 'M' entries, got {self.cfg!r}")
        object.__setattr__(self, "cfg", cfg)
        for name in ("pool_size", "classifier_hidden"):
            check_int(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout}")

    @property
    def num_pools(self) -> int:
        return sum(v == "M" for v in self.cfg)

    @property
    def min_image_size(self) -> int:
        """The smallest image side the max-pools allow (``2^num_pools``; 32 for the standard VGGs)."""
        return 2 ** self.num_pools


class SpikingVGG(nnx.Module):
    """Spiking VGG: ``images[B, H, W, C]`` or ``x[T, B, H, W, C]`` -> ``logits[B, num_classes]``
    (see the module docstring for the layers)."""

    def __init__(self, config: VGGConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, VGGConfig):
            raise TypeError(f"config: expected a VGGConfig, got {type(config)!r}")
        self.config = config
        self.record_spikes = False
        layers: list[nnx.Module] = []
        cin = config.in_channels
        for v in config.cfg:
            if v == "M":
                layers.append(tl.MaxPool2d(2, stride=2))
                continue
            layers.append(tl.Conv2d(cin, v, 3, padding=1, kernel_init=_KAIMING_FAN_OUT, dtype=config.dtype, rngs=rngs))
            layers[-1].conv.bias[...] = jnp.zeros((v,), jnp.float32)
            if config.batch_norm:
                layers.append(tl.BatchNorm(v))
            layers.append(config.neuron.build())
            cin = v
        self.features = nnx.List(layers)
        self.avgpool = tl.AdaptiveAvgPool2d(config.pool_size)
        self.flatten = tl.Flatten(channels_first=True)
        hidden, p = config.classifier_hidden, config.pool_size

        def linear(din: int, dout: int) -> tl.Linear:
            layer = tl.Linear(din, dout, kernel_init=nnx.initializers.normal(0.01), dtype=config.dtype, rngs=rngs)
            layer.linear.bias[...] = jnp.zeros((dout,), jnp.float32)
            return layer

        self.classifier = nnx.List([
            linear(cin * p * p, hidden), config.neuron.build(),
            nnx.Dropout(config.dropout, broadcast_dims=(0,), rngs=rngs),
            linear(hidden, hidden), config.neuron.build(),
            nnx.Dropout(config.dropout, broadcast_dims=(0,), rngs=rngs),
            linear(hidden, config.num_classes)])

    def _run(self, layers: nnx.List, x: Array) -> Array:
        for layer in layers:
            x = fire(self, layer, x) if isinstance(layer, SpikingNeuron) else layer(x)
        return x

    def _features(self, x: Array) -> Array:
        """``features`` stage by stage (the runs of layers between max-pools), each through
        :func:`~spikejax.remat.remat_call` with ``config.remat`` (:func:`~spikejax.remat.remat_modes`)."""
        runs: list[list[nnx.Module] | tl.MaxPool2d] = []  # stages (lists of layers) and the pools between
        for layer in self.features:
            if isinstance(layer, tl.MaxPool2d):
                runs.append(layer)
            elif runs and isinstance(runs[-1], list):
                runs[-1].append(layer)
            else:
                runs.append([layer])
        modes = iter(remat_modes(self.config.remat, sum(isinstance(r, list) for r in runs)))
        for run in runs:
            x = remat_call(next(modes), nnx.List(run), x, method=self._run) if isinstance(run, list) else run(x)
        return x

    def spikingjelly_keys(self) -> dict:
        """SpikingJelly key -> variable entry (:func:`spikejax.models.sj_neurons.spikingjelly_keys`)."""
        return spikingjelly_keys(self)

    def __call__(self, x: Array) -> Array:
        x = to_time_major(x, self.config.T, self.config.in_channels, self.config.dtype)
        side = self.config.min_image_size
        if x.shape[2] < side or x.shape[3] < side:
            raise ValueError(f"x: this VGG has {self.config.num_pools} 2x2 max-pools, so images must be at least "
                             f"{side}x{side}; got shape {tuple(x.shape)}")
        x = self.flatten(self.avgpool(self._features(x)))
        return self._run(self.classifier, x).astype(jnp.float32).mean(axis=0)


def _vgg_builder(name: str, cfg_name: str, batch_norm: bool):
    def build(*, spiking_neuron: str | None = None, num_classes: int = 1000, T: int = 4, in_channels: int = 3,
              cfg: tuple[int | str, ...] = VGG_CONFIGS[cfg_name], pool_size: int = 7, classifier_hidden: int = 4096,
              dropout: float = 0.5, dtype: str = "float32", remat: str = "none", rngs: nnx.Rngs,
              **neuron_kwargs) -> SpikingVGG:
        spec = neuron_spec(spiking_neuron, neuron_kwargs, defaults={"detach_reset": True})
        config = VGGConfig(cfg=tuple(cfg), batch_norm=batch_norm, num_classes=num_classes, T=T,
                           in_channels=in_channels, pool_size=pool_size, classifier_hidden=classifier_hidden,
                           dropout=dropout, neuron=spec, dtype=dtype, remat=remat)
        return SpikingVGG(config, rngs=rngs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"Spiking VGG (SpikingJelly's ``{name}``, configuration {cfg_name}{', BN' if batch_norm else ''}):\n"
        ":class:`SpikingVGG`. ``spiking_neuron`` and its arguments as SpikingJelly's builder (see\n"
        ":mod:`spikejax.models.sj_neurons`; default LIF τ = 2 with a detached hard reset), plus ``T``,\n"
        "``in_channels``, ``cfg``, ``pool_size``, ``classifier_hidden``, ``dropout`` (small test models), ``dtype``.")
    return register(name)(build)


for _depth, _cfg in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    _vgg_builder(f"spiking_vgg{_depth}", _cfg, False)
    _vgg_builder(f"spiking_vgg{_depth}_bn", _cfg, True)
