"""``spikejax train lm``, ``spikejax train vision`` and ``spikejax sample``.

    spikejax train lm                                   # char-level SpikingLM on Python's own docs (CPU, < 3 min)
    spikejax train lm --data tinyshakespeare.txt --preset shakespeare --out runs/tiny   # the GPU set-up
    spikejax train lm --out runs/a --resume             # continue a run exactly where its checkpoint left it
    spikejax train vision                               # Spikformer on scikit-learn's digits
    spikejax sample --checkpoint runs/a --prompt "def "
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["train_main", "sample_main", "lm_task", "vision_task", "load_checkpoint", "load_lm", "Vocabulary",
           "LM_PRESETS"]

LM_PRESETS: dict[str, dict[str, Any]] = {
    # CPU quick run: ~118k parameters, about two minutes on two cores.
    "tiny": dict(d_model=64, layers=2, heads=4, time_steps=4, seq_len=64, batch_size=32, steps=150, lr=3e-3,
                 warmup=15, eval_every=150, log_every=25, checkpoint_every=50, attention="linear"),
    # One GPU, TinyShakespeare: 10.8M parameters (6 x 384, MLP 3.5x), ternary spikes, T=4, context 256,
    # dropout 0.2, 3000 steps (~55 ms per step on one H100 with --dtype bfloat16 --backend pallas; val 1.57
    # in under 3 minutes of training, BENCHMARKS.md). Binary LIF spikes reached only 1.65 in 6600 steps.
    "shakespeare": dict(d_model=384, layers=6, heads=6, time_steps=4, seq_len=256, batch_size=64, steps=3000,
                        lr=2e-3, warmup=200, eval_every=500, log_every=250, checkpoint_every=1000,
                        attention="hybrid", mlp_ratio=3.5, dropout=0.2, neuron="ternary"),
}
NEURON_DEFAULTS: dict[str, Any] = {"beta": 0.5, "threshold": 0.5}


def _pos_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _rate(text: str) -> float:
    v = float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text}")
    return v


def _nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def _common_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=_pos_int, help="optimizer steps in total")
    g.add_argument("--batch-size", type=_pos_int, help="global batch size (divisible by the device count)")
    g.add_argument("--lr", type=float, help="peak learning rate (AdamW, warm-up then cosine to 0.1x)")
    g.add_argument("--warmup", type=_nonneg_int, help="warm-up steps")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    g.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    g.add_argument("--backend", default="xla", help="neuron backend: xla, pallas, triton, auto")
    g.add_argument("--out", help="run directory: checkpoints, metrics.jsonl, summary.json (default runs/<task>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    g.add_argument("--eval-every", type=_nonneg_int, help="evaluate every N steps (0: only at the end)")
    g.add_argument("--log-every", type=_nonneg_int, help="log metrics every N steps")
    g.add_argument("--checkpoint-every", type=_nonneg_int, help="checkpoint every N steps (0: only at the end)")
    g.add_argument("--time-limit", type=float, help="stop after this many seconds of training (checkpointed; "
                                                   "--resume continues the same schedule)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("multi-host (jax.distributed.initialize)")
    m.add_argument("--coordinator", help="host:port of process 0")
    m.add_argument("--num-processes", type=_pos_int)
    m.add_argument("--process-id", type=_nonneg_int)


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=_pos_int, help="model width D")
    g.add_argument("--layers", type=_pos_int, help="transformer blocks")
    g.add_argument("--heads", type=_pos_int, help="attention heads (divide D)")
    g.add_argument("--time-steps", type=_pos_int, help="SNN time steps T")
    g.add_argument("--mlp-ratio", type=float, help="MLP hidden width / D (default 4)")
    g.add_argument("--attention", help="linear, sliding, hybrid, ssa, sdsa")
    g.add_argument("--window", type=_pos_int, help="window of sliding / hybrid attention")
    g.add_argument("--neuron", help="lif, if, alif, plif, ternary, multilevel (default: the preset's, else lif)")
    g.add_argument("--beta", type=float, default=NEURON_DEFAULTS["beta"], help="membrane decay of the neurons")
    g.add_argument("--threshold", type=float, default=NEURON_DEFAULTS["threshold"], help="firing threshold")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of activations and matmuls (parameters and optimizer stay float32; "
                        "bfloat16 is faster on GPUs; stored in the run's model config)")


def neuron_kwargs(neuron: str, beta: float, threshold: float) -> dict[str, Any]:
    """The constructor arguments among (β, θ) that ``neuron`` takes."""
    if neuron in ("lif", "alif", "ternary", "multilevel"):
        return {"beta": beta, "threshold": threshold}
    if neuron in ("if", "plif"):
        return {"threshold": threshold}
    return {}


def _pick(args, preset: dict, name: str):
    v = getattr(args, name, None)
    return preset[name] if v is None else v


def _train_config(args, preset: dict, task: str):
    from spikejax.train.loop import TrainConfig

    if args.resume and not args.out:
        raise SystemExit("--resume: give --out DIR, the run directory to continue")
    out = args.out or os.path.join("runs", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    return TrainConfig(
        steps=_pick(args, preset, "steps"), batch_size=_pick(args, preset, "batch_size"),
        lr=_pick(args, preset, "lr"), warmup=_pick(args, preset, "warmup"), weight_decay=args.weight_decay,
        clip=args.clip, seed=args.seed, log_every=_pick(args, preset, "log_every"),
        eval_every=_pick(args, preset, "eval_every"), checkpoint_every=_pick(args, preset, "checkpoint_every"),
        out=out, resume=args.resume, progress=not args.no_progress, time_limit=args.time_limit)


# --- language model ------------------------------------------------------------------------------


def _lm_loss(model, batch, key=None):
    x, y = batch
    logits = model(x, dropout_key=key)  # float32 (the models' readout)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": (logits.argmax(-1) == y).mean()}


def _lm_eval(model, batch):
    x, y = batch
    logits = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"loss_sum": ce.sum(), "count": jnp.asarray(ce.size, jnp.float32),
            "correct": (logits.argmax(-1) == y).sum().astype(jnp.float32)}


def _lm_summary(s: dict) -> dict:
    loss = s["loss_sum"] / s["count"]
    return {"val_loss": loss, "val_bpc": loss / math.log(2), "val_accuracy": s["correct"] / s["count"]}


def _generate(model, ds, prompt: str, n: int, seed: int, temperature: float, top_k: int | None) -> str:
    ids = ds.encode(prompt)
    room = model.config.max_len - len(ids)
    if room < 1:
        raise ValueError(f"prompt: {len(ids)} characters leave no room in max_len={model.config.max_len}")
    n = min(n, room)
    model.eval()
    out = model.generate(jnp.asarray(ids)[None], n, key=jax.random.key(seed), temperature=temperature, top_k=top_k)
    return ds.decode(np.asarray(out)[0])


def lm_task(ds, *, d_model: int, layers: int, heads: int, time_steps: int, seq_len: int, attention: str,
            window: int | None = None, window_softmax: bool | None = None, mix_norm: str = "none",
            mlp_ratio: float = 4.0, neuron: str = "lif", neuron_kwargs: dict | None = None, backend: str = "xla",
            eval_batches: int = 8, eval_batch_size: int = 32, sample_chars: int = 0,
            sample_prompt: str | None = None, dtype: str = "float32", dropout: float = 0.0):
    """The char-level language-model :class:`~spikejax.train.loop.Task` on a :class:`CharDataset`
    (``dtype``: the model's compute dtype, ``"float32"`` or ``"bfloat16"``; ``dropout``: the
    model's training dropout rate; ``mix_norm``: the attention's norm before its ``attn_neuron``)."""
    from spikejax.nn import SpikingLMConfig
    from spikejax.train.loop import Task

    akw: dict[str, Any] = {}
    if attention in ("linear", "hybrid"):
        akw["eps"] = 1.0  # the nn default, stored explicitly so run configs say it
    if attention in ("sliding", "hybrid"):
        akw["window"] = window or min(64, seq_len)
        # hybrid: softmax window + linear long range; sliding: the spike-driven (no softmax) window unless asked
        akw["softmax"] = attention == "hybrid" if window_softmax is None else bool(window_softmax)
    if mix_norm != "none":
        akw["mix_norm"] = mix_norm
    cfg = SpikingLMConfig(vocab_size=ds.vocab_size, d_model=d_model, num_heads=heads, num_layers=layers,
                          mlp_ratio=mlp_ratio, time_steps=time_steps, max_len=seq_len, attention=attention,
                          attention_kwargs=akw, neuron=neuron, neuron_kwargs=dict(neuron_kwargs or {}),
                          backend=backend, dtype=dtype, dropout=dropout)

    def after(model, say):
        if not sample_chars:
            return {}
        prompt = sample_prompt if sample_prompt is not None else ds.decode(ds.val[:max(1, min(16, seq_len // 4))])
        text = _generate(model, ds, prompt, sample_chars, 0, 0.8, None)
        say("sample:\n" + text)
        return {"sample": text}

    return Task(
        name="lm", model_config=cfg, loss_fn=_lm_loss, eval_fn=_lm_eval,
        train_batch=lambda seed, step, b: ds.batch(seed, step, b, seq_len),
        eval_batches=ds.eval_batches(eval_batch_size, seq_len, eval_batches),
        eval_summary=_lm_summary, units_per_batch=lambda b: b * seq_len, unit="token",
        data_meta=ds.meta(), after=after)


# --- vision ----------------------------------------------------------------------------------------


def _vision_loss(model, batch, key=None):
    del key  # no stochastic regulariser in the vision model
    x, y = batch
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), {
        "accuracy": (logits.argmax(-1) == y).mean()}


def _vision_eval(model, batch):
    x, y, mask = batch
    logits = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"loss_sum": (ce * mask).sum(), "count": mask.sum(), "correct": ((logits.argmax(-1) == y) * mask).sum()}


def _vision_summary(s: dict) -> dict:
    return {"val_loss": s["loss_sum"] / s["count"], "val_accuracy": s["correct"] / s["count"]}


def vision_task(ds, *, d_model: int, layers: int, heads: int, time_steps: int, patch_size: int = 2,
                attention: str = "ssa", mlp_ratio: float = 4.0, neuron: str = "lif",
                neuron_kwargs: dict | None = None, backend: str = "xla", eval_batch_size: int = 120,
                dtype: str = "float32"):
    """Spikformer on :class:`DigitsDataset` (8×8×1 images, 10 classes; ``dtype`` the compute dtype)."""
    from spikejax.nn import SpikformerConfig
    from spikejax.train.loop import Task

    cfg = SpikformerConfig(image_size=8, in_channels=1, patch_size=patch_size, num_classes=10, d_model=d_model,
                           num_heads=heads, num_layers=layers, mlp_ratio=mlp_ratio, time_steps=time_steps,
                           attention=attention, neuron=neuron, neuron_kwargs=dict(neuron_kwargs or {}),
                           backend=backend, dtype=dtype)
    return Task(
        name="vision", model_config=cfg, loss_fn=_vision_loss, eval_fn=_vision_eval,
        train_batch=lambda seed, step, b: ds.batch(seed, step, b), eval_batches=ds.eval_batches(eval_batch_size),
        eval_summary=_vision_summary, units_per_batch=lambda b: b, unit="image", data_meta=ds.meta())


VISION_DEFAULTS = dict(d_model=64, layers=1, heads=4, time_steps=4, batch_size=64, steps=300, lr=2e-3, warmup=20,
                       eval_every=100, log_every=50, checkpoint_every=100, attention="ssa")


# --- commands ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikejax train", description="Train a spiking model.")
    sub = p.add_subparsers(dest="task", required=True)
    lm = sub.add_parser("lm", help="character-level SpikingLM (default text: Python's pydoc topics)")
    lm.add_argument("--data", help="a UTF-8 text file (e.g. tinyshakespeare.txt), split 90/10; "
                                   "default: Python's pydoc_data topics (no download)")
    lm.add_argument("--preset", choices=sorted(LM_PRESETS), default="tiny",
                    help="size preset; any flag below overrides it (default: tiny, a CPU run)")
    lm.add_argument("--seq-len", type=_pos_int, help="context length L")
    lm.add_argument("--eval-batches", type=_pos_int, default=8, help="validation batches per evaluation")
    lm.add_argument("--window-softmax", action=argparse.BooleanOptionalAction, default=None,
                    help="softmax over the window of sliding / hybrid attention (default: on for hybrid, "
                         "off for sliding, i.e. the spike-driven window)")
    lm.add_argument("--mix-norm", choices=("none", "layer"),
                    help="LayerNorm on the attention's mixed output before its spiking neuron "
                         "(default: the preset's)")
    lm.add_argument("--dropout", type=_rate, help="dropout rate on the embedding and every branch output "
                    "(training only; one mask shared over the T steps; default: the preset's)")
    lm.add_argument("--sample-chars", type=_nonneg_int, default=120, help="characters sampled after training")
    _model_flags(lm)
    _common_flags(lm)
    vi = sub.add_parser("vision", help="Spikformer on scikit-learn's 8x8 digits")
    vi.add_argument("--patch-size", type=_pos_int, default=2)
    _model_flags(vi)
    _common_flags(vi)
    return p


def train_main(argv: list[str] | None = None) -> dict[str, Any]:
    """``spikejax train {lm,vision} [flags]``; returns the training summary."""
    args = _parser().parse_args(argv)
    from spikejax.train import sharding as shd
    from spikejax.train.data import CharDataset, DigitsDataset, default_text
    from spikejax.train.loop import fit

    shd.init_distributed(args.coordinator, args.num_processes, args.process_id)
    preset = LM_PRESETS[args.preset] if args.task == "lm" else VISION_DEFAULTS
    neuron = _pick(args, {"neuron": "lif", **preset}, "neuron")
    nkw = neuron_kwargs(neuron, args.beta, args.threshold)
    if args.task == "lm":
        ds = CharDataset.from_file(args.data) if args.data else CharDataset(default_text(), name="pydoc_data.topics")
        task = lm_task(ds, d_model=_pick(args, preset, "d_model"), layers=_pick(args, preset, "layers"),
                       heads=_pick(args, preset, "heads"), time_steps=_pick(args, preset, "time_steps"),
                       seq_len=_pick(args, preset, "seq_len"), attention=_pick(args, preset, "attention"),
                       window=args.window, window_softmax=args.window_softmax,
                       mix_norm=_pick(args, {"mix_norm": "none", **preset}, "mix_norm"),
                       mlp_ratio=_pick(args, {"mlp_ratio": 4.0, **preset}, "mlp_ratio"),
                       neuron=neuron, neuron_kwargs=nkw, backend=args.backend,
                       eval_batches=args.eval_batches, sample_chars=args.sample_chars, dtype=args.dtype,
                       dropout=_pick(args, {"dropout": 0.0, **preset}, "dropout"))
    else:
        task = vision_task(DigitsDataset(), d_model=_pick(args, preset, "d_model"),
                           layers=_pick(args, preset, "layers"), heads=_pick(args, preset, "heads"),
                           time_steps=_pick(args, preset, "time_steps"),
                           patch_size=args.patch_size, attention=_pick(args, preset, "attention"),
                           mlp_ratio=args.mlp_ratio or 4.0, neuron=neuron,
                           neuron_kwargs=nkw, backend=args.backend, dtype=args.dtype)
    cfg = _train_config(args, preset, args.task)
    print(f"spikejax train {args.task}: data {task.data_meta['name']}, run directory {cfg.out}", flush=True)
    return fit(task, cfg)


def sample_main(argv: list[str] | None = None) -> str:
    """``spikejax sample --checkpoint DIR --prompt TEXT``: generate text from a trained SpikingLM."""
    p = argparse.ArgumentParser(prog="spikejax sample", description="Generate text from a SpikingLM checkpoint.")
    p.add_argument("--checkpoint", required=True, help="run directory of `spikejax train lm` (or its checkpoints/)")
    p.add_argument("--prompt", default="\n", help="text to continue (characters of the training vocabulary)")
    p.add_argument("--chars", type=_pos_int, default=200, help="characters to generate (up to the context length)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=_pos_int)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model, ds = load_lm(args.checkpoint)
    try:
        text = _generate(model, ds, args.prompt, args.chars, args.seed, args.temperature, args.top_k)
    except ValueError as e:
        raise SystemExit(f"spikejax sample: error: {e}") from None
    print(text)
    return text


def load_checkpoint(checkpoint: str):
    """``(model, meta)`` restored from a ``spikejax train`` run directory (or its ``checkpoints/``):
    a :class:`~spikejax.nn.SpikingLM` or :class:`~spikejax.nn.Spikformer` with the latest weights
    and the stored metadata (``meta["model"]`` config, ``meta["data"]``, ``meta["train"]``)."""
    from spikejax.nn import SpikformerConfig, SpikingLMConfig
    from spikejax.train.checkpoint import CheckpointError, CheckpointManager, read_meta
    from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

    directory = os.path.join(checkpoint, "checkpoints") if os.path.isdir(os.path.join(checkpoint, "checkpoints")) \
        else checkpoint
    _, meta = read_meta(directory)
    configs = {"lm": (SpikingLMConfig, _lm_loss, _lm_eval), "vision": (SpikformerConfig, _vision_loss, _vision_eval)}
    if meta.get("task") not in configs:
        raise CheckpointError(f"checkpoint: {directory!r} has unknown task {meta.get('task')!r}")
    config_cls, loss_fn, eval_fn = configs[meta["task"]]
    split = ModelSplit(config_cls.from_dict(meta["model"]).build(seed=0))
    t = meta["train"]
    tx = make_optimizer(t["lr"], t["steps"], warmup=t["warmup"], weight_decay=t["weight_decay"], clip=t["clip"])
    template = make_steps(split, tx, loss_fn, eval_fn, None).init()
    mngr = CheckpointManager(directory, meta, save_every=1, resume=True)
    try:
        state, _ = mngr.restore(template)
    finally:
        mngr.close()
    return split.merge(state.params, state.stats), meta


class Vocabulary:
    """The character vocabulary stored in a language-model checkpoint's metadata."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        missing = sorted({c for c in text if c not in self.stoi})
        if missing:
            raise ValueError(f"prompt: characters {missing!r} are not in the training vocabulary")
        return np.array([self.stoi[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def load_lm(checkpoint: str):
    """``(SpikingLM, Vocabulary)`` restored from a ``spikejax train lm`` run directory."""
    import json

    from spikejax.train.checkpoint import CheckpointError

    model, meta = load_checkpoint(checkpoint)
    if meta.get("task") != "lm":
        raise CheckpointError(f"checkpoint: {checkpoint!r} is a {meta.get('task')!r} run, not a language model")
    return model, Vocabulary(json.loads(meta["data"]["chars"]))
