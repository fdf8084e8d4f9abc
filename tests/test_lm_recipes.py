"""Spiking-LM recipes (issue 21): distillation (loss against a NumPy formula, the teacher's vocabulary
checked, resume exact with a teacher), the ANN twin (--neuron none: MACs only), firing-rate control,
fp-warmup annealing (step 0 is the ANN twin, the end the spiking model), layer-wise learning rates
and freezing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import resume_without_checkpoint

from spikejax.metrics import collect_spikes
from spikejax.nn import SpikingLMConfig
from spikejax.train.commands import train_main
from spikejax.train.recipes import Recipe, distill_kl, freeze_mask, layer_lr_scales, recipe_lm_loss
from spikejax.train.steps import ModelSplit, make_optimizer

FLAGS = ["lm", "--steps", "6", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
         "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "3", "--eval-every", "0",
         "--checkpoint-every", "3", "--lr", "4e-3", "--warmup", "2", "--no-progress"]


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _lm(neuron="lif", T=2, seed=0, **kw):
    nkw = {} if neuron == "none" else {"beta": 0.5, "threshold": 0.5}
    return SpikingLMConfig(vocab_size=13, d_model=16, num_heads=2, num_layers=2, time_steps=T, max_len=12,
                           attention="linear", neuron=neuron, neuron_kwargs=nkw, **kw).build(seed=seed)


@pytest.fixture(scope="module")
def ann_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipes") / "ann"
    return out, train_main([*FLAGS, "--neuron", "none", "--out", str(out)])


# --- distillation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distill_kl_against_numpy(temperature):
    rng = np.random.default_rng(int(temperature * 10))
    s, t = rng.normal(size=(3, 5, 7)) * 3, rng.normal(size=(3, 5, 7)) * 3
    ls, lt = _np_log_softmax(s / temperature), _np_log_softmax(t / temperature)
    want = np.mean(np.sum(np.exp(lt) * (lt - ls), -1))
    got = distill_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temperature)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
    assert float(distill_kl(jnp.asarray(t), jnp.asarray(t), temperature)) == pytest.approx(0, abs=1e-6)


def test_distillation_loss_is_ce_plus_weighted_kl_and_no_gradient_reaches_the_teacher():
    student, teacher = _lm(seed=0), _lm(seed=1)
    x = jax.random.randint(jax.random.key(2), (3, 12), 0, 13)
    y = jax.random.randint(jax.random.key(3), (3, 12), 0, 13)
    w, T = 0.7, 3.0
    teacher.eval()
    t_logits = np.asarray(teacher(x), np.float64)
    s_logits = np.asarray(student(x), np.float64)
    ls, lt = _np_log_softmax(s_logits / T), _np_log_softmax(t_logits / T)
    ce = -np.mean(np.take_along_axis(_np_log_softmax(s_logits), np.asarray(y)[..., None], -1))
    want = ce + w * T * T * np.mean(np.sum(np.exp(lt) * (lt - ls), -1))

    t_split = ModelSplit(teacher)

    def teacher_fn(x, params):
        m = t_split.merge(params, t_split.stats)
        m.eval()
        return m(x)

    box = {}
    loss_fn = recipe_lm_loss(Recipe(distill_weight=w, distill_temperature=T), lambda x: teacher_fn(x, box["p"]))

    def total(t_params):
        box["p"] = t_params
        return loss_fn(student, (x, y), None, step=0)

    (loss, aux), g = jax.value_and_grad(total, has_aux=True)(t_split.params)
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    np.testing.assert_allclose(float(aux["ce"]), ce, rtol=1e-4)
    assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree.leaves(g))  # stop_gradient on the teacher


def test_teacher_with_another_vocabulary_is_refused(ann_teacher, tmp_path):
    data = tmp_path / "other.txt"
    data.write_text("abcdefgh " * 200)
    with pytest.raises(SystemExit) as e:
        train_main([*FLAGS, "--data", str(data), "--teacher", str(ann_teacher[0]), "--out", str(tmp_path / "s")])
    assert e.value.code == 2


def test_resume_is_exact_with_a_teacher(ann_teacher, tmp_path):
    out = tmp_path / "student"
    flags = [*FLAGS, "--time-steps", "2", "--teacher", str(ann_teacher[0]), "--distill-weight", "0.5",
             "--distill-temperature", "2", "--out", str(out)]
    full = train_main(flags)
    meta = json.loads((out / "run.json").read_text())
    assert meta["train"]["teacher"]["run"] == str(ann_teacher[0].resolve())
    assert meta["train"]["recipe"]["distill_weight"] == 0.5
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("distill_kl" in r for r in lines if "loss" in r)
    resume_without_checkpoint(out, tmp_path / "killed", 6, full, start_step=3)


# --- the ANN twin -------------------------------------------------------------------------------------


def test_ann_twin_energy_counts_macs_only(ann_teacher):
    out, summary = ann_teacher
    e = summary["energy"]
    assert e["time_steps"] == 1 and e["sops"] == 0
    assert e["snn_macs"] == pytest.approx(e["ann_macs"]) and e["ratio"] == pytest.approx(1.0)
    assert all(not layer["spiking"] and layer["sops"] == 0 for layer in e["layers"])
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"]["neuron"] == "none" and meta["model"]["time_steps"] == 1


def test_ann_twin_is_the_relu_network():
    twin = _lm("none", T=1)
    x = jax.random.randint(jax.random.key(0), (2, 12), 0, 13)
    _, spikes = collect_spikes(twin, x)
    for name, s in spikes.items():  # every "neuron" output is a relu: non-negative, not binary
        assert float(jnp.min(s)) >= 0, name
    assert any(bool(jnp.any((s > 0) & (s != 1))) for s in spikes.values())


def test_ann_twin_refuses_more_time_steps(tmp_path):
    with pytest.raises(SystemExit) as e:
        train_main([*FLAGS, "--neuron", "none", "--time-steps", "4", "--out", str(tmp_path / "a")])
    assert e.value.code == 2


# --- firing-rate control, annealing ----------------------------------------------------------------


def test_rate_penalty_uses_each_layers_firing_rate():
    model = _lm()
    x = jax.random.randint(jax.random.key(4), (2, 12), 0, 13)
    y = jax.random.randint(jax.random.key(5), (2, 12), 0, 13)
    R, lam = 0.1, 2.0
    loss, aux = recipe_lm_loss(Recipe(target_rate=R, rate_weight=lam))(model, (x, y), None, step=0)
    logits, spikes = collect_spikes(model, x)
    rates = np.array([float(jnp.mean(jnp.abs(s))) for s in spikes.values()])
    ce = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
    np.testing.assert_allclose(float(aux["mean_rate"]), rates.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["rate_penalty"]), np.mean((rates - R) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(loss), ce + lam * np.mean((rates - R) ** 2), rtol=1e-5)


def test_fp_warmup_starts_as_the_ann_and_ends_spiking():
    spiking, twin = _lm("lif", T=2), _lm("none", T=1)
    assert set(ModelSplit(spiking).params) == set(ModelSplit(twin).params)
    x = jax.random.randint(jax.random.key(6), (2, 12), 0, 13)
    y = jnp.zeros((2, 12), jnp.int32)
    loss_fn = recipe_lm_loss(Recipe(anneal="fp-warmup", anneal_steps=10))
    ce = lambda m: float(optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean())
    l0, a0 = loss_fn(spiking, (x, y), None, step=0)
    l_end, a_end = loss_fn(spiking, (x, y), None, step=10)
    lmid, amid = loss_fn(spiking, (x, y), None, step=5)
    assert float(a0["anneal_alpha"]) == 0 and float(amid["anneal_alpha"]) == 0.5 and float(a_end["anneal_alpha"]) == 1
    np.testing.assert_allclose(float(l0), ce(twin), rtol=1e-5)  # the same weights as an ANN
    np.testing.assert_allclose(float(l_end), ce(spiking), rtol=1e-6)
    assert float(lmid) not in (pytest.approx(float(l0)), pytest.approx(float(l_end)))


def test_recipe_flags_train_and_log(tmp_path):
    out = tmp_path / "r"
    summary = train_main([*FLAGS, "--time-steps", "2", "--target-rate", "0.1", "--anneal", "fp-warmup",
                          "--anneal-steps", "4", "--layer-lr-decay", "0.5", "--freeze", "token_embed.*",
                          "--out", str(out)])
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in ln]
    assert [r["anneal_alpha"] for r in lines] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert all("rate_penalty" in r and "mean_rate" in r for r in lines)
    first = ModelSplit(_lm_from_run(out)).params  # built with the run's config and seed, before training
    np.testing.assert_array_equal(np.asarray(summary["state"].params["token_embed.embedding"]),
                                  np.asarray(first["token_embed.embedding"]))
    assert not np.array_equal(np.asarray(summary["state"].params["head.kernel"]), np.asarray(first["head.kernel"]))
    meta = json.loads((out / "run.json").read_text())
    assert meta["train"]["freeze"] == ["token_embed.*"] and meta["train"]["layer_lr_decay"] == 0.5


def _lm_from_run(out):
    meta = json.loads((out / "run.json").read_text())
    return SpikingLMConfig.from_dict(meta["model"]).build(seed=0)


def test_bad_recipe_flags_are_user_errors(tmp_path):
    for extra in (["--anneal", "fp-warmup"], ["--freeze", "nothing.*"], ["--neuron", "none", "--target-rate", "0.1"]):
        with pytest.raises(SystemExit) as e:
            train_main([*FLAGS, *extra, "--out", str(tmp_path / "x")])
        assert e.value.code == 2, extra


# --- layer-wise learning rates, freezing ----------------------------------------------------------------


def test_layer_lr_scales_and_freeze_mask():
    names = ["token_embed.embedding", "blocks.0.mlp.fc1.kernel", "blocks.1.mlp.fc1.kernel", "head.kernel"]
    assert layer_lr_scales(names, 0.5) == {"token_embed.embedding": 0.25, "blocks.0.mlp.fc1.kernel": 0.5,
                                           "blocks.1.mlp.fc1.kernel": 1.0, "head.kernel": 1.0}
    assert freeze_mask(names, ["blocks.0.*"]) == {n: n.startswith("blocks.0") for n in names}
    assert freeze_mask(names, train_only=["head.*"]) == {n: n != "head.kernel" for n in names}
    with pytest.raises(ValueError, match="freeze"):
        freeze_mask(names, ["nope*"])


def test_multiplier_scales_the_update_and_frozen_parameters_stay():
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones((3, 2)), "c": jnp.ones((2,))}
    grads = {"a": jnp.full((3, 2), 0.3), "b": jnp.full((3, 2), 0.3), "c": jnp.full((2,), -0.2)}
    plain = make_optimizer(1e-2, 10, warmup=0, weight_decay=0.1)
    tx = make_optimizer(1e-2, 10, warmup=0, weight_decay=0.1, lr_scales={"a": 1.0, "b": 0.5, "c": 1.0},
                        frozen={"c": True})
    u_plain, _ = plain.update(grads, plain.init(params), params)
    state = tx.init(params)
    u, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(np.asarray(u["a"]), np.asarray(u_plain["a"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u["b"]), 0.5 * np.asarray(u_plain["b"]), rtol=1e-6)
    assert float(jnp.abs(u["c"]).max()) == 0
    # no multipliers and nothing frozen: the plain optimizer (the checkpoint structure of earlier runs)
    same = make_optimizer(1e-2, 10, warmup=0, lr_scales={"a": 1.0}, frozen={"a": False})
    assert jax.tree.structure(same.init(params)) == jax.tree.structure(plain.init(params))
