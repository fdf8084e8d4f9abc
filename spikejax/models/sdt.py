"""Spike-driven Transformer (Yao et al., NeurIPS 2023) as SpikingJelly 2.0 builds it
(``spikingjelly.activation_based.model.spike_driven_transformer``): ``sdt_8_384``.

``images[B, H, W, C]`` (repeated over ``T``) or ``x[T, B, H, W, C]`` (NHWC) ->

- ``patch_embed``: three stages ``[Conv2d 3x3, BN, LIF (, MaxPool 3x3/2)]`` with widths
  ``D/8, D/4, D/2``, a ``final_stage`` ``[Conv2d 3x3, BN (, MaxPool)]`` to D (the four pools per
  ``pooling_stat``, default ``"1111"``: 16x downsampling), then the relative position embedding
  ``x + BN(Conv3x3(LIF(x)))``;
- ``depths`` blocks, each ``mlp(attn(x))`` (membrane shortcuts, no neuron on the residual path):
  SDSA ``x + BN(Conv1x1(q ⊙ LIF_{θ=0.5}(Σ_L k ⊙ v)))`` with ``q, k, v = LIF(BN(Conv1x1(LIF(x))))``
  per head (the sum over tokens is per head and channel), MLP ``x + BN(Conv1x1(LIF(...)))`` twice;
- head: ``Linear(mean_T LIF(mean_{H,W} x))`` -> ``logits[B, num_classes]``.

Neurons: SpikingJelly's ``LIFNode`` defaults (τ = 2, hard reset to 0, ``Sigmoid(α=4)``); the
attention's own neurons use ``detach_reset=True``. The module tree mirrors SpikingJelly's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.models.registry import register
from spikejax.models.sj_neurons import fire, neuron_spec
from spikejax.models.spikformer import check_dtype, check_positive, seq, set_compute_dtype, to_sequence
from spikejax.nn import temporal
from spikejax.remat import check_remat, remat_call, remat_modes

Array = jax.Array

__all__ = ["SpikeDrivenSelfAttention", "SpikeDrivenTransformer", "sdt_8_384"]

_ATTN_LIF = {"tau": 2.0, "detach_reset": True}


def _conv(d_in: int, d_out: int, k: int, rngs: nnx.Rngs, *, use_bias: bool = True) -> temporal.Conv2d:
    return temporal.Conv2d(d_in, d_out, k, padding=k // 2, use_bias=use_bias, rngs=rngs)


class _PatchEmbed(nnx.Module):
    """``[T, B, H, W, C] -> [T, B, H', W', D]`` (see the module docstring)."""

    def __init__(self, in_channels: int, embed_dims: int, pooling_stat: str, *, neuron, rngs: nnx.Rngs,
                 remat: str = "none"):
        self.record_spikes = False
        self.remat = check_remat(remat)  # per stage: at full resolution they hold most of the activations
        dims = (embed_dims // 8, embed_dims // 4, embed_dims // 2)
        stages, prev = [], in_channels
        for pool, d in zip(pooling_stat[:3], dims, strict=True):
            stage = [_conv(prev, d, 3, rngs), temporal.BatchNorm(d), neuron.build()]
            if pool == "1":
                stage.append(temporal.MaxPool2d(3, stride=2, padding=1))
            stages.append(nnx.List(stage))
            prev = d
        self.stages = nnx.List(stages)
        final = [_conv(prev, embed_dims, 3, rngs), temporal.BatchNorm(embed_dims)]
        if pooling_stat[3] == "1":
            final.append(temporal.MaxPool2d(3, stride=2, padding=1))
        self.final_stage = nnx.List(final)
        self.final_lif = neuron.build()
        self.rpe_conv = _conv(embed_dims, embed_dims, 3, rngs, use_bias=False)
        self.rpe_bn = temporal.BatchNorm(embed_dims)

    def _stage(self, stage: nnx.List, x: Array) -> Array:
        conv, bn, lif, *pool = stage
        return seq(pool, fire(self, lif, bn(conv(x))))

    def _final(self, parts: nnx.List, x: Array) -> Array:
        final_stage, final_lif, rpe_conv, rpe_bn = parts
        x = seq(final_stage, x)
        return x + rpe_bn(rpe_conv(fire(self, final_lif, x)))

    def __call__(self, x: Array) -> Array:
        for stage in self.stages:
            x = remat_call(self.remat, stage, x, method=self._stage)
        parts = nnx.List([self.final_stage, self.final_lif, self.rpe_conv, self.rpe_bn])
        return remat_call(self.remat, parts, x, method=self._final)


class SpikeDrivenSelfAttention(nnx.Module):
    """SpikingJelly's ``layer.SpikeDrivenSelfAttention`` (SDSA-v1): ``[T, B, H, W, D] -> [T, B, H, W, D]``
    (membrane potentials; the input is added back)."""

    def __init__(self, dim: int, num_heads: int, *, neuron, attn_neuron, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} must divide dim={dim}")
        self.record_spikes = False
        self.num_heads = num_heads
        self.shortcut_lif = neuron.build()
        for name in "qkv":
            setattr(self, f"{name}_conv", _conv(dim, dim, 1, rngs, use_bias=False))
            setattr(self, f"{name}_bn", temporal.BatchNorm(dim))
            setattr(self, f"{name}_lif", neuron.build())
        self.attn_lif = attn_neuron.build()
        self.proj_conv = _conv(dim, dim, 1, rngs)
        self.proj_bn = temporal.BatchNorm(dim)

    def __call__(self, x: Array) -> Array:
        s = fire(self, self.shortcut_lif, x)
        q = fire(self, self.q_lif, self.q_bn(self.q_conv(s)))
        k = fire(self, self.k_lif, self.k_bn(self.k_conv(s)))
        v = fire(self, self.v_lif, self.v_bn(self.v_conv(s)))
        # per head and channel: Σ over tokens of k ⊙ v, i.e. a [T, B, D] vector (heads are D's slices)
        kv = fire(self, self.attn_lif, (k * v).sum(axis=(2, 3), dtype=jnp.float32).astype(x.dtype))
        return self.proj_bn(self.proj_conv(q * kv[:, :, None, None, :])) + x


class _MLP(nnx.Module):
    """``x + BN(Conv1x1(LIF(x)))`` (the residual only when ``hidden == dim``), then ``+ BN(Conv1x1(LIF(.)))``."""

    def __init__(self, dim: int, hidden: int, *, neuron, rngs: nnx.Rngs):
        self.record_spikes = False
        self.residual = dim == hidden
        self.fc1, self.bn1, self.lif1 = _conv(dim, hidden, 1, rngs), temporal.BatchNorm(hidden), neuron.build()
        self.fc2, self.bn2, self.lif2 = _conv(hidden, dim, 1, rngs), temporal.BatchNorm(dim), neuron.build()

    def __call__(self, x: Array) -> Array:
        identity = x
        x = self.bn1(self.fc1(fire(self, self.lif1, x)))
        if self.residual:
            x = identity = x + identity
        return self.bn2(self.fc2(fire(self, self.lif2, x))) + identity


class _Block(nnx.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, neuron, attn_neuron, fire_neuron,
                 rngs: nnx.Rngs):
        self.attn = SpikeDrivenSelfAttention(dim, num_heads, neuron=attn_neuron, attn_neuron=fire_neuron, rngs=rngs)
        self.mlp = _MLP(dim, int(dim * mlp_ratio), neuron=neuron, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.mlp(self.attn(x))


class SpikeDrivenTransformer(nnx.Module):
    """SpikingJelly's ``SpikeDrivenTransformer``: ``images[B, H, W, C]`` or ``[T, B, H, W, C]`` ->
    ``logits[B, num_classes]`` (see the module docstring; H, W >= the pools' downsampling).

    Args (as SpikingJelly's): T, in_channels, num_classes, embed_dims (a multiple of 8), num_heads,
      depths, mlp_ratio, pooling_stat (four "0"/"1": which stem stages max-pool),
      spiking_neuron and **neuron_kwargs (:func:`spikejax.models.sj_neurons.neuron_spec`).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (logits float32).
      remat: training memory per block (:data:`spikejax.remat.REMAT_MODES`; same gradients in every mode).
      rngs: initializers (PyTorch's defaults, as SpikingJelly's model).
    """

    def __init__(self, *, T: int = 4, in_channels: int = 3, num_classes: int = 1000, embed_dims: int = 384,
                 num_heads: int = 8, depths: int = 8, mlp_ratio: float = 4.0, pooling_stat: str = "1111",
                 spiking_neuron: str | None = None, dtype: str = "float32", remat: str = "none", rngs: nnx.Rngs,
                 **neuron_kwargs: Any):
        check_positive(T=T, in_channels=in_channels, num_classes=num_classes, depths=depths, num_heads=num_heads)
        check_dtype(dtype)
        self.remat = check_remat(remat)
        if not isinstance(pooling_stat, str) or len(pooling_stat) != 4 or set(pooling_stat) - {"0", "1"}:
            raise ValueError(f"pooling_stat: expected four characters of 0/1 (e.g. '1111'), got {pooling_stat!r}")
        if embed_dims % 8:
            raise ValueError(f"embed_dims: expected a multiple of 8 (stem widths D/8..D), got {embed_dims}")
        self.T, self.in_channels = T, in_channels
        neuron = neuron_spec(spiking_neuron, neuron_kwargs)
        attn = neuron_spec(spiking_neuron, neuron_kwargs, defaults=_ATTN_LIF)
        attn_fire = neuron_spec(spiking_neuron, neuron_kwargs, defaults={**_ATTN_LIF, "v_threshold": 0.5})
        self.record_spikes = False
        self.patch_embed = _PatchEmbed(in_channels, embed_dims, pooling_stat, neuron=neuron, rngs=rngs,
                                       remat=self.remat)
        self.blocks = nnx.List([
            _Block(embed_dims, num_heads, mlp_ratio, neuron=neuron, attn_neuron=attn, fire_neuron=attn_fire, rngs=rngs)
            for _ in range(depths)
        ])
        self.head_lif = neuron.build()
        self.head = temporal.Linear(embed_dims, num_classes, rngs=rngs)
        self.compute_dtype = set_compute_dtype(self, dtype)

    def __call__(self, images: Array) -> Array:
        x = self.patch_embed(to_sequence(images, self.T, self.in_channels).astype(self.compute_dtype))
        for block, mode in zip(self.blocks, remat_modes(self.remat, len(self.blocks)), strict=True):
            x = remat_call(mode, block, x)
        x = fire(self, self.head_lif, x.mean(axis=(2, 3)))
        return self.head(x.mean(axis=0)).astype(jnp.float32)


@register("sdt_8_384")
def sdt_8_384(*, T: int = 4, in_channels: int = 3, num_classes: int = 1000, spiking_neuron: str | None = None,
              rngs: nnx.Rngs, **kwargs: Any) -> SpikeDrivenTransformer:
    """SDT-8-384: D = 384, 8 heads, 8 blocks, ``pooling_stat="1111"`` (inputs of at least 16x16).
    ``embed_dims``, ``num_heads``, ``depths``, ``mlp_ratio``, ``pooling_stat`` may be overridden."""
    arch = dict(embed_dims=384, num_heads=8, depths=8)
    arch.update({k: kwargs.pop(k) for k in ("embed_dims", "num_heads", "depths", "mlp_ratio", "pooling_stat")
                 if k in kwargs})
    return SpikeDrivenTransformer(T=T, in_channels=in_channels, num_classes=num_classes,
                                  spiking_neuron=spiking_neuron, rngs=rngs, **arch, **kwargs)

