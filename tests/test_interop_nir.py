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


# --- current-based neurons (CubaLIF, CubaLI) with per-neuron parameters ---------------------------


def _cuba_mlp():
    r = nnx.Rngs(5)
    beta = np.linspace(0.6, 0.9, 12, dtype=np.float32)  # per neuron
    return nnx.Sequential(nnx.Linear(6, 12, rngs=r), snn.CubaLIF(alpha=0.5, beta=beta, threshold=0.8, reset="zero"),
                          nnx.Linear(12, 5, rngs=r),
                          snn.CubaLIF(alpha=np.linspace(0.2, 0.7, 5, dtype=np.float32), beta=0.7, reset="zero"))


def test_cuba_round_trip_with_per_neuron_parameters(tmp_path):
    model = _cuba_mlp()
    model.layers.append(nnx.Linear(5, 3, rngs=nnx.Rngs(6)))
    model.layers.append(snn.CubaLI(alpha=0.3, beta=np.asarray([0.5, 0.8, 0.9], np.float32)))
    graph = snir.export_nir(model, (6,))
    node = graph.nodes["1"]
    assert isinstance(node, nir.CubaLIF) and isinstance(graph.nodes["5"], nir.CubaLI)
    np.testing.assert_allclose(1.0 - snir.DEFAULT_DT / node.tau_mem, np.linspace(0.6, 0.9, 12), rtol=1e-6)
    path = tmp_path / "cuba.nir"
    nir.write(path, graph)
    back = snir.read_nir(path)
    assert isinstance(back.layers[1], snn.CubaLIF) and back.layers[1].beta.shape == (12,)
    assert isinstance(back.layers[5], snn.CubaLI)
    x = _x(seed=7, scale=2.0)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    hidden = np.asarray(model.layers[1](model.layers[0](x)))
    assert 0.05 < hidden.mean() < 0.95
    np.testing.assert_array_equal(np.asarray(back.layers[1](back.layers[0](x))), hidden)


def test_cuba_conv_per_channel_round_trip():
    r = nnx.Rngs(8)
    model = nnx.Sequential(nnx.Conv(2, 3, (3, 3), padding="SAME", rngs=r),
                           snn.CubaLIF(alpha=0.4, beta=np.asarray([0.5, 0.7, 0.9], np.float32), reset="zero"))
    graph = snir.export_nir(model, (2, 5, 5))
    assert graph.nodes["1"].tau_mem.shape == (3, 5, 5)
    back = snir.import_nir(graph)
    x = _x((5, 5, 2), seed=9, scale=2.0)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(model(x)))


def test_cuba_export_and_import_errors():
    with pytest.raises(ValueError, match="reset"):
        snir.export_nir(nnx.Sequential(nnx.Linear(6, 3, rngs=nnx.Rngs(0)), snn.CubaLIF()), (6,))
    with pytest.raises(ValueError, match="reset_delay"):
        snir.export_nir(nnx.Sequential(nnx.Linear(6, 3, rngs=nnx.Rngs(0)),
                                       snn.CubaLIF(reset="zero", reset_delay=True)), (6,))
    graph = snir.export_nir(_cuba_mlp(), (6,))
    graph.nodes["1"].r = graph.nodes["1"].r * 2.0
    with pytest.raises(ValueError, match="'1'.*r must give a unit gain"):
        snir.import_nir(graph)


def test_snntorch_imports_cuba_lif_with_the_same_spikes():
    pytest.importorskip("torch")
    pytest.importorskip("nirtorch")
    import_nir = pytest.importorskip("snntorch.import_nir")
    import snntorch.utils

    model = _cuba_mlp()
    net = import_nir.import_from_nir(snir.export_nir(model, (6,)))
    snntorch.utils.reset(net)
    x = _x(seed=10, scale=2.0)
    expected = np.asarray(model(x))
    assert 0.02 < expected.mean() < 0.98
    np.testing.assert_array_equal(_run_torch_stepwise(net, x, stateful_output=False), expected)
