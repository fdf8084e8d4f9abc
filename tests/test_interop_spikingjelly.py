"""The generic SpikingJelly checkpoint layer (:mod:`spikejax.interop.spikingjelly`) on small modules:
key map and layouts against PyTorch's own modules, ``.pth`` wrappers and prefixes, strict checking
that names every bad key and loads nothing, ``num_batches_tracked``, and the error messages."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from spikejax.interop import StateDictError  # noqa: E402
from spikejax.interop.spikingjelly import (  # noqa: E402
    export_spikingjelly,
    load_spikingjelly,
    load_spikingjelly_state_dict,
    mirrored_key_map,
    read_spikingjelly,
    unwrap_state_dict,
)
from spikejax.nn import temporal  # noqa: E402


class Tiny(nnx.Module):
    """A temporal conv / BN / Conv1d / Linear net whose tree mirrors :class:`TorchTiny`."""

    def __init__(self, rngs: nnx.Rngs):
        self.features = nnx.List([temporal.Conv2d(3, 4, 3, padding=1, use_bias=False, rngs=rngs),
                                  temporal.BatchNorm(4)])
        self.mix = temporal.Conv1d(4, 6, 1, rngs=rngs)
        self.norm = nnx.BatchNorm(6, rngs=rngs)
        self.head = temporal.Linear(6, 5, rngs=rngs)

    def __call__(self, x):  # x[T, B, H, W, 3] -> [T, B, 5]
        h = self.features[1](self.features[0](x))
        T, B, H, W, C = h.shape
        h = self.mix(h.reshape(T, B, H * W, C))
        h = self.norm(h.reshape(T * B * H * W, -1)).reshape(T, B, H * W, -1)
        return self.head(h.mean(axis=2))


class TorchTiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4))
        self.mix = torch.nn.Conv1d(4, 6, 1)
        self.norm = torch.nn.BatchNorm1d(6)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, x):  # x[T, B, 3, H, W]
        T, B = x.shape[:2]
        h = self.features(x.flatten(0, 1))
        h = self.norm(self.mix(h.flatten(2)))
        return self.head(h.mean(-1)).reshape(T, B, -1)


def _random_torch(seed: int = 0) -> TorchTiny:
    gen = torch.Generator().manual_seed(seed)
    net = TorchTiny()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for bn in (net.features[1], net.norm):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.num_batches_tracked.fill_(int(torch.randint(1, 50, (1,), generator=gen)))
    return net.eval()


def _values(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def test_key_map_and_layouts_match_pytorch():
    model = Tiny(nnx.Rngs(0))
    net = _random_torch()
    keys = mirrored_key_map(model)
    assert sorted(keys) == sorted(net.state_dict())
    load_spikingjelly_state_dict(model, net.state_dict())
    model.eval()
    x = torch.rand(2, 3, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x).numpy()
    got = model(jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy()))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # the temporal BatchNorm carries num_batches_tracked; a plain nnx.BatchNorm exports 0
    assert int(model.features[1].num_batches_tracked[...]) == int(net.features[1].num_batches_tracked)
    out = export_spikingjelly(model)
    assert int(out["norm.num_batches_tracked"]) == 0 and out["norm.num_batches_tracked"].dtype == torch.int64
    for key, value in net.state_dict().items():
        if key != "norm.num_batches_tracked":
            assert torch.equal(out[key], value), key
    TorchTiny().load_state_dict(out, strict=True)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "epoch": 3, "max_test_acc": 0.9},
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"model": {"module._orig_mod." + k: v for k, v in sd.items()}, "optimizer": {"state": {}}},
])
def test_wrapped_and_prefixed_checkpoints_load(wrap, tmp_path):
    net = _random_torch()
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(net.state_dict()), path)
    sd = read_spikingjelly(path)
    assert sorted(sd) == sorted(net.state_dict())
    model = load_spikingjelly_state_dict(Tiny(nnx.Rngs(0)), sd)
    out = export_spikingjelly(model)
    assert all(torch.equal(out[k], v) for k, v in net.state_dict().items() if k != "norm.num_batches_tracked")


def test_bad_state_dicts_name_every_key_and_load_nothing():
    model = Tiny(nnx.Rngs(0))
    before = _values(model)
    sd = dict(_random_torch().state_dict())
    sd.pop("head.bias")
    sd.pop("features.1.running_var")
    sd["extra.weight"] = torch.zeros(2)
    sd["mix.weight"] = torch.zeros(6, 4)  # Conv1d weight without its kernel axis
    with pytest.raises(StateDictError) as err:
        load_spikingjelly_state_dict(model, sd)
    msg = str(err.value)
    for part in ("head.bias", "features.1.running_var", "extra.weight",
                 "mix.weight: expected shape (6, 4, 1), got (6, 4)", "nothing was loaded"):
        assert part in msg, part
    after = _values(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_num_batches_tracked_is_optional():
    sd = {k: v for k, v in _random_torch().state_dict().items() if not k.endswith("num_batches_tracked")}
    model = load_spikingjelly_state_dict(Tiny(nnx.Rngs(0)), sd)
    assert int(model.features[1].num_batches_tracked[...]) == 0


def test_errors_are_clear(tmp_path):
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        unwrap_state_dict([1, 2])
    with pytest.raises(TypeError, match="not tensors"):
        unwrap_state_dict({"a.weight": torch.zeros(1), "b": "text"})
    with pytest.raises(FileNotFoundError, match="path: no such file"):
        read_spikingjelly(tmp_path / "missing.pth")
    obj = tmp_path / "pickled.pth"
    torch.save({"model": _random_torch().state_dict(), "args": TorchTiny}, obj)  # a class: not weights_only
    with pytest.raises(ValueError, match="weights_only=False"):
        read_spikingjelly(obj)
    assert sorted(read_spikingjelly(obj, weights_only=False)) == sorted(_random_torch().state_dict())
    with pytest.raises(ValueError, match="name: unknown model 'resnet_nope'"):
        load_spikingjelly("resnet_nope", {})
    with pytest.raises(TypeError, match="model: expected a flax.nnx.Module"):
        load_spikingjelly_state_dict(object(), {})
