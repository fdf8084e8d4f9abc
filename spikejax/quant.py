"""Quantization: channel-wise ternary spikes, trained ternary weights (TTQ), regularizers, folding.

**Ternary spikes with learnable amplitude and threshold** (:class:`ChannelTernary`): the ternary LIF
of :func:`spikejax.ternary` with ``θ`` and amplitude ``a`` as ``nnx.Param``, one per layer
(``per_channel=False``, shape ``()``) or one per channel (shape ``[C]``, "channel-wise ternary")::

    H_t = β V_{t-1} + γ X_t,   S_t = Θ(H_t - θ) - Θ(-H_t - θ) ∈ {-1, 0, +1},   y_t = a ⊙ S_t

Gradients reach ``x``, ``θ`` (through the surrogate) and ``a`` (``∂y/∂a = S``).

**Trained ternary quantization** (Zhu et al. 2017, :func:`ttq_quantize`, :class:`TTQLinear`): the
latent full-precision weights ``w̃`` are kept and trained; the forward uses ::

    Δ = t · max|w̃|,   w_t = W_p · 1[w̃ > Δ] - W_n · 1[w̃ < -Δ]        (W_p, W_n > 0 learned)

with the scale gradients of the chain rule, ``∂L/∂W_p = Σ_{i∈I_p} ∂L/∂w_t(i)`` and
``∂L/∂W_n = -Σ_{i∈I_n} ∂L/∂w_t(i)`` (the paper's eq. 6 drops the minus sign that ``w_t = -W_n`` on
``I_n`` implies), and the scaled straight-through gradient for the latent weights ::

    ∂L/∂w̃ = W_p ∂L/∂w_t on I_p,   ρ ∂L/∂w_t on I_z = {|w̃| ≤ Δ},   W_n ∂L/∂w_t on I_n

where ``ρ = deadzone_grad``: ``1`` (TTQ, the default) lets weights in the dead zone be
*reactivated* by their gradient; ``0`` freezes them at zero once they fall inside.

**Regularizers** (add to the loss): :func:`amplitude_penalty` (``Σ_layers mean (a - a₀)²``),
:func:`sparsity_penalty` (``Σ_layers mean |s|`` on collected spikes), and
:func:`channel_amplitude_variance` (``Σ_layers Var_c(a_c)``, pulls channel-wise amplitudes toward
one per-layer value).

**Folding for inference** (:func:`fold_amplitude`): ``W (a ⊙ S) = (diag(a) W) S``, so the amplitude of
a ternary layer moves into the next Linear/Conv's input rows, leaving pure ``{-1, 0, +1}`` spikes;
outputs are identical.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spikejax import neurons as F
from spikejax.backends import RESETS
from spikejax.nn.neurons import SpikingNeuron, Ternary

Array = jax.Array

__all__ = [
    "ChannelTernary",
    "ttq_quantize",
    "ttq_threshold",
    "TTQLinear",
    "amplitude_penalty",
    "sparsity_penalty",
    "channel_amplitude_variance",
    "fold_amplitude",
    "fold_sequential",
]


# --- ternary spikes -----------------------------------------------------------------------------------


class ChannelTernary(SpikingNeuron):
    """Ternary LIF layer with learnable amplitude ``a`` and threshold ``θ``, per layer or per channel.

    Args:
      num_channels: C, the last axis of ``x`` (required with ``per_channel=True``).
      per_channel: parameters of shape ``[C]`` (channel-wise ternary) instead of ``()``.
      threshold: initial θ > 0; ``learn_threshold`` makes it an ``nnx.Param``.
      amplitude: initial a; ``learn_amplitude`` makes it an ``nnx.Param``.
      min_threshold: θ is clamped to ``>= min_threshold`` in the forward (keeps it positive while
        training; no gradient below it).
      tau / beta / decay_input / reset / detach_reset / reset_delay: as :func:`spikejax.ternary`.
      surrogate, surrogate_alpha, learnable_surrogate, backend, stateful: as
        :class:`spikejax.nn.SpikingNeuron`.

    Call: ``x[T, ..., C] -> a ⊙ S`` of the same shape (see the module docstring).
    """

    def __init__(self, num_channels: int | None = None, *, per_channel: bool = True, threshold: float = 1.0,
                 amplitude: float = 1.0, learn_threshold: bool = True, learn_amplitude: bool = True,
                 min_threshold: float = 1e-3, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, reset: str = "subtract", detach_reset: bool = False,
                 reset_delay: bool = False, **kwargs):
        if per_channel and num_channels is None:
            raise ValueError("num_channels: required with per_channel=True (channel-wise parameters [C])")
        super().__init__(num_channels=num_channels if per_channel else None, **kwargs)
        if not threshold > 0:
            raise ValueError(f"threshold: expected > 0, got {threshold}")
        if not min_threshold > 0:
            raise ValueError(f"min_threshold: expected > 0, got {min_threshold}")
        if tau is not None and beta is not None:
            raise ValueError("beta, tau: give one of them, not both (β = 1 - 1/τ)")
        self.per_channel = bool(per_channel)
        self.expected_channels = num_channels
        shape = self.channel_shape
        self.learn_threshold = bool(learn_threshold)
        self.learn_amplitude = bool(learn_amplitude)
        thr = jnp.full(shape, threshold, jnp.float32)
        amp = jnp.full(shape, amplitude, jnp.float32)
        self.threshold = nnx.Param(thr) if learn_threshold else nnx.Variable(thr)
        self.amplitude = nnx.Param(amp) if learn_amplitude else nnx.Variable(amp)
        self.min_threshold = float(min_threshold)
        self.tau = None if tau is None else float(tau)
        self.beta = None if beta is None else float(beta)
        self.decay_input = decay_input
        if reset not in RESETS:
            raise ValueError(f"reset: unknown reset {reset!r}; expected one of {RESETS}")
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self.reset_delay = bool(reset_delay)

    def _check_channels(self, x: Array) -> None:
        if self.expected_channels is not None and x.shape[-1] != self.expected_channels:
            raise ValueError(f"x: last axis has {x.shape[-1]} channels but this ChannelTernary layer was built "
                             f"with num_channels={self.expected_channels}")

    def _fire(self, x, state):
        thr = jnp.maximum(self.threshold[...], self.min_threshold)
        return F.ternary(x, state=state, tau=self.tau, beta=self.beta, decay_input=self.decay_input,
                         threshold=thr, amplitude=self.amplitude[...], reset=self.reset,
                         detach_reset=self.detach_reset, reset_delay=self.reset_delay, **self.common_kwargs())


# --- trained ternary quantization ----------------------------------------------------------------------


def ttq_threshold(w: Array, threshold_ratio: float) -> Array:
    """``Δ = t · max|w|`` (no gradient), the TTQ dead-zone half-width."""
    return jax.lax.stop_gradient(threshold_ratio * jnp.max(jnp.abs(w)))


def _sum_to(x: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``x`` down to a shape it was broadcast from."""
    extra = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(extra))) if extra else x
    keep = tuple(i for i, d in enumerate(shape) if d == 1 and x.shape[i] != 1)
    return x.sum(axis=keep, keepdims=True).reshape(shape) if keep else x.reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _ttq(w, w_p, w_n, threshold_ratio, deadzone_grad):
    delta = ttq_threshold(w, threshold_ratio)
    return jnp.where(w > delta, w_p, 0.0) - jnp.where(w < -delta, w_n, 0.0)


def _ttq_fwd(w, w_p, w_n, threshold_ratio, deadzone_grad):
    delta = ttq_threshold(w, threshold_ratio)
    pos, neg = w > delta, w < -delta
    out = (jnp.where(pos, w_p, 0.0) - jnp.where(neg, w_n, 0.0)).astype(w.dtype)
    return out, (pos, neg, w_p, w_n)


def _ttq_bwd(threshold_ratio, deadzone_grad, res, g):
    pos, neg, w_p, w_n = res
    scale = jnp.where(pos, w_p, jnp.where(neg, w_n, deadzone_grad))
    g_w = (g * scale).astype(g.dtype)
    g_wp = _sum_to(jnp.where(pos, g, 0.0), jnp.shape(w_p)).astype(jnp.result_type(w_p))
    g_wn = _sum_to(-jnp.where(neg, g, 0.0), jnp.shape(w_n)).astype(jnp.result_type(w_n))
    return g_w, g_wp, g_wn


_ttq.defvjp(_ttq_fwd, _ttq_bwd)


def ttq_quantize(w: Array, w_p: Array | float, w_n: Array | float, *, threshold_ratio: float = 0.05,
                 deadzone_grad: float = 1.0) -> Array:
    """Trained ternary quantization of latent weights ``w`` (any shape) to ``{-W_n, 0, W_p}``.

    Args:
      w: latent full-precision weights.
      w_p, w_n: positive scales, scalars (per layer) or arrays broadcastable to ``w`` (e.g. ``[O]``
        per output channel of a ``[K, O]`` kernel).
      threshold_ratio: t in ``Δ = t · max|w|``.
      deadzone_grad: ρ, the straight-through factor for latent weights inside the dead zone
        (1: TTQ, weights can be reactivated; 0: frozen).

    Returns:
      ``w_t`` of ``w``'s shape; gradients as in the module docstring.
    """
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise TypeError(f"w: expected floating latent weights, got {w.dtype}")
    if not 0.0 <= threshold_ratio < 1.0:
        raise ValueError(f"threshold_ratio: expected t in [0, 1), got {threshold_ratio}")
    if deadzone_grad < 0:
        raise ValueError(f"deadzone_grad: expected >= 0, got {deadzone_grad}")
    w_p, w_n = jnp.asarray(w_p, w.dtype), jnp.asarray(w_n, w.dtype)
    for name, s in (("w_p", w_p), ("w_n", w_n)):
        try:
            jnp.broadcast_shapes(s.shape, w.shape)
        except ValueError:
            raise ValueError(
                f"{name}: shape {tuple(s.shape)} is not broadcastable to w's shape {tuple(w.shape)}") from None
        if jnp.broadcast_shapes(s.shape, w.shape) != w.shape:
            raise ValueError(f"{name}: shape {tuple(s.shape)} would broadcast w {tuple(w.shape)} to a larger shape")
    return _ttq(w, w_p, w_n, float(threshold_ratio), float(deadzone_grad))


class TTQLinear(nnx.Module):
    """Linear layer with trained ternary weights: ``y = x w_t + b``, ``w_t = ttq_quantize(kernel, W_p, W_n)``.

    Params: latent ``kernel[K, O]`` (full precision), ``w_p``, ``w_n`` (shape ``()``, or ``[O]`` with
    ``per_channel``), ``bias[O]`` (full precision). ``W_p``/``W_n`` start at the mean ``|w̃|`` over
    the initial positive / negative sets. ``x[..., K] -> y[..., O]``.
    """

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True, per_channel: bool = False,
                 threshold_ratio: float = 0.05, deadzone_grad: float = 1.0, rngs: nnx.Rngs,
                 kernel_init: Any = None):
        for name, val in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: expected a positive integer, got {val!r}")
        if not 0.0 <= threshold_ratio < 1.0:
            raise ValueError(f"threshold_ratio: expected t in [0, 1), got {threshold_ratio}")
        if deadzone_grad < 0:
            raise ValueError(f"deadzone_grad: expected >= 0, got {deadzone_grad}")
        self.in_features, self.out_features = in_features, out_features
        self.threshold_ratio = float(threshold_ratio)
        self.deadzone_grad = float(deadzone_grad)
        self.per_channel = bool(per_channel)
        kernel_init = nnx.initializers.lecun_normal() if kernel_init is None else kernel_init
        w = kernel_init(rngs.params(), (in_features, out_features), jnp.float32)
        self.kernel = nnx.Param(w)
        delta = self.threshold_ratio * jnp.max(jnp.abs(w))
        axis = 0 if per_channel else None
        pos, neg = w > delta, w < -delta
        init_p = jnp.sum(jnp.where(pos, w, 0.0), axis=axis) / jnp.maximum(jnp.sum(pos, axis=axis), 1)
        init_n = -jnp.sum(jnp.where(neg, w, 0.0), axis=axis) / jnp.maximum(jnp.sum(neg, axis=axis), 1)
        self.w_p = nnx.Param(init_p.astype(jnp.float32))
        self.w_n = nnx.Param(init_n.astype(jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

    def quantized_kernel(self) -> Array:
        """The ternary kernel ``w_t[K, O]`` used in the forward."""
        return ttq_quantize(self.kernel[...], self.w_p[...], self.w_n[...], threshold_ratio=self.threshold_ratio,
                            deadzone_grad=self.deadzone_grad)

    def __call__(self, x: Array) -> Array:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: last axis {x.shape[-1]} does not match in_features={self.in_features}")
        y = jnp.matmul(x, self.quantized_kernel().astype(x.dtype))
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


# --- regularizers -------------------------------------------------------------------------------------


def _amplitude_layers(model: nnx.Module) -> list[Array]:
    amps = []
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (ChannelTernary, Ternary)) and isinstance(getattr(node, "amplitude", None), nnx.Variable):
            amps.append(node.amplitude[...])
    return amps


def amplitude_penalty(model: nnx.Module, target: float = 0.0) -> Array:
    """``Σ_layers mean (a - target)²`` over every ternary layer's amplitude ``a`` in ``model``
    (:class:`ChannelTernary` and :class:`spikejax.nn.Ternary`); 0 if there are none."""
    amps = _amplitude_layers(model)
    return sum((jnp.mean((a - target) ** 2) for a in amps), jnp.zeros((), jnp.float32))


def channel_amplitude_variance(model: nnx.Module) -> Array:
    """``Σ_layers Var_c(a_c)`` over the per-channel amplitudes of every ternary layer in ``model``
    (layers with one amplitude contribute 0)."""
    amps = _amplitude_layers(model)
    return sum((jnp.var(a) if a.ndim else jnp.zeros((), jnp.float32) for a in amps), jnp.zeros((), jnp.float32))


def sparsity_penalty(spikes: Array | dict[str, Array] | list[Array]) -> Array:
    """``Σ_layers mean |s|`` of spike arrays (one array, or a dict/list of them, e.g. from
    :func:`spikejax.metrics.collect_spikes`). Differentiable through the surrogate and amplitudes."""
    if isinstance(spikes, dict):
        arrays = list(spikes.values())
    elif isinstance(spikes, (list, tuple)):
        arrays = list(spikes)
    else:
        arrays = [spikes]
    if not arrays:
        raise ValueError("spikes: expected at least one spike array")
    return sum((jnp.mean(jnp.abs(jnp.asarray(s))) for s in arrays), jnp.zeros((), jnp.float32))


# --- folding ------------------------------------------------------------------------------------------


def _amplitude_of(neuron: nnx.Module) -> Array:
    if isinstance(neuron, ChannelTernary):
        return neuron.amplitude[...]
    if isinstance(neuron, Ternary):
        return neuron.amplitude[...] if neuron.learn_amplitude else jnp.asarray(neuron.amplitude, jnp.float32)
    raise TypeError(f"neuron: expected a ChannelTernary or spikejax.nn.Ternary layer, got {type(neuron).__name__}")


def fold_amplitude(neuron: nnx.Module, next_layer: nnx.Module) -> tuple[nnx.Module, nnx.Module]:
    """Fold a ternary layer's amplitude into the following ``nnx.Linear`` / ``nnx.Conv``.

    ``next(a ⊙ S) = next'(S)`` with ``W'[..., c, o] = a_c W[..., c, o]`` (input-channel axis: 0 for
    Linear ``[K, O]``, -2 for Conv ``[*k, C_in, C_out]``); the bias is unchanged.

    Returns new ``(neuron', next_layer')`` (the inputs are not modified): ``neuron'`` has amplitude 1
    and emits ``{-1, 0, +1}``. Raises for other layer kinds, grouped convolutions and shape mismatches.
    """
    amp = _amplitude_of(neuron)
    if isinstance(next_layer, TTQLinear):
        raise TypeError("next_layer: a TTQLinear's weights must stay ternary; folding an amplitude into them would "
                        "break that (fold into a full-precision nnx.Linear / nnx.Conv instead)")
    if isinstance(next_layer, nnx.Linear):
        in_axis = 0
    elif isinstance(next_layer, nnx.Conv):
        if next_layer.feature_group_count != 1:
            raise ValueError(f"next_layer: grouped convolution (feature_group_count={next_layer.feature_group_count}) "
                             "is not supported for folding")
        in_axis = next_layer.kernel[...].ndim - 2
    else:
        raise TypeError(f"next_layer: expected an nnx.Linear or nnx.Conv, got {type(next_layer).__name__}")
    kernel = next_layer.kernel[...]
    c_in = kernel.shape[in_axis]
    if amp.ndim and amp.shape[0] != c_in:
        raise ValueError(f"next_layer: kernel has {c_in} input channels but the amplitude has {amp.shape[0]}")
    shape = [1] * kernel.ndim
    shape[in_axis] = c_in
    new_next = nnx.clone(next_layer)
    new_next.kernel[...] = (kernel * jnp.broadcast_to(amp, (c_in,)).reshape(shape).astype(kernel.dtype))
    new_neuron = nnx.clone(neuron)
    if isinstance(new_neuron, ChannelTernary) or new_neuron.learn_amplitude:
        new_neuron.amplitude[...] = jnp.ones_like(new_neuron.amplitude[...])
    else:
        new_neuron.amplitude = 1.0
    return new_neuron, new_next


def fold_sequential(model: nnx.Sequential) -> nnx.Sequential:
    """A copy of an ``nnx.Sequential`` with every ternary layer's amplitude folded into the next
    Linear/Conv (:func:`fold_amplitude`); a ternary layer not followed by one raises, naming it."""
    if not isinstance(model, nnx.Sequential):
        raise TypeError(f"model: expected an nnx.Sequential, got {type(model).__name__}")
    layers: list[Any] = list(model.layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, (ChannelTernary, Ternary)):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if not isinstance(nxt, (nnx.Linear, nnx.Conv)):
                raise ValueError(f"model: layers[{i}] ({type(layer).__name__}) is not followed by an nnx.Linear / "
                                 f"nnx.Conv, so its amplitude has nowhere to fold (next: {type(nxt).__name__})")
            layers[i], layers[i + 1] = fold_amplitude(layer, nxt)
    return nnx.Sequential(*[nnx.clone(lay) if isinstance(lay, nnx.Module) else lay for lay in layers])
