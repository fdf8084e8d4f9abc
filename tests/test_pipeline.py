"""The grain pipeline: batches are a pure function of (seed, step), identical whether one process reads
them or 2 / 4 processes read their shards, streamed or by random access, with worker processes or
not, and after a restart (resume) at any step."""

import numpy as np
import pytest

from spikejax import datasets

pytest.importorskip("grain")


@pytest.fixture(scope="module")
def source():
    return datasets.load("randman", num_classes=4, num_units=10, train_per_class=9, test_per_class=3, seed=3)


def _pipe(source, **kw):
    enc = datasets.EventFrames(source.sensor_size, time_bins=5)
    kw = {"batch_size": 8, "seed": 11, "shard_index": 0, "shard_count": 1, **kw}
    return datasets.Pipeline(source, encode=enc, **kw)


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch(source):
    a, b = _pipe(source), _pipe(source)
    for step in (0, 1, 7, 30):
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert a.batch(0)[0].shape == (8, 5, 10) and a.batch(0)[1].dtype == np.int32
    assert not np.array_equal(a.batch(0)[0], _pipe(source, seed=12).batch(0)[0])
    # the first epoch (36 samples = 4.5 batches) visits every sample once: compare with the source
    enc = datasets.EventFrames(source.sensor_size, time_bins=5)
    ref = sorted(enc(source[i][0]).tobytes() + bytes([source[i][1]]) for i in range(len(source)))
    rows = [(x.tobytes() + bytes([int(y)])) for s in range(5) for x, y in zip(*a.batch(s), strict=True)][:36]
    assert sorted(rows) == ref


@pytest.mark.parametrize("shards", [2, 4])
def test_process_shards_concatenate_to_the_single_process_batch(source, shards):
    whole = _pipe(source)
    parts = [_pipe(source, shard_index=p, shard_count=shards) for p in range(shards)]
    for step in (0, 3, 9):
        x, y = whole.batch(step)
        xs, ys = zip(*(p.batch(step) for p in parts), strict=True)
        np.testing.assert_array_equal(np.concatenate(xs), x)
        np.testing.assert_array_equal(np.concatenate(ys), y)


def test_streaming_with_workers_and_resume_match_random_access(source):
    ref = _pipe(source)
    it = _pipe(source, shard_index=1, shard_count=2, num_workers=1).iterate(4)
    for step in range(4, 7):
        x, y = next(it)
        np.testing.assert_array_equal(x, ref.batch(step)[0][4:])
        np.testing.assert_array_equal(y, ref.batch(step)[1][4:])
    # train_batch (the Task interface): a fresh pipeline asked for step 5 first ("--resume") and a jump
    p = _pipe(source)
    for step in (5, 6, 7, 2, 3):
        np.testing.assert_array_equal(p.train_batch(11, step, 8)[0], ref.batch(step)[0])
    with pytest.raises(ValueError, match="seed, batch_size"):
        p.train_batch(0, 8, 8)


def test_augmentation_is_part_of_the_pure_function(source):
    aug = datasets.EventAugment(source.sensor_size, drop=0.3)
    a, b = _pipe(source, augment=aug), _pipe(source, augment=aug)
    np.testing.assert_array_equal(a.batch(2)[0], b.batch(2)[0])
    assert a.batch(2)[0].sum() < _pipe(source).batch(2)[0].sum()  # events were dropped
    parts = [_pipe(source, augment=aug, shard_index=p, shard_count=2).batch(2)[0] for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), a.batch(2)[0])


def test_eval_batches_pad_and_mask(source):
    test = datasets.load("randman", split="test", num_classes=4, num_units=10, train_per_class=9,
                         test_per_class=3, seed=3)
    enc = datasets.EventFrames(test.sensor_size, time_bins=5)
    batches = datasets.eval_batches(test, 5, enc)
    assert len(batches) == 3 and [float(m.sum()) for _, _, m in batches] == [5, 5, 2]
    np.testing.assert_array_equal(batches[2][0][1], enc(test[11][0]))
    assert [int(v) for v in np.concatenate([y for _, y, _ in batches])[:12]] == test.labels


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="batch_size: 6 is not divisible by shard_count=4"):
        _pipe(source, batch_size=6, shard_count=4)
    with pytest.raises(ValueError, match="shard_index"):
        _pipe(source, shard_index=2, shard_count=2)
    with pytest.raises(TypeError, match="source"):
        datasets.Pipeline(3, batch_size=2, encode=lambda s: s)


def test_device_prefetch_yields_the_batches_on_the_device(source):
    import jax

    p = _pipe(source)
    batches = [p.batch(s) for s in range(4)]
    got = list(datasets.device_prefetch(iter(batches), jax.devices()[0], size=2))
    assert len(got) == 4 and all(isinstance(x, jax.Array) for x, _ in got)
    for (x, y), (gx, gy) in zip(batches, got, strict=True):
        np.testing.assert_array_equal(np.asarray(gx), x)
        np.testing.assert_array_equal(np.asarray(gy), y)
