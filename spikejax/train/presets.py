"""The defaults of ``spikejax train``: one frozen :class:`Preset` per task (and per ``--preset`` of
``train lm``), the one place the values of the preset-driven flags come from.

A flag the command line leaves out is ``None`` after parsing and takes the preset's value; a flag
given overrides it (:meth:`Preset.override`)::

    settings = PRESETS["lm"]["tiny"].override(beta=None, lr=1e-3)   # lr 1e-3, the tiny preset's β
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["Preset", "PRESETS", "DEFAULT_PRESET", "preset_for"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """The values of the preset-driven ``spikejax train`` flags (each field is the flag of that name).

    Training: ``steps`` (optimizer steps), ``batch_size`` (global), ``lr`` (peak, after ``warmup``
    steps), ``weight_decay`` (AdamW, matrices), ``clip`` (global gradient norm), ``eval_every``,
    ``log_every``, ``checkpoint_every`` (steps; 0: only at the end). Model: ``d_model`` (D),
    ``layers``, ``heads``, ``time_steps`` (T), ``mlp_ratio``, ``attention``, ``neuron`` and its
    ``beta`` (membrane decay β, for the neurons that take one) and ``threshold`` θ, ``mix_norm``,
    ``dropout``, ``dtype`` (compute dtype), ``remat`` (training-memory mode, :mod:`spikejax.remat`) and,
    for the language model, ``seq_len`` (context L).
    """

    steps: int
    batch_size: int
    lr: float
    warmup: int
    eval_every: int
    log_every: int
    checkpoint_every: int
    d_model: int
    layers: int
    heads: int
    time_steps: int
    attention: str = "ssa"
    weight_decay: float = 0.1
    clip: float = 1.0
    mlp_ratio: float = 4.0
    neuron: str = "lif"
    beta: float = 0.5
    threshold: float = 0.5
    mix_norm: str = "none"
    dropout: float = 0.0
    dtype: str = "float32"
    remat: str = "none"
    seq_len: int | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "d_model", "layers", "heads", "time_steps"):
            _check_int(name, getattr(self, name), 1)
        for name in ("warmup", "eval_every", "log_every", "checkpoint_every"):
            _check_int(name, getattr(self, name), 0)
        if self.seq_len is not None:
            _check_int("seq_len", self.seq_len, 1)
        for name in ("lr", "weight_decay", "clip", "mlp_ratio", "beta", "threshold", "dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")

    def override(self, **values: Any) -> Preset:
        """This preset with every field of ``values`` that is not ``None`` replaced (names that are not
        fields are ignored, so a whole ``vars(args)`` can be passed)."""
        names = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in values.items() if k in names and v is not None})


def _check_int(name: str, v: Any, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")


PRESETS: dict[str, dict[str, Preset]] = {
    "lm": {
        # CPU quick run: ~118k parameters, about two minutes on two cores.
        "tiny": Preset(d_model=64, layers=2, heads=4, time_steps=4, seq_len=64, batch_size=32, steps=150, lr=3e-3,
                       warmup=15, eval_every=150, log_every=25, checkpoint_every=50, attention="linear"),
        # One GPU, TinyShakespeare: 10.8M parameters (6 x 384, MLP 3.5x), ternary spikes, T=4, context 256,
        # dropout 0.2, 3000 steps (~55 ms per step on one H100 with --dtype bfloat16 --backend pallas; val 1.57
        # in under 3 minutes of training, BENCHMARKS.md). Binary LIF spikes reached only 1.65 in 6600 steps.
        "shakespeare": Preset(d_model=384, layers=6, heads=6, time_steps=4, seq_len=256, batch_size=64, steps=3000,
                              lr=2e-3, warmup=200, eval_every=500, log_every=250, checkpoint_every=1000,
                              attention="hybrid", mlp_ratio=3.5, dropout=0.2, neuron="ternary"),
    },
    # Spikformer on scikit-learn's digits, and `train vision --dataset` with a zoo model
    "vision": {"default": Preset(d_model=64, layers=1, heads=4, time_steps=4, batch_size=64, steps=300, lr=2e-3,
                                 warmup=20, eval_every=100, log_every=50, checkpoint_every=100)},
    # randman on CPU: 10 classes x 100 samples, 50 units, 100 ms in 25 bins of 4 ms
    "temporal": {"default": Preset(d_model=128, layers=1, heads=1, time_steps=25, batch_size=64, steps=400, lr=5e-3,
                                   warmup=20, eval_every=100, log_every=25, checkpoint_every=100)},
    # SHD / SSC: 1 s in 50 bins of 20 ms, 700 channels
    "audio": {"default": Preset(d_model=128, layers=1, heads=1, time_steps=50, batch_size=64, steps=2000, lr=2e-3,
                                warmup=50, eval_every=250, log_every=50, checkpoint_every=250)},
}
"""``{task: {preset name: Preset}}``; ``train lm`` picks one with ``--preset``, the others have one."""

DEFAULT_PRESET: dict[str, str] = {"lm": "tiny", "vision": "default", "temporal": "default", "audio": "default"}
"""The preset of each task when ``--preset`` is not given."""


def preset_for(task: str, name: str | None = None) -> Preset:
    """The preset ``name`` (default: :data:`DEFAULT_PRESET`'s) of ``task``; ``ValueError`` naming the
    argument for an unknown task or preset."""
    if task not in PRESETS:
        raise ValueError(f"task: expected one of {sorted(PRESETS)}, got {task!r}")
    name = DEFAULT_PRESET[task] if name is None else name
    if name not in PRESETS[task]:
        raise ValueError(f"preset: expected one of {sorted(PRESETS[task])} for {task}, got {name!r}")
    return PRESETS[task][name]
