"""Spiking ResNets of SpikingJelly 2.0's zoo: SEW-ResNet, Spiking ResNet (torchvision layout) and
MS-ResNet (membrane shortcut).

Every model takes ``images[B, H, W, C]`` (NHWC; repeated over ``T`` steps, direct encoding) or
``x[T, B, H, W, C]`` and returns ``logits[B, num_classes]``, the mean over T of the head's output.
The module trees mirror SpikingJelly's (``conv1``, ``bn1``, ``sn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ...), so :func:`spikejax.interop.load_spikingjelly` reads its
``state_dict`` by name. Layers run over ``[T*B, ...]`` like SpikingJelly's multi-step layers
(:mod:`spikejax.nn.temporal`); BatchNorm statistics are over ``T·B·H·W``.

- SEW-ResNet (Fang et al. 2021, ``sew_resnet18/34/50/101/152``): blocks ``conv-BN-SN`` stacks
  whose output ``O`` joins the (downsampled and fired) input ``S`` by the spike-element-wise
  function ``g``: ADD ``S + O``, AND ``S·O``, IAND ``S·(1 - O)`` (basic blocks: ``g(S, O)``;
  bottlenecks, as SpikingJelly: ``g(O, S)``).
- Spiking ResNet (``spiking_resnet*``): torchvision's ResNet with each ReLU replaced by a neuron;
  the block adds the shortcut before its last neuron: ``SN(BN(conv(...)) + shortcut)``.
- MS-ResNet (Hu et al. 2021, ``ms_resnet18/34``): pre-activation blocks
  ``BN(conv(SN(BN(conv(SN(x)))))) + shortcut(x)`` on membrane potentials; the stem has no neuron,
  a final neuron fires before the pooled head.

Stem (SEW / Spiking): 7x7/2 conv, BN, neuron, 3x3/2 max-pool; stages at strides 1, 2, 2, 2; any
input of at least 1x1 works (8x8 digits give 1x1 maps from stage 2 on).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.models.config import VisionConfig, check_dtype, check_int
from spikejax.models.registry import register
from spikejax.models.sj_neurons import NeuronSpec, fire, neuron_spec, spikingjelly_keys
from spikejax.nn import temporal as tl
from spikejax.remat import remat_call, remat_modes

Array = jax.Array

__all__ = ["ResNetConfig", "ResNet", "MSResNetConfig", "MSResNet", "sew_function", "CONNECT_FUNCTIONS",
           "to_time_major", "check_dtype"]

CONNECT_FUNCTIONS = ("ADD", "AND", "IAND")
_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
           101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
# SpikingJelly's ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu") ("normal" is untruncated)
_KAIMING_FAN_OUT = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def sew_function(x: Array, y: Array, cnf: str) -> Array:
    """Spike-element-wise join: ``ADD: x + y``, ``AND: x·y``, ``IAND: x·(1 - y)``."""
    if cnf == "ADD":
        return x + y
    if cnf == "AND":
        return x * y
    if cnf == "IAND":
        return x * (1.0 - y)
    raise ValueError(f"cnf: expected one of {CONNECT_FUNCTIONS}, got {cnf!r}")


def to_time_major(x, T: int, in_channels: int, dtype=jnp.float32, name: str = "x") -> Array:
    """``images[B, H, W, C]`` repeated over ``T`` steps, or ``x[T, B, H, W, C]`` as is, in ``dtype``."""
    if not hasattr(x, "ndim") or x.ndim not in (4, 5):
        raise ValueError(f"{name}: expected images [B, H, W, C] or spikes [T, B, H, W, C], got shape "
                         f"{getattr(x, 'shape', None)}")
    if x.shape[-1] != in_channels:
        raise ValueError(f"{name}: expected {in_channels} channels (NHWC, last axis), got shape {tuple(x.shape)}")
    x = jnp.asarray(x).astype(dtype)
    return jnp.broadcast_to(x[None], (T, *x.shape)) if x.ndim == 4 else x


def _check_layers(layers, allowed: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or len(layers) not in allowed:
        raise ValueError(f"layers: expected {' or '.join(map(str, allowed))} stage depths, got {layers!r}")
    return tuple(check_int("layers", v) for v in layers)


# --- SEW-ResNet and Spiking ResNet (torchvision layout) ------------------------------------------

@dataclasses.dataclass(frozen=True)
class ResNetConfig(VisionConfig):
    """SEW-ResNet / Spiking ResNet hyper-parameters (SpikingJelly's ``SEWResNet`` / ``SpikingResNet``).

    Attributes (and :class:`~spikejax.models.config.VisionConfig`'s ``num_classes``, ``T``,
    ``in_channels``, ``neuron``, ``dtype``, keyword-only):
      family: ``"sew"`` or ``"spiking"``.
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (50/101/152, expansion 4).
      layers: blocks per stage (4 stages, widths 64, 128, 256, 512 times the expansion).
      cnf: SEW connect function (``"ADD"``, ``"AND"``, ``"IAND"``; SEW only).
      zero_init_residual: zero the last BN scale of each block.
      groups, width_per_group: bottleneck width ``int(planes·width_per_group/64)·groups``.
    """

    family: str = "sew"
    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    cnf: str | None = "ADD"
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64

    def __post_init__(self):
        super().__post_init__()
        if self.family not in ("sew", "spiking"):
            raise ValueError(f"family: expected 'sew' or 'spiking', got {self.family!r}")
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block: expected 'basic' or 'bottleneck', got {self.block!r}")
        object.__setattr__(self, "layers", _check_layers(self.layers, (4,)))
        for name in ("groups", "width_per_group"):
            check_int(name, getattr(self, name))
        if self.family == "sew" and self.cnf not in CONNECT_FUNCTIONS:
            raise ValueError(f"cnf: expected one of {CONNECT_FUNCTIONS} for SEW-ResNet, got {self.cnf!r}")
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("groups, width_per_group: basic blocks support only groups=1 and width_per_group=64")

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs, groups: int = 1, dtype=None) -> tl.Conv2d:
    return tl.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, use_bias=False,
                     kernel_init=_KAIMING_FAN_OUT, dtype=dtype, rngs=rngs)


class ResNetBlock(nnx.Module):
    """One SEW / Spiking ResNet block over ``x[T, B, H, W, C_in] -> [T, B, H/s, W/s, planes·e]``.

    ``conv{i}, bn{i}, sn{i}`` for i = 1..2 (basic: 3x3, 3x3) or 1..3 (bottleneck: 1x1, 3x3 with
    the stride, 1x1 to ``planes·4``); ``downsample = [1x1 conv/s, BN]`` when the shape changes
    (SEW: followed by ``downsample_sn``).
    """

    def __init__(self, cfg: ResNetConfig, inplanes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.family, self.cnf = cfg.family, cfg.cnf
        self.bottleneck = cfg.block == "bottleneck"
        self.record_spikes = False
        out = planes * cfg.expansion
        if self.bottleneck:
            width = int(planes * (cfg.width_per_group / 64.0)) * cfg.groups
            shapes = [(inplanes, width, 1, 1, 1), (width, width, 3, stride, cfg.groups), (width, out, 1, 1, 1)]
        else:
            shapes = [(inplanes, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
        self.depth = len(shapes)
        for i, (cin, cout, k, s, g) in enumerate(shapes, start=1):
            setattr(self, f"conv{i}", _conv(cin, cout, k, s, rngs, g, cfg.dtype))
            setattr(self, f"bn{i}", tl.BatchNorm(cout))
            setattr(self, f"sn{i}", cfg.neuron.build())
        if cfg.zero_init_residual:
            last = getattr(self, f"bn{self.depth}")
            last.scale[...] = jnp.zeros_like(last.scale[...])
        needs_downsample = stride != 1 or inplanes != out
        self.downsample = (nnx.List([_conv(inplanes, out, 1, stride, rngs, dtype=cfg.dtype), tl.BatchNorm(out)])
                           if needs_downsample else None)
        if needs_downsample and self.family == "sew":
            self.downsample_sn = cfg.neuron.build()

    def __call__(self, x: Array) -> Array:
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if self.family == "sew" or i < self.depth:
                out = fire(self, getattr(self, f"sn{i}"), out)
        identity = x
        if self.downsample is not None:
            identity = self.downsample[1](self.downsample[0](x))
        if self.family == "spiking":
            return fire(self, getattr(self, f"sn{self.depth}"), out + identity)
        if self.downsample is not None:
            identity = fire(self, self.downsample_sn, identity)
        return sew_function(out, identity, self.cnf) if self.bottleneck else sew_function(identity, out, self.cnf)


class StagedNet(nnx.Module):
    """What the ResNets share: four stages ``layer1..layer4`` of blocks (each through
    :func:`spikejax.remat.remat_call` with the config's mode) and SpikingJelly's key map."""

    def stages(self, x: Array) -> Array:
        """``x[T, B, H, W, C]`` through the blocks of ``layer1`` .. ``layer4`` in order."""
        blocks = [block for i in range(1, 5) for block in getattr(self, f"layer{i}") or ()]
        for block, mode in zip(blocks, remat_modes(self.config.remat, len(blocks)), strict=True):
            x = remat_call(mode, block, x)
        return x

    def spikingjelly_keys(self) -> dict:
        """SpikingJelly key -> variable entry (:func:`spikejax.models.sj_neurons.spikingjelly_keys`)."""
        return spikingjelly_keys(self)


class ResNet(StagedNet):
    """SEW-ResNet / Spiking ResNet: ``images[B, H, W, C]`` or ``x[T, B, H, W, C]`` -> ``logits[B, classes]``.

    ``conv1`` (7x7/2) -> ``bn1`` -> ``sn1`` -> ``maxpool`` (3x3/2) -> ``layer1..4``
    (:class:`ResNetBlock` stages) -> ``avgpool`` (global) -> ``fc`` -> mean over T.
    """

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, ResNetConfig):
            raise TypeError(f"config: expected a ResNetConfig, got {type(config)!r}")
        self.config = config
        self.record_spikes = False
        self.conv1 = tl.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, use_bias=False,
                               kernel_init=_KAIMING_FAN_OUT, dtype=config.dtype, rngs=rngs)
        self.bn1 = tl.BatchNorm(64)
        self.sn1 = config.neuron.build()
        self.maxpool = tl.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), config.layers, strict=True)):
            blocks = []
            for j in range(depth):
                blocks.append(ResNetBlock(config, inplanes, planes, 2 if (i > 0 and j == 0) else 1, rngs=rngs))
                inplanes = planes * config.expansion
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        self.avgpool = tl.AdaptiveAvgPool2d(1)
        self.fc = tl.Linear(512 * config.expansion, config.num_classes, dtype=config.dtype, rngs=rngs)

    def features(self, x: Array) -> Array:
        """``x[T, B, H, W, C]`` -> the last stage's output ``[T, B, h, w, 512·e]``."""
        x = self.maxpool(fire(self, self.sn1, self.bn1(self.conv1(x))))
        return self.stages(x)

    def __call__(self, x: Array) -> Array:
        x = to_time_major(x, self.config.T, self.config.in_channels, self.config.dtype)
        y = self.fc(self.avgpool(self.features(x))[:, :, 0, 0, :])
        return y.astype(jnp.float32).mean(axis=0)


# --- MS-ResNet --------------------------------------------------------------------------------------

# SpikingJelly's MS-ResNet neuron when spiking_neuron is None
MS_NEURON_DEFAULTS = dict(tau=4.0 / 3.0, v_threshold=0.5, detach_reset=True, decay_input=False,
                          surrogate_function="rect", surrogate_alpha=2.0)


@dataclasses.dataclass(frozen=True)
class MSResNetConfig(VisionConfig):
    """MS-ResNet hyper-parameters (SpikingJelly's ``MSResNet``).

    Attributes (and :class:`~spikejax.models.config.VisionConfig`'s fields, keyword-only):
      T: time steps for images ``[B, H, W, C]`` (SpikingJelly repeats the image T times too; default 6).
      layers: blocks per stage (3 or 4 stages); stage widths ``stage_channels`` (default
        ``base_channels·2^i``).
      stem_kernel_size, stem_stride, stem_pool: the stem conv and its optional 3x3/2 max-pool.
      neuron: every neuron (default: LIF τ = 4/3, V_th = 0.5, no input decay, detached reset,
        rectangular surrogate α = 2).
      dtype: compute dtype (as :class:`ResNetConfig`).
    """

    layers: tuple[int, ...] = (2, 2, 2, 2)
    base_channels: int = 64
    stem_kernel_size: int = 7
    stem_stride: int = 2
    stem_pool: bool = False
    stage_channels: tuple[int, ...] | None = None
    _: dataclasses.KW_ONLY
    T: int = 6  # MS-ResNet's defaults of two shared fields
    neuron: NeuronSpec = dataclasses.field(default_factory=lambda: neuron_spec(None, {}, defaults=MS_NEURON_DEFAULTS))

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "layers", _check_layers(self.layers, (3, 4)))
        for name in ("base_channels", "stem_kernel_size", "stem_stride"):
            check_int(name, getattr(self, name))
        channels = self.stage_channels
        if channels is None:
            channels = tuple(self.base_channels * 2**i for i in range(len(self.layers)))
        if len(channels) != len(self.layers):
            raise ValueError(f"stage_channels: expected {len(self.layers)} widths (one per stage), got {channels!r}")
        object.__setattr__(self, "stage_channels", tuple(check_int("stage_channels", c) for c in channels))


class MSBlock(nnx.Module):
    """MS-ResNet block: ``bn2(conv2(spike2(bn1(conv1(spike1(x)))))) + shortcut(x)`` over
    ``[T, B, H, W, C]`` (3x3 convs, the first with the stride; ``downsample = [1x1 conv/s, BN]``
    when the shape changes). BN scales start at 0.5 (``bn2``: 0, SpikingJelly's zero init)."""

    def __init__(self, cin: int, cout: int, stride: int, downsample: bool, neuron: NeuronSpec, *, rngs: nnx.Rngs,
                 dtype: str = "float32"):
        self.record_spikes = False
        self.spike1 = neuron.build()
        self.conv1 = tl.Conv2d(cin, cout, 3, stride=stride, padding=1, use_bias=False, dtype=dtype, rngs=rngs)
        self.bn1 = tl.BatchNorm(cout, scale_init=0.5)
        self.spike2 = neuron.build()
        self.conv2 = tl.Conv2d(cout, cout, 3, padding=1, use_bias=False, dtype=dtype, rngs=rngs)
        self.bn2 = tl.BatchNorm(cout, scale_init=0.0)
        self.downsample = (nnx.List([tl.Conv2d(cin, cout, 1, stride=stride, use_bias=False, dtype=dtype, rngs=rngs),
                                     tl.BatchNorm(cout, scale_init=0.5)]) if downsample else None)

    def __call__(self, x: Array) -> Array:
        identity = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        out = self.bn1(self.conv1(fire(self, self.spike1, x)))
        out = self.bn2(self.conv2(fire(self, self.spike2, out)))
        return out + identity


class MSResNet(StagedNet):
    """MS-ResNet: ``images[B, H, W, C]`` or ``x[T, B, H, W, C]`` -> ``logits[B, classes]``.

    ``stem = [conv (k/s), BN(, max-pool)]`` -> ``layer1..4`` of :class:`MSBlock` (strides 2, 2,
    2, 2) -> ``head_lif`` -> ``avgpool`` (global) -> ``head`` -> mean over T.
    """

    def __init__(self, config: MSResNetConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, MSResNetConfig):
            raise TypeError(f"config: expected a MSResNetConfig, got {type(config)!r}")
        self.config = config
        self.record_spikes = False
        k, c0 = config.stem_kernel_size, config.base_channels
        stem: list[nnx.Module] = [
            tl.Conv2d(config.in_channels, c0, k, stride=config.stem_stride, padding=k // 2, use_bias=False,
                      dtype=config.dtype, rngs=rngs),
            tl.BatchNorm(c0, scale_init=0.5)]
        if config.stem_pool:
            stem.append(tl.MaxPool2d(3, stride=2, padding=1))
        self.stem = nnx.List(stem)
        inplanes = c0
        for i, (cout, depth) in enumerate(zip(config.stage_channels, config.layers, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if j == 0 else 1
                blocks.append(MSBlock(inplanes, cout, stride, stride != 1 or inplanes != cout, config.neuron,
                                      rngs=rngs, dtype=config.dtype))
                inplanes = cout
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        if len(config.layers) == 3:
            self.layer4 = None
        self.head_lif = config.neuron.build()
        self.avgpool = tl.AdaptiveAvgPool2d(1)
        self.head = tl.Linear(config.stage_channels[-1], config.num_classes, dtype=config.dtype, rngs=rngs)

    def features(self, x: Array) -> Array:
        """``x[T, B, H, W, C]`` -> the last stage's membrane output ``[T, B, h, w, C_last]``."""
        for layer in self.stem:
            x = layer(x)
        return self.stages(x)

    def __call__(self, x: Array) -> Array:
        x = to_time_major(x, self.config.T, self.config.in_channels, self.config.dtype)
        s = fire(self, self.head_lif, self.features(x))
        y = self.head(self.avgpool(s)[:, :, 0, 0, :])
        return y.astype(jnp.float32).mean(axis=0)


# --- builders (SpikingJelly's names and keyword arguments) ----------------------------------------

def _resnet_builder(name: str, family: str, depth: int):
    block, default_layers = _DEPTHS[depth]

    def build(*, spiking_neuron: str | None = None, num_classes: int = 1000, cnf: str | None = None,
              zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64, T: int = 4,
              in_channels: int = 3, layers: tuple[int, ...] = default_layers, dtype: str = "float32",
              remat: str = "none", rngs: nnx.Rngs, **neuron_kwargs) -> ResNet:
        spec = neuron_spec(spiking_neuron, neuron_kwargs, defaults={"detach_reset": True})
        if family == "sew":
            cnf = "ADD" if cnf is None else cnf
        elif cnf is not None:
            raise TypeError(f"{name}: unknown keyword argument 'cnf' (SEW-ResNet only)")
        cfg = ResNetConfig(family=family, block=block, layers=tuple(layers), num_classes=num_classes, cnf=cnf, T=T,
                           in_channels=in_channels, zero_init_residual=zero_init_residual, groups=groups,
                           width_per_group=width_per_group, neuron=spec, dtype=dtype, remat=remat)
        return ResNet(cfg, rngs=rngs)

    kind = "SEW-ResNet" if family == "sew" else "Spiking ResNet"
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"{kind}-{depth} (SpikingJelly's ``{name}``): :class:`ResNet`, layers {default_layers}.\n\n"
        "Keyword arguments as SpikingJelly's builder (``cnf``: ADD (default) / AND / IAND for SEW;\n"
        "``spiking_neuron`` and its arguments, see :mod:`spikejax.models.sj_neurons`; default: LIF\n"
        "τ = 2 with a detached hard reset, SpikingJelly's SEW-ResNet neuron) plus ``T``, ``in_channels``,\n"
        "``layers`` (stage depths, e.g. ``(1, 1, 1, 1)`` for a small test model) and ``dtype``.")
    return register(name)(build)


for _depth in (18, 34, 50, 101, 152):
    _resnet_builder(f"sew_resnet{_depth}", "sew", _depth)
    _resnet_builder(f"spiking_resnet{_depth}", "spiking", _depth)


def _ms_resnet_builder(name: str, layers: tuple[int, ...]):
    def build(*, T: int = 6, in_channels: int = 3, num_classes: int = 1000, spiking_neuron: str | None = None,
              layers: tuple[int, ...] = layers, base_channels: int = 64, stem_kernel_size: int = 7,
              stem_stride: int = 2, stem_pool: bool = False, stage_channels: tuple[int, ...] | None = None,
              dtype: str = "float32", remat: str = "none", rngs: nnx.Rngs, **neuron_kwargs) -> MSResNet:
        spec = neuron_spec(spiking_neuron, neuron_kwargs, defaults=MS_NEURON_DEFAULTS)
        widths = None if stage_channels is None else tuple(stage_channels)
        cfg = MSResNetConfig(T=T, in_channels=in_channels, num_classes=num_classes, layers=tuple(layers),
                             base_channels=base_channels, stem_kernel_size=stem_kernel_size, stem_stride=stem_stride,
                             stem_pool=stem_pool, stage_channels=widths, neuron=spec, dtype=dtype, remat=remat)
        return MSResNet(cfg, rngs=rngs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"MS-ResNet (SpikingJelly's ``{name}``, layers {layers}): :class:`MSResNet` with\n"
                     "SpikingJelly's keyword arguments; its neuron defaults apply when ``spiking_neuron`` is None.")
    return register(name)(build)


_ms_resnet_builder("ms_resnet18", (2, 2, 2, 2))
_ms_resnet_builder("ms_resnet34", (3, 4, 6, 3))
