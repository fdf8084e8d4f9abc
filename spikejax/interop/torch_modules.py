"""Plain PyTorch mirrors of spikejax's layers and models, for weights exported by
:func:`spikejax.interop.export_torch`.

Every class here has the same constructor arguments, the same submodule / parameter names and the
same input layout as its Flax NNX counterpart in :mod:`spikejax.nn`, so an exported state dict
loads with ``load_state_dict(strict=True)`` and the forward pass computes the same function:

- neurons (:class:`IF`, :class:`LIF`, :class:`ALIF`, :class:`PLIF`, :class:`Ternary`,
  :class:`MultiLevel`) run the generalized scan of :mod:`spikejax.backends` step by step
  (:func:`neuron_scan`), time first ``x[T, ...]``, with the same surrogate backward
  (:class:`SpikeFunction`, a ``torch.autograd.Function``; gradients reach ``x``, PLIF's
  ``decay_logit`` / ``threshold``, the ternary ``amplitude`` and a learnable ``surrogate_alpha``);
- attention on spikes ``[T, B, L, D]``: :class:`SpikingSelfAttention`,
  :class:`SpikeDrivenSelfAttention`, :class:`LinearSpikeAttention`,
  :class:`SlidingWindowSpikeAttention`, :class:`HybridSpikeAttention`;
- :class:`SpikingMLP`, :class:`SpikingTransformerBlock`, :class:`SpikingPatchEmbed`,
  :class:`SpikingLM` (``tokens[B, L] -> logits[B, L, vocab]``) and :class:`Spikformer`
  (``images[B, H, W, C]`` NHWC, as in JAX, ``-> logits[B, classes]``).

Layouts follow PyTorch: ``Linear.weight[out, in]``, ``Conv2d.weight[out, in, kh, kw]`` (the
convolutions permute the channels-last activations to NCHW and back), ``LayerNorm`` /
``BatchNorm`` ``weight``/``bias``/``running_mean``/``running_var``/``num_batches_tracked``.
Norm hyper-parameters match Flax: ``LayerNorm(eps=1e-6)``, ``BatchNorm(eps=1e-5, momentum=0.01)``
(Flax momentum 0.99); BatchNorm normalizes over every axis but the last (channels).

Known differences: in training mode PyTorch's BatchNorm updates ``running_var`` with the unbiased
batch variance while Flax uses the biased one (the normalized outputs are the same); the
``backend`` argument is accepted and ignored (always the step loop); so is a model config's
``dtype`` (the JAX compute dtype: the mirrors compute in the dtype of their float32 parameters; call
``.to(torch.bfloat16)`` for bfloat16); decoding states (``decode_step``) are not mirrored.

Build from an exported config with :func:`build_model` or load an export with :func:`load_model`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as TF
from torch import nn

Tensor = torch.Tensor

__all__ = [
    "SURROGATE_DEFAULTS",
    "SpikeFunction",
    "spike",
    "neuron_scan",
    "SpikingNeuron",
    "IF",
    "LIF",
    "ALIF",
    "PLIF",
    "Ternary",
    "MultiLevel",
    "NEURONS",
    "make_neuron",
    "ChannelLastBatchNorm",
    "SpikeAttentionBase",
    "SpikingSelfAttention",
    "SpikeDrivenSelfAttention",
    "LinearSpikeAttention",
    "SlidingWindowSpikeAttention",
    "HybridSpikeAttention",
    "ATTENTIONS",
    "LINEAR_ATTENTION_EPS",
    "make_attention",
    "SpikingMLP",
    "SpikingTransformerBlock",
    "SpikingPatchEmbed",
    "SpikingLM",
    "Spikformer",
    "build_model",
    "load_model",
]

# --- surrogates (same formulas as spikejax.surrogate) --------------------------------------------


def _atan(x, a):
    u = 0.5 * math.pi * a * x
    return 0.5 * a / (1.0 + u ** 2), 0.5 * x / (1.0 + u ** 2)


def _sigmoid(x, a):
    s = torch.sigmoid(a * x)
    return a * s * (1.0 - s), x * s * (1.0 - s)


def _fast_sigmoid(x, a):
    d = (1.0 + a * x.abs()) ** 2
    return 1.0 / d, -x * x.abs() / d


def _triangular(x, a):
    inside = a * x.abs() < 1.0
    return a * torch.clamp(1.0 - a * x.abs(), min=0.0), torch.where(inside, x * (1.0 - a * x.abs()), 0.0)


def _rectangular(x, a):
    inside = (a * x).abs() < 0.5
    return torch.where(inside, a, 0.0).to(x.dtype), torch.where(inside, x, 0.0).to(x.dtype)


_SURROGATES = {
    "atan": _atan,
    "sigmoid": _sigmoid,
    "fast_sigmoid": _fast_sigmoid,
    "triangular": _triangular,
    "rectangular": _rectangular,
}
SURROGATE_DEFAULTS = {"atan": 2.0, "sigmoid": 4.0, "fast_sigmoid": 25.0, "triangular": 1.0, "rectangular": 1.0}
"""Default steepness α per surrogate shape (as :data:`spikejax.surrogate.SURROGATES`)."""
_ALIASES = {"superspike": "fast_sigmoid", "ste": "rectangular", "arctan": "atan"}


def _canonical_surrogate(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in _SURROGATES:
        raise ValueError(f"surrogate: unknown shape {name!r}; expected one of {sorted(_SURROGATES) + sorted(_ALIASES)}")
    return name


class SpikeFunction(torch.autograd.Function):
    """Heaviside ``Θ(x) = 1[x >= 0]`` forward; backward ``(g σ'_α(x), Σ g ∂σ_α(x)/∂α)``.

    ``alpha`` is a tensor broadcastable to ``x``; its gradient is summed back to its shape.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, shape: str) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x, alpha)
        ctx.shape = shape
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: D102
        x, alpha = ctx.saved_tensors
        a = alpha.to(torch.float32)
        gx_fac, ga_fac = _SURROGATES[ctx.shape](x.to(torch.float32), a)
        gf = g.to(torch.float32)
        gx = (gf * gx_fac).to(x.dtype) if ctx.needs_input_grad[0] else None
        ga = None
        if ctx.needs_input_grad[1]:
            ga = (gf * ga_fac).sum_to_size(alpha.shape).to(alpha.dtype)
        return gx, ga, None


def spike(shape: str, x: Tensor, alpha: Tensor) -> Tensor:
    """``Θ(x)`` with the ``shape`` surrogate backward (see :class:`SpikeFunction`)."""
    return SpikeFunction.apply(x, alpha, shape)


# --- the generalized neuron scan (same as spikejax.backends.reference_scan) ----------------------


def _fire(kind: str, levels: int, surrogate: str, h: Tensor, thr: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    up = spike(surrogate, h - thr, alpha)
    if kind == "binary":
        return up, up
    if kind == "ternary":
        down = spike(surrogate, -h - thr, alpha)
        return up - down, up + down
    s = up
    for k in range(2, levels + 1):
        s = s + spike(surrogate, h - k * thr, alpha)
    return s, up


def neuron_scan(x: Tensor, *, beta: Tensor, threshold: Tensor, alpha: Tensor, v0: Tensor | None = None,
                a0: Tensor | None = None, adapt_scale: Tensor | float = 0.0, adapt_decay: Tensor | float = 0.0,
                kind: str = "binary", levels: int = 1, adaptive: bool = False, decay_input: bool = False,
                reset: str = "subtract", detach_reset: bool = False, reset_delay: bool = False,
                surrogate: str = "atan") -> tuple[Tensor, Tensor, Tensor]:
    """The generalized scan over ``x[T, ...]`` (see :mod:`spikejax.backends`), step by step.

    ``H_t = β V_{t-1} + γ X_t`` (γ = 1 - β with ``decay_input``, else 1); ``θ_t = θ + b a_{t-1}``
    (adaptive); ``S_t = spike(H_t - θ_t)``; ``V_t = H_t - θ_t S_t`` | ``H_t (1 - F_t)`` | ``H_t``;
    ``a_t = ρ a_{t-1} + S_t``; or snnTorch's delayed reset with ``reset_delay``. Parameters are
    float32 tensors broadcastable to the neuron shape ``x.shape[1:]``.

    Returns ``(spikes[T, ...] in x.dtype, v_T, a_T)`` (state float32, neuron shape).
    """
    if x.dim() < 2:
        raise ValueError(f"x: expected rank >= 2 with time first, [T, ...neurons], got shape {tuple(x.shape)}")
    if reset not in ("subtract", "zero", "none"):
        raise ValueError(f"reset: unknown reset {reset!r}; expected one of ('subtract', 'zero', 'none')")
    shape = tuple(x.shape[1:])
    f32 = torch.float32
    beta = torch.as_tensor(beta, dtype=f32).expand(shape)
    thr0 = torch.as_tensor(threshold, dtype=f32).expand(shape)
    alpha = torch.as_tensor(alpha, dtype=f32).expand(shape)
    b = torch.as_tensor(adapt_scale, dtype=f32).expand(shape)
    rho = torch.as_tensor(adapt_decay, dtype=f32).expand(shape)
    gamma = 1.0 - beta if decay_input else torch.ones_like(beta)
    v = torch.zeros(shape, dtype=f32) if v0 is None else torch.as_tensor(v0, dtype=f32).expand(shape)
    a = torch.zeros(shape, dtype=f32) if a0 is None else torch.as_tensor(a0, dtype=f32).expand(shape)

    def detach(t: Tensor) -> Tensor:
        return t.detach() if detach_reset else t

    out = []
    for t in range(x.shape[0]):
        xt = x[t].to(f32)
        if reset_delay:
            s_prev, f_prev = _fire(kind, levels, surrogate, v, thr0, alpha)
            if reset == "zero":
                v = v * (1.0 - detach(f_prev))
            h = beta * v + gamma * xt
            if reset == "subtract":
                h = h - thr0 * detach(s_prev)
            s, _ = _fire(kind, levels, surrogate, h, thr0, alpha)
            v = h
        else:
            h = beta * v + gamma * xt
            thr = thr0 + b * a if adaptive else thr0
            s, fired = _fire(kind, levels, surrogate, h, thr, alpha)
            if reset == "subtract":
                v = h - thr * detach(s)
            elif reset == "zero":
                v = h * (1.0 - detach(fired))
            else:
                v = h
            if adaptive:
                a = rho * a + s
        out.append(s.to(x.dtype))
    return torch.stack(out), v, a


# --- neuron layers --------------------------------------------------------------------------------


def _channels(num_channels: int | None) -> tuple[int, ...]:
    if num_channels is None:
        return ()
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels: expected a positive integer or None, got {num_channels!r}")
    return (num_channels,)


def _check_reset(reset: str) -> str:
    if reset not in ("subtract", "zero", "none"):
        raise ValueError(f"reset: unknown reset {reset!r}; expected one of ('subtract', 'zero', 'none')")
    return reset


def _decay(tau: float | None, beta: float | None, decay_input: bool | None, default_tau: float | None,
           default_beta: float | None) -> tuple[Tensor, bool]:
    """β and decay_input exactly as :func:`spikejax.neurons._decay` computes them (float32)."""
    if tau is not None and beta is not None:
        raise ValueError("beta, tau: give one of them, not both (β = 1 - 1/τ)")
    f32 = torch.float32
    if tau is not None:
        return 1.0 - 1.0 / torch.tensor(tau, dtype=f32), True if decay_input is None else bool(decay_input)
    if beta is not None:
        return torch.tensor(beta, dtype=f32), False if decay_input is None else bool(decay_input)
    if default_tau is not None:
        return torch.tensor(1.0 - 1.0 / default_tau, dtype=f32), True if decay_input is None else bool(decay_input)
    return torch.tensor(default_beta, dtype=f32), False if decay_input is None else bool(decay_input)


def _param_or_value(learn: bool, shape: tuple[int, ...], value: float) -> nn.Parameter | float:
    """A per-channel ``nn.Parameter`` filled with ``value`` (``learn``) or the plain float ``value``."""
    return nn.Parameter(torch.full(shape, float(value))) if learn else float(value)


class SpikingNeuron(nn.Module):
    """Base of the neuron layers: surrogate, optional learnable ``surrogate_alpha[C]``, streaming state.

    ``forward(x[T, ...], state=None, return_state=False)`` -> ``spikes[T, ...]`` (or
    ``(spikes, (v, a))``); ``stateful=True`` carries ``(v, a)`` between calls (``reset_state()``).
    """

    adaptive = False

    def __init__(self, *, num_channels: int | None = None, surrogate: str = "atan",
                 surrogate_alpha: float | None = None, learnable_surrogate: bool = False,
                 backend: str = "xla", stateful: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.channel_shape = _channels(num_channels)
        self.surrogate_shape = _canonical_surrogate(surrogate)
        alpha = SURROGATE_DEFAULTS[self.surrogate_shape] if surrogate_alpha is None else float(surrogate_alpha)
        if alpha <= 0:
            raise ValueError(f"surrogate_alpha: expected > 0, got {alpha}")
        self.learnable_surrogate = bool(learnable_surrogate)
        if self.learnable_surrogate:
            self.surrogate_alpha = nn.Parameter(torch.full(self.channel_shape, alpha, dtype=torch.float32))
        else:
            self.surrogate_alpha_value = alpha
        self.backend = backend
        self.stateful = bool(stateful)
        self._state: tuple[Tensor, Tensor] | None = None

    def alpha(self) -> Tensor:
        if self.learnable_surrogate:
            return self.surrogate_alpha
        return torch.tensor(self.surrogate_alpha_value, dtype=torch.float32)

    def scan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`neuron_scan` for this layer (subclasses)."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor | None] | None = None, return_state: bool = False):
        if x.dim() < 2:
            raise ValueError(f"x: expected rank >= 2 with time first, [T, ...neurons], got shape {tuple(x.shape)}")
        if self.channel_shape and x.shape[-1] != self.channel_shape[0]:
            raise ValueError(f"x: last axis has {x.shape[-1]} channels but this {type(self).__name__} layer was "
                             f"built with num_channels={self.channel_shape[0]}")
        if self.stateful and state is None:
            state = self._state
        v0, a0 = (None, None) if state is None else state
        spikes, v, a = neuron_scan(x, v0=v0, a0=a0 if self.adaptive else None, alpha=self.alpha(),
                                   surrogate=self.surrogate_shape, **self.scan_kwargs())
        spikes = self.postprocess(spikes)
        if self.stateful:
            self._state = (v.detach(), a.detach())
        return (spikes, (v, a if self.adaptive else None)) if return_state else spikes

    def postprocess(self, spikes: Tensor) -> Tensor:
        return spikes

    def reset_state(self) -> None:
        self._state = None


class IF(SpikingNeuron):
    """Integrate-and-fire: ``H_t = V_{t-1} + X_t``, ``S_t = Θ(H_t - θ)``, ``V_t = reset(H_t, S_t)``."""

    def __init__(self, *, threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = False,
                 reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.reset = float(threshold), _check_reset(reset)
        self.detach_reset, self.reset_delay = bool(detach_reset), bool(reset_delay)

    def scan_kwargs(self):
        return dict(beta=torch.tensor(1.0), threshold=self.threshold, decay_input=False, reset=self.reset,
                    detach_reset=self.detach_reset, reset_delay=self.reset_delay)


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire: ``H_t = β V_{t-1} + γ X_t``; ``tau`` (β = 1 - 1/τ, γ = 1/τ by
    default) or ``beta`` (γ = 1 by default); default τ = 2."""

    def __init__(self, *, tau: float | None = None, beta: float | None = None, decay_input: bool | None = None,
                 threshold: float = 1.0, reset: str = "subtract", detach_reset: bool = False,
                 reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._beta, self.decay_input = _decay(tau, beta, decay_input, 2.0, None)
        self.tau, self.beta = tau, beta
        self.threshold, self.reset = float(threshold), _check_reset(reset)
        self.detach_reset, self.reset_delay = bool(detach_reset), bool(reset_delay)

    def scan_kwargs(self):
        return dict(beta=self._beta, threshold=self.threshold, decay_input=self.decay_input, reset=self.reset,
                    detach_reset=self.detach_reset, reset_delay=self.reset_delay)


class ALIF(SpikingNeuron):
    """Adaptive LIF: ``θ_t = θ + b a_{t-1}``, ``a_t = ρ a_{t-1} + S_t``; otherwise as :class:`LIF`."""

    adaptive = True

    def __init__(self, *, tau: float | None = None, beta: float | None = None, decay_input: bool | None = None,
                 threshold: float = 1.0, adapt_scale: float = 1.0, adapt_decay: float = 0.9,
                 reset: str = "subtract", detach_reset: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._beta, self.decay_input = _decay(tau, beta, decay_input, 2.0, None)
        self.threshold, self.reset, self.detach_reset = float(threshold), _check_reset(reset), bool(detach_reset)
        self.adapt_scale, self.adapt_decay = float(adapt_scale), float(adapt_decay)

    def scan_kwargs(self):
        return dict(beta=self._beta, threshold=self.threshold, decay_input=self.decay_input, reset=self.reset,
                    detach_reset=self.detach_reset, adaptive=True, adapt_scale=self.adapt_scale,
                    adapt_decay=self.adapt_decay)


class PLIF(SpikingNeuron):
    """Parametric LIF: learnable ``decay_logit[C]`` (``β = 1 - sigmoid(w)``) and ``threshold[C]``."""

    def __init__(self, num_channels: int | None = None, *, init_tau: float = 2.0, threshold: float = 1.0,
                 learn_threshold: bool = True, decay_input: bool = True, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        if not init_tau > 1.0:
            raise ValueError(f"init_tau: expected > 1, got {init_tau}")
        self.decay_logit = nn.Parameter(torch.full(self.channel_shape, -math.log(init_tau - 1.0)))
        self.learn_threshold = bool(learn_threshold)
        self.threshold = _param_or_value(self.learn_threshold, self.channel_shape, threshold)
        self.decay_input, self.reset = bool(decay_input), _check_reset(reset)
        self.detach_reset, self.reset_delay = bool(detach_reset), bool(reset_delay)

    def scan_kwargs(self):
        return dict(beta=1.0 - torch.sigmoid(self.decay_logit), threshold=self.threshold,
                    decay_input=self.decay_input, reset=self.reset, detach_reset=self.detach_reset,
                    reset_delay=self.reset_delay)


class Ternary(SpikingNeuron):
    """Ternary LIF: output ``amplitude · S_t``, ``S_t = Θ(H_t - θ) - Θ(-H_t - θ)`` ∈ {-1, 0, 1}."""

    def __init__(self, num_channels: int | None = None, *, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, amplitude: float = 1.0,
                 learn_amplitude: bool = True, reset: str = "subtract", detach_reset: bool = False,
                 reset_delay: bool = False, **kwargs):
        super().__init__(num_channels=num_channels, **kwargs)
        self._beta, self.decay_input = _decay(tau, beta, decay_input, 2.0, None)
        self.threshold, self.reset = float(threshold), _check_reset(reset)
        self.learn_amplitude = bool(learn_amplitude)
        self.amplitude = _param_or_value(self.learn_amplitude, self.channel_shape, amplitude)
        self.detach_reset, self.reset_delay = bool(detach_reset), bool(reset_delay)

    def scan_kwargs(self):
        return dict(beta=self._beta, threshold=self.threshold, decay_input=self.decay_input, reset=self.reset,
                    detach_reset=self.detach_reset, reset_delay=self.reset_delay, kind="ternary")

    def postprocess(self, spikes):
        return (spikes * self.amplitude).to(spikes.dtype)


class MultiLevel(SpikingNeuron):
    """Multi-level neuron: ``S_t = Σ_{k=1..L} Θ(H_t - kθ)``; default β = 1 (no leak)."""

    def __init__(self, *, levels: int = 4, tau: float | None = None, beta: float | None = None,
                 decay_input: bool | None = None, threshold: float = 1.0, reset: str = "subtract",
                 detach_reset: bool = False, reset_delay: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels: expected an integer >= 1, got {levels!r}")
        self.levels = levels
        self._beta, self.decay_input = _decay(tau, beta, decay_input, None, 1.0)
        self.threshold, self.reset = float(threshold), _check_reset(reset)
        self.detach_reset, self.reset_delay = bool(detach_reset), bool(reset_delay)

    def scan_kwargs(self):
        return dict(beta=self._beta, threshold=self.threshold, decay_input=self.decay_input, reset=self.reset,
                    detach_reset=self.detach_reset, reset_delay=self.reset_delay, kind="multilevel",
                    levels=self.levels)


NEURONS: dict[str, type[SpikingNeuron]] = {
    "if": IF, "lif": LIF, "alif": ALIF, "plif": PLIF, "ternary": Ternary, "multilevel": MultiLevel,
}


def make_neuron(kind: str, *, num_channels: int | None = None, **kwargs) -> SpikingNeuron:
    """Build a neuron layer by name, as :func:`spikejax.nn.make_neuron`."""
    if kind not in NEURONS:
        raise ValueError(f"neuron: unknown neuron {kind!r}; expected one of {sorted(NEURONS)}")
    cls = NEURONS[kind]
    if cls in (PLIF, Ternary):
        return cls(num_channels, **kwargs)
    if kwargs.get("learnable_surrogate"):
        return cls(num_channels=num_channels, **kwargs)
    return cls(**kwargs)


# --- norms ------------------------------------------------------------------------------------------


class ChannelLastBatchNorm(nn.BatchNorm1d):
    """BatchNorm over every axis but the last (Flax ``nnx.BatchNorm`` on ``[..., C]``).

    Parameters and buffers are PyTorch's (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``); ``eps=1e-5``, ``momentum=0.01`` (Flax's 0.99).
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-5, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)


def _make_norm(kind: str, features: int) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "batch":
        return ChannelLastBatchNorm(features)
    if kind == "layer":
        return nn.LayerNorm(features, eps=1e-6)
    raise ValueError(f"norm: unknown norm {kind!r}; expected one of ('none', 'batch', 'layer')")


def _apply(module: nn.Module | None, x: Tensor) -> Tensor:
    return x if module is None else module(x)


# --- attention ------------------------------------------------------------------------------------


def _feature_map(x: Tensor, kind: str) -> Tensor:
    if kind == "identity":
        return x
    if kind == "relu":
        return torch.relu(x)
    if kind == "elu1":
        return TF.elu(x) + 1.0
    raise ValueError(f"feature_map: unknown feature map {kind!r}; expected one of ('identity', 'relu', 'elu1')")


def _tril(L: int, device=None) -> Tensor:
    return torch.tril(torch.ones(L, L, dtype=torch.bool, device=device))


def ssa_core(q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool = False) -> Tensor:
    """``(Q Kᵀ ⊙ M) V · scale`` on ``[..., L, d]``."""
    scores = q @ k.transpose(-1, -2)
    if causal:
        scores = torch.where(_tril(q.shape[-2], q.device), scores, 0.0)
    return (scores @ v) * scale


LINEAR_ATTENTION_EPS = 1.0
"""Default ε of the normalized linear attention (as :data:`spikejax.nn.LINEAR_ATTENTION_EPS`): with
non-negative features ``ε = 1`` keeps ``∂y_i/∂q_i`` bounded for a query without spikes."""


def linear_attention_core(q: Tensor, k: Tensor, v: Tensor, *, feature: str = "identity", normalize: bool = True,
                          eps: float = LINEAR_ATTENTION_EPS, scale: float = 1.0, causal: bool = True) -> Tensor:
    """``φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)`` (or ``· scale`` unnormalized), ``S_i = Σ_{j≤i} φ(k_j) v_jᵀ``,
    ``z_i = Σ_{j≤i} φ(k_j)``; ``q, k: [..., L, d]``, ``v: [..., L, e]`` -> ``[..., L, e]``.

    Computed in the quadratic masked form (same value as the O(L) chunked JAX form)."""
    qf, kf = _feature_map(q, feature), _feature_map(k, feature)
    scores = qf @ kf.transpose(-1, -2)
    if causal:
        scores = torch.where(_tril(q.shape[-2], q.device), scores, 0.0)
    num = scores @ v
    if normalize:
        return num / (scores.sum(-1)[..., None] + eps)
    return num * scale


def sliding_window_core(q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float,
                        softmax: bool = False) -> Tensor:
    """Causal band ``i - w < j ≤ i``: ``(Q Kᵀ ⊙ B_w) V · scale`` or ``softmax(Q Kᵀ · scale + log B_w) V``."""
    L = q.shape[-2]
    i = torch.arange(L, device=q.device)[:, None]
    j = torch.arange(L, device=q.device)[None, :]
    mask = (j <= i) & (j > i - window)
    scores = q @ k.transpose(-1, -2)
    if softmax:
        scores = torch.where(mask, scores * scale, -torch.inf)
        return torch.softmax(scores, dim=-1) @ v
    return (torch.where(mask, scores, 0.0) @ v) * scale


class SpikeAttentionBase(nn.Module):
    """Spiking Q/K/V projections, a token-mixing core, the output projection (as
    :class:`spikejax.nn.SpikeAttentionBase`). ``x[T, B, L, D] -> y[T, B, L, D]``."""

    uses_attn_neuron = True

    def __init__(self, d_model: int, num_heads: int, *, causal: bool = False, scale: float | None = None,
                 neuron: str = "lif", neuron_kwargs: dict[str, Any] | None = None, attn_threshold: float = 0.5,
                 mix_norm: str = "none", norm: str = "none", input_neuron: bool = False,
                 output_neuron: bool = False, use_bias: bool = True, backend: str = "xla"):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model: {d_model} is not divisible by num_heads={num_heads}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.causal = bool(causal)
        self.scale = float(1.0 / math.sqrt(self.head_dim) if scale is None else scale)
        kw = dict(neuron_kwargs or {})
        kw["backend"] = backend

        def neuron_(channels: int, **extra) -> SpikingNeuron:
            return make_neuron(neuron, num_channels=channels, **{**kw, **extra})

        D = d_model
        self.input_neuron = neuron_(D) if input_neuron else None
        self.q_proj = nn.Linear(D, D, bias=use_bias)
        self.k_proj = nn.Linear(D, D, bias=use_bias)
        self.v_proj = nn.Linear(D, D, bias=use_bias)
        self.q_norm, self.k_norm, self.v_norm = (_make_norm(norm, D) for _ in range(3))
        self.q_neuron, self.k_neuron, self.v_neuron = (neuron_(D) for _ in range(3))
        self._build_mixer(neuron_)
        mixed = self.mixed_dim
        self.mix_norm = _make_norm(mix_norm, mixed)
        self.attn_neuron = neuron_(mixed, threshold=attn_threshold) if self.uses_attn_neuron else None
        self.out_proj = nn.Linear(mixed, D, bias=use_bias)
        self.out_norm = _make_norm(norm, D)
        self.output_neuron = neuron_(D) if output_neuron else None

    @property
    def mixed_dim(self) -> int:
        return self.d_model

    def _build_mixer(self, neuron_) -> None:
        pass

    def split_heads(self, x: Tensor) -> Tensor:
        """``[T, B, L, D] -> [T, B, H, L, d]``."""
        T, B, L, _ = x.shape
        return x.reshape(T, B, L, self.num_heads, self.head_dim).permute(0, 1, 3, 2, 4)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        """``[T, B, H, L, d] -> [T, B, L, H·d]``."""
        T, B, H, L, d = x.shape
        return x.permute(0, 1, 3, 2, 4).reshape(T, B, L, H * d)

    def mix(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected [T, B, L, D] with D=d_model={self.d_model}, got shape {tuple(x.shape)}")
        h = _apply(self.input_neuron, x)
        q = self.q_neuron(_apply(self.q_norm, self.q_proj(h)))
        k = self.k_neuron(_apply(self.k_norm, self.k_proj(h)))
        v = self.v_neuron(_apply(self.v_norm, self.v_proj(h)))
        y = self.out_proj(_apply(self.attn_neuron, _apply(self.mix_norm, self.mix(q, k, v))))
        return _apply(self.output_neuron, _apply(self.out_norm, y))


class SpikingSelfAttention(SpikeAttentionBase):
    """Spikformer SSA: ``SN((Q Kᵀ ⊙ M) V · scale)``."""

    def mix(self, q, k, v):
        h = self.split_heads
        return self.merge_heads(ssa_core(h(q), h(k), h(v), scale=self.scale, causal=self.causal))


class SpikeDrivenSelfAttention(SpikeAttentionBase):
    """SDSA: ``Q ⊗ SN(Σ_j K_j ⊗ V_j)`` (prefix sums if causal); ``kv_neuron`` threshold ``kv_threshold``."""

    uses_attn_neuron = False

    def __init__(self, d_model: int, num_heads: int, *, kv_threshold: float = 0.5, **kwargs):
        self.kv_threshold = float(kv_threshold)
        super().__init__(d_model, num_heads, **kwargs)

    def _build_mixer(self, neuron_):
        self.kv_neuron = neuron_(self.d_model, threshold=self.kv_threshold)

    def mix(self, q, k, v):
        kv = k * v
        kv = torch.cumsum(kv, dim=2) if self.causal else kv.sum(dim=2, keepdim=True)
        return q * self.kv_neuron(kv)


SIGNED_SPIKE_NEURONS = ("ternary",)  # as spikejax.nn.attention.SIGNED_SPIKE_NEURONS


def _set_linear_options(attn: SpikeAttentionBase, feature_map: str, normalize: bool, eps: float,
                        chunk_size: int, neuron: str = "lif") -> None:
    """Store the linear-attention arguments (of :class:`LinearSpikeAttention` and
    :class:`HybridSpikeAttention`), checked and resolved (``"auto"``) as in :mod:`spikejax.nn.attention`."""
    if feature_map == "auto":
        feature_map = "relu" if neuron in SIGNED_SPIKE_NEURONS else "identity"
    if not float(eps) > 0:
        raise ValueError(f"eps: expected > 0 (the normaliser φ(q)ᵀz + eps can be 0), got {eps!r}")
    attn.feature_map, attn.normalize, attn.eps = feature_map, bool(normalize), float(eps)
    attn.chunk_size = chunk_size  # the JAX chunking; the value does not depend on it


def _linear_core(attn: SpikeAttentionBase, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """:func:`linear_attention_core` with ``attn``'s options on heads ``[T, B, H, L, d]``."""
    return linear_attention_core(q, k, v, feature=attn.feature_map, normalize=attn.normalize, eps=attn.eps,
                                 scale=attn.scale, causal=attn.causal)


class LinearSpikeAttention(SpikeAttentionBase):
    """Causal linear attention on spikes (:func:`linear_attention_core`), ``eps`` default 1
    (:data:`LINEAR_ATTENTION_EPS`)."""

    def __init__(self, d_model: int, num_heads: int, *, causal: bool = True, feature_map: str = "auto",
                 normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS, chunk_size: int = 64, **kwargs):
        _set_linear_options(self, feature_map, normalize, eps, chunk_size, kwargs.get("neuron", "lif"))
        super().__init__(d_model, num_heads, causal=causal, **kwargs)

    def mix(self, q, k, v):
        h = self.split_heads
        return self.merge_heads(_linear_core(self, h(q), h(k), h(v)))


class SlidingWindowSpikeAttention(SpikeAttentionBase):
    """Causal sliding-window attention of width ``window`` (:func:`sliding_window_core`)."""

    def __init__(self, d_model: int, num_heads: int, *, window: int = 64, softmax: bool = False,
                 causal: bool = True, **kwargs):
        if not causal:
            raise ValueError("causal: SlidingWindowSpikeAttention is causal; got causal=False")
        self.window, self.softmax = int(window), bool(softmax)
        super().__init__(d_model, num_heads, causal=True, **kwargs)

    def mix(self, q, k, v):
        h = self.split_heads
        return self.merge_heads(sliding_window_core(h(q), h(k), h(v), window=self.window, scale=self.scale,
                                                    softmax=self.softmax))


class HybridSpikeAttention(SpikeAttentionBase):
    """``out_proj(SN([linear ‖ sliding window]))``, mixed width 2D."""

    def __init__(self, d_model: int, num_heads: int, *, window: int = 64, softmax: bool = False,
                 feature_map: str = "auto", normalize: bool = True, eps: float = LINEAR_ATTENTION_EPS,
                 chunk_size: int = 64, causal: bool = True, **kwargs):
        if not causal:
            raise ValueError("causal: HybridSpikeAttention is causal; got causal=False")
        self.window, self.softmax = int(window), bool(softmax)
        _set_linear_options(self, feature_map, normalize, eps, chunk_size, kwargs.get("neuron", "lif"))
        super().__init__(d_model, num_heads, causal=True, **kwargs)

    @property
    def mixed_dim(self) -> int:
        return 2 * self.d_model

    def mix(self, q, k, v):
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        lin = _linear_core(self, qh, kh, vh)
        swa = sliding_window_core(qh, kh, vh, window=self.window, scale=self.scale, softmax=self.softmax)
        return torch.cat([self.merge_heads(lin), self.merge_heads(swa)], dim=-1)


ATTENTIONS: dict[str, type[SpikeAttentionBase]] = {
    "ssa": SpikingSelfAttention,
    "sdsa": SpikeDrivenSelfAttention,
    "linear": LinearSpikeAttention,
    "sliding": SlidingWindowSpikeAttention,
    "hybrid": HybridSpikeAttention,
}


def make_attention(kind: str, d_model: int, num_heads: int, **kwargs) -> SpikeAttentionBase:
    """Build an attention module by name, as :func:`spikejax.nn.make_attention`."""
    if kind not in ATTENTIONS:
        raise ValueError(f"attention: unknown attention {kind!r}; expected one of {sorted(ATTENTIONS)}")
    return ATTENTIONS[kind](d_model, num_heads, **kwargs)


# --- blocks and models ------------------------------------------------------------------------------


class SpikingMLP(nn.Module):
    """``[in_neuron] → fc1 → norm1 → hidden_neuron → fc2 → norm2 → [out_neuron]`` on ``[T, ..., D]``."""

    def __init__(self, d_model: int, hidden_dim: int, *, norm: str = "none", input_neuron: bool = False,
                 output_neuron: bool = False, neuron: str = "lif", neuron_kwargs: dict[str, Any] | None = None,
                 use_bias: bool = True, backend: str = "xla"):
        super().__init__()
        kw = {**(neuron_kwargs or {}), "backend": backend}
        self.input_neuron = make_neuron(neuron, num_channels=d_model, **kw) if input_neuron else None
        self.fc1 = nn.Linear(d_model, hidden_dim, bias=use_bias)
        self.norm1 = _make_norm(norm, hidden_dim)
        self.hidden_neuron = make_neuron(neuron, num_channels=hidden_dim, **kw)
        self.fc2 = nn.Linear(hidden_dim, d_model, bias=use_bias)
        self.norm2 = _make_norm(norm, d_model)
        self.output_neuron = make_neuron(neuron, num_channels=d_model, **kw) if output_neuron else None

    def forward(self, x: Tensor) -> Tensor:
        h = _apply(self.input_neuron, x)
        h = self.hidden_neuron(_apply(self.norm1, self.fc1(h)))
        return _apply(self.output_neuron, _apply(self.norm2, self.fc2(h)))


class SpikingTransformerBlock(nn.Module):
    """Spiking transformer block on ``[T, B, L, D]`` (``norm`` "pre"/"bn", ``shortcut`` "membrane"/"spike")::

        u = u + Attn(N₁(u));   u = u + MLP(N₂(u))
    """

    def __init__(self, d_model: int, num_heads: int, *, attention: str = "ssa", mlp_ratio: float = 4.0,
                 norm: str = "pre", shortcut: str = "membrane", causal: bool = False,
                 attention_kwargs: dict[str, Any] | None = None, neuron: str = "lif",
                 neuron_kwargs: dict[str, Any] | None = None, backend: str = "xla"):
        super().__init__()
        if norm not in ("pre", "bn"):
            raise ValueError(f"norm: unknown block norm {norm!r}; expected one of ('pre', 'bn')")
        if shortcut not in ("membrane", "spike"):
            raise ValueError(f"shortcut: unknown shortcut {shortcut!r}; expected one of ('membrane', 'spike')")
        self.norm, self.shortcut = norm, shortcut
        inner = "batch" if norm == "bn" else "none"
        membrane = shortcut == "membrane"
        common = dict(neuron=neuron, neuron_kwargs=neuron_kwargs, backend=backend)
        akw = dict(attention_kwargs or {})
        if attention in ("ssa", "sdsa"):
            akw["causal"] = causal
        self.attn_norm = nn.LayerNorm(d_model, eps=1e-6) if norm == "pre" else None
        self.attn = make_attention(attention, d_model, num_heads, norm=inner, input_neuron=membrane,
                                   output_neuron=not membrane, **akw, **common)
        self.mlp_norm = nn.LayerNorm(d_model, eps=1e-6) if norm == "pre" else None
        hidden = max(1, int(round(mlp_ratio * d_model)))
        self.mlp = SpikingMLP(d_model, hidden, norm=inner, input_neuron=membrane, output_neuron=not membrane,
                              **common)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(_apply(self.attn_norm, x))
        return x + self.mlp(_apply(self.mlp_norm, x))


def _blocks(cfg: dict[str, Any], causal: bool) -> nn.ModuleList:
    return nn.ModuleList([
        SpikingTransformerBlock(
            cfg["d_model"], cfg["num_heads"], attention=cfg["attention"], mlp_ratio=cfg["mlp_ratio"],
            norm=cfg["norm"], shortcut=cfg["shortcut"], causal=causal, attention_kwargs=cfg["attention_kwargs"],
            neuron=cfg["neuron"], neuron_kwargs=cfg["neuron_kwargs"], backend=cfg["backend"])
        for _ in range(cfg["num_layers"])
    ])


_LM_DEFAULTS: dict[str, Any] = dict(
    vocab_size=256, d_model=64, num_heads=4, num_layers=2, mlp_ratio=4.0, time_steps=4, max_len=256,
    attention="linear", attention_kwargs={}, norm="pre", shortcut="membrane", neuron="lif", neuron_kwargs={},
    backend="xla", pos_embedding=True, dtype="float32",
    dropout=0.0)  # training-only in spikejax (needs a dropout key); the mirror is the inference model
_SPIKFORMER_DEFAULTS: dict[str, Any] = dict(
    image_size=32, in_channels=3, patch_size=4, num_classes=10, d_model=64, num_heads=4, num_layers=2,
    mlp_ratio=4.0, time_steps=4, attention="ssa", attention_kwargs={}, norm="bn", shortcut="spike",
    neuron="lif", neuron_kwargs={}, backend="xla", dtype="float32")


def _config(config: Any, defaults: dict[str, Any], name: str) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict (or a spikejax config), got {type(config)!r}")
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"config: unknown {name} fields {unknown}")
    return {**defaults, **config}


class SpikingLM(nn.Module):
    """Causal spiking language model (mirror of :class:`spikejax.nn.SpikingLM`).

    ``tokens[B, L]`` → ``token_embed + pos_embed`` ``[B, L, D]`` → repeated over T ``[T, B, L, D]``
    (→ ``embed_neuron`` with the spike shortcut) → blocks → ``final_norm`` → ``head`` → mean over T
    → ``logits[B, L, vocab]``. ``config``: a :class:`spikejax.nn.SpikingLMConfig` or its dict.
    """

    def __init__(self, config: Any):
        super().__init__()
        cfg = self.config = _config(config, _LM_DEFAULTS, "SpikingLM")
        D = cfg["d_model"]
        self.token_embed = nn.Embedding(cfg["vocab_size"], D)
        self.pos_embed = nn.Embedding(cfg["max_len"], D) if cfg["pos_embedding"] else None
        self.embed_neuron = (make_neuron(cfg["neuron"], num_channels=D, backend=cfg["backend"], **cfg["neuron_kwargs"])
                             if cfg["shortcut"] == "spike" else None)
        self.blocks = _blocks(cfg, causal=True)
        self.final_norm = nn.LayerNorm(D, eps=1e-6)
        self.head = nn.Linear(D, cfg["vocab_size"])

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected integer token ids [B, L], got shape {tuple(tokens.shape)}")
        L = tokens.shape[1]
        e = self.token_embed(tokens)
        if self.pos_embed is not None:
            e = e + self.pos_embed(torch.arange(L, device=tokens.device))[None]
        x = e[None].expand(self.config["time_steps"], *e.shape)
        x = _apply(self.embed_neuron, x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x)).mean(dim=0)


class SpikingPatchEmbed(nn.Module):
    """``x[T, B, H, W, C]`` (channels last) → conv 3×3 → conv_norm → neuron → proj p×p/p → proj_norm
    → ``[T, B, N, D]`` (N = (H/p)(W/p), row-major patches)."""

    def __init__(self, in_channels: int, d_model: int, patch_size: int, *, norm: str = "batch",
                 neuron: str = "lif", neuron_kwargs: dict[str, Any] | None = None, backend: str = "xla"):
        super().__init__()
        self.in_channels, self.patch_size = in_channels, patch_size
        make = ChannelLastBatchNorm if norm == "batch" else (lambda n: nn.LayerNorm(n, eps=1e-6))
        self.conv = nn.Conv2d(in_channels, d_model, 3, padding=1)
        self.conv_norm = make(d_model)
        self.neuron = make_neuron(neuron, num_channels=d_model, backend=backend, **(neuron_kwargs or {}))
        self.proj = nn.Conv2d(d_model, d_model, patch_size, stride=patch_size)
        self.proj_norm = make(d_model)

    def forward(self, x: Tensor) -> Tensor:
        T, B, H, W, C = x.shape
        p = self.patch_size
        h = self.conv(x.reshape(T * B, H, W, C).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        h = self.neuron(self.conv_norm(h).reshape(T, B, H, W, -1)).reshape(T * B, H, W, -1)
        h = self.proj(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj_norm(h).reshape(T, B, (H // p) * (W // p), -1)


class Spikformer(nn.Module):
    """Spikformer image classifier (mirror of :class:`spikejax.nn.Spikformer`).

    ``images[B, H, W, C]`` (NHWC, repeated over T) or ``[T, B, H, W, C]`` → patch embed + ``pos_embed[N, D]``
    → [embed_neuron] → blocks → mean over tokens → [final_norm] → head → mean over T → ``logits[B, classes]``.
    """

    def __init__(self, config: Any):
        super().__init__()
        cfg = self.config = _config(config, _SPIKFORMER_DEFAULTS, "Spikformer")
        D = cfg["d_model"]
        n_patches = (cfg["image_size"] // cfg["patch_size"]) ** 2
        self.patch_embed = SpikingPatchEmbed(cfg["in_channels"], D, cfg["patch_size"],
                                             norm="batch" if cfg["norm"] == "bn" else "layer", neuron=cfg["neuron"],
                                             neuron_kwargs=cfg["neuron_kwargs"], backend=cfg["backend"])
        self.pos_embed = nn.Parameter(torch.zeros(n_patches, D))
        self.embed_neuron = (make_neuron(cfg["neuron"], num_channels=D, backend=cfg["backend"], **cfg["neuron_kwargs"])
                             if cfg["shortcut"] == "spike" else None)
        self.blocks = _blocks(cfg, causal=False)
        self.final_norm = nn.LayerNorm(D, eps=1e-6) if cfg["norm"] == "pre" else None
        self.head = nn.Linear(D, cfg["num_classes"])

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() == 4:
            x = images[None].expand(self.config["time_steps"], *images.shape)
        elif images.dim() == 5:
            x = images
        else:
            raise ValueError(f"images: expected [B, H, W, C] or [T, B, H, W, C], got shape {tuple(images.shape)}")
        x = _apply(self.embed_neuron, self.patch_embed(x) + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        h = _apply(self.final_norm, x.mean(dim=2))
        return self.head(h).mean(dim=0)


MODELS: dict[str, type[nn.Module]] = {"SpikingLM": SpikingLM, "Spikformer": Spikformer}


def build_model(model: str, config: Any) -> nn.Module:
    """A PyTorch mirror of the model named ``model`` (``"SpikingLM"``, ``"Spikformer"``) with ``config``."""
    if model not in MODELS:
        raise ValueError(f"model: unknown model {model!r}; expected one of {sorted(MODELS)}")
    return MODELS[model](config)


def load_model(path: str | Path, *, strict: bool = True) -> nn.Module:
    """Build the mirror of an export (``<stem>.json`` config) and load its weights (``.safetensors`` or ``.pt``).

    Returns the model in eval mode, loaded with ``load_state_dict(strict=strict)``.
    """
    from spikejax.interop.torch_export import export_paths, read_config, read_state_dict

    paths = export_paths(path)
    meta = read_config(paths["json"])
    module = build_model(meta["model"], meta["config"])
    weights = paths["safetensors"] if paths["safetensors"].exists() else paths["pt"]
    state = {k: torch.from_numpy(v.copy()) for k, v in read_state_dict(weights).items()}
    module.load_state_dict(state, strict=strict)
    return module.eval()
