"""The transformer zoo (Spikformer, Spike-driven Transformer, QKFormer) against SpikingJelly 2.0.

For each family, at a small configuration (narrow, one block per stage through the builders'
overrides, 16x16 / 32x32 images, T=2, float32): SpikingJelly's model with random weights and
BatchNorm statistics (calibrated on the batch, then perturbed, so every neuron layer fires at a
non-trivial rate), loaded into spikejax, gives the same logits (eval mode) and the same spikes at
every neuron layer (SpikingJelly: forward hooks on its neurons, torch backend; spikejax:
``record_spikes`` + ``nnx.capture``); one training-mode forward gives the same logits and updates
the BatchNorm statistics identically; the export loads into SpikingJelly's class with
``strict=True`` and the round trip spikejax -> SpikingJelly -> spikejax is exact. A Spikformer
trained a few steps in spikejax and exported gives SpikingJelly the same logits. At the default
configurations only key sets and shapes are compared (torch's meta device, ``nnx.eval_shape``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("spikingjelly")

from spikingjelly.activation_based import functional, neuron  # noqa: E402
from spikingjelly.activation_based.model import qkformer as sj_qkformer  # noqa: E402
from spikingjelly.activation_based.model import spike_driven_transformer as sj_sdt  # noqa: E402
from spikingjelly.activation_based.model import spikformer as sj_spikformer  # noqa: E402

from spikejax.interop.spikingjelly import (  # noqa: E402
    export_spikingjelly,
    load_spikingjelly,
    spikingjelly_key_map,
)
from spikejax.models import create  # noqa: E402
from spikejax.models.sj_neurons import record_spikes  # noqa: E402

T = 2
RTOL = 1e-4

# name -> (spikejax overrides, SpikingJelly constructor, image size); the same small architecture
SMALL = {
    "spikformer_cifar10": (
        dict(embed_dims=32, num_heads=2, depths=1),
        lambda: sj_spikformer.Spikformer(T=T, in_channels=3, img_size_h=16, img_size_w=16, patch_size=4,
                                         num_classes=10, embed_dims=32, num_heads=2, depths=1),
        16),
    "sdt_8_384": (
        dict(num_classes=10, embed_dims=32, num_heads=2, depths=1, pooling_stat="0011"),
        lambda: sj_sdt.SpikeDrivenTransformer(T=T, in_channels=3, num_classes=10, embed_dims=32, num_heads=2,
                                              depths=1, pooling_stat="0011"),
        16),
    "qkformer_10_384": (
        dict(num_classes=10, embed_dims=32, num_heads=(2, 2, 2), depths=(1, 1, 1)),
        lambda: sj_qkformer.QKFormer(T=T, in_channels=3, num_classes=10, embed_dims=32, num_heads=(2, 2, 2),
                                     depths=(1, 1, 1)),
        32),
}

DEFAULTS = {
    "spikformer_cifar10": lambda: sj_spikformer.spikformer_cifar10(),
    "spikformer_ti": lambda: sj_spikformer.spikformer_ti(),
    "spikformer_s": lambda: sj_spikformer.spikformer_s(),
    "sdt_8_384": lambda: sj_sdt.sdt_8_384(),
    "qkformer_10_384": lambda: sj_qkformer.qkformer_10_384(),
}


# --- SpikingJelly side ----------------------------------------------------------------------------

def _bns(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def randomize(model, x, gen):
    """Random weights (N(0, 1/fan_in), small biases); BatchNorm running statistics set to the batch's
    (one momentum-1 training forward) then perturbed, and BN affine weights in [0.5, 1.5), biases in
    [0, 1.5), so the neuron layers fire at a non-trivial rate; random num_batches_tracked."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for m in _bns(model):
            m.momentum = 1.0
        model.train()
        sj_run(model, x)
        for m in _bns(model):
            c = m.num_features
            m.momentum = 0.1
            m.running_mean.add_(torch.randn(c, generator=gen) * 0.05 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(c, generator=gen) * 0.4 + 0.8)
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.rand(c, generator=gen) * 1.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=gen)))
    model.eval()


def sj_run(model, x):
    """SpikingJelly forward from a reset state: ``(logits[B, classes], {neuron module name: spikes})``
    (Spikformer's per-step head outputs are averaged over T, as spikejax's convention)."""
    spikes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: spikes.__setitem__(n, o.detach().clone()))
             for n, m in model.named_modules() if isinstance(m, neuron.BaseNode)]
    functional.reset_net(model)
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
        functional.reset_net(model)
    if out.ndim == 3:  # [T, B, classes]
        out = out.mean(0)
    return out.numpy(), spikes


def to_spikejax_layout(s: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A SpikingJelly spike tensor in the layout spikejax's neuron saw (``shape``): NCHW -> NHWC,
    ``[T, B, C, L]`` -> ``[T, B, L, C]``, the attention neurons' ``[T, B, heads, hd | 1, L]`` ->
    ``[T, B, L, heads·hd]`` and SDSA's ``[T, B, heads, 1, hd]`` -> ``[T, B, D]``."""
    if s.ndim == 5 and len(shape) == 5:
        s = s.transpose(0, 1, 3, 4, 2)
    elif s.ndim == 4 and len(shape) == 4:
        s = s.transpose(0, 1, 3, 2)
    elif s.ndim == 5 and len(shape) == 4:
        s = s.transpose(0, 1, 4, 2, 3)
    return s.reshape(shape)


# --- spikejax side --------------------------------------------------------------------------------

@nnx.jit
def jax_run(model, x):
    record_spikes(model, True)
    logits, inter = nnx.capture(model, nnx.Intermediate)(x)
    record_spikes(model, False)
    return logits, inter


def spikes_of(inter) -> dict[str, np.ndarray]:
    return {".".join(map(str, path[:-1])): np.asarray(v.get_value()[0]) for path, v in nnx.to_flat_state(inter)}


def nhwc(x) -> jax.Array:
    return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def state_arrays(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))}


@functools.cache
def pair(name: str):
    """(SpikingJelly model, spikejax model loaded from it, input images NCHW) for ``SMALL[name]``."""
    overrides, build, size = SMALL[name]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    ref = build()
    x = torch.rand(2, 3, size, size, generator=gen)
    randomize(ref, x, gen)
    model = load_spikingjelly(name, ref.state_dict(), T=T, **overrides)
    return ref, model, x


def assert_same_spikes(ref_spikes, inter, *, min_fraction: float = 1.0):
    """Equal spikes at every neuron layer, and at least ``min_fraction`` of the layers fire at a rate
    in (0, 1), so the comparison is not vacuous."""
    ours = spikes_of(inter)
    assert sorted(ours) == sorted(ref_spikes)
    rates = []
    for key, s in ref_spikes.items():
        mine = ours[key]
        np.testing.assert_array_equal(mine, to_spikejax_layout(s.numpy(), mine.shape), err_msg=key)
        rates.append(float(mine.mean()))
    firing = sum(0.0 < r < 1.0 for r in rates)
    assert firing >= min_fraction * len(rates), rates


# --- tests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SMALL))
def test_matches_spikingjelly_in_eval_and_training(name, tmp_path):
    """Eval: same logits and spikes. Training: the first AdamW step's loss is the cross-entropy of
    SpikingJelly's training-mode logits and its forward updates the BatchNorm statistics as
    SpikingJelly's (momentum 0.1, unbiased variance, num_batches_tracked + 1); the loss then keeps
    changing; the trained model, exported, loads into SpikingJelly's class (strict) and gives the
    same eval logits and spikes."""
    ref, _, x = pair(name)
    model = load_spikingjelly(name, ref.state_dict(), T=T, **SMALL[name][0])
    xs = nhwc(x)
    want, ref_spikes = sj_run(ref, x)
    logits, inter = jax_run(model, xs)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    assert_same_spikes(ref_spikes, inter)

    labels = [3, 7]
    ref_train = SMALL[name][1]()
    ref_train.load_state_dict(ref.state_dict())
    ref_train.train()
    train_logits, _ = sj_run(ref_train, x)
    ref_loss = torch.nn.functional.cross_entropy(torch.from_numpy(train_logits), torch.tensor(labels)).item()
    theirs, before = _stats(ref_train.state_dict()), ref.state_dict()
    opt = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
    model.train()
    step = lambda: float(_train_step(model, opt, xs, jnp.array(labels)))
    losses = [step()]
    np.testing.assert_allclose(losses[0], ref_loss, rtol=RTOL)
    ours = _stats(export_spikingjelly(model))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if key.endswith("num_batches_tracked"):
            assert int(value) == int(before[key]) + 1, key
        np.testing.assert_allclose(ours[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    losses += [step(), step()]
    assert np.all(np.isfinite(losses)) and losses[1] != losses[0] and losses[2] != losses[1]

    model.eval()
    export_spikingjelly(model, tmp_path / "trained.pth")
    trained = SMALL[name][1]()
    trained.load_state_dict(torch.load(tmp_path / "trained.pth", weights_only=True), strict=True)
    trained.eval()
    assert any(not torch.equal(trained.state_dict()[k], v) for k, v in ref.state_dict().items())
    want, ref_spikes = sj_run(trained, x)
    logits, inter = jax_run(model, xs)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    assert_same_spikes(ref_spikes, inter, min_fraction=0.8)


def _stats(state_dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in state_dict.items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.parametrize("name", list(SMALL))
def test_round_trip_through_spikingjelly_is_exact(name, tmp_path):
    ref, model, x = pair(name)
    path = tmp_path / f"{name}.pth"
    export_spikingjelly(model, path)
    other = SMALL[name][1]()
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    back = load_spikingjelly(name, {"model": {"module." + k: v for k, v in other.state_dict().items()}},
                             T=T, rngs=nnx.Rngs(7), **SMALL[name][0])
    a, b = state_arrays(model), state_arrays(back)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_default_config_keys_and_shapes_match_spikingjelly(name):
    with torch.device("meta"):
        ref = DEFAULTS[name]()
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    model = nnx.eval_shape(lambda: create(name))
    got = {k: tuple(e.torch_shape()) for k, e in spikingjelly_key_map(model).items()}
    assert got == want
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_ours == n_ref


@nnx.jit
def _train_step(model, opt, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss


@pytest.mark.parametrize("name", list(SMALL))
def test_digits_size_inputs_give_logits_and_gradients(name):
    """[B, 8, 8, 1] inputs (the digits' size) go through each model and its gradient (shapes only:
    traced abstractly, nothing compiled); the training itself is tested above at 16x16x3 / 32x32x3."""
    model = nnx.eval_shape(lambda: create(name, T=T, in_channels=1, **{**SMALL[name][0], "num_classes": 10}))
    model.train()
    x = jax.ShapeDtypeStruct((4, 8, 8, 1), jnp.float32)

    def loss(model, x):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), jnp.arange(4) % 10).mean()

    logits = jax.eval_shape(lambda m, x: m(x), model, x)
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    grads = jax.eval_shape(nnx.grad(loss), model, x)
    params = nnx.state(model, nnx.Param)
    assert jax.tree.map(lambda a: a.shape, grads) == jax.tree.map(lambda a: a.shape, params)


def test_bad_inputs_are_named():
    model = nnx.eval_shape(lambda: create("spikformer_cifar10", T=T, **SMALL["spikformer_cifar10"][0]))
    with pytest.raises(ValueError, match="images: expected"):
        model(jnp.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="in_channels=3"):
        model(jnp.zeros((2, 16, 16, 1)))
    with pytest.raises(TypeError, match="unknown keyword arguments"):
        create("sdt_8_384", embed_dim=64)
    with pytest.raises(ValueError, match="pooling_stat"):
        create("sdt_8_384", pooling_stat="11")
    with pytest.raises(ValueError, match="patch_size"):
        create("spikformer_ti", patch_size=8)
    with pytest.raises(ValueError, match="num_heads"):
        create("qkformer_10_384", embed_dims=32, num_heads=(3, 2, 2), depths=(1, 1, 1))
    with pytest.raises(ValueError, match="name: unknown model 'spikformer_xl'"):
        create("spikformer_xl")
    with pytest.raises(ValueError, match="v_reset"):
        create("spikformer_cifar10", v_reset=0.5)
    with pytest.raises(ValueError, match="dtype: expected one of"):
        create("sdt_8_384", dtype="float16")


@pytest.mark.parametrize("name", list(SMALL))
def test_bfloat16_compute_gives_float32_logits(name):
    """``dtype="bfloat16"``: the convolutions and linears compute in bfloat16 (parameters float32),
    the logits are float32 (traced abstractly)."""
    model = nnx.eval_shape(lambda: create(name, T=T, dtype="bfloat16", **SMALL[name][0]))
    convs = [m for _, m in nnx.iter_graph(model) if isinstance(m, (nnx.Conv, nnx.Linear))]
    assert convs and all(m.dtype == jnp.bfloat16 for m in convs)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    size = SMALL[name][2]
    logits = jax.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_registry_lists_the_transformer_zoo():
    from spikejax.models import list_models
    from spikejax.nn import Spikformer, SpikingLM

    names = list_models()
    assert set(DEFAULTS) | {"spikformer", "spiking_lm"} <= set(names) and names == sorted(names)
    small = dict(image_size=8, patch_size=4, d_model=16, num_heads=2, num_layers=1, num_classes=3)
    assert isinstance(nnx.eval_shape(lambda: create("spikformer", **small)), Spikformer)
    assert isinstance(nnx.eval_shape(lambda: create("spiking_lm", vocab_size=16, d_model=16, num_heads=2)), SpikingLM)
