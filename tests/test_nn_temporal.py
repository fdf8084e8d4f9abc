"""spikejax.nn.temporal against SpikingJelly's multi-step layers (torch, CPU) on random inputs:
conv / linear / pooling / flatten forward, BatchNorm over T*B (outputs and running statistics in
training, outputs in eval), tdBN, TEBN and BNTT."""

from __future__ import annotations

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
