"""spikejax.datasets.to_frame (JAX binning) against tonic's ToFrame on random events; the tonic-based
encoders and the seeded augmentations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikejax import datasets

tonic = pytest.importorskip("tonic")
tt = tonic.transforms


def _events(rng, n, sensor, t_max=50_000, fields=("x", "y", "t", "p")):
    W, H, P = sensor
    dtype = np.dtype([(f, np.int64) for f in fields])
    ev = np.zeros(n, dtype)
    ev["x"] = rng.integers(0, W, n)
    if "y" in fields:
        ev["y"] = rng.integers(0, H, n)
    ev["p"] = rng.integers(0, P, n)
    ev["t"] = np.sort(rng.integers(0, t_max, n))
    return ev


@pytest.mark.parametrize("trial", range(2))
@pytest.mark.parametrize("sensor,fields", [((34, 34, 2), ("x", "y", "t", "p")), ((700, 1, 1), ("t", "x", "p"))])
def test_to_frame_n_time_bins_equals_tonic(trial, sensor, fields):
    rng = np.random.default_rng(trial)
    ev = _events(rng, int(rng.integers(1, 400)), sensor, t_max=int(rng.integers(10, 80_000)), fields=fields)
    T = int(rng.integers(1, 12))
    ref = tt.ToFrame(sensor, n_time_bins=T)(ev.copy())
    got = datasets.to_frame(ev, sensor, n_time_bins=T, dtype=jnp.int32)
    np.testing.assert_array_equal(np.asarray(got), ref)


@pytest.mark.parametrize("trial", range(2))
def test_to_frame_time_window_equals_tonic_padded_or_cropped(trial):
    rng = np.random.default_rng(10 + trial)
    sensor = (16, 12, 2)
    ev = _events(rng, int(rng.integers(2, 300)), sensor, t_max=int(rng.integers(1000, 60_000)))
    window = int(rng.integers(500, 9000))
    ref = tt.ToFrame(sensor, time_window=window)(ev.copy())
    num = int(rng.integers(1, 2 * len(ref) + 2))
    expect = np.zeros((num, *ref.shape[1:]), ref.dtype)
    expect[:min(num, len(ref))] = ref[:num]
    got = datasets.to_frame(ev, sensor, time_window=window, num_frames=num, dtype=jnp.int32)
    np.testing.assert_array_equal(np.asarray(got), expect)


def test_to_frame_jit_vmap_over_padded_batches():
    """Padded streams of different lengths, binned on the device in one vmapped jit call, equal tonic
    per sample; ``layout='THWP'`` is the channels-last transpose."""
    rng = np.random.default_rng(20)
    sensor, T, N = (10, 8, 2), 5, 128
    evs = [_events(rng, n, sensor) for n in (3, 60, 128, 200)]
    cols, valid = zip(*(datasets.pad_events(e, N) for e in evs), strict=True)
    batch = {f: jnp.stack([c[f] for c in cols]) for f in cols[0]}
    fn = jax.jit(jax.vmap(lambda c, v: datasets.to_frame(c, sensor, n_time_bins=T, valid=v, layout="THWP")))
    got = np.asarray(fn(batch, jnp.stack(valid)))
    for e, g in zip(evs, got, strict=True):
        ref = tt.ToFrame(sensor, n_time_bins=T)(e[:N].copy())
        np.testing.assert_array_equal(g, ref.transpose(0, 2, 3, 1))


def test_to_frame_errors_name_the_argument():
    ev = _events(np.random.default_rng(0), 10, (4, 4, 2))
    with pytest.raises(ValueError, match="exactly one"):
        datasets.to_frame(ev, (4, 4, 2))
    with pytest.raises(ValueError, match="num_frames"):
        datasets.to_frame(ev, (4, 4, 2), time_window=100)
    with pytest.raises(ValueError, match="sensor_size"):
        datasets.to_frame(ev, (4, 4), n_time_bins=2)
    with pytest.raises(TypeError, match="events"):
        datasets.to_frame([1, 2], (4, 4, 2), n_time_bins=2)
    with pytest.raises(ValueError, match="missing fields"):
        datasets.to_frame({"x": np.zeros(3), "t": np.zeros(3)}, (4, 4, 2), n_time_bins=2)


def test_event_frames_is_tonic_to_frame_channels_last():
    rng = np.random.default_rng(30)
    ev = _events(rng, 150, (34, 34, 2))
    enc = datasets.EventFrames((34, 34, 2), time_bins=6)
    got = enc(ev.copy())
    assert got.shape == enc.shape == (6, 34, 34, 2) and got.dtype == np.float32
    np.testing.assert_array_equal(got, tt.ToFrame((34, 34, 2), n_time_bins=6)(ev.copy()).transpose(0, 2, 3, 1))
    shd = _events(rng, 90, (700, 1, 1), fields=("t", "x", "p"))
    enc = datasets.EventFrames((700, 1, 1), time_bins=10, time_window=4000, downsample=0.2)
    got = enc(shd.copy())
    ref = tt.ToFrame((140, 1, 1), time_window=4000)(tt.Downsample(spatial_factor=0.2)(shd.copy()))
    assert got.shape == (10, 140)
    np.testing.assert_array_equal(got, ref[:10, 0, :])  # 50 ms of events -> 12 windows, cropped to 10
    np.testing.assert_array_equal(datasets.voxel_grid((34, 34, 2), 4)(ev.copy()),
                                  tt.ToVoxelGrid((34, 34, 2), n_time_bins=4)(ev.copy()))
    surf = datasets.time_surface((34, 34, 2), dt=10_000, tau=5_000)(ev.copy())
    np.testing.assert_array_equal(surf, tt.ToTimesurface((34, 34, 2), dt=10_000, tau=5_000)(ev.copy()))
    for name, cls in (("nmnist", tonic.datasets.NMNIST), ("dvs_gesture", tonic.datasets.DVSGesture),
                      ("cifar10_dvs", tonic.datasets.CIFAR10DVS), ("shd", tonic.datasets.SHD)):
        assert datasets.info(name).sensor_size == cls.sensor_size, name


def test_augmentations_are_a_function_of_the_generator():
    rng = np.random.default_rng(40)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    aug = datasets.ImageAugment(padding=2)
    a = aug(img, np.random.default_rng(1))
    np.testing.assert_array_equal(a, aug(img, np.random.default_rng(1)))
    outs = {aug(img, np.random.default_rng(s)).tobytes() for s in range(12)}
    assert len(outs) > 3 and a.shape == img.shape
    # the reference: crop of the zero-padded image at the drawn offset, then the drawn flip
    g = np.random.default_rng(1)
    i, j = g.integers(0, 5, 2)
    ref = np.pad(img, ((2, 2), (2, 2), (0, 0)))[i:i + 8, j:j + 8]
    np.testing.assert_array_equal(a, ref[:, ::-1] if g.random() < 0.5 else ref)
    ev = _events(rng, 400, (34, 34, 2))
    eaug = datasets.EventAugment((34, 34, 2), drop=0.25, jitter=1.0)
    state = np.random.get_state()[1].copy()
    e1, e2 = eaug(ev.copy(), np.random.default_rng(5)), eaug(ev.copy(), np.random.default_rng(5))
    np.testing.assert_array_equal(e1, e2)
    assert np.array_equal(np.random.get_state()[1], state)  # the global NumPy state is left as it was
    assert 200 < len(e1) < 400  # about a quarter dropped, jittered events kept inside the sensor
    assert e1["x"].min() >= 0 and e1["x"].max() < 34
