"""NIR export/import of feed-forward networks; same spikes after a round trip through a NIR file and in
SpikingJelly / snnTorch (their NIR importers, which need nirtorch)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

nir = pytest.importorskip("nir")

import spikejax.nn as snn  # noqa: E402
from spikejax.interop import nir as snir  # noqa: E402

T, B = 16, 4


def _mlp(neuron2):
    r = nnx.Rngs(0)
    return nnx.Sequential(nnx.Linear(6, 12, rngs=r), snn.LIF(tau=2.0, reset="zero"),
                          nnx.Linear(12, 5, rngs=r), neuron2)


def _x(shape=(6,), seed=1, scale=3.0):
    return np.asarray(jax.random.normal(jax.random.key(seed), (T, B, *shape)) * scale + 0.5, np.float32)


def test_round_trip_through_nir_file(tmp_path):
    r = nnx.Rngs(1)
    model = nnx.Sequential(nnx.Linear(6, 12, rngs=r), snn.LIF(beta=0.8, reset="zero", threshold=0.7),
                           nnx.Linear(12, 8, use_bias=False, rngs=r), snn.IF(reset="zero"),
                           nnx.Linear(8, 3, rngs=r), snir.LI(beta=0.9))
    path = snir.write_nir(model, tmp_path / "net.nir", (6,))
    back = snir.read_nir(path)
    x = _x()
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))
    spikes = np.asarray(model.layers[1](model.layers[0](x)))
    assert 0.05 < spikes.mean() < 0.95


def test_conv_round_trip_and_flatten_order(tmp_path):
    r = nnx.Rngs(2)
    model = nnx.Sequential(nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=r), snn.LIF(tau=2.0, reset="zero"),
                           nnx.Conv(4, 4, (2, 2), strides=(2, 2), padding="VALID", rngs=r), snn.IF(reset="zero"),
                           snir.Flatten(), nnx.Linear(4 * 3 * 3, 5, rngs=r), snn.LIF(tau=2.0, reset="zero"))
    graph = snir.export_nir(model, (2, 6, 6))
    assert isinstance(graph.nodes["0"], nir.Conv2d) and graph.nodes["0"].weight.shape == (4, 2, 3, 3)
    nir.write(tmp_path / "conv.nir", graph)
    back = snir.read_nir(tmp_path / "conv.nir")
    x = _x((6, 6, 2), seed=3)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))


def test_soft_reset_and_unknown_layers_are_rejected():
    with pytest.raises(ValueError, match="reset"):
        snir.export_nir(_mlp(snn.LIF(tau=2.0)), (6,))  # reset="subtract" has no NIR form
    with pytest.raises(TypeError, match="layer 1"):
        snir.export_nir(nnx.Sequential(nnx.Linear(6, 3, rngs=nnx.Rngs(0)), snn.PLIF(3, reset="zero")), (6,))
    with pytest.raises(ValueError, match="dt"):
        snir.export_nir(_mlp(snn.IF(reset="zero")), (6,), dt=0.0)


def _run_torch_stepwise(module, x, *, stateful_output: bool):
    import torch

    xs, state, outs = torch.from_numpy(x), None, []
    for t in range(x.shape[0]):
        if stateful_output:
            out, state = module(xs[t], state)
        else:
            out = module(xs[t])
            out = out[0] if isinstance(out, tuple) else out
        outs.append(out)
    return torch.stack(outs).detach().numpy()


@pytest.mark.parametrize("second", ["if", "lif_beta"])
def test_spikingjelly_gives_the_same_spikes(second):
    pytest.importorskip("torch")
    pytest.importorskip("nirtorch")
    sj = pytest.importorskip("spikingjelly.activation_based.nir_exchange")
    neuron = snn.IF(reset="zero", threshold=0.8) if second == "if" else snn.LIF(beta=0.75, reset="zero")
    model = _mlp(neuron)
    net = sj.import_from_nir(snir.export_nir(model, (6,)), dt=snir.DEFAULT_DT)
    x = _x()
    expected = np.asarray(model(x))
    assert 0.02 < expected.mean() < 0.98
    np.testing.assert_array_equal(_run_torch_stepwise(net, x, stateful_output=True), expected)


def test_snntorch_gives_the_same_spikes():
    pytest.importorskip("torch")
    pytest.importorskip("nirtorch")
    import_nir = pytest.importorskip("snntorch.import_nir")
    import snntorch.utils

    model = _mlp(snn.LIF(beta=0.75, reset="zero"))
    net = import_nir.import_from_nir(snir.export_nir(model, (6,)))
    snntorch.utils.reset(net)
    x = _x()
    expected = np.asarray(model(x))
    assert 0.02 < expected.mean() < 0.98
    np.testing.assert_array_equal(_run_torch_stepwise(net, x, stateful_output=False), expected)
