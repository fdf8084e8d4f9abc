"""Non-finite training (issue 15, defect 2): a NaN/inf loss or gradient norm stops the run with the
step and the quantity, nothing non-finite is ever saved, pruning keeps the last finite checkpoint,
the run's JSON files stay strict JSON; ``skip_nonfinite`` skips isolated bad steps."""

import json
import math
import os

import jax
import numpy as np
import optax
import pytest
from train_helpers import tiny_cfg, tiny_lm

from spikejax.train.checkpoint import CheckpointManager, read_meta
from spikejax.train.commands import load_checkpoint, train_main
from spikejax.train.loop import fit
from spikejax.train.steps import ModelSplit, NonFiniteError, make_optimizer

quiet = dict(print_fn=lambda *_: None)


def _strict(text: str):
    """json.loads that refuses NaN / Infinity (what strict JSON readers do)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def _records(out):
    return [_strict(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def poisoned_lm(bad_steps):
    """The tiny LM task whose batches at the 0-based ``bad_steps`` carry a NaN example weight (a
    poisoned batch: loss and gradients NaN at exactly those steps)."""
    task = tiny_lm()
    base = task.train_batch

    def train_batch(seed, step, b):
        x, y = base(seed, step, b)
        return x, y, np.full((b,), np.nan if step in bad_steps else 1.0, np.float32)

    def loss_fn(model, batch, key=None):
        x, y, w = batch
        logits = model(x, dropout_key=key)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (ce.mean(-1) * w).mean(), {"accuracy": (logits.argmax(-1) == y).mean()}

    task.train_batch, task.loss_fn = train_batch, loss_fn
    return task


def _all_finite_checkpoints(out):
    ck = os.path.join(out, "checkpoints")
    steps = sorted(int(s) for s in os.listdir(ck) if s.isdigit())
    for s in steps:
        _, meta = read_meta(ck, s)
        assert meta["step"] == s
    model, meta = load_checkpoint(out)
    for k, v in ModelSplit(model).params.items():
        assert np.all(np.isfinite(np.asarray(v))), k
    return steps


def test_nonfinite_loss_stops_the_run(tmp_path):
    out = str(tmp_path / "nan")
    with pytest.raises(NonFiniteError) as err:
        fit(poisoned_lm({3}), tiny_cfg(out=out, steps=6, checkpoint_every=1, log_every=0), **quiet)
    e = err.value
    assert (e.step, e.quantity) == (4, "loss") and "step 4" in str(e) and "step 3" in str(e)
    assert _all_finite_checkpoints(out)[-1] == 3  # keep=2 pruned 1 and 2, never the last finite one
    recs = _records(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]  # every step's loss, up to the bad one
    assert recs[-1]["loss"] is None and all(math.isfinite(r["loss"]) for r in recs[:-1])
    summary = _strict(open(os.path.join(out, "summary.json")).read())
    assert "non-finite loss" in summary["stopped"] and summary["last_checkpoint"] == 3


def test_diverging_lr_never_saves_a_nonfinite_state(tmp_path):
    """lr = 1e30 (finite, so the CLI takes it) blows the parameters up; whichever quantity turns
    non-finite first stops the run and every checkpoint left is finite."""
    out = str(tmp_path / "lr")
    with pytest.raises(NonFiniteError) as err:
        fit(tiny_lm(), tiny_cfg(out=out, steps=8, checkpoint_every=1, log_every=0, lr=1e30), **quiet)
    assert err.value.quantity in ("loss", "grad_norm") or err.value.quantity.startswith(("params.", "opt."))
    _all_finite_checkpoints(out)
    for r in _records(out):
        assert r["loss"] is None or math.isfinite(r["loss"])


def test_manager_refuses_a_nonfinite_state(tmp_path):
    task = tiny_lm()
    from spikejax.train.steps import make_steps

    split = ModelSplit(task.model_config.build(seed=0))
    state = make_steps(split, make_optimizer(1e-3, 4), task.loss_fn, task.eval_fn, None).init()
    name = sorted(state.params)[0]
    bad = state._replace(params={**state.params, name: state.params[name].at[0].set(np.inf)})
    mngr = CheckpointManager(tmp_path / "ck", {"x": 1}, save_every=1)
    with pytest.raises(NonFiniteError, match=f"params.{name}"):
        mngr.save(1, bad._replace(step=state.step + 1))
    mngr.close()
    assert [d for d in os.listdir(tmp_path / "ck") if d[0].isdigit()] == []


def test_skip_nonfinite_skips_isolated_steps(tmp_path):
    out = str(tmp_path / "skip")
    s = fit(poisoned_lm({2}), tiny_cfg(out=out, steps=4, checkpoint_every=1, skip_nonfinite=1), **quiet)
    assert s["skipped_steps"] == 1 and s["end_step"] == 4 and math.isfinite(s["final_train_loss"])
    recs = [r for r in _records(out) if not r.get("final")]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert recs[2]["loss"] is None and recs[2]["skipped"] is True
    assert not any(r["skipped"] for i, r in enumerate(recs) if i != 2)
    _all_finite_checkpoints(out)
    # two poisoned steps in a row exceed skip_nonfinite=1: the second is applied by apply_if_finite -> stop
    with pytest.raises(NonFiniteError, match="step 3"):
        fit(poisoned_lm({1, 2}), tiny_cfg(out=str(tmp_path / "two"), steps=4, checkpoint_every=1,
                                          skip_nonfinite=1), **quiet)


def test_skipped_step_leaves_parameters_unchanged():
    """An update skipped by apply_if_finite changes neither parameters nor the Adam moments."""
    tx = make_optimizer(1e-2, 10, warmup=0, skip_nonfinite=2)
    params = {"w": jax.numpy.ones((3, 3)), "b": jax.numpy.zeros(3)}
    st = tx.init(params)
    nan = jax.tree.map(lambda p: p * np.nan, params)
    upd, st2 = tx.update(nan, st, params)
    np.testing.assert_array_equal(optax.apply_updates(params, upd)["w"], params["w"])
    assert int(st2.notfinite_count) == 1 and not bool(st2.last_finite)


def test_cli_run_that_diverges_exits_nonzero(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["lm", "--steps", "6", "--batch-size", "4", "--d-model", "16", "--layers", "1", "--heads", "2",
            "--time-steps", "2", "--seq-len", "16", "--eval-batches", "1", "--sample-chars", "0", "--log-every", "0",
            "--checkpoint-every", "1", "--no-progress", "--lr", "1e30", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        train_main(argv)
    msg = str(exc.value.code)
    assert exc.value.code not in (0, None) and "non-finite" in msg and "at step" in msg, msg
    _strict(open(out / "summary.json").read())


@pytest.mark.parametrize("kw", [dict(lr=math.inf), dict(lr=math.nan), dict(weight_decay=math.nan),
                                dict(clip=math.inf), dict(skip_nonfinite=-1)])
def test_nonfinite_hyperparameters_are_refused(kw):
    name = next(iter(kw))
    args = dict(lr=1e-3, steps=10)
    args.update({k: v for k, v in kw.items() if k == "lr"})
    with pytest.raises(ValueError, match=name):
        make_optimizer(args.pop("lr"), args.pop("steps"), **{k: v for k, v in kw.items() if k != "lr"})
