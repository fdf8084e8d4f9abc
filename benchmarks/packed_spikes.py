"""Peak memory of a spiking-transformer training step with and without bit-packed spike residuals.

The model is a :class:`spikejax.nn.SpikingLM` (LIF neurons, membrane shortcut, so every linear
layer inside the blocks reads binary spikes). The *packed* variant swaps those ``nnx.Linear`` layers
for :class:`spikejax.packing.PackedSpikeLinear` (:func:`spikejax.packing.use_packed_spike_linears`),
whose backward keeps the spikes as 1 bit each instead of float32; nothing else changes.

For each variant (run in its own process, so device peak counters are clean) it reports XLA's
compiled ``memory_analysis()`` of the jitted train step (temp + arguments + outputs - aliased) and
the device's ``peak_bytes_in_use`` after running it, plus the step time; the gradients of the two
variants are compared. Usage::

    python benchmarks/packed_spikes.py                       # default size, prints a markdown table
    python benchmarks/packed_spikes.py --small               # tiny (CPU smoke test)
    python benchmarks/packed_spikes.py --compile-only        # XLA buffer analysis only (e.g. on CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from spikejax.nn import SpikingLMConfig
from spikejax.packing import use_packed_spike_linears


def build(args) -> tuple[nnx.Module, jax.Array]:
    cfg = SpikingLMConfig(vocab_size=args.vocab, d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
                          time_steps=args.T, max_len=args.L, attention=args.attention, neuron="lif",
                          shortcut="membrane", norm="pre")
    model = cfg.build(seed=0)
    tokens = jax.random.randint(jax.random.key(1), (args.B, args.L), 0, args.vocab)
    return model, tokens


def run_variant(args, variant: str) -> dict:
    model, tokens = build(args)
    swapped = use_packed_spike_linears(model, tokens[:1]) if variant == "packed" else []
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))

    def train_step(state, tokens):
        model, opt = nnx.merge(graphdef, state)

        def loss_fn(m):
            logits = m(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss, grads, nnx.state((model, opt))

    def loss_only(params):
        m = nnx.merge(graphdef, params)[0]
        return optax.softmax_cross_entropy_with_integer_labels(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    # bytes JAX saves for the backward pass (the vjp residuals), from shapes only
    res = jax.eval_shape(lambda st: jax.vjp(loss_only, st)[1], state)
    analysis_res = int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(res)
                           if hasattr(x, "shape")))
    step = jax.jit(train_step, donate_argnums=0)
    compiled = step.lower(state, tokens).compile()
    ma = compiled.memory_analysis()
    analysis = {k: int(getattr(ma, k)) for k in ("temp_size_in_bytes", "argument_size_in_bytes",
                                                 "output_size_in_bytes", "alias_size_in_bytes")} if ma else {}
    analysis["residual_bytes"] = analysis_res
    dev = jax.devices()[0]
    if args.compile_only:
        return {"variant": variant, "swapped": len(swapped), "step_ms": float("nan"), "loss": float("nan"),
                "peak_bytes_in_use": 0, **analysis, "device": dev.device_kind, "platform": dev.platform}
    loss, grads, state = compiled(state, tokens)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        loss, grads, state = compiled(state, tokens)
    jax.block_until_ready(state)
    dt = (time.perf_counter() - t0) / args.iters
    stats = dev.memory_stats() or {}
    # gradients of a fresh model at the same point (2 sequences), for the equality check
    model0, _ = build(args)
    if variant == "packed":
        use_packed_spike_linears(model0, tokens[:1])
    small = tokens[:2]

    def loss0(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(small[:, :-1]), small[:, 1:]).mean()

    g0 = nnx.jit(nnx.grad(loss0))(model0)
    np.save(args.grad_file + f".{variant}.npy", np.concatenate([np.ravel(np.asarray(x, np.float32))
                                                                 for x in jax.tree.leaves(g0)]))
    return {"variant": variant, "swapped": len(swapped), "step_ms": dt * 1e3, "loss": float(loss),
            "peak_bytes_in_use": int(stats.get("peak_bytes_in_use", 0)), **analysis,
            "device": dev.device_kind, "platform": dev.platform}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke test)")
    p.add_argument("--variant", choices=["baseline", "packed"], help=argparse.SUPPRESS)
    p.add_argument("--d-model", dest="d_model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--L", type=int, default=257)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--attention", default="linear")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--compile-only", dest="compile_only", action="store_true",
                   help="only compile and read memory_analysis() (no step is run, no device peak)")
    p.add_argument("--grad-file", dest="grad_file", default="/tmp/packed_spikes_grads")
    args = p.parse_args()
    if args.small:
        args.d_model, args.heads, args.layers, args.T, args.B, args.L, args.iters = 32, 4, 1, 2, 2, 17, 1
    if args.variant:
        print(json.dumps(run_variant(args, args.variant)))
        return
    results = {}
    for variant in ("baseline", "packed"):
        cmd = [sys.executable, __file__, "--variant", variant] + [a for a in sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode:
            print(out.stdout, out.stderr, file=sys.stderr)
            raise SystemExit(f"{variant} failed")
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    if args.compile_only:
        gdiff = float("nan")
    else:
        ga = np.load(args.grad_file + ".baseline.npy")
        gb = np.load(args.grad_file + ".packed.npy")
        gdiff = float(np.max(np.abs(ga - gb)) / max(np.max(np.abs(ga)), 1e-30))
    b, k = results["baseline"], results["packed"]
    print(f"device: {b['device']} ({b['platform']}), jax {jax.__version__}, date {time.strftime('%Y-%m-%d')}")
    print(f"model: SpikingLM d_model={args.d_model} heads={args.heads} layers={args.layers} T={args.T} "
          f"B={args.B} L={args.L - 1} attention={args.attention} (LIF, membrane shortcut); "
          f"{k['swapped']} linear layers read spikes")
    print("| variant | vjp residuals (MiB) | compiled temp (MiB) | compiled total (MiB) | device peak (MiB) "
          "| step (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in (b, k):
        total = r.get("temp_size_in_bytes", 0) + r.get("argument_size_in_bytes", 0) + r.get(
            "output_size_in_bytes", 0) - r.get("alias_size_in_bytes", 0)
        r["total"] = total
        print(f"| {r['variant']} | {r['residual_bytes'] / 2**20:.1f} | {r.get('temp_size_in_bytes', 0) / 2**20:.1f} | "
              f"{total / 2**20:.1f} | "
              f"{r['peak_bytes_in_use'] / 2**20:.1f} | {r['step_ms']:.2f} |")
    red_t = 1 - k.get("temp_size_in_bytes", 0) / max(b.get("temp_size_in_bytes", 1), 1)
    red_p = 1 - k["peak_bytes_in_use"] / b["peak_bytes_in_use"] if b["peak_bytes_in_use"] else float("nan")
    red_r = 1 - k["residual_bytes"] / b["residual_bytes"]
    print(f"reduction: vjp residuals {red_r:.1%}, compiled temp {red_t:.1%}, device peak {red_p:.1%}; "
          "max relative gradient difference "
          f"{gdiff:.2e}")


if __name__ == "__main__":
    main()
