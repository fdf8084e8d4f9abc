"""Training for spikejax models: Optax train/eval steps, data pipelines, orbax checkpoints,
data parallelism over a device mesh, spiking metrics and energy reports, and the
``spikejax train`` / ``spikejax sample`` commands.

- :mod:`spikejax.train.data`: char-level text (Python's own ``pydoc_data`` topics by default) and
  scikit-learn digits; batches are a pure function of ``(seed, step)``, so the data position is the step.
- :mod:`spikejax.train.steps`: optimizer (AdamW, warm-up + cosine, clipping), jit-compiled train/eval steps.
- :mod:`spikejax.train.probes`: zero probes for the surrogate-gradient magnitude and the model-level
  means of the per-layer spiking metrics; firing rates, dead fractions, synaptic-operation counts and
  the 45 nm energy estimate (MAC 4.6 pJ, AC 0.9 pJ) vs the same model as an ANN come from
  :mod:`spikejax.metrics` (recorded without changing model code).
- :mod:`spikejax.train.checkpoint`: orbax ``CheckpointManager`` with config checks.
- :mod:`spikejax.train.sharding`: ``Mesh`` over all devices, batch sharded, parameters replicated.
- :mod:`spikejax.train.losses`: the tasks' objectives, evaluation sums and summaries (pure functions).
- :mod:`spikejax.train.tasks` (char-level LM, digits) and :mod:`spikejax.train.tasks_data` (image / event
  sets, SHD / SSC, randman): the :class:`~spikejax.train.loop.Task` factories.
- :mod:`spikejax.train.presets`: the frozen :class:`~spikejax.train.presets.Preset` of every task, the one
  place the command's defaults come from.
- :mod:`spikejax.train.loop`: :func:`fit`, the training loop (no branch on the task).
- :mod:`spikejax.train.restore`: :func:`load_checkpoint` / :func:`load_lm`, a trained model for sampling
  and export (no optimizer built); :mod:`spikejax.train.vocab`, :mod:`spikejax.train.sampling`: text.
- :mod:`spikejax.train.commands` and :mod:`spikejax.train.resume`: the ``spikejax train`` / ``sample``
  command line (parsing only) and its ``--resume`` flags.
"""

from spikejax.train.checkpoint import CheckpointError, CheckpointManager
from spikejax.train.data import CharDataset, DigitsDataset, default_text
from spikejax.train.loop import TrainConfig, fit
from spikejax.train.steps import TrainState, make_optimizer

__all__ = [
    "CharDataset",
    "CheckpointError",
    "CheckpointManager",
    "DigitsDataset",
    "TrainConfig",
    "TrainState",
    "default_text",
    "fit",
    "make_optimizer",
]
