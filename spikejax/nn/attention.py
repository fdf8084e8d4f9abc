"""Attention on spikes, ``x[T, B, L, D] -> y[T, B, L, D]`` (T time steps, B batch, L positions).

Every module follows the papers' layout (Spikformer, Spike-driven Transformer)::

    x ─(input_neuron)─┬─ q_proj ─ q_norm ─ q_neuron ─ q ┐
                      ├─ k_proj ─ k_norm ─ k_neuron ─ k ├─ mix(q, k, v) ─ (mix_norm) ─ attn_neuron ─┐
                      └─ v_proj ─ v_norm ─ v_neuron ─ v ┘                                            │
      y ─(output_neuron)─ out_norm ─ out_proj ──────────────────────────────────────────────────────┘

so Q, K, V are spikes. ``input_neuron`` (a spiking neuron on the input, for membrane shortcuts)
and ``output_neuron`` (for spike shortcuts) are optional; norms are ``"none"``, ``"batch"``
(``nnx.BatchNorm``, Spikformer's BN) or ``"layer"``. The token-mixing cores are pure functions on
heads ``[T, B, H, L, d]`` (d = D / H), exported for reuse and testing:

=============================  ======================================================================
core                           equation (per time step and head; ``M`` the causal mask if causal)
=============================  ======================================================================
:func:`ssa_core`               ``(Q Kᵀ ⊙ M) V · scale`` (Spikformer SSA, no softmax)
:func:`linear_attention_core`  ``y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)``, ``S_i = Σ_{j≤i} φ(k_j) v_jᵀ``,
                               ``z_i = Σ_{j≤i} φ(k_j)`` (O(L), chunked; ε = 1 by default, see
                               :data:`LINEAR_ATTENTION_EPS`); unnormalized: ``φ(q_i)ᵀ S_i · scale``
:func:`sliding_window_core`    ``(Q Kᵀ ⊙ B_w) V · scale``, ``B_w[i, j] = 1[i - w < j ≤ i]``; or
                               ``softmax(Q Kᵀ · scale + log B_w) V``
SDSA (module)                  ``Q ⊗ SN(Σ_j K_j ⊗ V_j)`` (Spike-driven Transformer; Σ over positions,
                               prefix sums ``Σ_{j≤i}`` if causal; channel-wise, so heads do not matter)
=============================  ======================================================================

One module, :class:`SpikingAttention`, does the projections, neurons and norms; what differs
between the kinds is its *mixer*, a frozen value with three agreeing views of the token mixing
(``full`` sequence, incremental ``step``, decoding ``state``): :class:`PerHead` of a core on heads
(:class:`SSAHeads`, :class:`LinearHeads`, :class:`WindowHeads`; the one place heads are split and
merged), :class:`SpikeDrivenMixer` (SDSA), and :class:`Concat` of mixers (hybrid = linear ‖ window).
The named classes (:class:`SpikingSelfAttention`, :class:`LinearSpikeAttention`, ...) build their
mixer from their arguments; the layer factories are in :mod:`spikejax.nn.layers`.

Mixed precision: with bfloat16 inputs (a model built with ``dtype="bfloat16"``) the cores multiply
in bfloat16 but accumulate in float32 (``preferred_element_type``), compute softmax, linear
attention's running sums and its normaliser in float32, and return the input's dtype; decoding
states are float32 whatever the compute dtype.

Causal modules decode one position at a time: ``state = attn.init_state(batch, time_steps)``,
``y, state = attn.decode_step(x_t[T, B, 1, D], state)``; ``attn(x, return_state=True)`` returns
the state after the whole sequence (prefill). Decoding equals the full forward exactly when the
norms are position-local (``"layer"``, ``"none"``, or ``"batch"`` in eval mode).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax.nn.layers import NORMS, apply_optional, linear, make_norm
from spikejax.nn.neurons import SpikingNeuron, make_neuron

Array = jax.Array

__all__ = [
    "ssa_core",
    "linear_attention_core",
    "sliding_window_core",
    "feature_map",
    "linear_attention_step",
    "linear_attention_state",
    "sliding_window_step",
    "sliding_window_state",
    "split_heads",
    "merge_heads",
    "SSAHeads",
    "LinearHeads",
    "WindowHeads",
    "PerHead",
    "SpikeDrivenMixer",
    "Concat",
    "check_heads",
    "head_scale",
    "resolve_feature_map",
    "SIGNED_SPIKE_NEURONS",
    "SpikingAttention",
    "SpikeAttentionBase",
    "SpikingSelfAttention",
    "SpikeDrivenSelfAttention",
    "LinearSpikeAttention",
    "SlidingWindowSpikeAttention",
    "HybridSpikeAttention",
    "LinearAttentionState",
    "SlidingWindowState",
    "SDSAState",
    "HybridState",
    "ATTENTIONS",
    "make_attention",
    "LINEAR_ATTENTION_EPS",
]

FEATURE_MAPS = ("identity", "relu", "elu1")
LINEAR_ATTENTION_EPS = 1.0
"""Default ε of the normalized linear attention, ``y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)``.

With non-negative features ``n_i = φ(q_i)ᵀ z_i >= 0`` (for binary spikes, the number of query/key
spike coincidences up to position i) ``ε = 1`` acts as one extra always-matching key of value 0:
``y_i = Σ_j w_ij v_j / (1 + Σ_j w_ij)``, a bounded average that shrinks toward 0 when few keys match.
The gradient ``∂y_{i,e}/∂φ(q_i)_d = (S_{i,de} - y_{i,e} z_{i,d}) / (n_i + ε)`` is bounded by
``2 max|v| z_{i,d} / (n_i + ε)``, which with ε = 1 stays O(the key-spike count) also for a query
with no spikes (``n_i = 0``); a tiny ε (e.g. 1e-6) multiplies it by 1/ε there (measured at
initialisation: |∂L/∂q| ~ 1e2 on such rows against ~ 1e-4 elsewhere).
"""


# --- pure cores on heads [T, B, H, L, d] --------------------------------------------------------


def feature_map(x: Array, kind: str) -> Array:
    """Non-negative feature map φ: ``identity`` (spikes are already >= 0), ``relu``, ``elu1`` (elu + 1)."""
    if kind == "identity":
        return x
    if kind == "relu":
        return jax.nn.relu(x)
    if kind == "elu1":
        return jax.nn.elu(x) + 1.0
    raise ValueError(f"feature_map: unknown feature map {kind!r}; expected one of {FEATURE_MAPS}")


def _dot(spec: str, a: Array, b: Array) -> Array:
    """``jnp.einsum(spec, a, b)`` accumulated and returned in float32 (bfloat16 inputs stay bfloat16
    in the multiply; float32 inputs give exactly the plain einsum)."""
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _causal_mask(L: int) -> Array:
    return jnp.tril(jnp.ones((L, L), bool))


def ssa_core(q: Array, k: Array, v: Array, *, scale: float, causal: bool = False) -> Array:
    """Spikformer's spiking self-attention ``(Q Kᵀ ⊙ M) V · scale``; ``q, k, v: [..., L, d]``
    (products in their dtype, accumulated in float32, returned in ``q``'s dtype)."""
    L, dt = q.shape[-2], q.dtype
    if causal:
        scores = jnp.where(_causal_mask(L), _dot("...id,...jd->...ij", q, k), 0.0)
        out = _dot("...ij,...jd->...id", scores.astype(dt), v)
    elif L > q.shape[-1]:  # Q (Kᵀ V) is cheaper when L > d; same value
        out = _dot("...id,...de->...ie", q, _dot("...jd,...je->...de", k, v).astype(dt))
    else:
        out = _dot("...ij,...jd->...id", _dot("...id,...jd->...ij", q, k).astype(dt), v)
    return (out * scale).astype(dt)


def _exclusive_cumsum(x: Array, axis: int) -> Array:
    c = jnp.cumsum(x, axis=axis)
    zeros = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
    return jnp.concatenate([zeros, jax.lax.slice_in_dim(c, 0, x.shape[axis] - 1, axis=axis)], axis=axis)


def linear_attention_core(q: Array, k: Array, v: Array, *, feature: str = "identity",
                          normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS, scale: float = 1.0,
                          causal: bool = True, chunk_size: int = 64) -> Array:
    """Linear attention with a non-negative feature map φ; ``q, k: [..., L, d]``, ``v: [..., L, e]``.

    Causal: ``y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)`` with ``S_i = Σ_{j≤i} φ(k_j) v_jᵀ`` and
    ``z_i = Σ_{j≤i} φ(k_j)`` (``normalize``; ε defaults to :data:`LINEAR_ATTENTION_EPS` = 1, which
    keeps ``∂y_i/∂q_i`` bounded for a query without spikes), else ``y_i = φ(q_i)ᵀ S_i · scale``. Computed in chunks
    of ``chunk_size`` positions: masked attention inside a chunk plus the running state of the
    previous chunks, O(L · (chunk_size + d) · e) time. Non-causal: sums over all positions.
    Products in the inputs' dtype; the running sums ``S``, ``z``, the normaliser and the division
    in float32; returns ``q``'s dtype.
    """
    dt = q.dtype
    qf, kf = feature_map(q, feature), feature_map(k, feature)
    f32 = jnp.float32
    if not causal:
        kv = _dot("...jd,...je->...de", kf, v)
        num = _dot("...id,...de->...ie", qf, kv.astype(dt))
        den = jnp.einsum("...id,...d->...i", qf.astype(f32), kf.sum(-2, dtype=f32))
    else:
        L = q.shape[-2]
        C = max(1, min(int(chunk_size), L))
        n = -(-L // C)
        pad = n * C - L

        def chunks(a):
            if pad:
                a = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, pad), (0, 0)])
            return a.reshape(*a.shape[:-2], n, C, a.shape[-1])

        qc, kc, vc = chunks(qf), chunks(kf), chunks(v)
        scores = jnp.where(_causal_mask(C), _dot("...nid,...njd->...nij", qc, kc), 0.0)
        num = _dot("...nij,...nje->...nie", scores.astype(dt), vc)
        den = scores.sum(-1)
        kv_prev = _exclusive_cumsum(_dot("...njd,...nje->...nde", kc, vc), axis=-3)
        z_prev = _exclusive_cumsum(kc.sum(-2, dtype=f32), axis=-2)
        num = num + _dot("...nid,...nde->...nie", qc, kv_prev.astype(dt))
        den = den + jnp.einsum("...nid,...nd->...ni", qc.astype(f32), z_prev)
        num = num.reshape(*num.shape[:-3], n * C, num.shape[-1])[..., :L, :]
        den = den.reshape(*den.shape[:-2], n * C)[..., :L]
    if normalize:
        return (num / (den[..., None] + eps)).astype(dt)
    return (num * scale).astype(dt)


def _band_mask(L: int, window: int) -> Array:
    i = jnp.arange(L)[:, None]
    j = jnp.arange(L)[None, :]
    return (j <= i) & (j > i - window)


def sliding_window_core(q: Array, k: Array, v: Array, *, window: int, scale: float,
                        softmax: bool = False) -> Array:
    """Causal sliding-window attention: position i sees ``j`` with ``i - w < j ≤ i``.

    ``(Q Kᵀ ⊙ B_w) V · scale`` (spike-driven, no softmax) or ``softmax(Q Kᵀ · scale + log B_w) V``;
    ``q, k, v: [..., L, d]``. With ``w >= L`` this is full causal attention. Scores accumulate in
    float32 and the softmax runs in float32; returns ``q``'s dtype.
    """
    L, dt = q.shape[-2], q.dtype
    mask = _band_mask(L, window)
    scores = _dot("...id,...jd->...ij", q, k)
    if softmax:
        p = jax.nn.softmax(jnp.where(mask, scores * scale, -jnp.inf), axis=-1)
        return _dot("...ij,...jd->...id", p.astype(v.dtype), v).astype(dt)
    scores = jnp.where(mask, scores, 0.0)
    return (_dot("...ij,...jd->...id", scores.astype(dt), v) * scale).astype(dt)


# --- decoding states ----------------------------------------------------------------------------


class LinearAttentionState(NamedTuple):
    """Running sums of a causal linear attention:
    ``kv[T, B, H, d, d] = Σ φ(k) vᵀ``, ``z[T, B, H, d] = Σ φ(k)``."""

    kv: Array
    z: Array


class SlidingWindowState(NamedTuple):
    """The last ``w`` keys/values ``[T, B, H, w, d]`` (oldest first) and which slots hold a
    position, ``valid[w]``."""

    k: Array
    v: Array
    valid: Array


class SDSAState(NamedTuple):
    """Running sum ``Σ_{j≤i} k_j ⊗ v_j``, ``[T, B, 1, D]``."""

    kv: Array


class HybridState(NamedTuple):
    linear: LinearAttentionState
    window: SlidingWindowState


def linear_attention_step(q: Array, k: Array, v: Array, state: LinearAttentionState, *,
                          feature: str = "identity", normalize: bool = True,
                          eps: float = LINEAR_ATTENTION_EPS,
                          scale: float = 1.0) -> tuple[Array, LinearAttentionState]:
    """One causal linear-attention position on heads ``q, k, v: [..., d]`` -> ``(y[..., d], state)``
    (the state float32, ``y`` in ``q``'s dtype)."""
    dt = q.dtype
    qf, kf = feature_map(q, feature), feature_map(k, feature)
    kv = state.kv + _dot("...d,...e->...de", kf, v)
    z = state.z + kf.astype(jnp.float32)
    qf = qf.astype(jnp.float32)
    num = jnp.einsum("...d,...de->...e", qf, kv)
    if normalize:
        y = num / (jnp.einsum("...d,...d->...", qf, z)[..., None] + eps)
        return y.astype(dt), LinearAttentionState(kv, z)
    return (num * scale).astype(dt), LinearAttentionState(kv, z)


def linear_attention_state(k: Array, v: Array, *, feature: str = "identity") -> LinearAttentionState:
    """The running sums after a whole sequence, ``k, v: [..., L, d]``."""
    kf = feature_map(k, feature)
    return LinearAttentionState(_dot("...jd,...je->...de", kf, v), kf.sum(-2, dtype=jnp.float32))


def sliding_window_step(q: Array, k: Array, v: Array, state: SlidingWindowState, *, scale: float,
                        softmax: bool = False) -> tuple[Array, SlidingWindowState]:
    """One sliding-window position on heads ``q, k, v: [..., d]`` -> ``(y[..., d], state)``
    (the state float32, ``y`` in ``q``'s dtype)."""
    dt = q.dtype
    q = q.astype(jnp.float32)
    kc = jnp.concatenate([state.k[..., 1:, :], k[..., None, :].astype(jnp.float32)], axis=-2)
    vc = jnp.concatenate([state.v[..., 1:, :], v[..., None, :].astype(jnp.float32)], axis=-2)
    valid = jnp.concatenate([state.valid[1:], jnp.ones((1,), bool)])
    scores = jnp.einsum("...d,...jd->...j", q, kc)
    if softmax:
        p = jax.nn.softmax(jnp.where(valid, scores * scale, -jnp.inf), axis=-1)
        out = jnp.einsum("...j,...jd->...d", p, vc)
    else:
        out = jnp.einsum("...j,...jd->...d", jnp.where(valid, scores, 0.0), vc) * scale
    return out.astype(dt), SlidingWindowState(kc, vc, valid)


def sliding_window_state(k: Array, v: Array, *, window: int) -> SlidingWindowState:
    """The last ``window`` keys/values after a whole sequence ``k, v: [..., L, d]``."""
    L, w = k.shape[-2], window
    if L >= w:
        return SlidingWindowState(k[..., L - w:, :].astype(jnp.float32),
                                  v[..., L - w:, :].astype(jnp.float32), jnp.ones((w,), bool))
    padding = [(0, 0)] * (k.ndim - 2) + [(w - L, 0), (0, 0)]
    return SlidingWindowState(jnp.pad(k, padding).astype(jnp.float32),
                              jnp.pad(v, padding).astype(jnp.float32), jnp.arange(w) >= w - L)


def _empty_linear_state(T: int, B: int, H: int, d: int) -> LinearAttentionState:
    return LinearAttentionState(jnp.zeros((T, B, H, d, d), jnp.float32), jnp.zeros((T, B, H, d), jnp.float32))


def _empty_window_state(T: int, B: int, H: int, d: int, w: int) -> SlidingWindowState:
    shape = (T, B, H, w, d)
    return SlidingWindowState(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32),
                              jnp.zeros((w,), bool))


# --- head splitting -----------------------------------------------------------------------------


def split_heads(x: Array, num_heads: int) -> Array:
    """``[..., L, D] -> [..., H, L, d]`` with ``d = D / H`` (channel ``h·d + i`` is head h's channel i)."""
    *lead, L, D = x.shape
    return jnp.moveaxis(x.reshape(*lead, L, num_heads, D // num_heads), -2, -3)


def merge_heads(x: Array) -> Array:
    """``[..., H, L, d] -> [..., L, H·d]``, the inverse of :func:`split_heads`."""
    *lead, H, L, d = x.shape
    return jnp.moveaxis(x, -3, -2).reshape(*lead, L, H * d)


# --- mixers: the token mixing of a spiking attention, as frozen (hashable) values ---------------
#
# A mixer maps the spiking q, k, v [T, B, L, D] of an attention module to its mixed output
# [T, B, L, width(D)] (masking future positions if ``mixer.causal``) in three ways that agree:
#   full(q, k, v, neurons)               the whole sequence at once (training, prefill)
#   step(q, k, v, state, neurons)        one new position q, k, v [T, B, 1, D] -> (out, state)
#   final_state(q, k, v)                 the decoding state after a whole sequence
#   init_state(batch_size, time_steps, D)  the decoding state before any position
# ``neurons`` maps the names in ``mixer.neurons`` (spiking neurons the mixing itself fires, D
# channels each, built and owned by the module) to those modules. Per-head mixing is a core on
# heads [T, B, H, L, d] wrapped by :class:`PerHead` (the one place heads are split and merged);
# :class:`Concat` puts mixers side by side along channels (hybrid attention).


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SSAHeads:
    """Spikformer's SSA on heads: :func:`ssa_core`; decodes with the running sum ``S = Σ k vᵀ``
    (:func:`linear_attention_step` unnormalized, a :class:`LinearAttentionState`)."""

    scale: float
    causal: bool = False

    def full(self, q: Array, k: Array, v: Array) -> Array:
        return ssa_core(q, k, v, scale=self.scale, causal=self.causal)

    def step(self, q: Array, k: Array, v: Array, state: LinearAttentionState):
        return linear_attention_step(q, k, v, state, normalize=False, scale=self.scale)

    def state(self, k: Array, v: Array) -> LinearAttentionState:
        return linear_attention_state(k, v)

    def empty(self, T: int, B: int, H: int, d: int) -> LinearAttentionState:
        return _empty_linear_state(T, B, H, d)


@dataclasses.dataclass(frozen=True)
class LinearHeads:
    """Linear attention on heads (:func:`linear_attention_core` / :func:`linear_attention_step`,
    a :class:`LinearAttentionState`); the arguments are validated on construction."""

    scale: float
    feature_map: str = "identity"
    normalize: bool = True
    eps: float = LINEAR_ATTENTION_EPS
    chunk_size: int = 64
    causal: bool = True

    def __post_init__(self):
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map: unknown feature map {self.feature_map!r}; expected one of {FEATURE_MAPS}")
        if not float(self.eps) > 0:
            raise ValueError(f"eps: expected > 0 (the normaliser φ(q)ᵀz + eps can be 0), got {self.eps!r}")
        _check_positive_int("chunk_size", self.chunk_size)
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "normalize", bool(self.normalize))

    def full(self, q: Array, k: Array, v: Array) -> Array:
        return linear_attention_core(q, k, v, feature=self.feature_map, normalize=self.normalize, eps=self.eps,
                                     scale=self.scale, causal=self.causal, chunk_size=self.chunk_size)

    def step(self, q: Array, k: Array, v: Array, state: LinearAttentionState):
        return linear_attention_step(q, k, v, state, feature=self.feature_map, normalize=self.normalize,
                                     eps=self.eps, scale=self.scale)

    def state(self, k: Array, v: Array) -> LinearAttentionState:
        return linear_attention_state(k, v, feature=self.feature_map)

    def empty(self, T: int, B: int, H: int, d: int) -> LinearAttentionState:
        return _empty_linear_state(T, B, H, d)


@dataclasses.dataclass(frozen=True)
class WindowHeads:
    """Causal sliding-window attention on heads (:func:`sliding_window_core` /
    :func:`sliding_window_step`, a :class:`SlidingWindowState` of the last ``window`` keys/values)."""

    scale: float
    window: int = 64
    softmax: bool = False

    causal: ClassVar[bool] = True

    def __post_init__(self):
        _check_positive_int("window", self.window)
        object.__setattr__(self, "softmax", bool(self.softmax))

    def full(self, q: Array, k: Array, v: Array) -> Array:
        return sliding_window_core(q, k, v, window=self.window, scale=self.scale, softmax=self.softmax)

    def step(self, q: Array, k: Array, v: Array, state: SlidingWindowState):
        return sliding_window_step(q, k, v, state, scale=self.scale, softmax=self.softmax)

    def state(self, k: Array, v: Array) -> SlidingWindowState:
        return sliding_window_state(k, v, window=self.window)

    def empty(self, T: int, B: int, H: int, d: int) -> SlidingWindowState:
        return _empty_window_state(T, B, H, d, self.window)


HeadCore = SSAHeads | LinearHeads | WindowHeads


@dataclasses.dataclass(frozen=True)
class PerHead:
    """A mixer from a core on heads: splits q, k, v ``[T, B, L, D]`` into ``num_heads`` heads
    ``[T, B, H, L, d]``, runs ``core`` and merges the heads back (width D)."""

    core: HeadCore
    num_heads: int

    neurons: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = ()
    ends_in_spikes: ClassVar[bool] = False

    @property
    def causal(self) -> bool:
        return self.core.causal

    def width(self, d_model: int) -> int:
        return d_model

    def full(self, q: Array, k: Array, v: Array, neurons: Mapping[str, Any] | None = None) -> Array:
        H = self.num_heads
        return merge_heads(self.core.full(split_heads(q, H), split_heads(k, H), split_heads(v, H)))

    def step(self, q: Array, k: Array, v: Array, state, neurons: Mapping[str, Any] | None = None):
        heads = [split_heads(a, self.num_heads)[..., 0, :] for a in (q, k, v)]  # [T, B, H, d]
        out, state = self.core.step(*heads, state)
        return merge_heads(out[..., None, :]), state

    def final_state(self, q: Array, k: Array, v: Array):
        return self.core.state(split_heads(k, self.num_heads), split_heads(v, self.num_heads))

    def init_state(self, batch_size: int, time_steps: int, d_model: int):
        return self.core.empty(time_steps, batch_size, self.num_heads, d_model // self.num_heads)


@dataclasses.dataclass(frozen=True)
class SpikeDrivenMixer:
    """SDSA's mixing ``Q ⊗ SN(Σ_j K_j ⊗ V_j)`` on channels ``[T, B, L, D]`` (no heads; Σ over
    positions, prefix sums if causal, in float32); ``SN`` is the module's ``kv_neuron`` (threshold
    ``kv_threshold``). The output is spikes. Decodes with the running sum (an :class:`SDSAState`)."""

    kv_threshold: float = 0.5
    causal: bool = False

    ends_in_spikes: ClassVar[bool] = True

    @property
    def neurons(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        return (("kv_neuron", {"threshold": self.kv_threshold}),)

    def width(self, d_model: int) -> int:
        return d_model

    def full(self, q: Array, k: Array, v: Array, neurons: Mapping[str, Any]) -> Array:
        kv, f32 = k * v, jnp.float32  # sums over positions in float32 (counts beyond bfloat16's exact integers)
        kv = jnp.cumsum(kv, axis=2, dtype=f32) if self.causal else kv.sum(axis=2, keepdims=True, dtype=f32)
        return q * neurons["kv_neuron"](kv).astype(q.dtype)

    def step(self, q: Array, k: Array, v: Array, state: SDSAState, neurons: Mapping[str, Any]):
        kv = state.kv + (k * v).astype(jnp.float32)
        return q * neurons["kv_neuron"](kv).astype(q.dtype), SDSAState(kv)

    def final_state(self, q: Array, k: Array, v: Array) -> SDSAState:
        return SDSAState((k * v).sum(axis=2, keepdims=True, dtype=jnp.float32))

    def init_state(self, batch_size: int, time_steps: int, d_model: int) -> SDSAState:
        return SDSAState(jnp.zeros((time_steps, batch_size, 1, d_model), jnp.float32))


@dataclasses.dataclass(frozen=True)
class Concat:
    """Mixers side by side: ``[part_1(q, k, v) ‖ part_2(q, k, v) ‖ ...]`` along channels (width the
    sum of theirs); the decoding state is ``state_type(*part_states)``."""

    parts: tuple[Any, ...]
    state_type: Callable[..., Any] = tuple

    def __post_init__(self):
        if not self.parts:
            raise ValueError("parts: expected at least one mixer")

    @property
    def neurons(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        return tuple(n for p in self.parts for n in p.neurons)

    @property
    def ends_in_spikes(self) -> bool:
        return all(p.ends_in_spikes for p in self.parts)

    @property
    def causal(self) -> bool:
        return all(p.causal for p in self.parts)

    def width(self, d_model: int) -> int:
        return sum(p.width(d_model) for p in self.parts)

    def _state(self, states):
        return self.state_type(*states) if self.state_type is not tuple else tuple(states)

    def full(self, q: Array, k: Array, v: Array, neurons: Mapping[str, Any] | None = None) -> Array:
        return jnp.concatenate([p.full(q, k, v, neurons) for p in self.parts], axis=-1)

    def step(self, q: Array, k: Array, v: Array, state, neurons: Mapping[str, Any] | None = None):
        outs = [p.step(q, k, v, s, neurons) for p, s in zip(self.parts, state, strict=True)]
        return jnp.concatenate([o for o, _ in outs], axis=-1), self._state([s for _, s in outs])

    def final_state(self, q: Array, k: Array, v: Array):
        return self._state([p.final_state(q, k, v) for p in self.parts])

    def init_state(self, batch_size: int, time_steps: int, d_model: int):
        return self._state([p.init_state(batch_size, time_steps, d_model) for p in self.parts])


Mixer = PerHead | SpikeDrivenMixer | Concat


def check_heads(d_model: int, num_heads: int) -> int:
    """Validate the attention width and head count; returns the head width ``d = D / H``."""
    for name, val in (("d_model", d_model), ("num_heads", num_heads)):
        _check_positive_int(name, val)
    if d_model % num_heads:
        raise ValueError(f"d_model: {d_model} is not divisible by num_heads={num_heads}")
    return d_model // num_heads


def head_scale(d_model: int, num_heads: int, scale: float | None = None) -> float:
    """The score scale: ``scale``, or ``1/sqrt(d)`` with ``d = D / H`` (validated) when None."""
    d = check_heads(d_model, num_heads)
    return float(1.0 / math.sqrt(d) if scale is None else scale)


SIGNED_SPIKE_NEURONS = ("ternary",)
"""Neuron kinds whose spikes can be negative: the identity feature map would let the linear-attention
normaliser ``φ(q)ᵀz + eps`` reach 0 or below (non-finite outputs and gradients)."""


def resolve_feature_map(feature_map: str, neuron: str = "lif", normalize: bool = True) -> str:
    """The linear-attention feature map for spikes of ``neuron``: ``"auto"`` is ``identity`` for
    non-negative spikes and ``relu`` for signed ones (:data:`SIGNED_SPIKE_NEURONS`); ``identity``
    with signed spikes and normalization is an error (the normaliser can reach 0); other names are
    checked by :class:`LinearHeads`."""
    signed = neuron in SIGNED_SPIKE_NEURONS
    if feature_map == "auto":
        feature_map = "relu" if signed else "identity"
    if signed and feature_map == "identity" and normalize:
        raise ValueError(f"feature_map: 'identity' with {neuron!r} neurons (signed spikes) lets the normaliser "
                         "φ(q)ᵀz + eps reach 0; use 'relu' or 'elu1' (or 'auto')")
    return feature_map


# --- the module ---------------------------------------------------------------------------------


class SpikingAttention(nnx.Module):
    """Spiking attention with a given token mixer: spiking Q/K/V projections, ``mixer``, output
    projection (the layout in the module docstring).

    Args:
      d_model: D, the model width; must be divisible by ``num_heads``.
      num_heads: H; head width ``d = D / H``.
      mixer: the token mixing (:class:`PerHead` of :class:`SSAHeads` / :class:`LinearHeads` /
        :class:`WindowHeads`, :class:`SpikeDrivenMixer`, or a :class:`Concat` of mixers); its output
        width ``mixer.width(D)`` is the ``out_proj`` input; ``mixer.causal`` (the mixing masks future
        positions) is the module's ``causal``, required for decoding.
      neuron: neuron kind for every spiking neuron (see :data:`spikejax.nn.NEURONS`).
      neuron_kwargs: extra constructor arguments of those neurons (``tau``, ``surrogate``, ...).
      attn_threshold: threshold of the neuron after the mixing (Spikformer's attn_lif: 0.5).
      mix_norm: ``"none"``, ``"batch"`` or ``"layer"``: a norm of the mixing's output, before
        ``attn_neuron`` (a normalised attention output is an average of V spikes, mostly below the
        threshold; the norm rescales it so the neuron fires). Not with mixers that end in spikes (SDSA).
      norm: ``"none"``, ``"batch"`` or ``"layer"`` after each projection.
      input_neuron: fire a neuron on the input first (membrane-shortcut blocks).
      output_neuron: fire a neuron on the output (spike-shortcut blocks).
      use_bias: biases in the projections.
      backend: neuron backend (``"xla"``, ``"pallas"``, ``"triton"``, ``"auto"``).
      dtype: compute dtype of the projections and norms (e.g. ``jnp.bfloat16``; None: the inputs');
        parameters are float32 either way.
      rngs: ``nnx.Rngs`` for the initializers.

    Call: ``attn(x[T, B, L, D]) -> y[T, B, L, D]`` (``y`` real-valued, or spikes with
    ``output_neuron``). The named classes (:class:`SpikingSelfAttention`, ...) are this module with
    their mixer.
    """

    def __init__(self, d_model: int, num_heads: int, mixer: Mixer, *, neuron: str = "lif",
                 neuron_kwargs: dict[str, Any] | None = None,
                 attn_threshold: float = 0.5, mix_norm: str = "none", norm: str = "none",
                 input_neuron: bool = False, output_neuron: bool = False, use_bias: bool = True,
                 backend: str = "xla", dtype: Any = None, rngs: nnx.Rngs):
        self.head_dim = check_heads(d_model, num_heads)
        if norm not in NORMS:
            raise ValueError(f"norm: unknown norm {norm!r}; expected one of {NORMS}")
        if mix_norm not in NORMS:
            raise ValueError(f"mix_norm: unknown norm {mix_norm!r}; expected one of {NORMS}")
        if mix_norm != "none" and mixer.ends_in_spikes:
            raise ValueError(f"mix_norm: {type(self).__name__} ends its mixing in spikes (no attn_neuron); "
                             f"expected 'none', got {mix_norm!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.causal = bool(mixer.causal)
        self.mixer = mixer
        kw = {**(neuron_kwargs or {}), "backend": backend}

        def neuron_(channels: int, **extra) -> SpikingNeuron:
            return make_neuron(neuron, num_channels=channels, **{**kw, **extra})

        D = d_model
        self.input_neuron = neuron_(D) if input_neuron else None
        self.q_proj = linear(D, D, rngs, dtype, use_bias=use_bias)
        self.k_proj = linear(D, D, rngs, dtype, use_bias=use_bias)
        self.v_proj = linear(D, D, rngs, dtype, use_bias=use_bias)
        self.q_norm = make_norm(norm, D, rngs, dtype)
        self.k_norm = make_norm(norm, D, rngs, dtype)
        self.v_norm = make_norm(norm, D, rngs, dtype)
        self.q_neuron = neuron_(D)
        self.k_neuron = neuron_(D)
        self.v_neuron = neuron_(D)
        for name, extra in mixer.neurons:  # the mixing's own neurons (SDSA's kv_neuron)
            setattr(self, name, neuron_(D, **extra))
        mixed = mixer.width(D)
        self.mix_norm = make_norm(mix_norm, mixed, rngs, dtype)
        self.attn_neuron = None if mixer.ends_in_spikes else neuron_(mixed, threshold=attn_threshold)
        self.out_proj = linear(mixed, D, rngs, dtype, use_bias=use_bias)
        self.out_norm = make_norm(norm, D, rngs, dtype)
        self.output_neuron = neuron_(D) if output_neuron else None

    @property
    def mixed_dim(self) -> int:
        """Width of the mixing's output (the out_proj input)."""
        return self.mixer.width(self.d_model)

    def _check_input(self, x: Array, name: str = "x") -> None:
        if not hasattr(x, "shape") or x.ndim != 4 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{name}: expected [T, B, L, D] with D=d_model={self.d_model}, "
                f"got shape {tuple(getattr(x, 'shape', ()))}"
            )

    def _require_causal(self) -> None:
        if not self.causal:
            raise ValueError(f"causal: {type(self).__name__} decodes incrementally only with causal=True")

    def _mixer_neurons(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in self.mixer.neurons}

    def split_heads(self, x: Array) -> Array:
        """``[T, B, L, D] -> [T, B, H, L, d]`` (:func:`split_heads`)."""
        return split_heads(x, self.num_heads)

    @staticmethod
    def merge_heads(x: Array) -> Array:
        """``[T, B, H, L, d] -> [T, B, L, H·d]`` (:func:`merge_heads`)."""
        return merge_heads(x)

    def qkv(self, x: Array) -> tuple[Array, Array, Array]:
        """Spiking Q, K, V ``[T, B, L, D]`` from the input (after the optional input neuron)."""
        self._check_input(x)
        h = apply_optional(self.input_neuron, x)
        q = self.q_neuron(apply_optional(self.q_norm, self.q_proj(h)))
        k = self.k_neuron(apply_optional(self.k_norm, self.k_proj(h)))
        v = self.v_neuron(apply_optional(self.v_norm, self.v_proj(h)))
        return q, k, v

    def mix(self, q: Array, k: Array, v: Array) -> Array:
        """Token mixing of spikes ``q, k, v: [T, B, L, D]`` -> ``[T, B, L, mixed_dim]`` (pre attn_neuron)."""
        return self.mixer.full(q, k, v, self._mixer_neurons())

    def output(self, mixed: Array) -> Array:
        """mix_norm -> attn_neuron -> out_proj -> out_norm -> output_neuron on ``[T, B, L, mixed_dim]``."""
        y = self.out_proj(apply_optional(self.attn_neuron, apply_optional(self.mix_norm, mixed)))
        return apply_optional(self.output_neuron, apply_optional(self.out_norm, y))

    def __call__(self, x: Array, *, return_state: bool = False):
        """``x[T, B, L, D] -> y[T, B, L, D]``; with ``return_state`` also the decoding state after x."""
        q, k, v = self.qkv(x)
        y = self.output(self.mix(q, k, v))
        if return_state:
            self._require_causal()
            return y, self.final_state(q, k, v)
        return y

    def init_state(self, batch_size: int, time_steps: int):
        """An empty decoding state for ``batch_size`` sequences of ``time_steps`` SNN steps."""
        return self.mixer.init_state(batch_size, time_steps, self.d_model)

    def final_state(self, q: Array, k: Array, v: Array):
        """The decoding state after the whole sequence of spikes ``q, k, v: [T, B, L, D]``."""
        return self.mixer.final_state(q, k, v)

    def decode_step(self, x: Array, state) -> tuple[Array, Any]:
        """Process one new position ``x[T, B, 1, D]`` given the state of the previous ones.

        Returns ``(y[T, B, 1, D], new_state)``; equal to position i of the full causal forward.
        """
        self._require_causal()
        self._check_input(x)
        if x.shape[2] != 1:
            raise ValueError(f"x: decode_step takes one position, [T, B, 1, D], got shape {tuple(x.shape)}")
        q, k, v = self.qkv(x)
        mixed, state = self.mixer.step(q, k, v, state, self._mixer_neurons())
        return self.output(mixed), state


SpikeAttentionBase = SpikingAttention
"""Deprecated alias of :class:`SpikingAttention` (the base class of every attention module); the
subclass hooks it had (``_build_mixer``, ``mix``, ``_mix_step``, ``_final_state``) are a mixer now."""


# --- the named attention kinds: SpikingAttention with their mixer --------------------------------


class SpikingSelfAttention(SpikingAttention):
    """Spikformer's spiking self-attention (SSA, Zhou et al. 2023): ``SN((Q Kᵀ ⊙ M) V · scale)``.

    No softmax: Q, K, V are non-negative spikes. ``causal`` masks the future (``M`` lower
    triangular); causal decoding keeps ``S = Σ k vᵀ`` (a :class:`LinearAttentionState`).
    ``scale`` defaults to ``1/sqrt(d)`` (Spikformer's 0.125 for d = 64); the other arguments are
    :class:`SpikingAttention`'s. ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, causal: bool = False, scale: float | None = None,
                 **kwargs):
        self.scale = head_scale(d_model, num_heads, scale)
        super().__init__(d_model, num_heads, PerHead(SSAHeads(self.scale, bool(causal)), num_heads), **kwargs)


class SpikeDrivenSelfAttention(SpikingAttention):
    """Spike-driven self-attention (SDSA, Yao et al. 2023): ``Q ⊗ SN(Σ_j K_j ⊗ V_j)``.

    ``⊗`` is the Hadamard product; Σ runs over positions (``Σ_{j≤i}``, prefix sums, if causal);
    ``SN`` is ``kv_neuron`` (threshold ``kv_threshold``, the paper's 'talking heads' LIF). The
    result is already spikes, so there is no attn_neuron; the operation is channel-wise, so
    ``num_heads`` only has to divide D (:class:`SpikeDrivenMixer`). ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, kv_threshold: float = 0.5, causal: bool = False,
                 scale: float | None = None, **kwargs):
        self.kv_threshold = float(kv_threshold)
        self.scale = head_scale(d_model, num_heads, scale)  # unused by the mixing; kept as every kind has it
        super().__init__(d_model, num_heads, SpikeDrivenMixer(self.kv_threshold, bool(causal)), **kwargs)


class LinearSpikeAttention(SpikingAttention):
    """Causal linear attention on spikes, O(L) (:func:`linear_attention_core`), then SN and projection.

    ``y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)``, ``S_i = Σ_{j≤i} φ(k_j) v_jᵀ``, ``z_i = Σ_{j≤i} φ(k_j)``.
    Extra args: ``feature_map`` (``"auto"`` default: ``"identity"`` for non-negative spikes, ``"relu"``
    for signed ones; or ``"identity"``, ``"relu"``, ``"elu1"``), ``normalize`` (divide by
    ``φ(q)ᵀ z + eps``; else multiply by ``scale``), ``eps`` (default :data:`LINEAR_ATTENTION_EPS` = 1:
    a well-conditioned normaliser for non-negative features, bounded gradients also for a query
    without spikes; see that constant), ``chunk_size`` (positions per chunk in the full forward).
    ``causal`` defaults to True. Decoding keeps a :class:`LinearAttentionState` (``kv``, ``z``).
    ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, causal: bool = True, feature_map: str = "auto",
                 normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS, chunk_size: int = 64,
                 scale: float | None = None, **kwargs):
        self.scale = head_scale(d_model, num_heads, scale)
        core = LinearHeads(self.scale, resolve_feature_map(feature_map, kwargs.get("neuron", "lif"), normalize),
                           normalize, eps, chunk_size, bool(causal))
        self.feature_map, self.normalize, self.eps, self.chunk_size = (
            core.feature_map, core.normalize, core.eps, core.chunk_size)
        super().__init__(d_model, num_heads, PerHead(core, num_heads), **kwargs)

    def core(self, q: Array, k: Array, v: Array) -> Array:
        """The linear-attention core on heads ``[T, B, H, L, d]``."""
        return self.mixer.core.full(q, k, v)


class SlidingWindowSpikeAttention(SpikingAttention):
    """Causal sliding-window attention of width ``window`` (:func:`sliding_window_core`).

    Position i attends to the ``window`` positions ``i - w < j ≤ i``; spike-driven
    ``(Q Kᵀ ⊙ B_w) V · scale`` or, with ``softmax=True``, ``softmax(Q Kᵀ · scale)`` over the band.
    Decoding keeps the last ``window`` keys/values (:class:`SlidingWindowState`).
    ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, window: int = 64, softmax: bool = False,
                 causal: bool = True, scale: float | None = None, **kwargs):
        self.scale = head_scale(d_model, num_heads, scale)
        core = WindowHeads(self.scale, window, softmax)
        if not causal:
            raise ValueError("causal: SlidingWindowSpikeAttention is causal; got causal=False")
        self.window, self.softmax = core.window, core.softmax
        super().__init__(d_model, num_heads, PerHead(core, num_heads), **kwargs)

    def core(self, q: Array, k: Array, v: Array) -> Array:
        """The banded core on heads ``[T, B, H, L, d]``."""
        return self.mixer.core.full(q, k, v)


class HybridSpikeAttention(SpikingAttention):
    """Linear attention (global, O(L)) and sliding-window attention (local) on the same spiking
    Q, K, V, concatenated along channels and projected: ``out_proj(SN([lin ‖ swa]))``.

    The mixer is ``Concat((PerHead(LinearHeads), PerHead(WindowHeads)))``: ``mix`` returns
    ``[T, B, L, 2D]`` (merged heads of each part); ``out_proj`` maps 2D -> D. Args: ``window``,
    ``softmax`` (for the window part), ``feature_map``, ``normalize``, ``eps`` (default 1,
    :data:`LINEAR_ATTENTION_EPS`), ``chunk_size`` as in the two parts.
    Decoding keeps a :class:`HybridState`. ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, window: int = 64, softmax: bool = False,
                 feature_map: str = "auto", normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS,
                 chunk_size: int = 64, causal: bool = True, scale: float | None = None, **kwargs):
        if not causal:
            raise ValueError("causal: HybridSpikeAttention is causal; got causal=False")
        self.scale = head_scale(d_model, num_heads, scale)
        window_core = WindowHeads(self.scale, window, softmax)
        linear_core = LinearHeads(self.scale, resolve_feature_map(feature_map, kwargs.get("neuron", "lif"),
                                                                  normalize), normalize, eps, chunk_size, True)
        self.window, self.softmax = window_core.window, window_core.softmax
        self.feature_map, self.normalize, self.eps, self.chunk_size = (
            linear_core.feature_map, linear_core.normalize, linear_core.eps, linear_core.chunk_size)
        mixer = Concat((PerHead(linear_core, num_heads), PerHead(window_core, num_heads)), HybridState)
        super().__init__(d_model, num_heads, mixer, **kwargs)


ATTENTIONS: dict[str, type[SpikingAttention]] = {
    "ssa": SpikingSelfAttention,
    "sdsa": SpikeDrivenSelfAttention,
    "linear": LinearSpikeAttention,
    "sliding": SlidingWindowSpikeAttention,
    "hybrid": HybridSpikeAttention,
}
"""Attention classes by name (the names model configs use)."""


def make_attention(kind: str, d_model: int, num_heads: int, **kwargs) -> SpikingAttention:
    """Build an attention module by name (see :data:`ATTENTIONS`)."""
    if kind not in ATTENTIONS:
        raise ValueError(f"attention: unknown attention {kind!r}; expected one of {sorted(ATTENTIONS)}")
    return ATTENTIONS[kind](d_model, num_heads, **kwargs)
