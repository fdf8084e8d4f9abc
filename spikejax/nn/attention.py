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

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

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

NORMS = ("none", "batch", "layer")
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


# --- modules ------------------------------------------------------------------------------------


def _make_norm(kind: str, features: int, rngs: nnx.Rngs, dtype: Any = None) -> nnx.Module | None:
    """A norm by name; ``dtype`` is its output dtype (statistics and parameters stay float32)."""
    if kind == "none":
        return None
    if kind == "batch":
        return nnx.BatchNorm(features, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    if kind == "layer":
        return nnx.LayerNorm(features, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    raise ValueError(f"norm: unknown norm {kind!r}; expected one of {NORMS}")


def _apply(module: nnx.Module | None, x: Array) -> Array:
    return x if module is None else module(x)


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype: Any = None, **kwargs) -> nnx.Linear:
    """``nnx.Linear`` computing in ``dtype`` (None: from the inputs) with float32 parameters."""
    return nnx.Linear(d_in, d_out, dtype=dtype, param_dtype=jnp.float32, rngs=rngs, **kwargs)


class SpikeAttentionBase(nnx.Module):
    """Shared structure: spiking Q/K/V projections, a token-mixing core, the output projection.

    Args:
      d_model: D, the model width; must be divisible by ``num_heads``.
      num_heads: H; head width ``d = D / H``.
      causal: mask future positions (required for decoding).
      scale: score scale (default ``1/sqrt(d)``; Spikformer's 0.125 for d = 64).
      neuron: neuron kind for every spiking neuron (see :data:`spikejax.nn.NEURONS`).
      neuron_kwargs: extra constructor arguments of those neurons (``tau``, ``surrogate``, ...).
      attn_threshold: threshold of the neuron after the mixing core (Spikformer's attn_lif: 0.5).
      mix_norm: ``"none"``, ``"batch"`` or ``"layer"``: a norm of the mixing core's output, before
        ``attn_neuron`` (a normalised attention output is an average of V spikes, mostly below the
        threshold; the norm rescales it so the neuron fires). Not with cores that end in spikes (SDSA).
      norm: ``"none"``, ``"batch"`` or ``"layer"`` after each projection.
      input_neuron: fire a neuron on the input first (membrane-shortcut blocks).
      output_neuron: fire a neuron on the output (spike-shortcut blocks).
      use_bias: biases in the projections.
      backend: neuron backend (``"xla"``, ``"pallas"``, ``"triton"``, ``"auto"``).
      dtype: compute dtype of the projections and norms (e.g. ``jnp.bfloat16``; None: the inputs');
        parameters are float32 either way.
      rngs: ``nnx.Rngs`` for the initializers.

    Call: ``attn(x[T, B, L, D]) -> y[T, B, L, D]`` (``y`` real-valued, or spikes with
    ``output_neuron``).
    """

    uses_attn_neuron: bool = True

    def __init__(self, d_model: int, num_heads: int, *, causal: bool = False, scale: float | None = None,
                 neuron: str = "lif", neuron_kwargs: dict[str, Any] | None = None,
                 attn_threshold: float = 0.5, mix_norm: str = "none", norm: str = "none",
                 input_neuron: bool = False, output_neuron: bool = False, use_bias: bool = True,
                 backend: str = "xla", dtype: Any = None, rngs: nnx.Rngs):
        for name, val in (("d_model", d_model), ("num_heads", num_heads)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: expected a positive integer, got {val!r}")
        if d_model % num_heads:
            raise ValueError(f"d_model: {d_model} is not divisible by num_heads={num_heads}")
        if norm not in NORMS:
            raise ValueError(f"norm: unknown norm {norm!r}; expected one of {NORMS}")
        if mix_norm not in NORMS:
            raise ValueError(f"mix_norm: unknown norm {mix_norm!r}; expected one of {NORMS}")
        if mix_norm != "none" and not self.uses_attn_neuron:
            raise ValueError(f"mix_norm: {type(self).__name__} ends its mixing in spikes (no attn_neuron); "
                             f"expected 'none', got {mix_norm!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.causal = bool(causal)
        self.scale = float(1.0 / math.sqrt(self.head_dim) if scale is None else scale)
        kw = dict(neuron_kwargs or {})
        kw["backend"] = backend

        def neuron_(channels: int, **extra) -> SpikingNeuron:
            return make_neuron(neuron, num_channels=channels, **{**kw, **extra})

        D = d_model
        self.input_neuron = neuron_(D) if input_neuron else None
        self.q_proj = _linear(D, D, rngs, dtype, use_bias=use_bias)
        self.k_proj = _linear(D, D, rngs, dtype, use_bias=use_bias)
        self.v_proj = _linear(D, D, rngs, dtype, use_bias=use_bias)
        self.q_norm = _make_norm(norm, D, rngs, dtype)
        self.k_norm = _make_norm(norm, D, rngs, dtype)
        self.v_norm = _make_norm(norm, D, rngs, dtype)
        self.q_neuron = neuron_(D)
        self.k_neuron = neuron_(D)
        self.v_neuron = neuron_(D)
        self._build_mixer(neuron_, rngs)
        mixed = self.mixed_dim
        self.mix_norm = _make_norm(mix_norm, mixed, rngs, dtype)
        self.attn_neuron = neuron_(mixed, threshold=attn_threshold) if self.uses_attn_neuron else None
        self.out_proj = _linear(mixed, D, rngs, dtype, use_bias=use_bias)
        self.out_norm = _make_norm(norm, D, rngs, dtype)
        self.output_neuron = neuron_(D) if output_neuron else None

    # subclass hooks -------------------------------------------------------------------------

    @property
    def mixed_dim(self) -> int:
        """Width of the mixing core's output (the out_proj input)."""
        return self.d_model

    def _build_mixer(self, neuron_, rngs) -> None:
        pass

    def mix(self, q: Array, k: Array, v: Array) -> Array:
        """Token mixing of spikes ``q, k, v: [T, B, L, D]`` -> ``[T, B, L, mixed_dim]`` (pre attn_neuron)."""
        raise NotImplementedError

    def init_state(self, batch_size: int, time_steps: int):
        """An empty decoding state for ``batch_size`` sequences of ``time_steps`` SNN steps."""
        raise NotImplementedError(f"{type(self).__name__} does not decode incrementally")

    def _mix_step(self, q: Array, k: Array, v: Array, state):
        """One position ``q, k, v: [T, B, 1, D]`` -> ``(mixed[T, B, 1, mixed_dim], new_state)``."""
        raise NotImplementedError(f"{type(self).__name__} does not decode incrementally")

    def _final_state(self, q: Array, k: Array, v: Array):
        """The decoding state after the whole sequence ``q, k, v: [T, B, L, D]``."""
        raise NotImplementedError(f"{type(self).__name__} does not decode incrementally")

    # shared plumbing ------------------------------------------------------------------------

    def _check_input(self, x: Array, name: str = "x") -> None:
        if not hasattr(x, "shape") or x.ndim != 4 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"{name}: expected [T, B, L, D] with D=d_model={self.d_model}, "
                f"got shape {tuple(getattr(x, 'shape', ()))}"
            )

    def split_heads(self, x: Array) -> Array:
        """``[T, B, L, D] -> [T, B, H, L, d]``."""
        T, B, L, _ = x.shape
        return x.reshape(T, B, L, self.num_heads, self.head_dim).transpose(0, 1, 3, 2, 4)

    @staticmethod
    def merge_heads(x: Array) -> Array:
        """``[T, B, H, L, d] -> [T, B, L, H·d]``."""
        T, B, H, L, d = x.shape
        return x.transpose(0, 1, 3, 2, 4).reshape(T, B, L, H * d)

    def qkv(self, x: Array) -> tuple[Array, Array, Array]:
        """Spiking Q, K, V ``[T, B, L, D]`` from the input (after the optional input neuron)."""
        self._check_input(x)
        h = _apply(self.input_neuron, x)
        q = self.q_neuron(_apply(self.q_norm, self.q_proj(h)))
        k = self.k_neuron(_apply(self.k_norm, self.k_proj(h)))
        v = self.v_neuron(_apply(self.v_norm, self.v_proj(h)))
        return q, k, v

    def output(self, mixed: Array) -> Array:
        """mix_norm -> attn_neuron -> out_proj -> out_norm -> output_neuron on ``[T, B, L, mixed_dim]``."""
        y = self.out_proj(_apply(self.attn_neuron, _apply(self.mix_norm, mixed)))
        return _apply(self.output_neuron, _apply(self.out_norm, y))

    def __call__(self, x: Array, *, return_state: bool = False):
        """``x[T, B, L, D] -> y[T, B, L, D]``; with ``return_state`` also the decoding state after x."""
        q, k, v = self.qkv(x)
        y = self.output(self.mix(q, k, v))
        if return_state:
            self._require_causal()
            return y, self._final_state(q, k, v)
        return y

    def decode_step(self, x: Array, state) -> tuple[Array, Any]:
        """Process one new position ``x[T, B, 1, D]`` given the state of the previous ones.

        Returns ``(y[T, B, 1, D], new_state)``; equal to position i of the full causal forward.
        """
        self._require_causal()
        self._check_input(x)
        if x.shape[2] != 1:
            raise ValueError(f"x: decode_step takes one position, [T, B, 1, D], got shape {tuple(x.shape)}")
        q, k, v = self.qkv(x)
        mixed, state = self._mix_step(q, k, v, state)
        return self.output(mixed), state

    def _require_causal(self) -> None:
        if not self.causal:
            raise ValueError(f"causal: {type(self).__name__} decodes incrementally only with causal=True")


def _check_feature_map(kind: str) -> None:
    if kind not in FEATURE_MAPS:
        raise ValueError(f"feature_map: unknown feature map {kind!r}; expected one of {FEATURE_MAPS}")


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


SIGNED_SPIKE_NEURONS = ("ternary",)
"""Neuron kinds whose spikes can be negative: the identity feature map would let the linear-attention
normaliser ``φ(q)ᵀz + eps`` reach 0 or below (non-finite outputs and gradients)."""


def _set_linear_options(attn: SpikeAttentionBase, feature_map: str, normalize: bool, eps: float,
                        chunk_size: int, neuron: str = "lif") -> None:
    """Validate and store the linear-attention arguments (of :class:`LinearSpikeAttention` and
    :class:`HybridSpikeAttention`) before the base constructor runs. ``feature_map="auto"``:
    ``identity`` for non-negative spikes, ``relu`` for signed ones (:data:`SIGNED_SPIKE_NEURONS`)."""
    signed = neuron in SIGNED_SPIKE_NEURONS
    if feature_map == "auto":
        feature_map = "relu" if signed else "identity"
    _check_feature_map(feature_map)
    if signed and feature_map == "identity" and normalize:
        raise ValueError(f"feature_map: 'identity' with {neuron!r} neurons (signed spikes) lets the normaliser "
                         "φ(q)ᵀz + eps reach 0; use 'relu' or 'elu1' (or 'auto')")
    if not float(eps) > 0:
        raise ValueError(f"eps: expected > 0 (the normaliser φ(q)ᵀz + eps can be 0), got {eps!r}")
    attn.feature_map = feature_map
    attn.normalize = bool(normalize)
    attn.eps = float(eps)
    attn.chunk_size = _check_positive_int("chunk_size", chunk_size)


def _linear_core(attn: SpikeAttentionBase, q: Array, k: Array, v: Array) -> Array:
    """:func:`linear_attention_core` with ``attn``'s options on heads ``[T, B, H, L, d]``."""
    return linear_attention_core(q, k, v, feature=attn.feature_map, normalize=attn.normalize, eps=attn.eps,
                                 scale=attn.scale, causal=attn.causal, chunk_size=attn.chunk_size)


def _linear_step(attn: SpikeAttentionBase, heads: list[Array],
                 state: LinearAttentionState) -> tuple[Array, LinearAttentionState]:
    """:func:`linear_attention_step` with ``attn``'s options on one position ``heads = [q, k, v]``,
    each ``[T, B, H, d]``."""
    q, k, v = heads
    return linear_attention_step(q, k, v, state, feature=attn.feature_map, normalize=attn.normalize,
                                 eps=attn.eps, scale=attn.scale)


class SpikingSelfAttention(SpikeAttentionBase):
    """Spikformer's spiking self-attention (SSA, Zhou et al. 2023): ``SN((Q Kᵀ ⊙ M) V · scale)``.

    No softmax: Q, K, V are non-negative spikes. ``causal`` masks the future (``M`` lower
    triangular); causal decoding keeps ``S = Σ k vᵀ`` (a :class:`LinearAttentionState`).
    See :class:`SpikeAttentionBase` for the arguments. ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def mix(self, q, k, v):
        out = ssa_core(self.split_heads(q), self.split_heads(k), self.split_heads(v),
                       scale=self.scale, causal=self.causal)
        return self.merge_heads(out)

    def init_state(self, batch_size, time_steps):
        return _empty_linear_state(time_steps, batch_size, self.num_heads, self.head_dim)

    def _final_state(self, q, k, v):
        return linear_attention_state(self.split_heads(k), self.split_heads(v))

    def _mix_step(self, q, k, v, state):
        heads = [self.split_heads(a)[..., 0, :] for a in (q, k, v)]
        out, state = linear_attention_step(*heads, state, normalize=False, scale=self.scale)
        return self.merge_heads(out[..., None, :]), state


class SpikeDrivenSelfAttention(SpikeAttentionBase):
    """Spike-driven self-attention (SDSA, Yao et al. 2023): ``Q ⊗ SN(Σ_j K_j ⊗ V_j)``.

    ``⊗`` is the Hadamard product; Σ runs over positions (``Σ_{j≤i}``, prefix sums, if causal);
    ``SN`` is ``kv_neuron`` (threshold ``kv_threshold``, the paper's 'talking heads' LIF). The
    result is already spikes, so there is no attn_neuron; the operation is channel-wise, so
    ``num_heads`` only has to divide D. ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    uses_attn_neuron = False

    def __init__(self, d_model: int, num_heads: int, *, kv_threshold: float = 0.5, **kwargs):
        self.kv_threshold = float(kv_threshold)
        super().__init__(d_model, num_heads, **kwargs)

    def _build_mixer(self, neuron_, rngs):
        self.kv_neuron = neuron_(self.d_model, threshold=self.kv_threshold)

    def mix(self, q, k, v):
        kv = k * v  # sums over positions in float32 (counts beyond bfloat16's exact integers)
        f32 = jnp.float32
        kv = jnp.cumsum(kv, axis=2, dtype=f32) if self.causal else kv.sum(axis=2, keepdims=True, dtype=f32)
        return q * self.kv_neuron(kv).astype(q.dtype)

    def init_state(self, batch_size, time_steps):
        return SDSAState(jnp.zeros((time_steps, batch_size, 1, self.d_model), jnp.float32))

    def _final_state(self, q, k, v):
        return SDSAState((k * v).sum(axis=2, keepdims=True, dtype=jnp.float32))

    def _mix_step(self, q, k, v, state):
        kv = state.kv + (k * v).astype(jnp.float32)
        return q * self.kv_neuron(kv).astype(q.dtype), SDSAState(kv)


class LinearSpikeAttention(SpikeAttentionBase):
    """Causal linear attention on spikes, O(L) (:func:`linear_attention_core`), then SN and projection.

    ``y_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)``, ``S_i = Σ_{j≤i} φ(k_j) v_jᵀ``, ``z_i = Σ_{j≤i} φ(k_j)``.
    Extra args: ``feature_map`` (``"identity"`` default: spikes are non-negative, ``"relu"``,
    ``"elu1"``), ``normalize`` (divide by ``φ(q)ᵀ z + eps``; else multiply by ``scale``), ``eps``
    (default :data:`LINEAR_ATTENTION_EPS` = 1: a well-conditioned normaliser for non-negative
    features, bounded gradients also for a query without spikes; see that constant), ``chunk_size``
    (positions per chunk in the full forward). ``causal`` defaults to True.
    Decoding keeps a :class:`LinearAttentionState` (``kv``, ``z``). ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, causal: bool = True, feature_map: str = "auto",
                 normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS, chunk_size: int = 64, **kwargs):
        _set_linear_options(self, feature_map, normalize, eps, chunk_size, kwargs.get("neuron", "lif"))
        super().__init__(d_model, num_heads, causal=causal, **kwargs)

    def core(self, q: Array, k: Array, v: Array) -> Array:
        """The linear-attention core on heads ``[T, B, H, L, d]``."""
        return _linear_core(self, q, k, v)

    def mix(self, q, k, v):
        return self.merge_heads(self.core(self.split_heads(q), self.split_heads(k), self.split_heads(v)))

    def init_state(self, batch_size, time_steps):
        return _empty_linear_state(time_steps, batch_size, self.num_heads, self.head_dim)

    def _final_state(self, q, k, v):
        return linear_attention_state(self.split_heads(k), self.split_heads(v), feature=self.feature_map)

    def _mix_step(self, q, k, v, state):
        heads = [self.split_heads(a)[..., 0, :] for a in (q, k, v)]
        out, state = _linear_step(self, heads, state)
        return self.merge_heads(out[..., None, :]), state


class SlidingWindowSpikeAttention(SpikeAttentionBase):
    """Causal sliding-window attention of width ``window`` (:func:`sliding_window_core`).

    Position i attends to the ``window`` positions ``i - w < j ≤ i``; spike-driven
    ``(Q Kᵀ ⊙ B_w) V · scale`` or, with ``softmax=True``, ``softmax(Q Kᵀ · scale)`` over the band.
    Decoding keeps the last ``window`` keys/values (:class:`SlidingWindowState`).
    ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, window: int = 64, softmax: bool = False,
                 causal: bool = True, **kwargs):
        self.window = _check_positive_int("window", window)
        self.softmax = bool(softmax)
        if not causal:
            raise ValueError("causal: SlidingWindowSpikeAttention is causal; got causal=False")
        super().__init__(d_model, num_heads, causal=True, **kwargs)

    def core(self, q: Array, k: Array, v: Array) -> Array:
        """The banded core on heads ``[T, B, H, L, d]``."""
        return sliding_window_core(q, k, v, window=self.window, scale=self.scale, softmax=self.softmax)

    def mix(self, q, k, v):
        return self.merge_heads(self.core(self.split_heads(q), self.split_heads(k), self.split_heads(v)))

    def init_state(self, batch_size, time_steps):
        return _empty_window_state(time_steps, batch_size, self.num_heads, self.head_dim, self.window)

    def _final_state(self, q, k, v):
        return sliding_window_state(self.split_heads(k), self.split_heads(v), window=self.window)

    def _mix_step(self, q, k, v, state):
        heads = [self.split_heads(a)[..., 0, :] for a in (q, k, v)]
        out, state = sliding_window_step(*heads, state, scale=self.scale, softmax=self.softmax)
        return self.merge_heads(out[..., None, :]), state


class HybridSpikeAttention(SpikeAttentionBase):
    """Linear attention (global, O(L)) and sliding-window attention (local) on the same spiking
    Q, K, V, concatenated along channels and projected: ``out_proj(SN([lin ‖ swa]))``.

    ``mix`` returns ``[T, B, L, 2D]`` = ``concat(linear_attention_core, sliding_window_core)``
    (merged heads); ``out_proj`` maps 2D -> D. Args: ``window``, ``softmax`` (for the window
    branch), ``feature_map``, ``normalize``, ``eps`` (default 1, :data:`LINEAR_ATTENTION_EPS`),
    ``chunk_size`` as in the two parts.
    Decoding keeps a :class:`HybridState`. ``x[T, B, L, D] -> y[T, B, L, D]``.
    """

    def __init__(self, d_model: int, num_heads: int, *, window: int = 64, softmax: bool = False,
                 feature_map: str = "auto", normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS,
                 chunk_size: int = 64, causal: bool = True, **kwargs):
        if not causal:
            raise ValueError("causal: HybridSpikeAttention is causal; got causal=False")
        self.window = _check_positive_int("window", window)
        self.softmax = bool(softmax)
        _set_linear_options(self, feature_map, normalize, eps, chunk_size, kwargs.get("neuron", "lif"))
        super().__init__(d_model, num_heads, causal=True, **kwargs)

    @property
    def mixed_dim(self) -> int:
        return 2 * self.d_model

    def mix(self, q, k, v):
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        lin = _linear_core(self, qh, kh, vh)
        swa = sliding_window_core(qh, kh, vh, window=self.window, scale=self.scale, softmax=self.softmax)
        return jnp.concatenate([self.merge_heads(lin), self.merge_heads(swa)], axis=-1)

    def init_state(self, batch_size, time_steps):
        T, B, H, d = time_steps, batch_size, self.num_heads, self.head_dim
        return HybridState(_empty_linear_state(T, B, H, d), _empty_window_state(T, B, H, d, self.window))

    def _final_state(self, q, k, v):
        kh, vh = self.split_heads(k), self.split_heads(v)
        return HybridState(linear_attention_state(kh, vh, feature=self.feature_map),
                           sliding_window_state(kh, vh, window=self.window))

    def _mix_step(self, q, k, v, state):
        heads = [self.split_heads(a)[..., 0, :] for a in (q, k, v)]
        out_l, st_l = _linear_step(self, heads, state.linear)
        out_w, st_w = sliding_window_step(*heads, state.window, scale=self.scale, softmax=self.softmax)
        mixed = jnp.concatenate([self.merge_heads(out_l[..., None, :]),
                                 self.merge_heads(out_w[..., None, :])], axis=-1)
        return mixed, HybridState(st_l, st_w)


ATTENTIONS: dict[str, type[SpikeAttentionBase]] = {
    "ssa": SpikingSelfAttention,
    "sdsa": SpikeDrivenSelfAttention,
    "linear": LinearSpikeAttention,
    "sliding": SlidingWindowSpikeAttention,
    "hybrid": HybridSpikeAttention,
}
"""Attention classes by name (the names model configs use)."""


def make_attention(kind: str, d_model: int, num_heads: int, **kwargs) -> SpikeAttentionBase:
    """Build an attention module by name (see :data:`ATTENTIONS`)."""
    if kind not in ATTENTIONS:
        raise ValueError(f"attention: unknown attention {kind!r}; expected one of {sorted(ATTENTIONS)}")
    return ATTENTIONS[kind](d_model, num_heads, **kwargs)
