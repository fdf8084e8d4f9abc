"""spikejax.plot renders PNGs with the Agg backend."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from spikejax import plot  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    spikes = (rng.random((30, 12)) < 0.2).astype(np.float32)
    events = np.zeros(20, np.dtype([("t", int), ("x", int), ("p", int)]))
    events["t"], events["x"] = np.sort(rng.integers(0, 1000, 20)), rng.integers(0, 12, 20)
    records = [{"step": s, "loss": 2.0 / s, "accuracy": s / 10} for s in range(1, 10)] + [
        {"step": 9, "val_loss": 0.4, "val_accuracy": 0.8}]
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records))
    figs = {
        "raster": plot.raster(spikes, title="r"),
        "raster_events": plot.raster(events, unit="µs"),
        "rates": plot.firing_rates({"a": spikes, "b": rng.random(12)}),
        "membrane": plot.membrane(rng.normal(size=(30, 4)), threshold=1.0, spikes=spikes[:, :4]),
        "frames": plot.event_frames(rng.integers(0, 3, (5, 8, 8, 2))),
        "curves": plot.training_curves(str(jsonl)),
        "curves_records": plot.training_curves(records),
    }
    for name, fig in figs.items():
        path = plot.save(fig, tmp_path / "out" / f"{name}.png")
        assert _is_png(path), name
    # the raster draws one point per spike
    fig = plot.raster(spikes)
    assert len(fig.axes[0].collections[0].get_offsets()) == int(spikes.sum())


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="spikes: expected rank 2"):
        plot.raster(np.zeros(5))
    with pytest.raises(ValueError, match="frames"):
        plot.event_frames(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="layers"):
        plot.firing_rates({})
