"""spikejax.nn.temporal against SpikingJelly's multi-step layers (torch, CPU) on random inputs:
conv / linear / pooling / flatten forward, BatchNorm over T*B (outputs and running statistics in
training, outputs in eval), tdBN, TEBN and BNTT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import layer  # noqa: E402

from spikejax.nn import temporal as tl  # noqa: E402

T, B, H, W, C = 3, 2, 7, 6, 4


def _nhwc(t) -> np.ndarray:
    """SpikingJelly's ``[T, B, C, H, W]`` (or ``[T, B, C, L]``) as spikejax's channels-last array."""
    a = t.detach().numpy()
    return np.moveaxis(a, 2, -1)


def _torch(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 2)))


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((T, B, H, W, C)).astype(np.float32) * 2 + 0.5


def _copy_conv(ours, ref):
    ours.conv.kernel[...] = jnp.asarray(np.moveaxis(ref.weight.detach().numpy(), (0, 1), (-1, -2)))
    if ref.bias is not None:
        ours.conv.bias[...] = jnp.asarray(ref.bias.detach().numpy())


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(3, 1), dilation=2, groups=2), dict(kernel_size=1, use_bias=False)])
def test_conv2d_matches_spikingjelly(x, kw):
    torch_kw = {("bias" if k == "use_bias" else k): v for k, v in kw.items()}
    ref = layer.Conv2d(C, 6, step_mode="m", **torch_kw)
    ours = tl.Conv2d(C, 6, rngs=nnx.Rngs(0), **kw)
    _copy_conv(ours, ref)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), _nhwc(ref(_torch(x))), rtol=1e-5, atol=1e-5)


def test_conv1d_and_linear_match_spikingjelly(x):
    seq = x.reshape(T, B, H * W, C)
    ref = layer.Conv1d(C, 5, kernel_size=3, padding=1, step_mode="m")
    ours = tl.Conv1d(C, 5, 3, padding=1, rngs=nnx.Rngs(0))
    _copy_conv(ours, ref)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(seq))), _nhwc(ref(_torch(seq))), rtol=1e-5, atol=1e-5)
    ref_fc = layer.Linear(C, 3, step_mode="m")
    fc = tl.Linear(C, 3, rngs=nnx.Rngs(0))
    fc.linear.kernel[...] = jnp.asarray(ref_fc.weight.detach().numpy().T)
    fc.linear.bias[...] = jnp.asarray(ref_fc.bias.detach().numpy())
    np.testing.assert_allclose(np.asarray(fc(jnp.asarray(x))), ref_fc(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv1d_is_spikingjellys_1x1_conv_with_its_gradients(x, bias):
    """A 1x1 Conv1d runs as a GEMM: the same outputs and input / weight gradients as SpikingJelly's Conv1d."""
    seq = x.reshape(T, B, H * W, C)
    g = np.random.default_rng().standard_normal((T, B, H * W, 5)).astype(np.float32)
    ref = layer.Conv1d(C, 5, kernel_size=1, bias=bias, step_mode="m")
    ours = tl.Conv1d(C, 5, 1, use_bias=bias, rngs=nnx.Rngs(0))
    _copy_conv(ours, ref)
    xt = _torch(seq).requires_grad_(True)
    out = ref(xt)
    out.backward(_torch(g))
    y = ours(jnp.asarray(seq))
    grads, dx = nnx.grad(lambda m, x: (m(x) * jnp.asarray(g)).sum(), argnums=(0, 1))(ours, jnp.asarray(seq))
    np.testing.assert_allclose(np.asarray(y), _nhwc(out), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), _nhwc(xt.grad), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grads["conv"]["kernel"][...]),
                               np.moveaxis(ref.weight.grad.numpy(), (0, 1), (-1, -2)), rtol=1e-4, atol=1e-4)
    if bias:
        np.testing.assert_allclose(np.asarray(grads["conv"]["bias"][...]), ref.bias.grad.numpy(), rtol=1e-4,
                                   atol=1e-4)


@pytest.mark.parametrize("ours, ref", [
    (tl.MaxPool2d(3, 2, 1), lambda: layer.MaxPool2d(3, 2, 1, step_mode="m")),
    (tl.MaxPool2d(2), lambda: layer.MaxPool2d(2, step_mode="m")),
    (tl.AvgPool2d(3, 2, 1), lambda: layer.AvgPool2d(3, 2, 1, step_mode="m")),
    (tl.AdaptiveAvgPool2d((3, 4)), lambda: layer.AdaptiveAvgPool2d((3, 4), step_mode="m")),  # uneven bins
    (tl.AdaptiveAvgPool2d(1), lambda: layer.AdaptiveAvgPool2d(1, step_mode="m")),
])
def test_pooling_matches_spikingjelly(x, ours, ref):
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), _nhwc(ref()(_torch(x))), rtol=1e-6, atol=1e-6)


def test_flatten_channels_first_is_pytorchs_order(x):
    want = _torch(x).flatten(2).numpy()
    np.testing.assert_array_equal(np.asarray(tl.Flatten(channels_first=True)(jnp.asarray(x))), want)
    assert tl.Flatten()(jnp.asarray(x)).shape == (T, B, H * W * C)


def _check_bn_stats(ours, ref, *, per_step: bool = False):
    refs = list(ref.bn_list) if per_step else [ref]
    mean = np.stack([r.running_mean.numpy() for r in refs])
    var = np.stack([r.running_var.numpy() for r in refs])
    np.testing.assert_allclose(np.asarray(ours.mean[...]).reshape(mean.shape), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ours.var[...]).reshape(var.shape), var, rtol=1e-5, atol=1e-6)


def _randomize_affine(ours, ref_weight, ref_bias=None, seed=1):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 2.0, tuple(ref_weight.shape)).astype(np.float32)
    with torch.no_grad():
        ref_weight.copy_(torch.from_numpy(w))
    ours.scale[...] = jnp.asarray(w).reshape(ours.scale[...].shape)
    if ref_bias is not None:
        b = rng.uniform(-1, 1, tuple(ref_bias.shape)).astype(np.float32)
        with torch.no_grad():
            ref_bias.copy_(torch.from_numpy(b))
        ours.bias[...] = jnp.asarray(b)


def test_batchnorm_over_time_and_batch_matches_spikingjelly(x):
    ref = layer.BatchNorm2d(C, step_mode="m")
    ours = tl.BatchNorm(C)
    _randomize_affine(ours, ref.weight, ref.bias)
    for step in range(2):  # training: batch statistics over T*B*H*W, running update (unbiased var)
        xi = x * (step + 1)
        np.testing.assert_allclose(np.asarray(ours(jnp.asarray(xi))), _nhwc(ref(_torch(xi))), rtol=1e-5, atol=1e-5)
    _check_bn_stats(ours, ref)
    assert int(ours.num_batches_tracked[...]) == int(ref.num_batches_tracked) == 2
    ref.eval()
    ours.use_running_average = True
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), _nhwc(ref(_torch(x))), rtol=1e-5, atol=1e-5)
    seq = x.reshape(T, B, H * W, C)  # BatchNorm1d over [T, B, C, L]
    ref1, ours1 = layer.BatchNorm1d(C, step_mode="m"), tl.BatchNorm(C)
    np.testing.assert_allclose(np.asarray(ours1(jnp.asarray(seq))), _nhwc(ref1(_torch(seq))), rtol=1e-5, atol=1e-5)
    _check_bn_stats(ours1, ref1)


def _bn_grads_torch(ref, x: np.ndarray, g: np.ndarray):
    xt = _torch(x).requires_grad_(True)
    (ref(xt) * _torch(g)).sum().backward()
    return _nhwc(xt.grad)


@pytest.mark.parametrize("offset", [0.5, 300.0])
def test_batchnorm_gradients_match_torch(x, offset):
    """The custom VJP of :func:`temporal.batch_norm` against torch's autograd of BatchNorm2d in training
    (input, scale and bias gradients); a large common offset checks the shifted one-pass moments."""
    xo = x + offset
    g = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    ref = layer.BatchNorm2d(C, step_mode="m")
    ours = tl.BatchNorm(C)
    _randomize_affine(ours, ref.weight, ref.bias)
    want_x = _bn_grads_torch(ref, xo, g)

    def loss(scale, bias, xi):
        y, _, _ = tl.batch_norm(xi, scale.reshape(1, 1, 1, 1, C), bias.reshape(1, 1, 1, 1, C), (0, 1, 2, 3), 1e-5)
        return (y * jnp.asarray(g)).sum()

    gs, gb, gx = jax.grad(loss, argnums=(0, 1, 2))(ours.scale[...], ours.bias[...], jnp.asarray(xo))
    scale = float(np.abs(want_x).max())
    np.testing.assert_allclose(np.asarray(gx), want_x, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(np.asarray(gs), ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gb), ref.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    _, mean, var = tl.batch_norm(jnp.asarray(xo), jnp.ones((1, 1, 1, 1, C)), jnp.zeros((1, 1, 1, 1, C)),
                                 (0, 1, 2, 3), 1e-5)
    x64 = xo.astype(np.float64).reshape(-1, C)
    np.testing.assert_allclose(np.asarray(mean).reshape(C), x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(var).reshape(C), x64.var(0), rtol=1e-4)


def test_bntt_gradients_match_torch(x):
    ref = layer.BatchNormThroughTime2d(T, C, step_mode="m")
    g = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    want = _bn_grads_torch(ref, x, g)
    ones, zeros = jnp.ones((T, 1, 1, 1, C)), jnp.zeros((T, 1, 1, 1, C))  # BNTT's initial scale, no bias
    gx = jax.grad(lambda xi: (tl.batch_norm(xi, ones, zeros, (1, 2, 3), 1e-5)[0] * jnp.asarray(g)).sum())(
        jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(gx), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_batch_norm_moments_are_differentiable(x):
    """Cotangents of the returned mean / var reach ``x`` as for the autodiff of the two-pass formula."""
    axes = (0, 1, 2, 3)
    rng = np.random.default_rng(7)
    scale, bias = (jnp.asarray(rng.uniform(0.5, 1.5, (1, 1, 1, 1, C)), jnp.float32) for _ in range(2))
    g_y, g_m, g_v = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x.shape, (1, 1, 1, 1, C),
                                                                                   (1, 1, 1, 1, C)))

    def textbook(xi):
        mean = xi.mean(axis=axes, keepdims=True)
        var = jnp.square(xi - mean).mean(axis=axes, keepdims=True)
        y = (xi - mean) / jnp.sqrt(var + 1e-5) * scale + bias
        return y, mean, var

    def loss(fn, xi):
        y, mean, var = fn(xi)
        return (y * g_y).sum() + (mean * g_m).sum() + (var * g_v).sum()

    want = jax.grad(lambda xi: loss(textbook, xi))(jnp.asarray(x))
    got = jax.grad(lambda xi: loss(lambda a: tl.batch_norm(a, scale, bias, axes, 1e-5), xi))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_eval_and_train_switch_use_running_average():
    class Net(nnx.Module):
        def __init__(self):
            self.bn = tl.BatchNorm(C)

    net = Net()
    net.eval()
    assert net.bn.use_running_average
    net.train()
    assert not net.bn.use_running_average


def test_tdbn_matches_spikingjelly(x):
    ref = layer.ThresholdDependentBatchNorm2d(alpha=0.7, v_th=0.5, num_features=C)
    ours = tl.TDBN(C, alpha=0.7, v_threshold=0.5)
    np.testing.assert_allclose(np.asarray(ours.scale[...]), ref.weight.detach().numpy())  # α·V_th init
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), _nhwc(ref(_torch(x))), rtol=1e-5, atol=1e-5)
    _check_bn_stats(ours, ref)


def test_tebn_matches_spikingjelly(x):
    ref = layer.TemporalEffectiveBatchNorm2d(T, C)
    ours = tl.TEBN(T, C)
    _randomize_affine(ours, ref.weight, ref.bias)
    p = np.random.default_rng(3).uniform(0.5, 1.5, T).astype(np.float32)
    with torch.no_grad():
        ref.scale.copy_(torch.from_numpy(p))
    ours.time_scale[...] = jnp.asarray(p)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), _nhwc(ref(_torch(x))), rtol=1e-5, atol=1e-5)
    _check_bn_stats(ours, ref)
    with pytest.raises(ValueError, match="T=3"):
        ours(jnp.asarray(x[:2]))


def test_bntt_matches_spikingjelly(x):
    ref = layer.BatchNormThroughTime2d(T, C, step_mode="m")
    ours = tl.BNTT(T, C)
    w = np.random.default_rng(4).uniform(0.5, 2.0, (T, C)).astype(np.float32)
    with torch.no_grad():
        for t, bn in enumerate(ref.bn_list):
            bn.weight.copy_(torch.from_numpy(w[t]))
    ours.scale[...] = jnp.asarray(w)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), _nhwc(ref(_torch(x))), rtol=1e-5, atol=1e-5)
    _check_bn_stats(ours, ref, per_step=True)
    assert ours.bias is None


def test_batch_norm_bad_shapes_are_named(x):
    ones = jnp.ones((1, 1, 1, 1, C))
    with pytest.raises(ValueError, match=r"scale: expected shape \(1, 1, 1, 1, 4\)"):
        tl.batch_norm(jnp.asarray(x), jnp.ones((C,)), ones, (0, 1, 2, 3), 1e-5)
    with pytest.raises(ValueError, match="bias"):
        tl.batch_norm(jnp.asarray(x), ones, jnp.zeros((1, 1, 1, 1, 3)), (0, 1, 2, 3), 1e-5)
    with pytest.raises(ValueError, match="axes"):
        tl.batch_norm(jnp.asarray(x), ones, ones, (0, 7), 1e-5)


def test_bad_inputs_are_named(x):
    conv = tl.Conv2d(C, 2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[T, B, H, W, C\]"):
        conv(jnp.ones((B, H, W, C)))
    with pytest.raises(ValueError, match="4 channels"):
        conv(jnp.ones((T, B, H, W, 3)))
    with pytest.raises(ValueError, match="groups"):
        tl.Conv2d(C, 3, 3, groups=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size"):
        tl.Conv2d(C, 3, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="momentum"):
        tl.BatchNorm(C, momentum=1.5)
    with pytest.raises(ValueError, match="4 channels"):
        tl.BatchNorm(C)(jnp.ones((T, B, 3)))
    with pytest.raises(ValueError, match="BNTT"):
        tl.BNTT(T, C)(jnp.asarray(x[:1]))
    with pytest.raises(ValueError, match="Linear"):
        tl.Linear(C, 2, rngs=nnx.Rngs(0))(jnp.ones((T, B, 5)))
