"""The one state-dict walk (:mod:`spikejax.interop.state_dict`) behind both PyTorch targets: key names
and shapes against PyTorch's own modules, counters, the strict loader; and ChannelTernary's reset check."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from spikejax.interop import StateDictError, load_torch_state_dict, to_torch_state_dict, torch_key_map  # noqa: E402
from spikejax.interop.spikingjelly import mirrored_key_map, to_spikingjelly_state_dict  # noqa: E402
from spikejax.interop.state_dict import load_entries  # noqa: E402
from spikejax.nn import temporal  # noqa: E402


class Mixed(nnx.Module):
    """nnx and temporal layers side by side; :class:`TorchMixed` is the same tree in PyTorch."""

    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(7, 4, rngs=rngs)
        self.conv = temporal.Conv2d(4, 3, 3, padding=1, rngs=rngs)
        self.bn = temporal.BatchNorm(3)
        self.ln = nnx.LayerNorm(3, rngs=rngs)
        self.fc = nnx.Linear(3, 2, rngs=rngs)
        self.norm = nnx.BatchNorm(2, rngs=rngs)


class TorchMixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(7, 4)
        self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)
        self.ln = torch.nn.LayerNorm(3)
        self.fc = torch.nn.Linear(3, 2)
        self.norm = torch.nn.BatchNorm1d(2)


def test_one_key_map_for_both_targets_with_pytorch_names_and_shapes():
    model = Mixed(nnx.Rngs(0))
    want = {k: tuple(v.shape) for k, v in TorchMixed().state_dict().items()}
    for state in (to_torch_state_dict(model), to_spikingjelly_state_dict(model)):
        assert {k: v.shape for k, v in state.items()} == want
        assert state["bn.num_batches_tracked"].dtype == state["norm.num_batches_tracked"].dtype == np.int64
    assert list(torch_key_map(model)) == list(mirrored_key_map(model)) and set(torch_key_map(model)) == set(want)
    TorchMixed().load_state_dict({k: torch.from_numpy(v.copy()) for k, v in to_torch_state_dict(model).items()},
                                 strict=True)


def test_loader_round_trip_counters_and_refusals():
    src, dst = Mixed(nnx.Rngs(1)), Mixed(nnx.Rngs(2))
    src.bn.num_batches_tracked.set_value(jnp.asarray(5, jnp.int32))
    state = to_torch_state_dict(src)
    load_torch_state_dict(dst, state)
    back = to_torch_state_dict(dst)
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    assert int(dst.bn.num_batches_tracked.get_value()) == 5  # the temporal counter is carried

    before = to_torch_state_dict(dst)
    bad = {**state, "fc.weight": np.ones((2, 3), np.int32)}
    with pytest.raises(TypeError, match=r"fc\.weight \(int32\)"):
        load_torch_state_dict(dst, bad)
    wrong = {k: v for k, v in state.items() if k != "ln.weight"} | {"fc.weight": np.ones((3, 2), np.float32),
                                                                    "extra": np.ones(1, np.float32)}
    with pytest.raises(StateDictError) as err:
        load_entries(dst, torch_key_map(dst), wrong)
    msg = str(err.value)
    assert "missing keys ['ln.weight']" in msg and "'extra'" in msg and "fc.weight: expected shape (2, 3)" in msg
    for k, v in to_torch_state_dict(dst).items():  # nothing was loaded
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    optional = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    load_entries(dst, torch_key_map(dst), optional)  # counters are optional


def test_channel_ternary_checks_reset_by_name():
    from spikejax.quant import ChannelTernary

    with pytest.raises(ValueError, match="reset: unknown reset 'hard'"):
        ChannelTernary(4, reset="hard")
    spikes = ChannelTernary(4, reset="zero", threshold=0.5)(jnp.ones((3, 2, 4)))
    assert spikes.shape == (3, 2, 4)
