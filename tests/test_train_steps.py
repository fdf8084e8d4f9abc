"""Train steps, optimizer, spiking probes and the energy report (CPU, tiny models)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from train_helpers import tiny_cfg, tiny_lm

from spikejax.metrics import E_AC_PJ, E_MAC_PJ, EnergyReport, record_layers, reduce_spike_stats, reduce_synops
from spikejax.train import make_optimizer
from spikejax.train.data import CharDataset, batch_rng
from spikejax.train.loop import fit


def test_loss_falls_and_metrics_are_sane():
    out = fit(tiny_lm(), tiny_cfg(steps=40, log_every=20, lr=1e-2, warmup=5, eval_every=40), print_fn=lambda *_: None)
    losses = out["losses"]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < losses[0] - 0.8, losses
    assert 0.0 <= out["firing_rate"] <= 1.0 and 0.0 <= out["dead_fraction"] <= 1.0
    assert out["surrogate_grad"] > 0
    assert math.isclose(out["val_bpc"], out["val_loss"] / math.log(2))
    assert out["energy"]["sops"] > 0 and out["energy"]["ann_joules"] > 0


def test_batches_are_a_function_of_seed_and_step():
    ds = CharDataset("abcdefghij" * 50)
    x1, y1 = ds.batch(3, 7, 4, 8)
    x2, _ = ds.batch(3, 7, 4, 8)
    x3, _ = ds.batch(3, 8, 4, 8)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, x3)
    np.testing.assert_array_equal(x1[:, 1:], y1[:, :-1])
    assert len(ds.train) == 450 and len(ds.val) == 50  # 90/10
    assert batch_rng(0, 1).integers(1 << 30) == batch_rng(0, 1).integers(1 << 30)


def test_schedule_warmup_cosine_and_clipping():
    tx = make_optimizer(1.0, 100, warmup=10, weight_decay=0.0, clip=0.5)
    params = {"w": jnp.zeros((2, 2))}
    state = tx.init(params)
    g = {"w": jnp.full((2, 2), 10.0)}  # norm 20, clipped to 0.5
    upd, state = tx.update(g, state, params)
    assert float(jnp.abs(upd["w"]).max()) == 0.0  # lr 0 at step 0 of the warm-up
    sched = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.1)
    assert math.isclose(float(sched(10)), 1.0) and math.isclose(float(sched(100)), 0.1, rel_tol=1e-5)
    with pytest.raises(ValueError, match="lr"):
        make_optimizer(0.0, 10)
    with pytest.raises(ValueError, match="steps"):
        make_optimizer(1e-3, 0)


class _Two(nnx.Module):
    """Linear on real input (MAC layer), LIF, Linear on spikes (AC layer)."""

    def __init__(self):
        from spikejax.nn import LIF

        self.fc1 = nnx.Linear(4, 6, rngs=nnx.Rngs(0))
        self.lif = LIF(beta=0.5, threshold=0.5)
        self.fc2 = nnx.Linear(6, 3, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.fc2(self.lif(self.fc1(x)))


def test_energy_matches_hand_computation():
    model = _Two()
    T, B = 2, 5
    x = jax.random.normal(jax.random.key(0), (T, B, 4))
    with record_layers(model) as rec:
        model(x)
    neurons, lin = reduce_spike_stats(rec.spikes), reduce_synops(rec.synops)
    spikes = model.lif(model.fc1(x))
    rate = float((spikes != 0).mean())
    assert math.isclose(neurons["lif"].firing_rate, rate)
    dead = 1.0 - float((spikes != 0).reshape(-1, 6).any(0).mean())
    assert math.isclose(neurons["lif"].dead_fraction, dead, abs_tol=1e-7)
    assert lin["fc1"].dense_macs == T * B * 4 * 6 and not lin["fc1"].spike_driven
    assert lin["fc2"].dense_macs == T * B * 6 * 3 and lin["fc2"].spike_driven
    report = EnergyReport.from_layers(lin, time_steps=T, samples=B, unit="sample")
    rep = report.to_dict()
    macs1, macs2 = T * 4 * 6, T * 6 * 3  # per sample
    sops = rate * macs2
    assert math.isclose(rep["sops"], sops, rel_tol=1e-6)
    assert math.isclose(rep["snn_joules"], macs1 * 4.6e-12 + sops * 0.9e-12, rel_tol=1e-6)
    assert math.isclose(rep["ann_joules"], (macs1 + macs2) / T * 4.6e-12, rel_tol=1e-6)
    assert (E_MAC_PJ * 1e-12, E_AC_PJ * 1e-12) == (4.6e-12, 0.9e-12)
    assert "ANN / SNN" in report.table()
    with pytest.raises(ValueError, match="time_steps"):
        EnergyReport.from_layers(lin, time_steps=0, samples=1)


def test_recorder_restores_classes():
    from spikejax.nn import LIF, SpikingNeuron

    before = (SpikingNeuron.__call__, LIF.__call__, nnx.Linear.__call__)
    model = _Two()
    with record_layers(model, probes={}):  # scoped to the model's instances: no class is patched
        assert (SpikingNeuron.__call__, LIF.__call__, nnx.Linear.__call__) == before
        assert type(model.fc1) is not nnx.Linear and type(model.lif) is not LIF
    assert (SpikingNeuron.__call__, LIF.__call__, nnx.Linear.__call__) == before
    assert type(model.fc1) is nnx.Linear and type(model.lif) is LIF


def test_lm_task_window_softmax_defaults_and_override():
    assert tiny_lm(attention="hybrid").model_config.attention_kwargs["softmax"] is True
    assert tiny_lm(attention="sliding").model_config.attention_kwargs["softmax"] is False  # spike-driven window
    assert tiny_lm(attention="sliding", window_softmax=True).model_config.attention_kwargs["softmax"] is True
    assert tiny_lm(attention="hybrid", window_softmax=False).model_config.attention_kwargs["softmax"] is False



def test_lm_task_mix_norm():
    assert tiny_lm(mix_norm="layer").model_config.attention_kwargs["mix_norm"] == "layer"
    assert "mix_norm" not in tiny_lm().model_config.attention_kwargs
