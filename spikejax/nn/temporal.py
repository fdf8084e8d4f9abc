"""Stateless layers with a leading time axis: conv, BatchNorm variants, pooling, flatten, linear.

Every layer maps ``x[T, B, ...]`` to ``y[T, B, ...]``. The image layout is NHWC with time first,
``[T, B, H, W, C]``; sequence layers (:class:`Conv1d`) take ``[T, B, L, C]``; :class:`Linear`
acts on the last axis of any rank. Weight-sharing layers (conv, pooling, linear,
:class:`BatchNorm`) fold ``T`` into the batch (``[T*B, ...]``), which is what SpikingJelly's
``layer.*`` modules do in multi-step mode (``step_mode="m"``), so ``BatchNorm`` normalises over
``T*B*H*W`` per channel. The time-aware normalisations:

- :class:`TEBN` (temporal effective BN, Duan et al. 2022): ``y_t = p_t · BN_{T·B}(x)_t``,
  one learnable scalar ``p_t`` per step (SpikingJelly ``TemporalEffectiveBatchNorm2d``);
- :class:`TDBN` (threshold-dependent BN, Zheng et al. 2021): BN over ``T·B`` with the scale
  initialised to ``α·V_th`` (SpikingJelly ``ThresholdDependentBatchNorm2d``);
- :class:`BNTT` (BN through time, Kim & Panda 2021): separate statistics and scale per step,
  no bias (SpikingJelly ``BatchNormThroughTime2d``).

BatchNorm follows PyTorch's statistics exactly (SpikingJelly's checkpoints hold them): training
normalises with the biased batch variance and updates ``mean <- m·mean + (1-m)·μ``,
``var <- m·var + (1-m)·σ²·n/(n-1)`` (unbiased) with the NNX convention ``momentum = m = 0.9``
(PyTorch's ``momentum=0.1``), and counts ``num_batches_tracked``. ``model.eval()`` /
``model.train()`` switch ``use_running_average`` as for ``nnx.BatchNorm``.

Convolution padding and pooling follow PyTorch: integer padding on both sides, max pooling pads
with ``-inf``, average pooling counts the padding (``count_include_pad=True``), and
:class:`AdaptiveAvgPool2d` uses PyTorch's bins ``[floor(i·H/h), ceil((i+1)·H/h))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array
IntPair = int | Sequence[int]

__all__ = [
    "Conv2d",
    "Conv1d",
    "Linear",
    "BatchNorm",
    "batch_norm",
    "TEBN",
    "TDBN",
    "BNTT",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
    "fold_time",
    "torch_default_init",
]

# PyTorch's default conv / linear initialisation: kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in))
torch_default_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _pair(name: str, value: IntPair, *, low: int = 1) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in pair):
        raise ValueError(f"{name}: expected an int >= {low} or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _check_rank(layer: str, x, rank: int, layout: str) -> Array:
    if not hasattr(x, "ndim") or x.ndim != rank:
        raise ValueError(f"x: {layer} expects {layout} (rank {rank}), got shape {getattr(x, 'shape', None)}")
    return x


def _check_channels(layer: str, x: Array, channels: int) -> None:
    if x.shape[-1] != channels:
        raise ValueError(f"x: {layer} was built for {channels} channels (last axis), got shape {tuple(x.shape)}")


def fold_time(fn, x: Array) -> Array:
    """Apply ``fn`` to ``x[T, B, ...]`` folded to ``[T*B, ...]`` and unfold its result to ``[T, B, ...]``."""
    T, B = x.shape[:2]
    y = fn(x.reshape((T * B,) + x.shape[2:]))
    return y.reshape((T, B) + y.shape[1:])


# --- convolution and linear ----------------------------------------------------------------------

def _torch_conv(in_channels: int, out_channels: int, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple,
                groups: int, use_bias: bool, kernel_init, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """An ``nnx.Conv`` with PyTorch's semantics: symmetric integer padding, PyTorch's default bias
    initialisation ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, ``fan_in = C_in / groups * prod(kernel)``."""
    groups = _positive("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups: {groups} must divide in_channels={in_channels} and out_channels={out_channels}")
    bound = 1.0 / math.sqrt((in_channels // groups) * math.prod(kernel))
    return nnx.Conv(
        in_channels, out_channels, kernel, strides=stride, padding=tuple((p, p) for p in padding),
        kernel_dilation=dilation, feature_group_count=groups, use_bias=bool(use_bias), kernel_init=kernel_init,
        bias_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
        dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class Conv2d(nnx.Module):
    """2-d convolution shared over time: ``x[T, B, H, W, C_in] -> y[T, B, H', W', C_out]``.

    ``kernel[kh, kw, C_in/groups, C_out]`` (HWIO; PyTorch's OIHW transposed), ``bias[C_out]`` when
    ``use_bias``. Integer ``padding`` pads both sides (PyTorch's semantics);
    ``H' = floor((H + 2p - d(k-1) - 1)/s) + 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, *, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, use_bias: bool = True,
                 kernel_init=torch_default_init, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.in_channels = _positive("in_channels", in_channels)
        self.out_channels = _positive("out_channels", out_channels)
        self.conv = _torch_conv(in_channels, out_channels, _pair("kernel_size", kernel_size), _pair("stride", stride),
                                _pair("padding", padding, low=0), _pair("dilation", dilation), groups, use_bias,
                                kernel_init, dtype, param_dtype, rngs)

    def __call__(self, x: Array) -> Array:
        _check_rank("Conv2d", x, 5, "[T, B, H, W, C]")
        _check_channels("Conv2d", x, self.in_channels)
        return fold_time(self.conv, x)


class Conv1d(nnx.Module):
    """1-d convolution over positions, shared over time: ``x[T, B, L, C_in] -> y[T, B, L', C_out]``.

    ``kernel[k, C_in/groups, C_out]`` (PyTorch's ``[C_out, C_in/groups, k]`` transposed),
    ``bias[C_out]``; integer ``padding`` on both sides. A pointwise layer (``k = 1``, stride 1, no
    padding, dilation 1, one group; the transformers' projections) runs as the GEMM
    ``x @ kernel[0] + bias`` on the last axis, the same function: XLA compiles its bfloat16 training
    step 7 % faster that way and its float32 one as fast (``benchmarks/ablate_spikformer.py``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, use_bias: bool = True,
                 kernel_init=torch_default_init, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.in_channels = _positive("in_channels", in_channels)
        self.out_channels = _positive("out_channels", out_channels)
        self.conv = _torch_conv(in_channels, out_channels, (_positive("kernel_size", kernel_size),),
                                (_positive("stride", stride),), (_pair("padding", padding, low=0)[0],),
                                (_positive("dilation", dilation),), groups, use_bias, kernel_init, dtype, param_dtype,
                                rngs)

    def __call__(self, x: Array) -> Array:
        _check_rank("Conv1d", x, 4, "[T, B, L, C]")
        _check_channels("Conv1d", x, self.in_channels)
        conv = self.conv
        if not _is_pointwise(conv):
            return fold_time(conv, x)
        bias = None if conv.bias is None else conv.bias[...]
        x, kernel, bias = conv.promote_dtype((x, conv.kernel[...][0], bias), dtype=conv.dtype)
        y = jnp.einsum("...c,cd->...d", x, kernel, precision=conv.precision,
                       preferred_element_type=conv.preferred_element_type)
        return y if bias is None else y + bias


def _is_pointwise(conv: nnx.Conv) -> bool:
    """Whether ``conv`` (1-d) is a 1x1 convolution: kernel 1, stride 1, no padding or dilation, one group."""
    return (tuple(conv.kernel_size) == (1,) and tuple(conv.strides) == (1,) and conv.feature_group_count == 1
            and tuple(map(tuple, conv.padding)) == ((0, 0),) and tuple(conv.kernel_dilation) == (1,)
            and conv.mask is None)


class Linear(nnx.Module):
    """Dense layer on the last axis: ``x[..., in] -> x @ kernel + bias``, ``kernel[in, out]``
    (PyTorch's ``weight[out, in]`` transposed), PyTorch's default initialisation."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 kernel_init=torch_default_init, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.in_features = _positive("in_features", in_features)
        self.out_features = _positive("out_features", out_features)
        bound = 1.0 / math.sqrt(in_features)
        self.linear = nnx.Linear(
            in_features, out_features, use_bias=bool(use_bias), kernel_init=kernel_init,
            bias_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
            dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        if not hasattr(x, "ndim") or x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: Linear expects [..., {self.in_features}], got shape {getattr(x, 'shape', None)}")
        return self.linear(x)


# --- normalisation ---------------------------------------------------------------------------------

def _affine(x: Array, mean: Array, rstd: Array, scale: Array, bias: Array) -> Array:
    """``(x - mean) · rstd · scale + bias`` in float32 as one multiply-add per element, in ``x``'s dtype."""
    mul = rstd * scale
    return (x.astype(jnp.float32) * mul + (bias - mean * mul)).astype(x.dtype)


def batch_norm(x: Array, scale: Array, bias: Array, axes: tuple[int, ...], epsilon: float
               ) -> tuple[Array, Array, Array]:
    """Training-mode BatchNorm: ``y = (x - μ) / sqrt(σ² + ε) · scale + bias`` with the batch moments
    ``μ, σ²`` (biased) over ``axes``, in float32; ``y`` in ``x``'s dtype.

    ``scale``, ``bias`` and the returned ``mean``, ``var`` have ``x``'s shape with ``axes`` kept as 1
    (e.g. ``x[T, B, H, W, C]``, ``axes = (0, 1, 2, 3)`` -> ``[1, 1, 1, 1, C]``). Both passes are
    written for memory traffic (a ``jax.custom_vjp``; the derivative is the textbook one):

    * forward: one reduction pass for both moments, shifted by the first element of each channel
      (``d = x - x_0``; ``μ = x_0 + E[d]``, ``σ² = E[d²] - E[d]²``: one read of ``x`` where the
      two-pass ``E[(x - μ)²]`` needs two, without the cancellation of the unshifted ``E[x²] - μ²``),
      then the normalisation;
    * backward: one reduction pass (``Σ g``, ``Σ g·x̂``) and one elementwise pass
      ``dx = scale / σ · (g - (Σ g + x̂ Σ g·x̂) / n)`` (plus the terms of cotangents of ``mean`` /
      ``var``, zero when they only feed the running statistics).
    """
    if not hasattr(x, "ndim") or x.ndim < 1:
        raise ValueError(f"x: batch_norm expects an array, got {type(x)!r}")
    axes = tuple(int(a) for a in axes)
    if not axes or any(not 0 <= a < x.ndim for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes: expected distinct axes of x (rank {x.ndim}), got {axes}")
    kept = tuple(1 if a in axes else x.shape[a] for a in range(x.ndim))
    for name, value in (("scale", scale), ("bias", bias)):
        if tuple(jnp.shape(value)) != kept:
            raise ValueError(f"{name}: expected shape {kept} (x's shape {tuple(x.shape)} with axes {axes} kept as 1), "
                             f"got {tuple(jnp.shape(value))}")
    return _batch_norm(x, scale, bias, axes, float(epsilon))


def _batch_norm(x, scale, bias, axes, epsilon):
    return _batch_norm_fwd(x, scale, bias, axes, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, axes, epsilon):
    xf = x.astype(jnp.float32)
    n = math.prod(x.shape[a] for a in axes)
    x0 = xf[tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))]
    d = xf - x0
    m1 = d.sum(axis=axes, keepdims=True) / n
    var = jnp.maximum(jnp.square(d).sum(axis=axes, keepdims=True) / n - jnp.square(m1), 0.0)
    mean = x0 + m1
    rstd = jax.lax.rsqrt(var + epsilon)
    return (_affine(x, mean, rstd, scale, bias), mean, var), (x, mean, rstd, scale)


def _batch_norm_bwd(axes, epsilon, res, cts):
    del epsilon
    x, mean, rstd, scale = res
    g, g_mean, g_var = cts
    n = math.prod(x.shape[a] for a in axes)
    xf = x.astype(jnp.float32)
    gf = g.astype(jnp.float32)
    xhat = (xf - mean) * rstd
    sum_g = gf.sum(axis=axes, keepdims=True)
    sum_gx = (gf * xhat).sum(axis=axes, keepdims=True)
    dx = (scale * rstd) * (gf - (sum_g + xhat * sum_gx) / n) + g_mean / n + (2.0 / n) * g_var * (xf - mean)
    return dx.astype(x.dtype), sum_gx, sum_g


_batch_norm = jax.custom_vjp(_batch_norm, nondiff_argnums=(3, 4))
_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class _BatchNormBase(nnx.Module):
    """Shared parts: parameters ``scale``/``bias``, batch statistics ``mean``/``var`` and the
    ``num_batches_tracked`` counter, the running-statistics update."""

    def __init__(self, num_features: int, stat_shape: tuple[int, ...], *, epsilon: float, momentum: float,
                 use_bias: bool, use_running_average: bool, scale_value: float = 1.0):
        self.num_features = _positive("num_features", num_features)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected NNX's convention in [0, 1) (PyTorch's 0.1 is 0.9), got {momentum}")
        if not epsilon > 0:
            raise ValueError(f"epsilon: expected > 0, got {epsilon}")
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.use_running_average = bool(use_running_average)
        self.scale = nnx.Param(jnp.full(stat_shape, scale_value, jnp.float32))
        self.bias = nnx.Param(jnp.zeros(stat_shape, jnp.float32)) if use_bias else None
        self.mean = nnx.BatchStat(jnp.zeros(stat_shape, jnp.float32))
        self.var = nnx.BatchStat(jnp.ones(stat_shape, jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def _normalize(self, x: Array, axes: tuple[int, ...]) -> Array:
        """``(x - μ) / sqrt(σ² + ε) · scale + bias`` with batch (:func:`batch_norm`) or running moments
        over ``axes``, in x's dtype; the parameters and statistics are ``x.shape`` without ``axes``."""
        bshape = tuple(1 if a in axes else x.shape[a] for a in range(x.ndim))
        scale = self.scale[...]
        bias = jnp.zeros_like(scale) if self.bias is None else self.bias[...]
        if self.use_running_average:
            rstd = jax.lax.rsqrt(self.var[...] + self.epsilon)
            return _affine(x, self.mean[...].reshape(bshape), rstd.reshape(bshape), scale.reshape(bshape),
                           bias.reshape(bshape))
        y, mean, var = batch_norm(x, scale.reshape(bshape), bias.reshape(bshape), axes, self.epsilon)
        mean, var = jax.lax.stop_gradient(mean).reshape(scale.shape), jax.lax.stop_gradient(var).reshape(scale.shape)
        n = math.prod(x.shape[a] for a in axes)
        m = self.momentum
        unbiased = var * (n / (n - 1)) if n > 1 else var
        self.mean[...] = m * self.mean[...] + (1.0 - m) * mean
        self.var[...] = m * self.var[...] + (1.0 - m) * unbiased
        self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        return y


class BatchNorm(_BatchNormBase):
    """BatchNorm over every axis but the last (channels): ``x[T, B, ..., C] -> y`` of the same shape.

    ``y = (x - μ_c) / sqrt(σ²_c + ε) · scale_c + bias_c`` with ``μ, σ²`` over ``T·B·...`` in training
    (SpikingJelly's ``layer.BatchNorm1d/2d/3d`` in multi-step mode) or the running statistics
    (``use_running_average``, set by ``model.eval()``). ``momentum`` uses NNX's convention (0.9 =
    PyTorch's 0.1); the running variance is the unbiased one, as PyTorch's.
    """

    def __init__(self, num_features: int, *, epsilon: float = 1e-5, momentum: float = 0.9, use_bias: bool = True,
                 use_running_average: bool = False, scale_init: float = 1.0):
        super().__init__(num_features, (num_features,), epsilon=epsilon, momentum=momentum, use_bias=use_bias,
                         use_running_average=use_running_average, scale_value=scale_init)

    def __call__(self, x: Array) -> Array:
        if not hasattr(x, "ndim") or x.ndim < 2:
            raise ValueError(f"x: BatchNorm expects [T, B, ..., C], got shape {getattr(x, 'shape', None)}")
        _check_channels(type(self).__name__, x, self.num_features)
        return self._normalize(x, tuple(range(x.ndim - 1)))


class TDBN(BatchNorm):
    """Threshold-dependent BatchNorm (tdBN, Zheng et al. 2021): :class:`BatchNorm` over ``T·B·...``
    with ``scale`` initialised to ``alpha · v_threshold`` (SpikingJelly's
    ``ThresholdDependentBatchNorm2d(alpha, v_th, C)``)."""

    def __init__(self, num_features: int, *, alpha: float = 1.0, v_threshold: float = 1.0, epsilon: float = 1e-5,
                 momentum: float = 0.9, use_running_average: bool = False):
        super().__init__(num_features, epsilon=epsilon, momentum=momentum,
                         use_running_average=use_running_average, scale_init=float(alpha) * float(v_threshold))
        self.alpha = float(alpha)
        self.v_threshold = float(v_threshold)


class TEBN(BatchNorm):
    """Temporal effective BatchNorm (Duan et al. 2022): ``y_t = time_scale_t · BN(x)_t``.

    :class:`BatchNorm` over ``T·B·...`` followed by one learnable scalar per time step,
    ``time_scale[T]`` (init 1; SpikingJelly's ``TemporalEffectiveBatchNorm2d(T, C)``, its ``scale``).
    Inputs must have exactly ``T`` steps.
    """

    def __init__(self, time_steps: int, num_features: int, *, epsilon: float = 1e-5, momentum: float = 0.9,
                 use_running_average: bool = False):
        super().__init__(num_features, epsilon=epsilon, momentum=momentum, use_running_average=use_running_average)
        self.time_steps = _positive("time_steps", time_steps)
        self.time_scale = nnx.Param(jnp.ones((time_steps,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        if hasattr(x, "ndim") and x.ndim >= 2 and x.shape[0] != self.time_steps:
            raise ValueError(f"x: TEBN was built for T={self.time_steps} steps, got shape {tuple(x.shape)}")
        y = super().__call__(x)
        return y * self.time_scale[...].reshape((-1,) + (1,) * (x.ndim - 1)).astype(y.dtype)


class BNTT(_BatchNormBase):
    """BatchNorm through time (BNTT, Kim & Panda 2021): one BatchNorm per time step, no bias.

    ``y_t = (x_t - μ_{t,c}) / sqrt(σ²_{t,c} + ε) · scale_{t,c}`` with statistics over ``B·...`` of
    step ``t``; ``scale, mean, var`` are ``[T, C]`` (SpikingJelly's ``BatchNormThroughTime2d(T, C)``,
    its ``bn_list.t``). ``num_batches_tracked`` counts forwards (one per step in SpikingJelly).
    """

    def __init__(self, time_steps: int, num_features: int, *, epsilon: float = 1e-5, momentum: float = 0.9,
                 use_running_average: bool = False):
        self.time_steps = _positive("time_steps", time_steps)
        super().__init__(num_features, (time_steps, num_features), epsilon=epsilon, momentum=momentum,
                         use_bias=False, use_running_average=use_running_average)

    def __call__(self, x: Array) -> Array:
        if not hasattr(x, "ndim") or x.ndim < 3 or x.shape[0] != self.time_steps:
            raise ValueError(f"x: BNTT expects [T={self.time_steps}, B, ..., C], got shape {getattr(x, 'shape', None)}")
        _check_channels("BNTT", x, self.num_features)
        return self._normalize(x, tuple(range(1, x.ndim - 1)))


# --- pooling and flatten ---------------------------------------------------------------------------

class MaxPool2d(nnx.Module):
    """Max pooling shared over time: ``x[T, B, H, W, C] -> [T, B, H', W', C]`` (padding with -inf,
    ``stride`` defaults to ``kernel_size``, PyTorch's semantics without ``ceil_mode``)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0):
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _pair("stride", stride)
        self.padding = _pair("padding", padding, low=0)

    def __call__(self, x: Array) -> Array:
        _check_rank("MaxPool2d", x, 5, "[T, B, H, W, C]")
        pad = [(p, p) for p in self.padding]
        return fold_time(lambda y: nnx.max_pool(y, self.kernel_size, self.stride, pad), x)


class AvgPool2d(nnx.Module):
    """Average pooling shared over time: ``x[T, B, H, W, C] -> [T, B, H', W', C]`` (zero padding
    counted in the mean, PyTorch's default ``count_include_pad=True``)."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                 count_include_pad: bool = True):
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _pair("stride", stride)
        self.padding = _pair("padding", padding, low=0)
        self.count_include_pad = bool(count_include_pad)

    def __call__(self, x: Array) -> Array:
        _check_rank("AvgPool2d", x, 5, "[T, B, H, W, C]")
        pad = [(p, p) for p in self.padding]
        return fold_time(lambda y: nnx.avg_pool(y, self.kernel_size, self.stride, pad,
                                                count_include_pad=self.count_include_pad), x)


def _adaptive_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` averaging weights of PyTorch's adaptive bins."""
    m = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        lo, hi = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class AdaptiveAvgPool2d(nnx.Module):
    """Adaptive average pooling to ``output_size`` ``(h, w)``: ``x[T, B, H, W, C] -> [T, B, h, w, C]``
    with PyTorch's bins (``(1, 1)``: the spatial mean)."""

    def __init__(self, output_size: IntPair):
        self.output_size = _pair("output_size", output_size)

    def __call__(self, x: Array) -> Array:
        _check_rank("AdaptiveAvgPool2d", x, 5, "[T, B, H, W, C]")
        H, W = x.shape[2:4]
        h, w = self.output_size
        if (h, w) == (1, 1):
            return x.mean(axis=(2, 3), keepdims=True)
        if H % h == 0 and W % w == 0:
            kh, kw = H // h, W // w
            return x.reshape(x.shape[:2] + (h, kh, w, kw, x.shape[-1])).mean(axis=(3, 5))
        mh = jnp.asarray(_adaptive_matrix(H, h), x.dtype)
        mw = jnp.asarray(_adaptive_matrix(W, w), x.dtype)
        return jnp.einsum("ih,jw,tbhwc->tbijc", mh, mw, x)


class Flatten(nnx.Module):
    """``x[T, B, ..., C] -> x[T, B, prod(..., C)]``.

    ``channels_first=False`` flattens in the array's (NHWC) order ``h, w, c``; ``True`` in PyTorch's
    ``c, h, w`` order (channels moved first), so that a following :class:`Linear` holds exactly the
    weight of PyTorch's ``Linear`` after ``flatten`` of an NCHW tensor.
    """

    def __init__(self, channels_first: bool = False):
        self.channels_first = bool(channels_first)

    def __call__(self, x: Array) -> Array:
        if not hasattr(x, "ndim") or x.ndim < 3:
            raise ValueError(f"x: Flatten expects [T, B, ..., C], got shape {getattr(x, 'shape', None)}")
        if self.channels_first and x.ndim > 3:
            x = jnp.moveaxis(x, -1, 2)
        return x.reshape(x.shape[:2] + (-1,))
