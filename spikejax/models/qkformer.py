"""QKFormer (Zhou et al., NeurIPS 2024) as SpikingJelly 2.0 builds it
(``spikingjelly.activation_based.model.qkformer``): ``qkformer_10_384``.

``images[B, H, W, C]`` (repeated over ``T``) or ``x[T, B, H, W, C]`` (NHWC) -> three stages, each a
spiking patch embedding (4x, 2x, 2x downsampling: 16x in all) then blocks on the tokens
``[T, B, L, D_i]`` with ``D = (E/4, E/2, E)``:

- ``patch_embed1``: ``s1 = LIF(MaxPool(BN(Conv3x3(x))))`` (E/8 channels),
  ``LIF(BN(Conv3x3(LIF(MaxPool(BN(Conv3x3(s1)))))))`` + the shortcut ``LIF(BN(Conv1x1/2(s1)))``;
  ``patch_embed2/3``: ``LIF(BN(Conv3x3(LIF(MaxPool(BN(Conv3x3(x)))))))`` + ``LIF(BN(Conv1x1/2(x)))``;
- stages 1 and 2: blocks with Q-K token attention (:class:`QKAttention`):
  ``q, k = LIF(BN(Conv1d_1x1(x)))``, ``a = LIF_{θ=0.5}(Σ_{hd} q)`` per head and token,
  ``out = LIF(BN(Conv1d_1x1(a ⊙ k)))`` (``qka_type="channel"`` sums over tokens instead);
  stage 3: blocks with Spikformer's spiking self-attention; every block
  ``x + attn(x)``, ``x + MLP(x)`` (MLP: ``LIF(BN(Conv1d(LIF(BN(Conv1d(x))))))``, with biases);
- head: ``Linear(mean_T mean_L x)`` -> ``logits[B, num_classes]``.

Neurons: SpikingJelly's ``LIFNode`` defaults (τ = 2, hard reset, ``Sigmoid(α=4)``); the attention
modules' own neurons use ``detach_reset=True``. The module tree mirrors SpikingJelly's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.models.registry import register
from spikejax.models.sj_neurons import fire, neuron_spec
from spikejax.models.spikformer import (
    SpikingSelfAttention,
    check_dtype,
    check_positive,
    conv1x1_bn,
    seq,
    set_compute_dtype,
    to_sequence,
)
from spikejax.nn import temporal
from spikejax.remat import check_remat, remat_call, remat_modes

Array = jax.Array

__all__ = ["QKAttention", "QKFormer", "qk_token_core", "qkformer_10_384"]

_ATTN_LIF = {"tau": 2.0, "detach_reset": True}


def _conv(d_in: int, d_out: int, k: int, rngs: nnx.Rngs, stride: int = 1) -> temporal.Conv2d:
    return temporal.Conv2d(d_in, d_out, k, stride=stride, padding=k // 2, rngs=rngs)


def _pool() -> temporal.MaxPool2d:
    return temporal.MaxPool2d(3, stride=2, padding=1)


def _shortcut(d_in: int, d_out: int, neuron, rngs: nnx.Rngs) -> nnx.List:
    """``[Conv2d 1x1 stride 2, BN, LIF]`` (SpikingJelly's ``nn.Sequential``, names ``0, 1, 2``)."""
    return nnx.List([_conv(d_in, d_out, 1, rngs, stride=2), temporal.BatchNorm(d_out), neuron.build()])


class _PatchEmbedInit(nnx.Module):
    """The first embedding: ``[T, B, H, W, C] -> [T, B, H/4, W/4, D]``."""

    def __init__(self, in_channels: int, out_channels: int, *, neuron, rngs: nnx.Rngs):
        self.record_spikes = False
        hidden = out_channels // 2
        self.conv1, self.bn1 = _conv(in_channels, hidden, 3, rngs), temporal.BatchNorm(hidden)
        self.pool1 = _pool()
        self.lif1 = neuron.build()
        self.conv2, self.bn2 = _conv(hidden, out_channels, 3, rngs), temporal.BatchNorm(out_channels)
        self.pool2 = _pool()
        self.lif2 = neuron.build()
        self.conv3, self.bn3 = _conv(out_channels, out_channels, 3, rngs), temporal.BatchNorm(out_channels)
        self.lif3 = neuron.build()
        self.shortcut = _shortcut(hidden, out_channels, neuron, rngs)

    def __call__(self, x: Array) -> Array:
        identity = x = fire(self, self.lif1, self.pool1(self.bn1(self.conv1(x))))
        x = fire(self, self.lif2, self.pool2(self.bn2(self.conv2(x))))
        x = fire(self, self.lif3, self.bn3(self.conv3(x)))
        return x + _fire_shortcut(self, self.shortcut, identity)


def _fire_shortcut(owner: nnx.Module, shortcut: nnx.List, x: Array) -> Array:
    conv, bn, lif = shortcut
    return fire(owner, lif, bn(conv(x)))


class _PatchEmbedStage(nnx.Module):
    """A later embedding: ``[T, B, H, W, C] -> [T, B, H/2, W/2, D]``."""

    def __init__(self, in_channels: int, out_channels: int, *, neuron, rngs: nnx.Rngs):
        self.record_spikes = False
        self.conv1, self.bn1 = _conv(in_channels, out_channels, 3, rngs), temporal.BatchNorm(out_channels)
        self.pool = _pool()
        self.lif1 = neuron.build()
        self.conv2, self.bn2 = _conv(out_channels, out_channels, 3, rngs), temporal.BatchNorm(out_channels)
        self.lif2 = neuron.build()
        self.shortcut = _shortcut(in_channels, out_channels, neuron, rngs)

    def __call__(self, x: Array) -> Array:
        identity = x
        x = fire(self, self.lif1, self.pool(self.bn1(self.conv1(x))))
        x = fire(self, self.lif2, self.bn2(self.conv2(x)))
        return x + _fire_shortcut(self, self.shortcut, identity)


def qk_token_core(q: Array, num_heads: int, qka_type: str) -> Array:
    """The Q-K attention's reduction of ``q[T, B, L, D]`` before its neuron: per head, the sum over
    the head's channels (``"token"``: ``[T, B, L, heads]``) or over the tokens (``"channel"``:
    ``[T, B, D]``)."""
    T, B, L, D = q.shape
    if qka_type == "token":
        out = q.reshape(T, B, L, num_heads, D // num_heads).sum(axis=-1, dtype=jnp.float32)
    else:
        out = q.sum(axis=2, dtype=jnp.float32)  # spike counts: exact in float32
    return out.astype(q.dtype)


class QKAttention(nnx.Module):
    """SpikingJelly's ``layer.QKAttention``: ``[T, B, L, D] -> spikes[T, B, L, D]`` (module docstring)."""

    def __init__(self, dim: int, num_heads: int, qka_type: str, *, neuron, attn_neuron, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} must divide dim={dim}")
        if qka_type not in ("token", "channel"):
            raise ValueError(f"qka_type: expected 'token' or 'channel', got {qka_type!r}")
        self.record_spikes = False
        self.num_heads, self.qka_type = num_heads, qka_type
        self.qk_conv_bn = conv1x1_bn(dim, 2 * dim, rngs)
        self.qk_lif = neuron.build()
        self.attn_lif = attn_neuron.build()
        self.proj_conv_bn = conv1x1_bn(dim, dim, rngs)
        self.proj_lif = neuron.build()

    def __call__(self, x: Array) -> Array:
        T, B, L, D = x.shape
        q, k = jnp.split(fire(self, self.qk_lif, seq(self.qk_conv_bn, x)), 2, axis=-1)
        a = fire(self, self.attn_lif, qk_token_core(q, self.num_heads, self.qka_type))
        if self.qka_type == "token":  # a[T, B, L, heads] gates each head's channels of a token
            a = jnp.repeat(a, D // self.num_heads, axis=-1)
        else:  # a[T, B, D] gates each channel at every token
            a = a[:, :, None, :]
        return fire(self, self.proj_lif, seq(self.proj_conv_bn, a * k))


class _MLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, neuron, rngs: nnx.Rngs):
        self.record_spikes = False
        self.fc1, self.bn1 = temporal.Conv1d(dim, hidden, 1, rngs=rngs), temporal.BatchNorm(hidden)
        self.lif1 = neuron.build()
        self.fc2, self.bn2 = temporal.Conv1d(hidden, dim, 1, rngs=rngs), temporal.BatchNorm(dim)
        self.lif2 = neuron.build()

    def __call__(self, x: Array) -> Array:
        x = fire(self, self.lif1, self.bn1(self.fc1(x)))
        return fire(self, self.lif2, self.bn2(self.fc2(x)))


class _Block(nnx.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qka_type: str, self_attention: bool, *,
                 neuron, attn_neuron, fire_neuron, rngs: nnx.Rngs):
        if self_attention:
            self.attn = SpikingSelfAttention(dim, num_heads, neuron=attn_neuron, attn_neuron=fire_neuron, rngs=rngs)
        else:
            self.attn = QKAttention(dim, num_heads, qka_type, neuron=attn_neuron, attn_neuron=fire_neuron, rngs=rngs)
        self.mlp = _MLP(dim, int(dim * mlp_ratio), neuron=neuron, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        T, B, H, W, D = x.shape
        x = x.reshape(T, B, H * W, D)
        x = x + self.attn(x)
        return (x + self.mlp(x)).reshape(T, B, H, W, D)


class QKFormer(nnx.Module):
    """SpikingJelly's ``QKFormer``: ``images[B, H, W, C]`` or ``[T, B, H, W, C]`` -> ``logits[B, num_classes]``
    (H, W >= 16; see the module docstring).

    Args (as SpikingJelly's): T, in_channels, num_classes, embed_dims (E, a multiple of 8),
      num_heads and depths (three stage values each), mlp_ratio, qka_type (``"token"`` /
      ``"channel"``), spiking_neuron and **neuron_kwargs (:func:`spikejax.models.sj_neurons.neuron_spec`).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (logits float32).
      remat: training memory per block (:data:`spikejax.remat.REMAT_MODES`; same gradients in every mode).
      rngs: initializers (PyTorch's defaults, as SpikingJelly's model).
    """

    def __init__(self, *, T: int = 4, in_channels: int = 3, num_classes: int = 1000, embed_dims: int = 384,
                 num_heads: tuple[int, int, int] = (3, 6, 6), depths: tuple[int, int, int] = (1, 2, 7),
                 mlp_ratio: float = 4.0, qka_type: str = "token", spiking_neuron: str | None = None,
                 dtype: str = "float32", remat: str = "none", rngs: nnx.Rngs, **neuron_kwargs: Any):
        check_positive(T=T, in_channels=in_channels, num_classes=num_classes)
        check_dtype(dtype)
        self.remat = check_remat(remat)
        if len(tuple(num_heads)) != 3 or len(tuple(depths)) != 3:
            raise ValueError(f"num_heads, depths: expected three stage values each, got {num_heads!r}, {depths!r}")
        if embed_dims % 8:
            raise ValueError(f"embed_dims: expected a multiple of 8 (widths E/8, E/4, E/2, E), got {embed_dims}")
        dims = (embed_dims // 4, embed_dims // 2, embed_dims)
        for d, h in zip(dims, num_heads, strict=True):
            check_positive(num_heads=h)
            if d % h:
                raise ValueError(f"num_heads: {h} must divide the stage width {d} (num_heads={tuple(num_heads)})")
        self.T, self.in_channels = T, in_channels
        neuron = neuron_spec(spiking_neuron, neuron_kwargs)
        attn = neuron_spec(spiking_neuron, neuron_kwargs, defaults=_ATTN_LIF)
        attn_fire = neuron_spec(spiking_neuron, neuron_kwargs, defaults={**_ATTN_LIF, "v_threshold": 0.5})
        self.patch_embed1 = _PatchEmbedInit(in_channels, dims[0], neuron=neuron, rngs=rngs)
        self.patch_embed2 = _PatchEmbedStage(dims[0], dims[1], neuron=neuron, rngs=rngs)
        self.patch_embed3 = _PatchEmbedStage(dims[1], dims[2], neuron=neuron, rngs=rngs)
        for i, (d, h, n) in enumerate(zip(dims, num_heads, depths, strict=True)):
            setattr(self, f"stage{i + 1}", nnx.List([
                _Block(d, h, mlp_ratio, qka_type, i == 2, neuron=neuron, attn_neuron=attn, fire_neuron=attn_fire,
                       rngs=rngs)
                for _ in range(n)
            ]))
        self.head = temporal.Linear(embed_dims, num_classes, rngs=rngs)
        self.compute_dtype = set_compute_dtype(self, dtype)

    def __call__(self, images: Array) -> Array:
        x = to_sequence(images, self.T, self.in_channels).astype(self.compute_dtype)
        for embed, stage in ((self.patch_embed1, self.stage1), (self.patch_embed2, self.stage2),
                             (self.patch_embed3, self.stage3)):
            x = remat_call(self.remat, embed, x)  # the embeds hold the full-resolution activations
            modes = remat_modes(self.remat, len(stage)) if stage is self.stage3 else [self.remat] * len(stage)
            for block, mode in zip(stage, modes, strict=True):
                x = remat_call(mode, block, x)
        return self.head(x.mean(axis=(2, 3)).mean(axis=0)).astype(jnp.float32)


@register("qkformer_10_384")
def qkformer_10_384(*, T: int = 4, in_channels: int = 3, num_classes: int = 1000, spiking_neuron: str | None = None,
                    rngs: nnx.Rngs, **kwargs: Any) -> QKFormer:
    """QKFormer-10-384: E = 384, 6 heads per stage, depths (1, 2, 7), token Q-K attention (inputs >= 16x16).
    ``embed_dims``, ``num_heads``, ``depths``, ``mlp_ratio``, ``qka_type`` may be overridden."""
    arch = dict(embed_dims=384, num_heads=(6, 6, 6), depths=(1, 2, 7))
    arch.update({k: kwargs.pop(k) for k in ("embed_dims", "num_heads", "depths", "mlp_ratio", "qka_type")
                 if k in kwargs})
    return QKFormer(T=T, in_channels=in_channels, num_classes=num_classes, spiking_neuron=spiking_neuron,
                    rngs=rngs, **arch, **kwargs)
