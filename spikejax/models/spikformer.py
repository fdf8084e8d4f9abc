"""Spikformer (Zhou et al., ICLR 2023) as SpikingJelly 2.0 builds it
(``spikingjelly.activation_based.model.spikformer``): ``spikformer_cifar10``, ``spikformer_ti``,
``spikformer_s``.

``images[B, H, W, C]`` (repeated over ``T``) or ``x[T, B, H, W, C]`` ->

- ``patch_embed`` (:class:`SpikformerPatchStem`): four conv3x3-BN-LIF stages with channels
  ``D/8, D/4, D/2, D`` (BN before a 3x3/2 max-pool on the last two stages for ``patch_size=4``,
  on all four for 16), then the conv position embedding ``x + LIF(BN(conv3x3(x)))``;
- ``depths`` blocks (:class:`SpikformerBlock`) on the tokens ``[T, B, L, D]`` (L = h*w, row
  major): ``x = x + SSA(x)``, ``x = x + MLP(x)``;
- ``head``: ``Linear(mean_L x)`` per time step, averaged over T -> ``logits[B, num_classes]``.

Spiking self-attention (:class:`SpikingSelfAttention`, per head, ``hd = D / heads``):
``q, k, v = LIF(BN(Conv1d_1x1(x)))`` (one ``3D`` projection, then split),
``a = LIF_{θ=0.5}(0.125 · q kᵀ v)``, ``out = LIF(BN(Conv1d_1x1(a)))``.
MLP: ``LIF(BN(Conv1d(LIF(BN(Conv1d(x))))))`` with hidden width ``mlp_ratio · D``.
All neurons: SpikingJelly's ``LIFNode`` (τ = 2, hard reset to 0, ``Sigmoid(α=4)`` surrogate) with
``detach_reset=True``; the attention neuron fires at 0.5.

The NNX module tree mirrors SpikingJelly's, so :func:`spikejax.interop.load_spikingjelly` and
:func:`~spikejax.interop.export_spikingjelly` map its ``state_dict`` by name. Every neuron
fires through :func:`spikejax.models.sj_neurons.fire` (spike recording for tests).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.models.registry import register
from spikejax.models.sj_neurons import fire, neuron_spec
from spikejax.nn import temporal
from spikejax.remat import check_remat, remat_call, remat_modes

Array = jax.Array

__all__ = [
    "Spikformer",
    "SpikformerBlock",
    "SpikformerConv2dBN",
    "SpikformerConv2dBNLIF",
    "SpikformerMLP",
    "SpikformerPatchStem",
    "SpikingSelfAttention",
    "ssa_core",
    "DTYPES",
    "check_dtype",
    "check_positive",
    "conv1x1_bn",
    "seq",
    "set_compute_dtype",
    "to_sequence",
    "spikformer_cifar10",
    "spikformer_s",
    "spikformer_ti",
]

_SPIKFORMER_LIF = {"tau": 2.0, "detach_reset": True}
_init = nnx.initializers.normal(0.02)  # SpikingJelly's trunc_normal_(std=0.02) (cut at ±2, i.e. ±100σ)


def check_positive(**values: Any) -> None:
    """``ValueError`` naming the first argument that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")


DTYPES = ("float32", "bfloat16")


def check_dtype(dtype: str) -> jnp.dtype:
    """``dtype`` (one of :data:`DTYPES`) as a JAX dtype, else a ``ValueError`` naming it."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    return jnp.dtype(dtype)


def set_compute_dtype(model: nnx.Module, dtype: str) -> jnp.dtype:
    """Make every conv / linear layer of ``model`` compute in ``dtype`` (``"float32"`` or
    ``"bfloat16"``; parameters stay float32; BatchNorm normalizes in float32 and returns its input's
    dtype, neurons spike in it). Returns the dtype."""
    dt = check_dtype(dtype)
    if dt != jnp.float32:
        model.set_attributes(nnx.Conv, nnx.Linear, dtype=dt)
    return dt


def to_sequence(images: Array, T: int, in_channels: int) -> Array:
    """``images[B, H, W, C]`` -> ``[T, B, H, W, C]`` (the image repeated, direct encoding), or a
    ``[T', B, H, W, C]`` sequence as it is; checks rank and ``C == in_channels``."""
    if not hasattr(images, "ndim") or images.ndim not in (4, 5):
        raise ValueError("images: expected [B, H, W, C] or [T, B, H, W, C], got shape "
                         f"{getattr(images, 'shape', None)}")
    if images.shape[-1] != in_channels:
        raise ValueError(f"images: expected C=in_channels={in_channels} on the last axis (NHWC), got shape "
                         f"{tuple(images.shape)}")
    if images.ndim == 4:
        return jnp.broadcast_to(images[None], (T, *images.shape))
    return images


class SpikformerConv2dBN(nnx.Module):
    """``block = [Conv2d(3x3, no bias), BatchNorm (, MaxPool 3x3/2)]``:
    ``[T, B, H, W, C_in] -> [T, B, H', W', C_out]``."""

    def __init__(self, in_channels: int, out_channels: int, *, pool: bool, rngs: nnx.Rngs):
        layers: list[nnx.Module] = [
            temporal.Conv2d(in_channels, out_channels, 3, padding=1, use_bias=False, kernel_init=_init, rngs=rngs),
            temporal.BatchNorm(out_channels),
        ]
        if pool:
            layers.append(temporal.MaxPool2d(3, stride=2, padding=1))
        self.block = nnx.List(layers)

    def __call__(self, x: Array) -> Array:
        return seq(self.block, x)


class SpikformerConv2dBNLIF(nnx.Module):
    """``conv_bn`` (:class:`SpikformerConv2dBN`) then ``neuron``:
    ``[T, B, H, W, C_in] -> spikes[T, B, H', W', C_out]``."""

    def __init__(self, in_channels: int, out_channels: int, *, pool: bool, neuron, rngs: nnx.Rngs):
        self.record_spikes = False
        self.conv_bn = SpikformerConv2dBN(in_channels, out_channels, pool=pool, rngs=rngs)
        self.neuron = neuron.build()

    def __call__(self, x: Array) -> Array:
        return fire(self, self.neuron, self.conv_bn(x))


class SpikformerPatchStem(nnx.Module):
    """Spiking patch stem: ``[T, B, H, W, C] -> [T, B, H/p, W/p, D]`` (``p = patch_size``, 4 or 16;
    ``H, W`` divisible by p give exact sizes, others the max-pools' ceil). ``remat``
    (:mod:`spikejax.remat`) applies to each conv-BN-LIF stage: at full resolution they hold most of a
    CIFAR-10 step's activations."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, *, neuron, rngs: nnx.Rngs,
                 remat: str = "none"):
        self.remat = check_remat(remat)
        if patch_size not in (4, 16):
            raise ValueError(f"patch_size: expected 4 or 16 (SpikingJelly's stems), got {patch_size!r}")
        if embed_dims % 8:
            raise ValueError(f"embed_dims: expected a multiple of 8 (stage widths D/8..D), got {embed_dims}")
        dims = [embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        pool_from = 2 if patch_size == 4 else 0
        ins = [in_channels, *dims[:-1]]
        self.stages = nnx.List([
            SpikformerConv2dBNLIF(i, o, pool=k >= pool_from, neuron=neuron, rngs=rngs)
            for k, (i, o) in enumerate(zip(ins, dims, strict=True))
        ])
        self.positional_encoding = SpikformerConv2dBNLIF(embed_dims, embed_dims, pool=False, neuron=neuron, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        for stage in self.stages:
            x = remat_call(self.remat, stage, x)
        return x + remat_call(self.remat, self.positional_encoding, x)


def conv1x1_bn(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.List:
    """SpikingJelly's ``SeqToANNContainer(Conv1d(k=1, no bias), BatchNorm1d)``:
    ``[T, B, L, d_in] -> [T, B, L, d_out]``."""
    return nnx.List([temporal.Conv1d(d_in, d_out, 1, use_bias=False, kernel_init=_init, rngs=rngs),
                     temporal.BatchNorm(d_out)])


def seq(layers, x: Array) -> Array:
    """Apply ``layers`` (a sequence of callables) in order."""
    for layer in layers:
        x = layer(x)
    return x


def ssa_core(q: Array, k: Array, v: Array, num_heads: int, scale: float = 0.125) -> Array:
    """Spiking self-attention without softmax, per head: ``scale · q kᵀ v``.

    ``q, k, v[T, B, L, D]`` (heads are ``D``'s ``num_heads`` contiguous slices) -> ``[T, B, L, D]``;
    computed as ``q (kᵀ v)`` (cost linear in L), exact on spikes (integer sums)."""
    T, B, L, D = q.shape
    split = lambda a: a.reshape(T, B, L, num_heads, D // num_heads)
    f32 = jnp.float32  # spike counts are exact in float32 (bfloat16 holds integers only up to 256)
    kv = jnp.einsum("tblhd,tblhe->tbhde", split(k), split(v), preferred_element_type=f32)
    out = jnp.einsum("tblhd,tbhde->tblhe", split(q).astype(f32), kv) * scale
    return out.reshape(T, B, L, D).astype(q.dtype)


class SpikingSelfAttention(nnx.Module):
    """SpikingJelly's ``layer.SpikingSelfAttention``: ``[T, B, L, D] -> spikes[T, B, L, D]``."""

    def __init__(self, dim: int, num_heads: int, *, neuron, attn_neuron, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} must divide dim={dim}")
        self.record_spikes = False
        self.dim, self.num_heads = dim, num_heads
        self.qkv_conv_bn = conv1x1_bn(dim, 3 * dim, rngs)
        self.qkv_lif = neuron.build()
        self.attn_lif = attn_neuron.build()
        self.proj_conv_bn = conv1x1_bn(dim, dim, rngs)
        self.proj_lif = neuron.build()

    def __call__(self, x: Array) -> Array:
        qkv = fire(self, self.qkv_lif, seq(self.qkv_conv_bn, x))
        q, k, v = jnp.split(qkv, 3, axis=-1)
        a = fire(self, self.attn_lif, ssa_core(q, k, v, self.num_heads))
        return fire(self, self.proj_lif, seq(self.proj_conv_bn, a))


class SpikformerMLP(nnx.Module):
    """``neuron2(fc2(neuron1(fc1(x))))`` with ``fc = [Conv1d 1x1 (no bias), BatchNorm]``:
    ``[T, B, L, D] -> [T, B, L, D]``."""

    def __init__(self, dim: int, hidden: int, *, neuron, rngs: nnx.Rngs):
        self.record_spikes = False
        self.fc1 = conv1x1_bn(dim, hidden, rngs)
        self.neuron1 = neuron.build()
        self.fc2 = conv1x1_bn(hidden, dim, rngs)
        self.neuron2 = neuron.build()

    def __call__(self, x: Array) -> Array:
        x = fire(self, self.neuron1, seq(self.fc1, x))
        return fire(self, self.neuron2, seq(self.fc2, x))


class SpikformerBlock(nnx.Module):
    """``x + SSA(x)`` then ``x + MLP(x)`` on tokens ``[T, B, L, D]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, neuron, attn_neuron, mlp_neuron,
                 rngs: nnx.Rngs):
        self.attn = SpikingSelfAttention(dim, num_heads, neuron=neuron, attn_neuron=attn_neuron, rngs=rngs)
        self.mlp = SpikformerMLP(dim, int(dim * mlp_ratio), neuron=mlp_neuron, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(nnx.Module):
    """SpikingJelly's ``Spikformer``: ``images[B, H, W, C]`` or ``[T, B, H, W, C]`` -> ``logits[B, num_classes]``
    (the per-step head outputs averaged over T; see the module docstring).

    Args:
      T: time steps a 4-D image is repeated over.
      in_channels, num_classes, embed_dims (D, a multiple of 8), num_heads, mlp_ratio, depths,
      patch_size (4 or 16): as SpikingJelly's ``Spikformer``.
      spiking_neuron, **neuron_kwargs: SpikingJelly's neuron arguments
        (:func:`spikejax.models.sj_neurons.neuron_spec`; the default is the paper's LIF).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (:func:`set_compute_dtype`; logits float32).
      remat: training memory per block (:data:`spikejax.remat.REMAT_MODES`; same gradients in every mode).
      rngs: initializers (SpikingJelly's: N(0, 0.02) weights, zero head bias, BN 1 / 0).
    """

    def __init__(self, *, T: int = 4, in_channels: int = 3, patch_size: int = 16, num_classes: int = 1000,
                 embed_dims: int = 256, num_heads: int = 8, mlp_ratio: float = 4.0, depths: int = 4,
                 spiking_neuron: str | None = None, dtype: str = "float32", remat: str = "none", rngs: nnx.Rngs,
                 **neuron_kwargs: Any):
        check_positive(T=T, in_channels=in_channels, num_classes=num_classes, depths=depths, num_heads=num_heads)
        check_dtype(dtype)
        self.remat = check_remat(remat)
        if embed_dims % num_heads:
            raise ValueError(f"num_heads: {num_heads} must divide embed_dims={embed_dims}")
        self.T, self.in_channels, self.num_classes = T, in_channels, num_classes
        neuron = neuron_spec(spiking_neuron, neuron_kwargs, defaults=_SPIKFORMER_LIF)
        # as SpikingJelly's SpikformerBlock: with the default neuron, tau / detach_reset given by the
        # caller reach the MLP but not the attention (which keeps its own defaults)
        attn_kwargs = neuron_kwargs if spiking_neuron is not None else {
            k: v for k, v in neuron_kwargs.items() if k not in ("tau", "detach_reset")}
        attn = neuron_spec(spiking_neuron, attn_kwargs, defaults=_SPIKFORMER_LIF)
        attn_fire = neuron_spec(spiking_neuron, attn_kwargs, defaults={**_SPIKFORMER_LIF, "v_threshold": 0.5})
        self.patch_embed = SpikformerPatchStem(in_channels, embed_dims, patch_size, neuron=neuron, rngs=rngs,
                                               remat=self.remat)
        self.blocks = nnx.List([
            SpikformerBlock(embed_dims, num_heads, mlp_ratio, neuron=attn, attn_neuron=attn_fire, mlp_neuron=neuron,
                            rngs=rngs)
            for _ in range(depths)
        ])
        self.head = temporal.Linear(embed_dims, num_classes, kernel_init=_init, rngs=rngs)
        self.head.linear.bias[...] = jnp.zeros_like(self.head.linear.bias[...])
        self.compute_dtype = set_compute_dtype(self, dtype)

    def __call__(self, images: Array) -> Array:
        x = self.patch_embed(to_sequence(images, self.T, self.in_channels).astype(self.compute_dtype))
        T, B, h, w, D = x.shape
        x = x.reshape(T, B, h * w, D)
        for block, mode in zip(self.blocks, remat_modes(self.remat, len(self.blocks)), strict=True):
            x = remat_call(mode, block, x)
        return self.head(x.mean(axis=2)).astype(jnp.float32).mean(axis=0)


@register("spikformer_ti")
def spikformer_ti(*, T: int = 4, in_channels: int = 3, num_classes: int = 1000, spiking_neuron: str | None = None,
                  rngs: nnx.Rngs, **kwargs: Any) -> Spikformer:
    """Spikformer-Ti: D = 256, 8 heads, 4 blocks, 16x16 patches (ImageNet; any ``H, W`` divisible by 16).
    ``img_size_h`` / ``img_size_w`` are accepted for SpikingJelly compatibility (the model is size-agnostic);
    ``embed_dims``, ``num_heads``, ``depths``, ``mlp_ratio``, ``patch_size`` may be overridden (small tests)."""
    return _spikformer(dict(embed_dims=256, num_heads=8, depths=4, patch_size=16), T=T, in_channels=in_channels,
                       num_classes=num_classes, spiking_neuron=spiking_neuron, rngs=rngs, **kwargs)


@register("spikformer_s")
def spikformer_s(*, T: int = 4, in_channels: int = 3, num_classes: int = 1000, spiking_neuron: str | None = None,
                 rngs: nnx.Rngs, **kwargs: Any) -> Spikformer:
    """Spikformer-S: D = 384, 12 heads, 6 blocks, 16x16 patches (overrides as :func:`spikformer_ti`)."""
    return _spikformer(dict(embed_dims=384, num_heads=12, depths=6, patch_size=16), T=T, in_channels=in_channels,
                       num_classes=num_classes, spiking_neuron=spiking_neuron, rngs=rngs, **kwargs)


@register("spikformer_cifar10")
def spikformer_cifar10(*, T: int = 4, num_classes: int = 10, spiking_neuron: str | None = None, rngs: nnx.Rngs,
                       **kwargs: Any) -> Spikformer:
    """The CIFAR-10 Spikformer: 32x32x3 inputs (any ``H, W`` divisible by 4 work), 4x4 patches, D = 384,
    12 heads, 4 blocks. ``in_channels`` and the sizes may be overridden (as :func:`spikformer_ti`)."""
    return _spikformer(dict(embed_dims=384, num_heads=12, depths=4, patch_size=4, in_channels=3), T=T,
                       num_classes=num_classes, spiking_neuron=spiking_neuron, rngs=rngs, **kwargs)


_ARCH = ("embed_dims", "num_heads", "depths", "mlp_ratio", "patch_size", "in_channels")


def _spikformer(defaults: dict[str, Any], *, rngs: nnx.Rngs, **kwargs: Any) -> Spikformer:
    kwargs.pop("img_size_h", None)
    kwargs.pop("img_size_w", None)
    arch = {**defaults, **{k: kwargs.pop(k) for k in _ARCH if k in kwargs}}
    return Spikformer(rngs=rngs, **arch, **kwargs)
