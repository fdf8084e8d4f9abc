"""Recording is scoped to the measured model's module instances (issue 17, item 2): a layer or
neuron that is not part of the model, called while the model is recorded, is not recorded, no class
is patched, and the statistics still equal an independent NumPy count of the model's own spikes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax as sj
from spikejax import metrics
from spikejax.nn import LIF, SpikingNeuron
from spikejax.packing import PackedSpikeLinear, use_packed_spike_linears


class Net(nnx.Module):
    """x[T, B, 5] -> fc1 -> LIF -> fc2."""

    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.fc1 = nnx.Linear(5, 12, rngs=rngs)
        self.lif = LIF(tau=2.0, threshold=0.5)
        self.fc2 = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.lif(self.fc1(x)))


def _np_rates(s: np.ndarray):
    nz = s != 0
    return nz.mean(), (nz.reshape(-1, s.shape[-1]).mean(0) == 0).mean()


def test_unrelated_modules_called_while_recording_are_not_recorded():
    a, b = Net(0), Net(1)
    x = jax.random.normal(jax.random.key(3), (6, 4, 5))
    outside_lif = LIF(tau=3.0)
    with metrics.record_layers(a) as rec:
        a(x)
        b(x)                                   # another model of the same classes
        outside_lif(jnp.ones((3, 2, 12)))      # a neuron that belongs to no model
        assert type(b.fc1) is nnx.Linear and type(outside_lif) is LIF  # other instances untouched
        assert "__call__" not in LIF.__dict__ and not hasattr(nnx.Linear.__call__, "__wrapped__")
    assert set(rec.spikes) == {"lif"} and set(rec.synops) == {"fc1", "fc2"}
    assert all(len(v) == 1 for v in (*rec.spikes.values(), *rec.synops.values()))  # b's calls not added
    stats = metrics.reduce_spike_stats(jax.device_get(rec.spikes))
    s = np.asarray(sj.lif(a.fc1(x), tau=2.0, threshold=0.5)[0])  # independent: the functional neuron
    rate, dead = _np_rates(s)
    assert 0 < rate < 1
    np.testing.assert_allclose(stats["lif"].firing_rate, rate, rtol=1e-6)
    np.testing.assert_allclose(stats["lif"].dead_fraction, dead, rtol=1e-6)
    ops = metrics.reduce_synops(jax.device_get(rec.synops))
    np.testing.assert_allclose(ops["fc2"].acs, s.sum() * 3, rtol=1e-5)  # one AC per spike and fan-out
    assert ops["fc1"].macs == x.shape[0] * x.shape[1] * 5 * 12
    assert type(a.fc1) is nnx.Linear and type(a.lif) is LIF  # instances get their class back


@pytest.mark.parametrize("jit", [True, False])
def test_collectors_ignore_layers_outside_the_model(jit):
    """The model's forward also calls a layer and a neuron held outside it (a closure): no stray
    ``'Linear'`` / ``'LIF'`` key, and the model's figures equal a NumPy count."""
    outside_fc, outside_lif = nnx.Linear(3, 7, rngs=nnx.Rngs(9)), LIF()

    class WithOutsideCall(Net):
        def __call__(self, x):
            y = super().__call__(x)
            return y + outside_lif(outside_fc(y))[..., :3]

    net = WithOutsideCall(2)
    x = jax.random.normal(jax.random.key(4), (5, 3, 5))
    stats = metrics.collect_spike_stats(net, x, jit=jit)
    rep = metrics.energy_report(net, x, jit=jit)
    assert set(stats) == {"lif"} and set(rep.layers) == {"fc1", "fc2"}
    s = np.asarray(sj.lif(net.fc1(x), tau=2.0, threshold=0.5)[0])
    rate, dead = _np_rates(s)
    np.testing.assert_allclose(stats["lif"].firing_rate, rate, rtol=1e-6)
    np.testing.assert_allclose(stats["lif"].dead_fraction, dead, rtol=1e-6)
    np.testing.assert_allclose(rep.layers["fc2"].acs, s.sum() * 3, rtol=1e-5)
    _, spikes = metrics.collect_spikes(net, x)
    assert set(spikes) == {"lif"}
    np.testing.assert_array_equal(np.asarray(spikes["lif"]), s)


def test_nested_and_overlapping_interceptions():
    """Two blocks over one model both see every call (the latest entered is the outermost wrapper);
    a layer shared by two models is recorded by each recorder under its own path."""
    net = Net(0)
    x = jax.random.normal(jax.random.key(5), (4, 2, 5))
    order = []

    def rec_of(tag):
        return lambda module, args, out: order.append((tag, type(module).__name__))

    with metrics.intercept_calls(net, rec_of("outer"), (nnx.Linear,)):
        with metrics.intercept_calls(net, rec_of("inner"), (nnx.Linear,), after=lambda m, a, y: 2.0 * y):
            y2 = net(x)
        y1 = net(x)
    h = net.fc1(x)
    np.testing.assert_allclose(y1, net(x), rtol=1e-6)
    np.testing.assert_allclose(y2, 2.0 * net.fc2(net.lif(2.0 * h)), rtol=1e-5, atol=1e-6)
    # the inner block (entered last) wraps the outer one: outer records first, then inner; then outer alone
    assert order == [("outer", "Linear"), ("inner", "Linear")] * 2 + [("outer", "Linear")] * 2

    class Holder(nnx.Module):
        def __init__(self, layer):
            self.shared = layer

        def __call__(self, x):
            return self.shared(x)

    holder = Holder(net.fc1)
    with metrics.record_layers(net) as r1, metrics.record_layers(holder) as r2:
        net(x)
    assert set(r1.synops) == {"fc1", "fc2"} and set(r2.synops) == {"shared"}
    assert type(net.fc1) is nnx.Linear


def test_interceptor_restores_on_error_and_checks_arguments():
    net = Net(0)
    with pytest.raises(RuntimeError, match="boom"), metrics.intercept_calls(net, lambda *a: None, (SpikingNeuron,)):
        assert type(net.lif) is not LIF and isinstance(net.lif, LIF)  # intercepted, still a LIF
        raise RuntimeError("boom")
    assert type(net.lif) is LIF
    with pytest.raises(TypeError, match="model"), metrics.intercept_calls(object(), print, (nnx.Linear,)):
        pass
    with pytest.raises(TypeError, match="bases"), metrics.intercept_calls(net, print, nnx.Linear):
        pass
    with pytest.raises(TypeError, match="record"), metrics.intercept_calls(net, None, (nnx.Linear,)):
        pass


def test_intercepted_model_state_and_graph_unchanged():
    net = Net(0)
    before = nnx.graphdef(net)
    with metrics.intercept_calls(net, lambda *a: None, (nnx.Linear, SpikingNeuron)):
        state_inside = nnx.state(net)
    assert nnx.graphdef(net) == before
    assert jax.tree.structure(state_inside) == jax.tree.structure(nnx.state(net))


def test_use_packed_spike_linears_ignores_layers_outside_the_model():
    """An outside ``nnx.Linear`` called under ``jax.jit`` inside the example forward (its input is a
    tracer) is neither intercepted (a class-wide hook would have to read the tracer) nor swapped."""
    outside = nnx.Linear(3, 3, rngs=nnx.Rngs(1))

    class WithJittedOutside(Net):
        def __call__(self, x):
            return jax.jit(lambda v: outside(v))(super().__call__(x))

    net, ref = WithJittedOutside(0), WithJittedOutside(0)
    x = 3.0 * jax.random.normal(jax.random.key(6), (4, 2, 5))
    assert use_packed_spike_linears(net, x) == ["fc2"]
    assert isinstance(net.fc2, PackedSpikeLinear) and type(net.fc1) is nnx.Linear and type(outside) is nnx.Linear
    np.testing.assert_allclose(net(x), ref(x), rtol=1e-6)
