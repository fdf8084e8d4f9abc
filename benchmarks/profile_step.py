"""Where a zoo model's training step spends its GPU time: the kernels of the compiled step, by name.

Builds the same step as :mod:`benchmarks.models` (forward, cross-entropy, backward, clip, AdamW at
batch 64, 32x32x3, T = 4), runs ``--warmup`` steps, traces ``--steps`` steps with
``jax.profiler``, and sums the duration of every event on the GPU planes' kernel lines per kernel
name (``jax.profiler.ProfileData``), printed as ms per step, largest first, with the share of the
summed kernel time and a coarse category (matmul / conv, the Pallas neuron kernels, reductions
and the rest of XLA's fusions, copies / transposes).

Usage (GPU)::

    python -m benchmarks.profile_step --model spikformer_cifar10 --dtype float32 --top 40
"""

from __future__ import annotations

import argparse
import collections
import glob
import tempfile

from benchmarks.models import build_spikejax_step


def category(name: str) -> str:
    """A coarse class of a GPU kernel from its name."""
    n = name.lower()
    if any(k in n for k in ("gemm", "cutlass", "sm90", "xmma", "conv", "wgrad", "dgrad", "implicit", "cudnn", "nvjet")):
        return "matmul/conv"
    if any(k in n for k in ("engine", "scan", "pallas", "mosaic", "neuron", "_fwd", "_bwd")):
        return "pallas"
    if "transpose" in n or "copy" in n or "memcpy" in n or "memset" in n:
        return "copy/transpose"
    if "reduce" in n:
        return "reduce"
    return "fusion/other"


def kernel_times(trace_dir: str) -> tuple[dict[str, float], dict[str, int]]:
    """``({kernel name: total ns}, {kernel name: count})`` over the GPU planes of the trace."""
    import jax

    totals: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
        data = jax.profiler.ProfileData.from_file(path)
        for plane in data.planes:
            if not plane.name.startswith("/device:GPU"):
                continue
            for line in plane.lines:
                if "XLA Ops" in line.name or "Modules" in line.name or "Steps" in line.name:
                    continue  # op / module lines repeat the kernels' time
                for ev in line.events:
                    totals[ev.name] += ev.duration_ns
                    counts[ev.name] += 1
    return totals, counts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="spikformer_cifar10")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="pallas")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args(argv)

    import jax

    step, _, compile_s, _ = build_spikejax_step(args.model, args.dtype, args.backend, args.batch, args.image,
                                                args.T)
    for _ in range(args.warmup):
        loss = step()
    jax.block_until_ready(loss)
    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir):
        for _ in range(args.steps):
            loss = step()
        jax.block_until_ready(loss)
    totals, counts = kernel_times(trace_dir)
    total = sum(totals.values())
    by_cat: dict[str, float] = collections.defaultdict(float)
    for name, ns in totals.items():
        by_cat[category(name)] += ns
    print(f"{args.model} {args.dtype} backend={args.backend}: compile {compile_s:.1f} s; "
          f"summed kernel time {total / 1e6 / args.steps:.3f} ms/step over {len(totals)} kernels")
    for cat, ns in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"  {cat:16s} {ns / 1e6 / args.steps:8.3f} ms/step  {100 * ns / total:5.1f} %")
    print(f"{'ms/step':>9s} {'%':>5s} {'calls':>5s}  kernel")
    for name, ns in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{ns / 1e6 / args.steps:9.3f} {100 * ns / total:5.1f} {counts[name] // args.steps:5d}  {name[:150]}")


if __name__ == "__main__":
    main()
