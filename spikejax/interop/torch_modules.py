"""Plain PyTorch mirrors of spikejax's layers and models, derived from the spikejax modules.

A mirror is made from a spikejax (Flax NNX) module by :func:`mirror`: it walks the module's tree and
builds the PyTorch module of every node under the same attribute name, so the parameter paths, and so
the keys of :func:`spikejax.interop.export_torch`'s state dict, are the spikejax ones by construction;
layer shapes and hyper-parameters are read from the NNX layers (``nnx.Linear`` features and bias,
norm ε and momentum, convolution kernels, strides and padding); the settings of every neuron and
attention (τ or β, thresholds, resets, surrogate, feature map, window, ...) are the spikejax module's
attributes, after spikejax validated and resolved them; and the values are loaded from the module
(a strict ``load_state_dict`` of :func:`spikejax.interop.to_torch_state_dict`). The classes take
spikejax's constructor arguments (``tm.LIF(tau=3.0)``, ``tm.SpikingLM(config)``): a constructor builds
the spikejax module first (its defaults, checks and config fields; a fresh mirror starts from the
weights spikejax initialises with seed 0) and mirrors it.

What this module writes itself is the computation, in PyTorch (it is the export target and the
independent second implementation the tests compare against):

- the surrogate derivatives (:class:`SpikeFunction`, a ``torch.autograd.Function``: gradients reach
  ``x``, PLIF's ``decay_logit`` / ``threshold``, the ternary ``amplitude`` and a learnable
  ``surrogate_alpha``) and the generalized neuron scan of :mod:`spikejax.backends`
  (:func:`neuron_scan`), time first ``x[T, ...]``, with each built-in neuron's parameters in it
  (:class:`IF`, :class:`LIF`, :class:`ALIF`, :class:`PLIF`, :class:`Ternary`, :class:`MultiLevel`);
- the attention cores (:func:`ssa_core`, :func:`linear_attention_core`, :func:`sliding_window_core`)
  and mixers of :class:`SpikingAttention` on spikes ``[T, B, L, D]`` (its named kinds
  :class:`SpikingSelfAttention`, :class:`SpikeDrivenSelfAttention`, :class:`LinearSpikeAttention`,
  :class:`SlidingWindowSpikeAttention`, :class:`HybridSpikeAttention`, each mixing as its spikejax
  module's ``mixer`` says);
- the forward passes of :class:`SpikingMLP`, :class:`SpikingTransformerBlock`,
  :class:`SpikingPatchEmbed`, :class:`SpikingLM` (``tokens[B, L] -> logits[B, L, vocab]``) and
  :class:`Spikformer` (``images[B, H, W, C]`` NHWC, as in JAX, ``-> logits[B, classes]``).

Layouts follow PyTorch: ``Linear.weight[out, in]``, ``Conv2d.weight[out, in, kh, kw]``
(:class:`ChannelLastConv2d` permutes the channels-last activations to NCHW and back), ``LayerNorm`` /
``BatchNorm`` ``weight``/``bias``/``running_mean``/``running_var``/``num_batches_tracked``;
BatchNorm normalizes over every axis but the last (:class:`ChannelLastBatchNorm`, PyTorch momentum
``1 - `` Flax's).

Known differences: in training mode PyTorch's BatchNorm updates ``running_var`` with the unbiased
batch variance while Flax uses the biased one (the normalized outputs are the same); the
``backend`` is the spikejax module's and unused here (always the step loop); so is a model config's
``dtype`` (the JAX compute dtype: the mirrors compute in the dtype of their float32 parameters; call
``.to(torch.bfloat16)`` for bfloat16) and ``dropout`` (the mirrors are the inference models);
decoding states (``decode_step``) are not mirrored. A spikejax module without a mirror here (the
dynamics neurons, the zoo models) is a ``TypeError`` naming it.

Build from an exported config with :func:`build_model` or load an export with :func:`load_model`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np
import torch
import torch.nn.functional as TF
from flax import nnx
from torch import nn

import spikejax.nn as snn
from spikejax import surrogate as jsurrogate
from spikejax.backends import RESETS
from spikejax.interop.state_dict import state_dict_arrays, torch_key_map
from spikejax.interop.torch_export import export_paths, read_config, read_state_dict
from spikejax.nn import attention as jattn
from spikejax.nn import blocks as jblocks
from spikejax.nn import models as jmodels
from spikejax.nn import neurons as jneurons

Tensor = torch.Tensor

__all__ = [
    "SURROGATE_DEFAULTS", "SpikeFunction", "spike", "neuron_scan", "Mirror", "mirror", "mirror_tree", "load_values",
    "SpikingNeuron", "IF", "LIF", "ALIF", "PLIF", "Ternary", "MultiLevel", "NEURONS", "make_neuron",
    "ChannelLastBatchNorm", "ChannelLastConv2d",
    "ssa_core", "linear_attention_core", "sliding_window_core", "split_heads", "merge_heads", "head_core", "mix",
    "SpikingAttention", "SpikeAttentionBase", "SpikingSelfAttention", "SpikeDrivenSelfAttention",
    "LinearSpikeAttention", "SlidingWindowSpikeAttention", "HybridSpikeAttention", "ATTENTIONS",
    "LINEAR_ATTENTION_EPS", "make_attention",
    "SpikingMLP", "SpikingTransformerBlock", "SpikingPatchEmbed", "SpikingLM", "Spikformer", "MODELS", "build_model",
    "load_model",
]

# --- surrogates: the PyTorch derivatives of spikejax.surrogate's shapes ---------------------------


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


_SURROGATES: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "atan": _atan,
    "sigmoid": _sigmoid,
    "fast_sigmoid": _fast_sigmoid,
    "triangular": _triangular,
    "rectangular": _rectangular,
}
"""``(∂σ_α/∂x, ∂σ_α/∂α)`` per surrogate shape, the same formulas as :mod:`spikejax.surrogate`."""
SURROGATE_DEFAULTS: dict[str, float] = {name: alpha for name, (_, alpha) in jsurrogate.SURROGATES.items()}
"""Default steepness α per surrogate shape (read from :data:`spikejax.surrogate.SURROGATES`)."""


def _surrogate_shape(name: str) -> str:
    """The canonical shape of a surrogate name or alias (spikejax's check), one this module has."""
    shape = jsurrogate.get(name).shape
    if shape not in _SURROGATES:
        raise ValueError(f"surrogate: {shape!r} has no PyTorch formula here; expected one of {sorted(_SURROGATES)}")
    return shape


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
    """``Θ(x)`` with the ``shape`` surrogate backward (a name or alias; see :class:`SpikeFunction`)."""
    return SpikeFunction.apply(x, alpha, _surrogate_shape(shape))


# --- the generalized neuron scan (same as spikejax.backends.reference_scan) ----------------------


def _fire(kind: str, levels: int, surrogate: str, h: Tensor, thr: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    up = SpikeFunction.apply(h - thr, alpha, surrogate)
    if kind == "binary":
        return up, up
    if kind == "ternary":
        down = SpikeFunction.apply(-h - thr, alpha, surrogate)
        return up - down, up + down
    s = up
    for k in range(2, levels + 1):
        s = s + SpikeFunction.apply(h - k * thr, alpha, surrogate)
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
    if reset not in RESETS:
        raise ValueError(f"reset: unknown reset {reset!r}; expected one of {RESETS}")
    surrogate = _surrogate_shape(surrogate)
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


# --- mirroring: a spikejax module's tree -> PyTorch modules ---------------------------------------------

_MIRRORS: dict[type, type[Mirror]] = {}
"""spikejax module class -> its mirror class (filled by the ``source`` of each :class:`Mirror`)."""


class Mirror(nn.Module):
    """Base of the mirrors of spikejax's own modules.

    A subclass names its spikejax class in :attr:`source` and writes ``forward``; everything else
    is the spikejax module's. ``Mirror(*args, **kwargs)`` builds ``source(*args, **kwargs)`` (with
    ``rngs=nnx.Rngs(0)`` when :attr:`takes_rngs`) and mirrors it; :meth:`from_spikejax` mirrors a
    given module's tree (without values: :func:`mirror` also loads them). Attributes: each child module
    of the spikejax module becomes the PyTorch module of the same name, each ``nnx.Param`` an
    ``nn.Parameter`` (each ``nnx.BatchStat`` a buffer), each array constant a non-persistent buffer, every
    other setting the same Python value; the spikejax module's state variables (streaming neuron
    state) are not mirrored.
    """

    source: ClassVar[Callable[..., nnx.Module] | None] = None
    takes_rngs: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        source = cls.__dict__.get("source")
        if isinstance(source, type):
            _MIRRORS[source] = cls

    def __init__(self, *args, **kwargs):
        super().__init__()
        source = type(self).source
        if source is None:
            raise TypeError(f"{type(self).__name__} mirrors no spikejax module; use a subclass or mirror()")
        if self.takes_rngs and "rngs" not in kwargs:
            kwargs["rngs"] = nnx.Rngs(0)
        module = source(*args, **kwargs)
        self.copy_tree(module)
        load_values(self, module)

    @classmethod
    def from_spikejax(cls, module: nnx.Module) -> Mirror:
        """The mirror of ``module``'s tree (parameters zero until :func:`load_values`)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.copy_tree(module)
        return self

    def copy_tree(self, module: nnx.Module) -> None:
        """Set every public attribute of ``module`` on this mirror, converted (see the class docstring)."""
        for name, value in vars(module).items():
            if not name.startswith("_"):
                _set_mirrored(self, name, value)


def _set_mirrored(owner: nn.Module, name: str, value: Any) -> None:
    if isinstance(value, nnx.Param):
        owner.register_parameter(name, nn.Parameter(torch.zeros(tuple(value.get_value().shape))))
    elif isinstance(value, nnx.BatchStat):
        owner.register_buffer(name, torch.zeros(tuple(value.get_value().shape)))
    elif isinstance(value, nnx.Variable):
        return  # state (a streaming neuron's v / a), not a parameter
    elif isinstance(value, (np.ndarray, jax.Array)):
        owner.register_buffer(name, torch.from_numpy(np.array(value, np.float32)), persistent=False)
    elif value is None or isinstance(value, nnx.Module):
        setattr(owner, name, None if value is None else mirror_tree(value))
    else:
        setattr(owner, name, value)


def _pair(value: Any) -> tuple[int, int]:
    return tuple(int(v) for v in np.broadcast_to(np.asarray(1 if value is None else value), (2,)))


def _conv_padding(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[int, int]:
    """Flax's ``padding`` as PyTorch's symmetric ``(ph, pw)``; ``ValueError`` when it has none."""
    if padding == "VALID":
        return (0, 0)
    span = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if padding == "SAME" and stride == (1, 1) and all(s % 2 == 0 for s in span):
        return tuple(s // 2 for s in span)
    if isinstance(padding, int):
        return (padding, padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = [p if isinstance(p, int) else tuple(p) for p in padding]
        if all(isinstance(p, int) for p in pads):
            return tuple(pads)
        if all(len(p) == 2 and p[0] == p[1] for p in pads):
            return tuple(p[0] for p in pads)
    raise ValueError(f"padding: {padding!r} (stride {stride}) has no symmetric PyTorch padding")


def mirror_tree(module: nnx.Module) -> nn.Module:
    """The PyTorch module of one spikejax / Flax NNX module, with its tree (values: :func:`load_values`)."""
    if isinstance(module, nnx.Linear):
        return nn.Linear(module.in_features, module.out_features, bias=module.use_bias)
    if isinstance(module, nnx.Embed):
        return nn.Embedding(module.num_embeddings, module.features)
    if isinstance(module, nnx.LayerNorm):
        if module.reduction_axes not in (-1, (-1,)) or (module.use_bias and not module.use_scale):
            raise TypeError("module: a LayerNorm over other axes than the last, or with a bias but no scale, "
                            "has no PyTorch mirror")
        return nn.LayerNorm(module.num_features, eps=module.epsilon, elementwise_affine=module.use_scale,
                            bias=module.use_bias)
    if isinstance(module, nnx.BatchNorm):
        if module.axis not in (-1, (-1,)) or module.use_bias != module.use_scale:
            raise TypeError("module: a BatchNorm over other channels than the last axis, or with only one of "
                            "scale and bias, has no PyTorch mirror")
        return ChannelLastBatchNorm(module.num_features, eps=module.epsilon, momentum=1.0 - module.momentum,
                                    affine=module.use_scale)
    if isinstance(module, nnx.Conv):
        return ChannelLastConv2d.from_flax(module)
    if isinstance(module, nnx.List):
        return nn.ModuleList([mirror_tree(m) for m in module])
    for cls in type(module).__mro__:
        if cls in _MIRRORS:
            return _MIRRORS[cls].from_spikejax(module)
    raise TypeError(f"module: {type(module).__name__} has no PyTorch mirror (mirrored: "
                    f"{sorted(c.__name__ for c in _MIRRORS)} and nnx Linear / Embed / LayerNorm / BatchNorm / Conv)")


def load_values(target: nn.Module, module: nnx.Module) -> nn.Module:
    """Load ``module``'s parameters and batch statistics into its mirror ``target`` (strict: the
    mirror's state dict has exactly the keys of :func:`spikejax.interop.to_torch_state_dict`)."""
    state = {k: torch.from_numpy(np.array(v)) for k, v in state_dict_arrays(torch_key_map(module)).items()}
    target.load_state_dict(state, strict=True)
    return target


def mirror(module: nnx.Module) -> nn.Module:
    """The PyTorch mirror of a spikejax module, with its current values (see the module docstring)."""
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module: expected a flax.nnx.Module, got {type(module)!r}")
    return load_values(mirror_tree(module), module)


def _apply(module: nn.Module | None, x: Tensor) -> Tensor:
    return x if module is None else module(x)


# --- neuron layers: each built-in neuron's parameters in the generalized scan --------------------------


def _leak(tau: Any, beta: Any, decay_input: bool | None, default_tau: float | None,
          default_beta: float | None) -> tuple[Tensor, bool]:
    """β (float32) and decay_input from ``tau`` (β = 1 - 1/τ, decay_input by default) or ``beta``
    (no decay_input by default), else the neuron's default τ or β; the functional neurons' rule."""
    f32 = torch.float32
    if tau is None and beta is None:
        tau, beta = default_tau, default_beta
        if tau is not None:
            return torch.tensor(1.0 - 1.0 / tau, dtype=f32), True if decay_input is None else bool(decay_input)
    if tau is not None:
        return 1.0 - 1.0 / torch.as_tensor(tau, dtype=f32), True if decay_input is None else bool(decay_input)
    return torch.as_tensor(beta, dtype=f32), False if decay_input is None else bool(decay_input)


class SpikingNeuron(Mirror):
    """Base of the neuron mirrors: surrogate, optional learnable ``surrogate_alpha[C]``, streaming state.

    ``forward(x[T, ...], state=None, return_state=False)`` -> ``spikes[T, ...]`` (or
    ``(spikes, (v, a))``); ``stateful=True`` carries ``(v, a)`` between calls (``reset_state()``).
    A kind writes :meth:`scan_kwargs`, its parameters in :func:`neuron_scan`.
    """

    source = jneurons.SpikingNeuron
    takes_rngs = False
    adaptive = False

    def copy_tree(self, module):
        super().copy_tree(module)
        _surrogate_shape(self.surrogate_shape)
        self._state: tuple[Tensor, Tensor] | None = None

    def alpha(self) -> Tensor:
        if self.learnable_surrogate:
            return self.surrogate_alpha
        return torch.tensor(self.surrogate_alpha_value, dtype=torch.float32)

    def reset_kwargs(self) -> dict[str, Any]:
        return dict(reset=self.reset, detach_reset=self.detach_reset, reset_delay=getattr(self, "reset_delay", False))

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

    source = jneurons.IF

    def scan_kwargs(self):
        return dict(beta=torch.tensor(1.0), threshold=self.threshold, decay_input=False, **self.reset_kwargs())


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire: ``H_t = β V_{t-1} + γ X_t``; ``tau`` (β = 1 - 1/τ, γ = 1/τ by
    default) or ``beta`` (γ = 1 by default); default τ = 2."""

    source = jneurons.LIF

    def scan_kwargs(self):
        beta, decay_input = _leak(self.tau, self.beta, self.decay_input, 2.0, None)
        return dict(beta=beta, threshold=self.threshold, decay_input=decay_input, **self.reset_kwargs())


class ALIF(SpikingNeuron):
    """Adaptive LIF: ``θ_t = θ + b a_{t-1}``, ``a_t = ρ a_{t-1} + S_t``; otherwise as :class:`LIF`."""

    source = jneurons.ALIF
    adaptive = True

    def scan_kwargs(self):
        beta, decay_input = _leak(self.tau, self.beta, self.decay_input, 2.0, None)
        return dict(beta=beta, threshold=self.threshold, decay_input=decay_input, adaptive=True,
                    adapt_scale=self.adapt_scale, adapt_decay=self.adapt_decay, **self.reset_kwargs())


class PLIF(SpikingNeuron):
    """Parametric LIF: learnable ``decay_logit[C]`` (``β = 1 - sigmoid(w)``) and ``threshold[C]``."""

    source = jneurons.PLIF

    def scan_kwargs(self):
        return dict(beta=1.0 - torch.sigmoid(self.decay_logit), threshold=self.threshold,
                    decay_input=bool(self.decay_input), **self.reset_kwargs())


class Ternary(SpikingNeuron):
    """Ternary LIF: output ``amplitude · S_t``, ``S_t = Θ(H_t - θ) - Θ(-H_t - θ)`` ∈ {-1, 0, 1}."""

    source = jneurons.Ternary

    def scan_kwargs(self):
        beta, decay_input = _leak(self.tau, self.beta, self.decay_input, 2.0, None)
        return dict(beta=beta, threshold=self.threshold, decay_input=decay_input, kind="ternary",
                    **self.reset_kwargs())

    def postprocess(self, spikes):
        return (spikes * self.amplitude).to(spikes.dtype)


class MultiLevel(SpikingNeuron):
    """Multi-level neuron: ``S_t = Σ_{k=1..L} Θ(H_t - kθ)``; default β = 1 (no leak)."""

    source = jneurons.MultiLevel

    def scan_kwargs(self):
        beta, decay_input = _leak(self.tau, self.beta, self.decay_input, None, 1.0)
        return dict(beta=beta, threshold=self.threshold, decay_input=decay_input, kind="multilevel",
                    levels=self.levels, **self.reset_kwargs())


del _MIRRORS[jneurons.SpikingNeuron]  # the base has no equations: a kind without a mirror is a TypeError
NEURONS: dict[str, type[SpikingNeuron]] = {k: _MIRRORS[c] for k, c in snn.NEURONS.items() if c in _MIRRORS}
"""The neuron mirrors by name (the names of :data:`spikejax.nn.NEURONS` that have one)."""


def make_neuron(kind: str, *, num_channels: int | None = None, **kwargs) -> SpikingNeuron:
    """The mirror of :func:`spikejax.nn.make_neuron` ``(kind, num_channels=..., **kwargs)``."""
    return mirror(snn.make_neuron(kind, num_channels=num_channels, **kwargs))


# --- norms and convolutions on channels-last activations ----------------------------------------------


class ChannelLastBatchNorm(nn.BatchNorm1d):
    """BatchNorm over every axis but the last (Flax ``nnx.BatchNorm`` on ``[..., C]``).

    Parameters and buffers are PyTorch's (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``); ``eps`` and ``momentum`` (PyTorch's: ``1 -`` Flax's) are the mirrored
    ``nnx.BatchNorm``'s.
    """

    def __init__(self, num_features: int, *, eps: float, momentum: float, affine: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)


class ChannelLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` on channels-last ``x[N, H, W, C]`` (Flax ``nnx.Conv``'s layout): permutes to NCHW
    and back. :meth:`from_flax` reads the kernel size, strides, padding, dilation, groups and bias of an
    ``nnx.Conv``."""

    @classmethod
    def from_flax(cls, conv: nnx.Conv) -> ChannelLastConv2d:
        if len(conv.kernel_size) != 2 or _pair(conv.input_dilation) != (1, 1) or conv.mask is not None:
            raise TypeError(f"module: only 2-D nnx.Conv without input dilation or mask has a PyTorch mirror, "
                            f"got kernel_size={conv.kernel_size}")
        kernel, stride, dilation = tuple(conv.kernel_size), _pair(conv.strides), _pair(conv.kernel_dilation)
        return cls(conv.in_features, conv.out_features, kernel, stride=stride,
                   padding=_conv_padding(conv.padding, kernel, stride, dilation), dilation=dilation,
                   groups=conv.feature_group_count, bias=conv.use_bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


# --- attention: the cores and the mixers -----------------------------------------------------------------


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


LINEAR_ATTENTION_EPS = snn.LINEAR_ATTENTION_EPS
"""Default ε of the normalized linear attention (:data:`spikejax.nn.LINEAR_ATTENTION_EPS`)."""


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


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[T, B, L, D] -> [T, B, H, L, d]``."""
    T, B, L, D = x.shape
    return x.reshape(T, B, L, num_heads, D // num_heads).permute(0, 1, 3, 2, 4)


def merge_heads(x: Tensor) -> Tensor:
    """``[T, B, H, L, d] -> [T, B, L, H·d]``."""
    T, B, H, L, d = x.shape
    return x.permute(0, 1, 3, 2, 4).reshape(T, B, L, H * d)


def head_core(core: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """A spikejax head core (:class:`spikejax.nn.attention.SSAHeads`, ``LinearHeads``, ``WindowHeads``,
    its settings) computed here on heads ``[T, B, H, L, d]``."""
    if isinstance(core, jattn.SSAHeads):
        return ssa_core(q, k, v, scale=core.scale, causal=core.causal)
    if isinstance(core, jattn.LinearHeads):
        return linear_attention_core(q, k, v, feature=core.feature_map, normalize=core.normalize, eps=core.eps,
                                     scale=core.scale, causal=core.causal)
    if isinstance(core, jattn.WindowHeads):
        return sliding_window_core(q, k, v, window=core.window, scale=core.scale, softmax=core.softmax)
    raise TypeError(f"mixer: head core {type(core).__name__} has no PyTorch mirror")


def mix(mixer: Any, q: Tensor, k: Tensor, v: Tensor, neurons: Mapping[str, nn.Module]) -> Tensor:
    """A spikejax mixer (``PerHead``, ``SpikeDrivenMixer``, ``Concat`` of :mod:`spikejax.nn.attention`)
    computed here on spikes ``q, k, v: [T, B, L, D]`` -> ``[T, B, L, mixer.width(D)]``; ``neurons``
    are the mixer's own neuron mirrors by name (SDSA's ``kv_neuron``)."""
    if isinstance(mixer, jattn.PerHead):
        H = mixer.num_heads
        return merge_heads(head_core(mixer.core, split_heads(q, H), split_heads(k, H), split_heads(v, H)))
    if isinstance(mixer, jattn.SpikeDrivenMixer):
        kv = k * v
        kv = torch.cumsum(kv, dim=2) if mixer.causal else kv.sum(dim=2, keepdim=True)
        return q * neurons["kv_neuron"](kv)
    if isinstance(mixer, jattn.Concat):
        return torch.cat([mix(p, q, k, v, neurons) for p in mixer.parts], dim=-1)
    raise TypeError(f"mixer: {type(mixer).__name__} has no PyTorch mirror")


class SpikingAttention(Mirror):
    """Spiking Q/K/V projections, the spikejax module's ``mixer`` (:func:`mix`), the output projection
    (as :class:`spikejax.nn.SpikingAttention`). ``x[T, B, L, D] -> y[T, B, L, D]``."""

    source = jattn.SpikingAttention

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected [T, B, L, D] with D=d_model={self.d_model}, got shape {tuple(x.shape)}")
        h = _apply(self.input_neuron, x)
        q = self.q_neuron(_apply(self.q_norm, self.q_proj(h)))
        k = self.k_neuron(_apply(self.k_norm, self.k_proj(h)))
        v = self.v_neuron(_apply(self.v_norm, self.v_proj(h)))
        mixed = mix(self.mixer, q, k, v, {name: getattr(self, name) for name, _ in self.mixer.neurons})
        y = self.out_proj(_apply(self.attn_neuron, _apply(self.mix_norm, mixed)))
        return _apply(self.output_neuron, _apply(self.out_norm, y))


SpikeAttentionBase = SpikingAttention
"""Deprecated alias of :class:`SpikingAttention`."""


class SpikingSelfAttention(SpikingAttention):
    """Spikformer SSA: ``SN((Q Kᵀ ⊙ M) V · scale)``."""

    source = jattn.SpikingSelfAttention


class SpikeDrivenSelfAttention(SpikingAttention):
    """SDSA: ``Q ⊗ SN(Σ_j K_j ⊗ V_j)`` (prefix sums if causal); ``kv_neuron`` threshold ``kv_threshold``."""

    source = jattn.SpikeDrivenSelfAttention


class LinearSpikeAttention(SpikingAttention):
    """Causal linear attention on spikes (:func:`linear_attention_core`)."""

    source = jattn.LinearSpikeAttention


class SlidingWindowSpikeAttention(SpikingAttention):
    """Causal sliding-window attention of width ``window`` (:func:`sliding_window_core`)."""

    source = jattn.SlidingWindowSpikeAttention


class HybridSpikeAttention(SpikingAttention):
    """``out_proj(SN([linear ‖ sliding window]))``, mixed width 2D."""

    source = jattn.HybridSpikeAttention


ATTENTIONS: dict[str, type[SpikingAttention]] = {k: _MIRRORS[c] for k, c in snn.ATTENTIONS.items() if c in _MIRRORS}
"""The attention mirrors by name (the names of :data:`spikejax.nn.ATTENTIONS`)."""


def make_attention(kind: str, d_model: int, num_heads: int, **kwargs) -> SpikingAttention:
    """The mirror of :func:`spikejax.nn.make_attention` ``(kind, d_model, num_heads, **kwargs)``."""
    kwargs.setdefault("rngs", nnx.Rngs(0))
    return mirror(snn.make_attention(kind, d_model, num_heads, **kwargs))


# --- blocks and models ------------------------------------------------------------------------------


class SpikingMLP(Mirror):
    """``[in_neuron] → fc1 → norm1 → hidden_neuron → fc2 → norm2 → [out_neuron]`` on ``[T, ..., D]``."""

    source = jblocks.SpikingMLP

    def forward(self, x: Tensor) -> Tensor:
        h = _apply(self.input_neuron, x)
        h = self.hidden_neuron(_apply(self.norm1, self.fc1(h)))
        return _apply(self.output_neuron, _apply(self.norm2, self.fc2(h)))


class SpikingTransformerBlock(Mirror):
    """Spiking transformer block on ``[T, B, L, D]``: ``u = u + Attn(N₁(u));   u = u + MLP(N₂(u))``."""

    source = jblocks.SpikingTransformerBlock

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(_apply(self.attn_norm, x))
        return x + self.mlp(_apply(self.mlp_norm, x))


class SpikingPatchEmbed(Mirror):
    """``x[T, B, H, W, C]`` (channels last) → conv → conv_norm → neuron → proj (p×p, stride p) → proj_norm
    → ``[T, B, N, D]`` (N = (H/p)(W/p), row-major patches)."""

    source = jmodels.SpikingPatchEmbed

    def forward(self, x: Tensor) -> Tensor:
        T, B, H, W, C = x.shape
        p = self.patch_size
        h = self.conv_norm(self.conv(x.reshape(T * B, H, W, C)))
        h = self.neuron(h.reshape(T, B, H, W, -1)).reshape(T * B, H, W, -1)
        return self.proj_norm(self.proj(h)).reshape(T, B, (H // p) * (W // p), -1)


def _model_source(model: type[nnx.Module], config_class: type) -> Callable[..., nnx.Module]:
    """Build ``model`` from a config, a spikejax config of another class's fields, or its dict (the
    dataclass's defaults, checks and fields)."""

    def build(config: Any, *, rngs: nnx.Rngs) -> nnx.Module:
        if hasattr(config, "to_dict") and not isinstance(config, config_class):
            config = config.to_dict()
        if isinstance(config, dict):
            config = config_class.from_dict(config)
        if not isinstance(config, config_class):
            raise TypeError(f"config: expected a dict (or a {config_class.__name__}), got {type(config)!r}")
        return model(config, rngs=rngs)

    build.__signature__ = inspect.signature(lambda config, *, rngs: None)
    return build


class _ModelMirror(Mirror):
    def copy_tree(self, module):
        super().copy_tree(module)
        self.config = module.config.to_dict()  # a plain dict on the PyTorch side


class SpikingLM(_ModelMirror):
    """Causal spiking language model (mirror of :class:`spikejax.nn.SpikingLM`).

    ``tokens[B, L]`` → ``token_embed + pos_embed`` ``[B, L, D]`` → repeated over T ``[T, B, L, D]``
    (→ ``embed_neuron`` with the spike shortcut) → blocks → ``final_norm`` → ``head`` → mean over T
    → ``logits[B, L, vocab]``. ``config``: a :class:`spikejax.nn.SpikingLMConfig` or its dict.
    """

    source = staticmethod(_model_source(jmodels.SpikingLM, snn.SpikingLMConfig))

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens: expected integer token ids [B, L], got shape {tuple(tokens.shape)}")
        L = tokens.shape[1]
        e = self.token_embed(tokens)
        if self.pos_embed is not None:
            e = e + self.pos_embed(torch.arange(L, device=tokens.device))[None]
        x = _apply(self.embed_neuron, e[None].expand(self.config["time_steps"], *e.shape))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x)).mean(dim=0)


class Spikformer(_ModelMirror):
    """Spikformer image classifier (mirror of :class:`spikejax.nn.Spikformer`).

    ``images[B, H, W, C]`` (NHWC, repeated over T) or ``[T, B, H, W, C]`` → patch embed + ``pos_embed[N, D]``
    → [embed_neuron] → blocks → mean over tokens → [final_norm] → head → mean over T → ``logits[B, classes]``.
    """

    source = staticmethod(_model_source(jmodels.Spikformer, snn.SpikformerConfig))

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
        return self.head(_apply(self.final_norm, x.mean(dim=2))).mean(dim=0)


_MIRRORS.update({jmodels.SpikingLM: SpikingLM, jmodels.Spikformer: Spikformer})
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
    paths = export_paths(path)
    meta = read_config(paths["json"])
    module = build_model(meta["model"], meta["config"])
    weights = paths["safetensors"] if paths["safetensors"].exists() else paths["pt"]
    state = {k: torch.from_numpy(v.copy()) for k, v in read_state_dict(weights).items()}
    module.load_state_dict(state, strict=strict)
    return module.eval()
