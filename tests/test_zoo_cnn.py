"""The convolutional zoo (SEW-ResNet, Spiking ResNet, MS-ResNet, Spiking VGG) against SpikingJelly 2.0.

For each model, at a small configuration (fewer blocks / narrower layers through the builders'
overrides, tiny images, T=2, float32): SpikingJelly's model with random weights and randomised
BatchNorm statistics, loaded into spikejax, gives the same logits (eval mode) and the same spikes
at every neuron layer (SpikingJelly: forward hooks on its neurons; spikejax: ``record_spikes`` +
``nnx.capture``); one training-mode forward updates the BatchNorm statistics identically; the
export loads into SpikingJelly's class with ``strict=True`` and the round trip is exact. At the
default configuration only the key set and shapes are compared (torch's meta device and
``nnx.eval_shape``, nothing allocated).
"""

from __future__ import annotations

import functools
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("spikingjelly")

from spikejax.interop.spikingjelly import (  # noqa: E402
    export_spikingjelly,
    load_spikingjelly_state_dict,
    read_spikingjelly,
    spikingjelly_key_map,
    to_spikingjelly_state_dict,
)
from spikejax.models import create  # noqa: E402
from spikejax.models.sj_neurons import record_spikes  # noqa: E402

T = 2
RTOL = 1e-4


@functools.cache
def sj():
    """SpikingJelly's modules (the zoo files through :func:`spikejax.interop.spikingjelly.import_model_modules`)."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    from spikejax.interop.spikingjelly import import_model_modules

    m = import_model_modules("ms_resnet", "sew_resnet", "spiking_resnet", "spiking_vgg")
    ms_resnet, sew_resnet, spiking_resnet, spiking_vgg = m.ms_resnet, m.sew_resnet, m.spiking_resnet, m.spiking_vgg
    return types.SimpleNamespace(functional=functional, layer=layer, neuron=neuron, surrogate=surrogate,
                                 sew=sew_resnet, spiking=spiking_resnet, ms=ms_resnet, vgg=spiking_vgg)


def _small_vgg(cfg, *, neuron_cls, hidden=32, pool=2, num_classes=10, **neuron_kwargs):
    """SpikingJelly's SpikingVGG with a small ``cfg`` and its classifier rebuilt at width ``hidden``
    after an adaptive pool to ``pool`` (its class fixes 4096 and 7x7), same layer types and order."""
    m = sj()
    model = m.vgg.SpikingVGG(cfg=list(cfg), batch_norm=True, num_classes=num_classes, spiking_neuron=neuron_cls,
                             **neuron_kwargs)
    c = [v for v in cfg if v != "M"][-1]
    model.avgpool = m.layer.AdaptiveAvgPool2d((pool, pool))
    model.classifier = torch.nn.Sequential(
        m.layer.Linear(c * pool * pool, hidden), neuron_cls(**neuron_kwargs), m.layer.Dropout(),
        m.layer.Linear(hidden, hidden), neuron_cls(**neuron_kwargs), m.layer.Dropout(),
        m.layer.Linear(hidden, num_classes))
    return model


# name -> (spikejax overrides, SpikingJelly model factory, image side)
CASES = {
    "sew_resnet18-IAND": ("sew_resnet18", dict(layers=(1, 1, 1, 1), cnf="IAND"), lambda m: m.sew.SEWResNet(
        m.sew.BasicBlock, [1, 1, 1, 1], num_classes=10, cnf="IAND", spiking_neuron=m.neuron.LIFNode,
        tau=2.0, detach_reset=True), 16),
    "sew_resnet34-ADD": ("sew_resnet34", dict(layers=(2, 1, 1, 1)), lambda m: m.sew.SEWResNet(
        m.sew.BasicBlock, [2, 1, 1, 1], num_classes=10, cnf="ADD", spiking_neuron=m.neuron.LIFNode,
        tau=2.0, detach_reset=True), 16),
    "sew_resnet50-IAND": ("sew_resnet50", dict(layers=(2, 1, 1, 1), cnf="IAND"), lambda m: m.sew.SEWResNet(
        m.sew.Bottleneck, [2, 1, 1, 1], num_classes=10, cnf="IAND", spiking_neuron=m.neuron.LIFNode,
        tau=2.0, detach_reset=True), 16),
    "spiking_resnet18-IF": (
        "spiking_resnet18",
        dict(layers=(1, 1, 1, 1), spiking_neuron="IFNode", v_reset=None, surrogate_function="ATan", detach_reset=True),
        lambda m: m.spiking.SpikingResNet(
            m.spiking.BasicBlock, [1, 1, 1, 1], num_classes=10, spiking_neuron=m.neuron.IFNode, v_reset=None,
            surrogate_function=m.surrogate.ATan(), detach_reset=True), 16),
    "ms_resnet18": ("ms_resnet18", dict(layers=(1, 1, 1, 1), base_channels=8), lambda m: m.ms.ms_resnet18(
        T=T, num_classes=10, layers=(1, 1, 1, 1), base_channels=8), 16),
    "spiking_vgg11_bn-PLIF": (
        "spiking_vgg11_bn",
        dict(cfg=(8, "M", 16, "M", 16), classifier_hidden=32, pool_size=2, spiking_neuron="ParametricLIFNode"),
        lambda m: _small_vgg((8, "M", 16, "M", 16), neuron_cls=m.neuron.ParametricLIFNode), 16),
    "spiking_vgg16_bn": (
        "spiking_vgg16_bn", dict(cfg=(8, 8, "M", 16, "M", 16, 16), classifier_hidden=32, pool_size=2),
        lambda m: _small_vgg((8, 8, "M", 16, "M", 16, 16), neuron_cls=m.neuron.LIFNode, tau=2.0, detach_reset=True),
        16),
}


def _randomize(model, seed: int) -> None:
    """Random BN affine parameters and running statistics (scaled so that neurons fire at moderate
    rates), random PLIF decays."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                uniform(mod.weight, 1.0, 3.0)
                uniform(mod.bias, 0.0, 1.5)
                uniform(mod.running_mean, -0.3, 0.3)
                uniform(mod.running_var, 0.5, 1.5)
                mod.num_batches_tracked.fill_(3)
            if isinstance(mod, sj().neuron.ParametricLIFNode):
                uniform(mod.w, -1.0, 1.0)


@functools.cache
def _pair(case: str):
    """(spikejax name, overrides, SpikingJelly model, images[B, H, W, 3]) of a case (built once)."""
    name, overrides, factory, side = CASES[case]
    torch.manual_seed(0)
    ref = factory(sj())
    sj().functional.set_step_mode(ref, "m")
    _randomize(ref, seed=1)
    images = np.random.default_rng(2).random((2, side, side, 3)).astype(np.float32)
    return name, dict(overrides, num_classes=10, T=T), ref, images


def _sj_forward(ref, images: np.ndarray, case: str):
    """SpikingJelly's logits (mean over T) and the spikes of every neuron module (NHWC)."""
    spikes, hooks = {}, []
    for mod_name, mod in ref.named_modules():
        if isinstance(mod, sj().neuron.BaseNode):
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out, n=mod_name: spikes.__setitem__(n, out.detach().numpy())))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    try:
        if case == "ms_resnet18":
            out = ref(x)  # repeats the image over its T and averages the head over T itself
        else:
            out = ref(x[None].repeat(T, 1, 1, 1, 1)).mean(0)
    finally:
        for h in hooks:
            h.remove()
        sj().functional.reset_net(ref)
    spikes = {k: v.transpose(0, 1, 3, 4, 2) if v.ndim == 5 else v for k, v in spikes.items()}
    return out.detach().numpy(), spikes


def _from_state_dict(name: str, overrides: dict, state_dict) -> nnx.Module:
    """``create(name, **overrides)`` carrying ``state_dict``, built abstractly (``nnx.eval_shape``)
    and filled from the checkpoint: the initializers never run (that would cost a compile per
    weight shape). The dropout streams, the only variables not in a checkpoint, get real keys."""
    model = nnx.eval_shape(lambda: create(name, **overrides))
    load_spikingjelly_state_dict(model, state_dict)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Dropout):
            module.rngs = nnx.Rngs(0)["dropout"].fork()
    return model


def _forward_with_spikes(model, x):
    """``(logits, captured Intermediate state)`` with every neuron layer's spikes (jitted)."""
    record_spikes(model, True)
    try:
        return _capture(model, x)
    finally:
        record_spikes(model, False)


# these tests compile many one-off graphs: XLA's cheapest CPU pipeline (same results, ~35% less compile time)
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _fast_jit(fn):
    """``fn(model, *args)`` jitted with :data:`_FAST_COMPILE`; the model's state updates (BatchNorm
    statistics) are written back, as ``nnx.jit`` does."""

    @functools.partial(jax.jit, static_argnums=0, compiler_options=_FAST_COMPILE)
    def pure(graphdef, state, *args):
        model = nnx.merge(graphdef, state)
        return fn(model, *args), nnx.state(model)

    def call(model, *args):
        graphdef, state = nnx.split(model)
        out, new_state = pure(graphdef, state, *args)
        nnx.update(model, new_state)
        return out

    return call


_capture = _fast_jit(lambda model, x: nnx.capture(model, nnx.Intermediate)(x))
_forward = _fast_jit(lambda model, x: model(x))


@pytest.mark.parametrize("case", list(CASES))
def test_eval_logits_and_spikes_match_spikingjelly(case):
    name, overrides, ref, images = _pair(case)
    ref.eval()
    with torch.no_grad():
        want, want_spikes = _sj_forward(ref, images, case)
    model = _from_state_dict(name, overrides, ref.state_dict())
    model.eval()
    logits, inter = _forward_with_spikes(model, jnp.asarray(images))
    got_spikes = {".".join(map(str, path[:-1])): np.asarray(v)[0] for path, v in nnx.to_flat_state(inter)}
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    assert sorted(got_spikes) == sorted(want_spikes)
    rates = []
    for key, s in want_spikes.items():
        assert got_spikes[key].shape == s.shape, key
        np.testing.assert_array_equal(got_spikes[key], s, err_msg=key)
        rates.append(s.mean())
    assert 0.02 < np.mean(rates) < 0.9  # the comparison is not vacuous: the layers fire (not all of them)


@pytest.mark.parametrize("case", list(CASES))
def test_training_forward_updates_batchnorm_like_spikingjelly(case):
    name, overrides, ref, images = _pair(case)
    ref.train()
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    try:
        with torch.no_grad():
            want, _ = _sj_forward(ref, images, case)
        after = {k: v.numpy().copy() for k, v in ref.state_dict().items()}  # load_state_dict below is in place
    finally:
        ref.load_state_dict(before)
        ref.eval()
    model = _from_state_dict(name, overrides, before)
    model.train()
    logits = _forward(model, jnp.asarray(images))
    got = to_spikingjelly_state_dict(model)
    stats = [k for k in after if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")]
    assert stats
    for k in stats:
        np.testing.assert_allclose(got[k], after[k], rtol=1e-5, atol=1e-6, err_msg=k)
        assert not np.array_equal(after[k], before[k].numpy()), k  # the forward did update it
    if "vgg" not in case:  # VGG's dropout masks differ between the frameworks in training mode
        np.testing.assert_allclose(np.asarray(logits), want, rtol=RTOL, atol=RTOL * np.abs(want).max())


@pytest.mark.parametrize("case", ["sew_resnet50-IAND", "ms_resnet18", "spiking_vgg11_bn-PLIF"])
def test_round_trip_spikejax_spikingjelly_spikejax_is_exact(case, tmp_path):
    name, overrides, ref, images = _pair(case)
    model = _from_state_dict(name, overrides, ref.state_dict())
    model.train()
    _forward(model, jnp.asarray(images))  # spikejax moves the BN statistics and counters
    path = tmp_path / "export.pth"
    state = export_spikingjelly(model, path)
    fresh_ref = CASES[case][2](sj())
    fresh_ref.load_state_dict(torch.load(path), strict=True)  # SpikingJelly's class takes the file as is
    assert sorted(state) == sorted(fresh_ref.state_dict())
    # back, from a DDP-style wrapped checkpoint of SpikingJelly's own state_dict
    wrapped = {"model": {"module." + k: v for k, v in fresh_ref.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ddp.pth")
    back = _from_state_dict(name, overrides, read_spikingjelly(tmp_path / "ddp.pth"))
    want, got = _variables(model), _variables(back)
    assert sorted(want) == sorted(got)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _variables(model) -> dict[str, np.ndarray]:
    """Every parameter and batch statistic of ``model`` by NNX path."""
    out = {}
    for kind in (nnx.Param, nnx.BatchStat):
        for path, v in nnx.to_flat_state(nnx.state(model, kind)):
            out[".".join(map(str, path))] = np.asarray(v.get_value())
    return out


def _sj_default(name: str):
    m = sj()
    family = re.sub(r"\d+(_bn)?$", "", name)
    module = {"sew_resnet": m.sew, "spiking_resnet": m.spiking, "ms_resnet": m.ms, "spiking_vgg": m.vgg}[family]
    kwargs = {"spiking_neuron": m.neuron.LIFNode}
    if name.startswith("sew"):
        kwargs["cnf"] = "ADD"
    if name.startswith("ms_"):
        kwargs = {}
    with torch.device("meta"):
        return getattr(module, name)(**kwargs)


@pytest.mark.parametrize("name", ["sew_resnet18", "sew_resnet34", "sew_resnet50", "spiking_resnet18",
                                  "ms_resnet18", "spiking_vgg11_bn", "spiking_vgg16_bn"])
def test_default_config_has_spikingjellys_keys_and_shapes(name):
    ref = {k: tuple(v.shape) for k, v in _sj_default(name).state_dict().items()}
    abstract = nnx.eval_shape(lambda: create(name))
    ours = {k: e.torch_shape() for k, e in spikingjelly_key_map(abstract).items()}
    assert ours == ref
    n_params = sum(p.numel() for p in _sj_default(name).parameters())
    ours_params = sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param)))
    assert ours_params == n_params


def _random_state_dict(model, seed: int) -> dict[str, np.ndarray]:
    """A SpikingJelly-layout state dict of random weights for ``model``'s keys (fan-in scaled
    weights, BN scale ~1 with unit running variance)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, entry in spikingjelly_key_map(model).items():
        shape, leaf = entry.torch_shape(), key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.zeros((), np.int64)
        elif leaf == "running_var":
            out[key] = np.ones(shape, np.float32)
        elif leaf in ("running_mean", "w"):
            out[key] = np.zeros(shape, np.float32)
        elif len(shape) == 1:
            out[key] = ((leaf == "weight") + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
    return out


def test_one_training_step_on_digit_sized_inputs_changes_the_loss():
    """SEW-ResNet-18 (IAND) on ``[4, 8, 8, 1]`` digits-sized inputs (the other families share its layers;
    their training-mode forwards are checked above; VGG needs H, W >= 32 at its standard depth)."""
    name, overrides = "sew_resnet18", dict(layers=(1, 1, 1, 1), cnf="IAND", in_channels=1, num_classes=10, T=2)
    # random weights without running the initializers (a compile per weight shape)
    abstract = nnx.eval_shape(lambda: create(name, **overrides))
    model = _from_state_dict(name, overrides, _random_state_dict(abstract, seed=4))
    model.train()
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1)) * 4.0
    y = jnp.arange(4) % 10
    opt = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        nonzero = jnp.any(jnp.asarray([jnp.any(g != 0) for g in jax.tree.leaves(grads)]))
        return loss, finite, nonzero

    loss0, finite, nonzero = step(model, opt)
    assert bool(finite) and bool(nonzero)
    loss1, _, _ = step(model, opt)  # training mode both times (batch statistics)
    assert abs(float(loss1) - float(loss0)) > 1e-6


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    overrides = dict(layers=(1, 1, 1, 1), base_channels=8, num_classes=10, T=2, dtype="bfloat16")
    abstract = nnx.eval_shape(lambda: create("ms_resnet18", **overrides))
    model = _from_state_dict("ms_resnet18", overrides, _random_state_dict(abstract, seed=6))
    model.eval()
    logits, inter = _forward_with_spikes(model, jnp.ones((2, 16, 16, 3)))
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
    assert {np.asarray(v).dtype for _, v in nnx.to_flat_state(inter)} == {jnp.dtype(jnp.bfloat16)}  # bf16 spikes
    assert {v.get_value().dtype for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    with pytest.raises(ValueError, match="dtype"):
        create("sew_resnet18", dtype="float16")


def test_connect_functions_match_spikingjelly():
    """ADD / AND / IAND elementwise on random spikes (the models above check the argument order)."""
    from spikejax.models.resnet import sew_function

    rng = np.random.default_rng(5)
    a, b = ((rng.random((2, 3, 4, 4, 5)) < 0.5).astype(np.float32) for _ in range(2))
    for cnf in ("ADD", "AND", "IAND"):
        want = sj().sew.sew_function(torch.from_numpy(a), torch.from_numpy(b), cnf).numpy()
        np.testing.assert_array_equal(np.asarray(sew_function(jnp.asarray(a), jnp.asarray(b), cnf)), want)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="cnf"):
        create("sew_resnet18", cnf="XOR")
    with pytest.raises(ValueError, match="spiking_neuron"):
        create("sew_resnet18", spiking_neuron="IzhikevichNode")
    with pytest.raises(TypeError, match="v_thresh"):
        create("spiking_resnet18", v_thresh=1.0)
    with pytest.raises(ValueError, match="v_reset"):
        create("sew_resnet18", v_reset=-0.5)
    with pytest.raises(ValueError, match="layers"):
        create("ms_resnet18", layers=(1, 1))
    model = nnx.eval_shape(lambda: create("spiking_vgg11_bn", cfg=(4, "M", 4, "M"), classifier_hidden=8,
                                          pool_size=1, num_classes=3))
    with pytest.raises(ValueError, match="at least 4x4"):
        model(jnp.ones((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        model(jnp.ones((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        model(jnp.ones((8, 8, 3)))
