"""Spike metrics: interceptor-collected statistics against direct numpy computations on the same
spikes, synaptic-operation counts against hand counts, and no mutation of the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax as sj
from spikejax import metrics
from spikejax.nn import LIF, MultiLevel, Ternary


class TwoLayer(nnx.Module):
    """x[T, B, 6] -> fc1 -> LIF -> fc2 -> MultiLevel -> head (mean over T)."""

    def __init__(self, rngs):
        self.fc1 = nnx.Linear(6, 16, rngs=rngs)
        self.lif = LIF(tau=2.0)
        self.fc2 = nnx.Linear(16, 8, rngs=rngs)
        self.ml = MultiLevel(levels=3, threshold=0.5)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.ml(self.fc2(self.lif(2.0 * self.fc1(x))))).mean(0)


@pytest.fixture
def net_and_x():
    net = TwoLayer(nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (6, 4, 6))
    return net, x


def _reference_spikes(net, x):
    s1 = np.asarray(sj.lif(2.0 * net.fc1(x), tau=2.0)[0])
    s2 = np.asarray(sj.multilevel(net.fc2(jnp.asarray(s1)), levels=3, threshold=0.5)[0])
    return s1, s2


def _np_stats(s, dead_rate=0.0):
    nz = s != 0
    rate = nz.mean()
    per_c = nz.reshape(-1, s.shape[-1]).mean(0)
    dead = (per_c <= dead_rate).mean()
    fired = nz.any(0)
    first = np.argmax(nz, axis=0)
    ttfs = first[fired].mean() if fired.any() else np.nan
    return rate, np.abs(s).mean(), dead, ttfs, 1 - fired.mean()


@pytest.mark.parametrize("jit", [True, False])
def test_spike_stats_match_numpy(net_and_x, jit):
    net, x = net_and_x
    stats = metrics.collect_spike_stats(net, x, jit=jit)
    assert set(stats) == {"lif", "ml"}
    for name, s in zip(("lif", "ml"), _reference_spikes(net, x), strict=True):
        rate, mean_abs, dead, ttfs, silent = _np_stats(s)
        st = stats[name]
        np.testing.assert_allclose(st.firing_rate, rate, rtol=1e-6)
        np.testing.assert_allclose(st.mean_spikes, mean_abs, rtol=1e-6)
        np.testing.assert_allclose(st.dead_fraction, dead, rtol=1e-6)
        np.testing.assert_allclose(st.ttfs_mean, ttfs, rtol=1e-6)
        np.testing.assert_allclose(st.silent_fraction, silent, rtol=1e-6, atol=1e-7)
        assert st.shape == s.shape and st.num_channels == s.shape[-1] and st.calls == 1


def test_dead_alert_threshold_and_warning():
    net = TwoLayer(nnx.Rngs(0))
    net.fc2.kernel[...] = net.fc2.kernel[...].at[:, :5].set(-10.0)  # 5 of 8 ml channels never fire
    net.fc2.bias[...] = net.fc2.bias[...].at[:5].set(-10.0)
    x = jax.random.normal(jax.random.key(0), (4, 3, 6))
    stats = metrics.collect_spike_stats(net, x, alert_threshold=0.5)
    assert stats["ml"].dead_fraction >= 5 / 8 and stats["ml"].dead_alert
    with pytest.warns(RuntimeWarning, match="ml"):
        metrics.collect_spike_stats(net, x, alert_threshold=0.5, warn=True)
    assert not metrics.collect_spike_stats(net, x, alert_threshold=0.9)["ml"].dead_alert
    with pytest.raises(ValueError, match="alert_threshold"):
        metrics.collect_spike_stats(net, x, alert_threshold=2.0)


def test_pure_functions_on_arrays():
    s = jnp.array([[0, 1, 0], [1, 0, 0], [1, 1, 0]], jnp.float32)[:, None, :]  # [T=3, 1, C=3]
    np.testing.assert_allclose(metrics.firing_rate(s), 4 / 9)
    np.testing.assert_allclose(metrics.dead_fraction(s), 1 / 3)
    first, fired = metrics.time_to_first_spike(s)
    np.testing.assert_array_equal(np.asarray(first)[0], [1, 0, 3])
    np.testing.assert_array_equal(np.asarray(fired)[0], [True, True, False])
    with pytest.raises(ValueError, match="spikes"):
        metrics.firing_rate(jnp.zeros(3))


def test_synops_and_energy_hand_count(net_and_x):
    net, x = net_and_x
    s1, s2 = _reference_spikes(net, x)
    T, B = x.shape[:2]
    rep = metrics.energy_report(net, x)
    fc1, fc2, head = rep.layers["fc1"], rep.layers["fc2"], rep.layers["head"]
    # fc1 reads real-valued x: all MACs
    assert not fc1.spike_driven and fc1.macs == T * B * 6 * 16 and fc1.acs == 0
    # fc2 reads binary spikes: one AC per spike and fan-out
    assert fc2.spike_driven and fc2.macs == 0
    np.testing.assert_allclose(fc2.acs, s1.sum() * 8, rtol=1e-5)
    # head reads multi-level counts: one AC per unit spike and fan-out
    assert head.spike_driven
    np.testing.assert_allclose(head.acs, s2.sum() * 3, rtol=1e-5)
    e = 4.6 * fc1.macs + 0.9 * (fc2.acs + head.acs)
    np.testing.assert_allclose(rep.energy_pj, e, rtol=1e-6)
    np.testing.assert_allclose(rep.dense_energy_pj, 4.6 * T * B * (6 * 16 + 16 * 8 + 8 * 3), rtol=1e-6)
    assert 0 < rep.energy_ratio < 1
    flat = metrics.summarize(metrics.collect_spike_stats(net, x), rep)
    assert {"firing_rate/lif", "firing_rate/ml", "energy/total_uj", "energy/ratio"} <= set(flat)
    assert all(isinstance(v, float) for v in flat.values())


class TernaryNet(nnx.Module):
    """x[T, B, 6] -> fc1 -> Ternary (per-channel amplitude) -> fc2."""

    def __init__(self, rngs):
        self.fc1 = nnx.Linear(6, 16, rngs=rngs)
        self.tern = Ternary(num_channels=16, threshold=0.5)
        self.fc2 = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.tern(self.fc1(x)))


def test_synops_per_channel_amplitude_spikes_are_accumulates():
    """Ternary spikes α_c · {-1, 0, 1} with a different α per channel fold into the weights: one AC per
    non-zero spike and fan-out; the same values with one channel perturbed are real-valued (MACs)."""
    net = TernaryNet(nnx.Rngs(0))
    net.tern.amplitude[...] = jnp.linspace(0.5, 2.0, 16)
    x = 3.0 * jax.random.normal(jax.random.key(1), (5, 4, 6))
    s = np.asarray(sj.ternary(net.fc1(x), threshold=0.5, amplitude=net.tern.amplitude[...])[0])
    assert (s > 0).any() and (s < 0).any() and len(np.unique(np.abs(s[s != 0]))) > 1
    fc2 = metrics.energy_report(net, x).layers["fc2"]
    assert fc2.spike_driven and fc2.macs == 0
    np.testing.assert_allclose(fc2.acs, np.count_nonzero(s) * 4, rtol=1e-6)

    net.tern.amplitude[...] = jnp.ones(16)
    fc2_unit = metrics.energy_report(net, x).layers["fc2"]
    np.testing.assert_allclose(fc2_unit.acs, np.count_nonzero(s) * 4, rtol=1e-6)  # same spikes, amplitude 1

    class Perturbed(TernaryNet):
        def __call__(self, x):
            h = self.tern(self.fc1(x))
            return self.fc2(h.at[0, 0, 0].add(0.123))  # one channel gets a second magnitude

    bad = Perturbed(nnx.Rngs(0))
    fc2_real = metrics.energy_report(bad, x).layers["fc2"]
    assert not fc2_real.spike_driven and fc2_real.macs == fc2_real.dense_macs and fc2_real.acs == 0


def test_collection_does_not_mutate_and_restores_classes():
    net = TwoLayer(nnx.Rngs(0))
    net.lif.stateful = True
    x = jax.random.normal(jax.random.key(0), (3, 2, 6))
    before = nnx.state(net)
    metrics.collect_spike_stats(net, x)
    metrics.energy_report(net, x)
    after = nnx.state(net)
    assert jax.tree.structure(before) == jax.tree.structure(after)
    assert net.lif.v.get_value() is None  # jit ran on a copy
    assert "__call__" not in LIF.__dict__ and "__call__" in nnx.Linear.__dict__
    assert getattr(nnx.Linear.__call__, "__wrapped__", None) is None


def test_collect_spikes_differentiable_for_regularizers(net_and_x):
    net, x = net_and_x

    def loss(m):
        out, spikes = metrics.collect_spikes(m, x)
        return jnp.sum(out ** 2) + sum(jnp.mean(s) for s in spikes.values())

    grads = nnx.grad(loss)(net)
    assert float(jnp.abs(grads["fc1"]["kernel"][...]).sum()) > 0
    _, spikes = metrics.collect_spikes(net, x)
    s1, s2 = _reference_spikes(net, x)
    np.testing.assert_array_equal(np.asarray(spikes["lif"]), s1)
    np.testing.assert_array_equal(np.asarray(spikes["ml"]), s2)


def test_spikformer_smoke():
    from spikejax.nn import SpikformerConfig

    cfg = SpikformerConfig(image_size=8, in_channels=1, patch_size=4, num_classes=3, d_model=16, num_heads=2,
                           num_layers=1, time_steps=2)
    model = cfg.build(seed=0)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    stats = metrics.collect_spike_stats(model, x)
    assert "blocks/0/mlp/hidden_neuron" in stats and "patch_embed/neuron" in stats
    rep = metrics.energy_report(model, x)
    assert rep.layers["patch_embed/conv"].macs == rep.layers["patch_embed/conv"].dense_macs
    assert rep.layers["blocks/0/mlp/fc2"].spike_driven


def test_probes_give_input_and_output_gradients(net_and_x):
    """Zero probes added through the interceptor's hooks: ∂L/∂p_in = ∂L/∂x and ∂L/∂p_out = ∂L/∂s of
    the neuron layer, and the forward is unchanged."""
    net, x = net_and_x
    with metrics.record_layers(net, synops=False) as rec:
        ref_out = net(x)
    zeros = {p: {"in": jnp.zeros(xi.shape), "out": jnp.zeros(so.shape)} for p, (xi, so) in rec.neuron_io.items()}

    def loss(probes):
        with metrics.record_layers(net, synops=False, probes=probes):
            out = net(x)
        return jnp.sum(out ** 2), out

    g, out = jax.grad(loss, has_aux=True)(zeros)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref_out))
    h = 2.0 * net.fc1(x)  # the LIF input

    def loss_from_lif(h, ds):
        s = sj.lif(h, tau=2.0)[0] + ds
        return jnp.sum(net.head(net.ml(net.fc2(s))).mean(0) ** 2)

    gx, gs = jax.grad(loss_from_lif, argnums=(0, 1))(h, jnp.zeros(h.shape[:-1] + (16,)))
    np.testing.assert_allclose(g["lif"]["in"], gx, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g["lif"]["out"], gs, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g["ml"]["in"]).sum()) > 0
