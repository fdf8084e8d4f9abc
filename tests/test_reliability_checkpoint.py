"""Damaged checkpoints: every restore verifies the step's integrity records and refuses a change with
one paragraph naming the step, the array and/or the file (issue 15, defect 1)."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_helpers import tiny_cfg, tiny_lm

from spikejax.train.checkpoint import (
    RECORD_NAME,
    CheckpointError,
    CheckpointManager,
    flatten_state,
    read_meta,
)
from spikejax.train.commands import load_checkpoint
from spikejax.train.loop import fit
from spikejax.train.steps import ModelSplit

quiet = dict(print_fn=lambda *_: None)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 4-step run (checkpoints 2 and 4) and its final state."""
    out = tmp_path_factory.mktemp("rel") / "run"
    summary = fit(tiny_lm(), tiny_cfg(out=str(out), steps=4, checkpoint_every=2), **quiet)
    return out, summary


def _copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run[0], dst)
    return dst


def _restore(out):
    """Restore the latest checkpoint of ``out`` the way ``--resume`` does (fit's manager and template)."""
    return fit(tiny_lm(), tiny_cfg(out=str(out), steps=4, checkpoint_every=2, resume=True, eval_every=0), **quiet)


def _data_files(step_dir):
    d = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
    return sorted((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)


def test_every_step_has_its_record(run):
    out, summary = run
    for step in ("2", "4"):
        step_dir = out / "checkpoints" / step
        record = json.load(open(step_dir / RECORD_NAME))["files"]
        files = {os.path.relpath(os.path.join(d, f), step_dir) for d, _, fs in os.walk(step_dir) for f in fs}
        assert set(record) == files - {RECORD_NAME}
        assert all(record[f]["size"] == os.path.getsize(step_dir / f) for f in record)
    meta = json.load(open(out / "checkpoints" / "4" / "meta" / "metadata"))
    assert set(meta["integrity"]["arrays"]) == set(flatten_state(summary["state"]))
    model, _ = load_checkpoint(str(out))  # what sample / export-torch restore
    restored = ModelSplit(model).params
    for k, v in summary["state"].params.items():
        np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(v))


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_damaged_data_file_is_named(run, tmp_path, how):
    out = _copy(run, tmp_path)
    victim = _data_files(out / "checkpoints" / "4")[-1]
    data = bytearray(open(victim, "rb").read())
    if how == "flip":
        data[len(data) // 2] ^= 0x10
        open(victim, "wb").write(bytes(data))
    elif how == "truncate":
        open(victim, "wb").write(bytes(data[: len(data) // 3]))
    else:
        os.remove(victim)
    rel = os.path.relpath(victim, out / "checkpoints" / "4")
    for restore in (lambda: load_checkpoint(str(out)), lambda: _restore(out)):
        with pytest.raises(CheckpointError) as err:
            restore()
        msg = str(err.value)
        assert "step 4" in msg and rel in msg and "damaged" in msg
        assert "\n" not in msg and len(msg) < 600 and "tensorstore" not in msg.lower()


def test_deleted_manifest_and_meta(run, tmp_path):
    out = _copy(run, tmp_path)
    os.remove(out / "checkpoints" / "4" / "state" / "manifest.ocdbt")
    with pytest.raises(CheckpointError, match=r"step 4 .* file state/manifest.ocdbt is missing"):
        load_checkpoint(str(out))
    # without the file record the arrays' checksums (committed with the step) still refuse it
    os.remove(out / "checkpoints" / "4" / RECORD_NAME)
    with pytest.raises(CheckpointError, match=r"step 4 .* its state item is unreadable"):
        load_checkpoint(str(out))
    shutil.rmtree(out / "checkpoints" / "2" / "meta")
    with pytest.raises(CheckpointError, match=r"step 2 .* file meta/metadata is missing"):
        read_meta(out / "checkpoints", 2)


def test_missing_record_falls_back_to_array_checksums(run, tmp_path):
    """A run killed between orbax's commit and the record write: the step still restores, verified by
    the array checksums committed with it; a changed array is then named."""
    out = _copy(run, tmp_path)
    step_dir = out / "checkpoints" / "4"
    os.remove(step_dir / RECORD_NAME)
    model, _ = load_checkpoint(str(out))
    for k, v in run[1]["state"].params.items():
        np.testing.assert_array_equal(np.asarray(ModelSplit(model).params[k]), np.asarray(v))
    meta_path = step_dir / "meta" / "metadata"
    meta = json.load(open(meta_path))
    name = "params.head.kernel" if "params.head.kernel" in meta["integrity"]["arrays"] else \
        sorted(k for k in meta["integrity"]["arrays"] if k.startswith("params."))[0]
    meta["integrity"]["arrays"][name] = "sha256:" + "0" * 64  # as if that array's bytes had changed
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(CheckpointError, match=rf"step 4 .* array {name} read from the files under .*differs"):
        load_checkpoint(str(out))
    meta["train"]["lr"] *= 2  # any other change of the meta item: its own checksum
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(CheckpointError, match=r"step 4 .* meta/metadata differs"):
        load_checkpoint(str(out))


def test_full_disk_is_one_clear_error(tmp_path, monkeypatch):
    """A save that hits ENOSPC (simulated in orbax's write of the step's JSON item) stops the run
    with a CheckpointError naming the step and the last complete checkpoint; that one stays usable."""
    from etils import epath

    cls = type(epath.Path(str(tmp_path)))
    real = cls.write_text

    def write_text(self, *a, **kw):
        if self.name == "metadata" and "/4." in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(cls, "write_text", write_text)
    out = tmp_path / "full"
    with pytest.raises(CheckpointError) as err:
        fit(tiny_lm(), tiny_cfg(out=str(out), steps=4, checkpoint_every=2), **quiet)
    msg = str(err.value)
    assert "saving step 4" in msg and "No space left on device" in msg and "step 2" in msg, msg
    monkeypatch.undo()
    _, meta = load_checkpoint(str(out))
    assert meta["step"] == 2


@settings(max_examples=60, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_single_byte_change_is_refused_or_harmless(run, tmp_path_factory, data):
    """Property: change any one byte of any file of a saved step; the restore either refuses with the
    integrity error or returns exactly the saved values (state and meta). Half the examples first set
    the step's integrity.json aside (a run killed right after orbax's commit), so the checksums
    committed with the step are the only guard."""
    out = run[0]
    step_dir = out / "checkpoints" / "4"
    files = sorted(os.path.relpath(os.path.join(d, f), step_dir) for d, _, fs in os.walk(step_dir) for f in fs)
    with_record = data.draw(st.booleans(), label="with integrity.json")
    if not with_record:
        files.remove(RECORD_NAME)
    rel = data.draw(st.sampled_from(files), label="file")
    path = step_dir / rel
    original = open(path, "rb").read()
    offset = data.draw(st.integers(0, len(original) - 1), label="offset")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[offset]), label="new byte")
    changed = bytearray(original)
    changed[offset] = value
    template = _template()
    record = step_dir / RECORD_NAME
    try:
        if not with_record:
            os.replace(record, str(record) + ".aside")
        open(path, "wb").write(bytes(changed))
        mngr = CheckpointManager(out / "checkpoints", {}, save_every=1, resume=True, must_match=())
        try:
            try:
                state, meta = mngr.restore(template)
            except CheckpointError as e:
                assert "step 4" in str(e) and "damaged" in str(e) and len(str(e)) < 800
                return
        finally:
            mngr._mngr.close()
    finally:
        open(path, "wb").write(original)
        if not with_record:
            os.replace(str(record) + ".aside", record)
    saved = flatten_state(run[1]["state"])
    got = flatten_state(state)
    assert sorted(got) == sorted(saved)
    for k in saved:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(saved[k]), err_msg=f"{rel}@{offset}: {k}")
    assert meta["step"] == 4 and meta["train"]["steps"] == 4


_TEMPLATE = {}


def _template():
    if "t" not in _TEMPLATE:
        from spikejax.train.steps import make_optimizer, make_steps

        task = tiny_lm()
        split = ModelSplit(task.model_config.build(seed=0))
        cfg = tiny_cfg(steps=4)
        tx = make_optimizer(cfg.lr, cfg.steps, warmup=cfg.warmup, weight_decay=cfg.weight_decay, clip=cfg.clip)
        _TEMPLATE["t"] = make_steps(split, tx, task.loss_fn, task.eval_fn, None).init()
    return _TEMPLATE["t"]


def test_damaged_checkpoint_cli_is_one_paragraph(run, tmp_path):
    """A real `spikejax sample` process on a damaged step: exit 1, one short paragraph on stderr (no
    traceback, no TensorStore dump, no asyncio noise)."""
    out = _copy(run, tmp_path)
    victim = _data_files(out / "checkpoints" / "4")[-1]
    data = bytearray(open(victim, "rb").read())
    data[7] ^= 0xFF
    open(victim, "wb").write(bytes(data))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "spikejax.cli", "sample", "--checkpoint", str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr
    assert len(err) < 800, err[:3000]
    for noise in ("Traceback", "Event loop is closed", "Exception ignored", "TensorStore", "coroutine"):
        assert noise not in err, err
    assert "step 4" in err and os.path.relpath(victim, out / "checkpoints" / "4") in err
