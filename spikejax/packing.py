"""Bit-packed spike storage and a spiking linear layer that keeps only packed spikes for backward.

Binary spikes carry one bit of information but are usually stored as float32 (32 bits). Packing
them 32 to a ``uint32`` word cuts that 32x. The place where this pays in training is the memory
saved for the backward pass: a linear layer on spikes ``y = s W + b`` needs ``s`` again for
``∂L/∂W = sᵀ ∂L/∂y``. :func:`spiking_linear` is a ``jax.custom_vjp`` whose forward saves
``pack_spikes(s)`` (and ``W``) instead of ``s``; its gradients are those of the plain
``s @ W + b`` (``∂L/∂s = ∂L/∂y Wᵀ`` keeps the surrogate path to the neurons open).

Bit layout of :func:`pack_spikes` along ``axis`` (length ``n``, ``n_words = ceil(n / 32)``)::

    word[j] = Σ_{b=0..31} [s[32 j + b] != 0] << b        (positions ≥ n are zero padding)

Spikes that are not binary are stored as bit planes, each packed as above and stacked on a new
leading axis: ternary spikes ``a · S`` (``S ∈ {-1, 0, +1}``, ``a`` a per-channel amplitude) as two
planes, ``[s != 0, signbit(s)]`` (2 bits a spike; the amplitude is given back on unpacking), and
multi-level counts ``S ∈ {0, ..., L}`` as the ``b = bit_length(L)`` planes of their binary digits
(``b`` bits a spike; L = 4 -> 3 bits).

Usage::

    packed = pack_spikes(s, axis=-1)                  # s[..., n] -> uint32[..., ceil(n/32)]
    s2 = unpack_spikes(packed, n, axis=-1)            # == (s != 0) as float32
    p3 = pack_ternary(a * S)                          # -> uint32[2, ..., ceil(n/32)]
    s3 = unpack_ternary(p3, n, amplitude=a)           # == a * S, exactly (signed zeros too)
    p4 = pack_levels(counts, levels=4)                # -> uint32[3, ..., ceil(n/32)]
    s4 = unpack_levels(p4, n)                         # == counts
    y = spiking_linear(s, kernel, bias)               # saves packed s for the backward
    swapped = use_packed_spike_linears(model, x)      # swap nnx.Linear layers that see binary spikes
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

Array = jax.Array

__all__ = [
    "pack_spikes",
    "unpack_spikes",
    "pack_ternary",
    "unpack_ternary",
    "pack_levels",
    "unpack_levels",
    "level_bits",
    "packed_size",
    "packed_bytes",
    "spiking_linear",
    "PackedSpikeLinear",
    "use_packed_spike_linears",
    "PACKED_SPIKES",
]

PACKED_SPIKES = "spikejax_packed_spikes"
"""``jax.ad_checkpoint.checkpoint_name`` of every bit-packed spike array kept for the backward pass
(:func:`spiking_linear`'s residual, :func:`spikejax.remat.packed_spike_boundary`): a ``jax.checkpoint``
policy saving this name (``remat="spikes"``) keeps the packed words and recomputes the float spikes."""

_BITS = 32


def _axis(axis: int, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(axis)!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: {axis} is out of range for an array of rank {ndim}")
    return int(axis) % ndim


def packed_size(n: int) -> int:
    """Number of uint32 words holding ``n`` spikes: ``ceil(n / 32)``."""
    return -(-int(n) // _BITS)


def pack_spikes(spikes: Array, axis: int = -1) -> Array:
    """Pack binary spikes 32 to a ``uint32`` along ``axis``.

    Args:
      spikes: any array; an element counts as a spike when it is non-zero (any dtype, bool too).
      axis: the axis to pack (length ``n``, any length; the last word is zero-padded).

    Returns:
      ``uint32`` array with ``spikes.shape`` except ``ceil(n / 32)`` along ``axis``;
      bit ``b`` of word ``j`` is spike ``32 j + b``.
    """
    spikes = jnp.asarray(spikes)
    if spikes.ndim < 1:
        raise ValueError(f"spikes: expected rank >= 1, got a scalar of shape {tuple(spikes.shape)}")
    ax = _axis(axis, spikes.ndim)
    n = spikes.shape[ax]
    words = packed_size(n)
    bits = jnp.moveaxis(spikes != 0, ax, -1)
    pad = words * _BITS - n
    if pad:
        bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
    bits = bits.reshape(*bits.shape[:-1], words, _BITS).astype(jnp.uint32)
    shifts = jnp.arange(_BITS, dtype=jnp.uint32)
    packed = jnp.sum(bits << shifts, axis=-1, dtype=jnp.uint32)  # disjoint bits: sum == or
    return jnp.moveaxis(packed, -1, ax)


def unpack_spikes(packed: Array, length: int, axis: int = -1, dtype: Any = jnp.float32) -> Array:
    """Inverse of :func:`pack_spikes`: ``uint32[..., ceil(n/32), ...] -> dtype[..., n, ...]`` of 0/1.

    Args:
      packed: ``uint32`` words from :func:`pack_spikes`.
      length: ``n``, the unpacked length along ``axis`` (``ceil(n/32)`` must equal the words there).
      axis: the packed axis.
      dtype: the output dtype (default float32).
    """
    packed = jnp.asarray(packed)
    if packed.dtype != jnp.uint32:
        raise TypeError(f"packed: expected uint32 words from pack_spikes, got {packed.dtype}")
    if packed.ndim < 1:
        raise ValueError("packed: expected rank >= 1, got a scalar")
    ax = _axis(axis, packed.ndim)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length: expected an integer >= 0, got {length!r}")
    if packed_size(length) != packed.shape[ax]:
        raise ValueError(
            f"length: {length} spikes need {packed_size(length)} words along axis {axis}, but packed has "
            f"{packed.shape[ax]}"
        )
    words = jnp.moveaxis(packed, ax, -1)
    shifts = jnp.arange(_BITS, dtype=jnp.uint32)
    bits = (words[..., None] >> shifts) & jnp.uint32(1)
    bits = bits.reshape(*words.shape[:-1], words.shape[-1] * _BITS)[..., :length]
    return jnp.moveaxis(bits.astype(dtype), -1, ax)


# --- bit planes: ternary and multi-level spikes ----------------------------------------------------


def _pack_planes(planes: list[Array], axis: int) -> Array:
    """``pack_spikes`` of each boolean plane (same shape), stacked on a new leading axis."""
    return jnp.stack([pack_spikes(p, axis=axis) for p in planes])


def _unpack_planes(packed: Array, length: int, axis: int, name: str = "packed") -> Array:
    """Inverse of :func:`_pack_planes`: ``uint32[P, ...] -> uint32[P, ..., n, ...]`` of 0/1 bits."""
    packed = jnp.asarray(packed)
    if packed.ndim < 2:
        raise ValueError(f"{name}: expected bit planes [P, ...] of rank >= 2, got shape {tuple(packed.shape)}")
    ax = _axis(axis, packed.ndim - 1)
    return unpack_spikes(packed, length, axis=ax + 1, dtype=jnp.uint32)


def pack_ternary(spikes: Array, axis: int = -1) -> Array:
    """Pack ternary spikes ``a · S`` (``S ∈ {-1, 0, +1}``, any amplitude ``a``) into two bit planes.

    Args:
      spikes: ``[..., n, ...]`` floating; only whether an element is non-zero and its sign bit are kept.
      axis: the axis to pack.

    Returns:
      ``uint32[2, ...]``: plane 0 ``pack_spikes(spikes != 0)``, plane 1 ``pack_spikes(signbit(spikes))``
      (each ``spikes.shape`` with ``ceil(n / 32)`` along ``axis``): 2 bits a spike.
    """
    spikes = jnp.asarray(spikes)
    if not jnp.issubdtype(spikes.dtype, jnp.floating):
        raise TypeError(f"spikes: expected a floating dtype (ternary spikes a·S), got {spikes.dtype}")
    if spikes.ndim < 1:
        raise ValueError(f"spikes: expected rank >= 1, got a scalar of shape {tuple(spikes.shape)}")
    return _pack_planes([spikes != 0, jnp.signbit(spikes)], axis)


def unpack_ternary(packed: Array, length: int, axis: int = -1, amplitude: Any = 1.0,
                   dtype: Any = jnp.float32) -> Array:
    """Inverse of :func:`pack_ternary`: ``uint32[2, ...] -> dtype[..., n, ...]``.

    Element ``i`` is ``±|a|`` where plane 0 is set (the sign from plane 1), else ``±0``:
    ``y = where(sign, -m, m)``, ``m = where(nonzero, |a|, 0)``, computed in ``a``'s dtype and cast to
    ``dtype``. This is exactly ``(S · a).astype(dtype)`` for the ``S ∈ {-1, 0, +1}`` that was packed
    (signed zeros included), for any amplitude ``a`` (scalar or broadcastable to the unpacked shape,
    e.g. ``[C]`` per channel along the last axis; negative too).

    Args:
      packed: ``uint32[2, ...]`` from :func:`pack_ternary`.
      length: ``n``, the unpacked length along ``axis``.
      axis: the packed axis of each plane (``packed.shape[1:]``).
      amplitude: ``a``.
      dtype: output dtype.
    """
    planes = _unpack_planes(packed, length, axis)
    if planes.shape[0] != 2:
        raise ValueError(f"packed: expected 2 bit planes (nonzero, sign) from pack_ternary, got {planes.shape[0]}")
    mag = jnp.abs(jnp.asarray(amplitude))
    if not jnp.issubdtype(mag.dtype, jnp.floating):
        mag = mag.astype(dtype)
    m = jnp.where(planes[0] != 0, mag, jnp.zeros((), mag.dtype))
    return jnp.where(planes[1] != 0, -m, m).astype(dtype)


def level_bits(levels: int) -> int:
    """Bit planes of a count in ``{0, ..., levels}``: ``bit_length(levels)`` (``ceil(log2(levels + 1))``)."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels: expected an integer >= 1, got {levels!r}")
    return int(levels).bit_length()


def pack_levels(counts: Array, levels: int, axis: int = -1) -> Array:
    """Pack multi-level spikes (integer counts ``0..levels``, any dtype) into ``level_bits(levels)`` planes.

    Returns ``uint32[b, ...]``: plane ``k`` is ``pack_spikes((c >> k) & 1)``, ``c`` the count as an
    unsigned integer (values outside ``0..levels`` or not integers are not representable: the caller
    guarantees the range, e.g. :func:`spikejax.multilevel`'s ``clip(floor(H / θ), 0, L)``).
    """
    bits = level_bits(levels)
    counts = jnp.asarray(counts)
    if counts.ndim < 1:
        raise ValueError(f"counts: expected rank >= 1, got a scalar of shape {tuple(counts.shape)}")
    c = counts.astype(jnp.uint32)
    return _pack_planes([(c >> k) & jnp.uint32(1) for k in range(bits)], axis)


def unpack_levels(packed: Array, length: int, axis: int = -1, dtype: Any = jnp.float32) -> Array:
    """Inverse of :func:`pack_levels`: ``uint32[b, ...] -> dtype[..., n, ...]``, ``Σ_k plane_k 2^k``."""
    planes = _unpack_planes(packed, length, axis)
    weights = (jnp.uint32(1) << jnp.arange(planes.shape[0], dtype=jnp.uint32)).reshape((-1,) + (1,) * (planes.ndim - 1))
    return jnp.sum(planes * weights, axis=0, dtype=jnp.uint32).astype(dtype)


# --- spiking linear with packed residuals ----------------------------------------------------------


def _linear_value(s: Array, kernel: Array) -> Array:
    return jnp.matmul(s, kernel)


@jax.custom_vjp
def _spiking_matmul(s: Array, kernel: Array) -> Array:
    return _linear_value(s, kernel)


def _spiking_matmul_fwd(s, kernel):
    # residuals: 1 bit per spike (named, so that a checkpoint policy saving PACKED_SPIKES keeps it and
    # nothing else of s), the kernel (kept alive by the optimizer anyway), and an empty array carrying
    # s's dtype
    packed = checkpoint_name(pack_spikes(s, axis=-1), PACKED_SPIKES)
    return _linear_value(s, kernel), (packed, kernel, jnp.zeros((0,), s.dtype))


def _spiking_matmul_bwd(res, g):
    packed, kernel, s_proto = res
    k_in = kernel.shape[0]
    s = unpack_spikes(packed, k_in, axis=-1, dtype=g.dtype)
    d_kernel = jnp.matmul(s.reshape(-1, k_in).T, g.reshape(-1, g.shape[-1])).astype(kernel.dtype)  # sᵀ g
    d_s = jnp.matmul(g, kernel.T.astype(g.dtype)).astype(s_proto.dtype)                           # g Wᵀ
    return d_s, d_kernel


_spiking_matmul.defvjp(_spiking_matmul_fwd, _spiking_matmul_bwd)


def spiking_linear(spikes: Array, kernel: Array, bias: Array | None = None) -> Array:
    """``y = s W + b`` for binary spikes ``s[..., K]``, ``W[K, O]``, ``b[O]`` -> ``y[..., O]``.

    Forward equals ``spikes @ kernel + bias``. The backward pass keeps ``pack_spikes(s)``
    (``ceil(K/32)`` uint32 per row) instead of ``s``, and returns the same gradients as the plain
    expression: ``∂L/∂s = g Wᵀ``, ``∂L/∂W = sᵀ g``, ``∂L/∂b = Σ g``. The spikes must be binary
    (0/1): any non-zero value is stored as 1, so ``∂L/∂W`` is only exact for 0/1 inputs.
    """
    spikes = jnp.asarray(spikes)
    kernel = jnp.asarray(kernel)
    if spikes.ndim < 1:
        raise ValueError("spikes: expected [..., K], got a scalar")
    if kernel.ndim != 2:
        raise ValueError(f"kernel: expected [K, O], got shape {tuple(kernel.shape)}")
    if spikes.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"spikes: last axis {spikes.shape[-1]} does not match kernel's input size {kernel.shape[0]}"
        )
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[1],):
            raise ValueError(f"bias: expected shape ({kernel.shape[1]},), got {tuple(bias.shape)}")
    y = _spiking_matmul(spikes, kernel)
    return y if bias is None else y + bias


class PackedSpikeLinear(nnx.Linear):
    """An ``nnx.Linear`` (same ``kernel``/``bias`` parameters) whose input is binary spikes and whose
    backward keeps them bit-packed (:func:`spiking_linear`). Same outputs and gradients as
    ``nnx.Linear`` on 0/1 inputs; ``x[..., in_features] -> y[..., out_features]``."""

    def __call__(self, inputs: Array) -> Array:  # noqa: D102
        kernel = self.kernel[...]
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        return spiking_linear(inputs, kernel, bias)

    @classmethod
    def from_linear(cls, layer: nnx.Linear) -> PackedSpikeLinear:
        """A :class:`PackedSpikeLinear` sharing ``layer``'s parameters (no copy)."""
        if not isinstance(layer, nnx.Linear):
            raise TypeError(f"layer: expected an nnx.Linear, got {type(layer)!r}")
        new = object.__new__(cls)
        new.__dict__.update(layer.__dict__)
        return new


def _set_child(model: nnx.Module, path: tuple, new) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    key = path[-1]
    if isinstance(key, int):
        parent[key] = new
    else:
        setattr(parent, key, new)


def use_packed_spike_linears(model: nnx.Module, *example_inputs, **example_kwargs) -> list[str]:
    """Swap, in place, every ``nnx.Linear`` of ``model`` whose input is binary spikes for a
    :class:`PackedSpikeLinear` sharing its parameters; the model code is not changed.

    Which layers see spikes is found by one eager forward on ``example_inputs`` (every input
    value in {0, 1}), with the ``nnx.Linear`` instances of ``model`` intercepted
    (:func:`spikejax.metrics.intercept_calls`: no class is patched, layers outside ``model`` are not
    seen). Returns the swapped layers' paths (``"blocks/0/mlp/fc2"``).
    """
    from spikejax.metrics.intercept import intercept_calls  # the metrics' interceptor, scoped to model

    binary: dict[int, bool] = {}

    def record(module, args, out):
        if isinstance(module, nnx.Linear) and not isinstance(module, PackedSpikeLinear):
            x = np.asarray(args[0])
            ok = bool(np.all((x == 0) | (x == 1)))
            binary[id(module)] = binary.get(id(module), True) and ok

    with intercept_calls(model, record, (nnx.Linear,)):
        model(*example_inputs, **example_kwargs)
    swapped = []
    for path, node in list(nnx.iter_graph(model)):
        if isinstance(node, nnx.Linear) and binary.get(id(node), False) and path:
            _set_child(model, tuple(path), PackedSpikeLinear.from_linear(node))
            swapped.append("/".join(str(p) for p in path))
    return swapped


def packed_bytes(shape: tuple[int, ...], axis: int = -1) -> int:
    """Bytes of ``pack_spikes`` output for spikes of ``shape`` (4 bytes per 32 spikes)."""
    shape = tuple(shape)
    ax = _axis(axis, len(shape), "axis")
    return 4 * math.prod(shape[:ax]) * packed_size(shape[ax]) * math.prod(shape[ax + 1:])
