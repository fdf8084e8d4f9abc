"""Time :class:`spikejax.nn.RecurrentSpiking` (``x_t + s_{t-1} W_rec``, a layer-level ``lax.scan``)
against the same neuron without recurrence (``CubaLIF``, the custom-neuron dispatch) and snnTorch
``RSynaptic`` (a Python loop over time), forward and forward+backward (gradients of ``x`` and ``W_rec``).

For each (T, B, F) the CUBA neuron has α = 0.9, β = 0.8, threshold 1, snnTorch's order
(``reset_delay=True, detach_reset=True``). Each JAX op is jitted; a sample runs it ``--inner`` times
back to back and waits once; the median of ``--reps`` samples divided by ``--inner`` is reported
(PyTorch alike, one synchronize per sample). The per-step matmul is ``2·B·F²`` FLOPs, reported as
the achieved TFLOP/s of the recurrent forward.

Usage::

    python -m benchmarks.recurrent [--quick] [--backend xla|pallas|auto] [--out DIR]

Writes ``recurrent.md`` and ``recurrent.json`` under ``--out`` (default ``$OUT`` or ``.``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

import spikejax.nn as snn

SHAPES = [(128, 32, 256), (128, 32, 1024), (512, 8, 512), (64, 256, 2048)]
QUICK = [(32, 8, 64), (64, 16, 128)]


def _time(fn, inner: int, reps: int) -> float:
    out = fn()
    jax.block_until_ready(out)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def _neuron(backend: str) -> snn.CubaLIF:
    return snn.CubaLIF(alpha=0.9, beta=0.8, threshold=1.0, reset_delay=True, detach_reset=True, backend=backend)


def time_jax(T: int, B: int, F: int, backend: str, inner: int, reps: int) -> dict[str, float]:
    x = jax.random.normal(jax.random.key(0), (T, B, F)) + 0.3
    layer = snn.RecurrentSpiking(_neuron(backend), F, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    plain = _neuron(backend)

    @jax.jit
    def rec_fwd(state, x):
        return nnx.merge(graphdef, state)(x)

    @jax.jit
    def rec_bwd(state, x):
        def loss(state, x):
            return jnp.sum(nnx.merge(graphdef, state)(x))
        return jax.grad(loss, argnums=(0, 1))(state, x)

    ff_fwd = jax.jit(lambda x: plain(x))
    ff_bwd = jax.jit(jax.grad(lambda x: jnp.sum(plain(x))))
    return {
        "recurrent_fwd_ms": 1e3 * _time(lambda: rec_fwd(state, x), inner, reps),
        "recurrent_fwd_bwd_ms": 1e3 * _time(lambda: rec_bwd(state, x), inner, reps),
        "feedforward_fwd_ms": 1e3 * _time(lambda: ff_fwd(x), inner, reps),
        "feedforward_fwd_bwd_ms": 1e3 * _time(lambda: ff_bwd(x), inner, reps),
    }


def time_snntorch(T: int, B: int, F: int, inner: int, reps: int) -> dict[str, float]:
    try:
        import snntorch
        import torch
    except ImportError:
        return {}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    ref = snntorch.RSynaptic(alpha=0.9, beta=0.8, threshold=1.0, linear_features=F).to(dev)
    x = (torch.randn(T, B, F, device=dev) + 0.3).requires_grad_(True)

    def run(backward: bool):
        ref.reset_mem()
        out = torch.stack([ref(x[t])[0] for t in range(T)])
        if backward:
            out.sum().backward()
        return out

    def sample(backward):
        def go():
            out = run(backward)
            if dev == "cuda":
                torch.cuda.synchronize()
            return out
        go()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                go()
            times.append((time.perf_counter() - t0) / inner)
        return statistics.median(times)

    return {"snntorch_fwd_ms": 1e3 * sample(False), "snntorch_fwd_bwd_ms": 1e3 * sample(True)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="two small shapes (CPU smoke run)")
    ap.add_argument("--backend", default="xla", help="the feed-forward neuron's backend (xla, pallas, auto)")
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args(argv)
    rows = []
    for T, B, F in QUICK if args.quick else SHAPES:
        row = {"T": T, "B": B, "F": F, **time_jax(T, B, F, args.backend, args.inner, args.reps)}
        if not args.no_torch:
            row.update(time_snntorch(T, B, F, max(1, args.inner // 2), args.reps))
        row["recurrent_fwd_tflops"] = 2 * T * B * F * F / (row["recurrent_fwd_ms"] * 1e-3) / 1e12
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k not in ("T", "B", "F")]
    lines = [f"# RecurrentSpiking timing ({jax.devices()[0].device_kind}, backend={args.backend})", "",
             "| T | B | F | " + " | ".join(keys) + " |", "|---" * (3 + len(keys)) + "|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['B']} | {r['F']} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys)
                     + " |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "recurrent.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "recurrent.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
