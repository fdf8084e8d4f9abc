"""Tiny tasks shared by the training tests (CPU, seconds)."""

from spikejax.train.commands import lm_task
from spikejax.train.data import CharDataset, default_text
from spikejax.train.loop import TrainConfig

TEXT = default_text()[:20000]


def tiny_lm(**overrides):
    ds = CharDataset(TEXT)
    kw = dict(d_model=16, layers=1, heads=2, time_steps=2, seq_len=16, attention="linear",
              neuron_kwargs={"beta": 0.5, "threshold": 0.5}, eval_batches=2, eval_batch_size=8)
    kw.update(overrides)
    return lm_task(ds, **kw)


def tiny_cfg(**overrides):
    kw = dict(steps=6, batch_size=8, lr=1e-2, warmup=2, log_every=2, eval_every=0, checkpoint_every=3,
              progress=False)
    kw.update(overrides)
    return TrainConfig(**kw)
