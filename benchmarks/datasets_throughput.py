"""Input-pipeline throughput on CPU: samples/s of spikejax.datasets.Pipeline (grain) for an event set
(N-MNIST-format files written to a temporary folder, tonic's reader + ToFrame) and randman, with 0
(threads) and N worker processes, plus spikejax.datasets.to_frame (JAX binning, jit + vmap) on the
same events.

    python benchmarks/datasets_throughput.py --samples 512 --batch-size 64 --workers 0 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _write_nmnist(root: str, n: int, events: int, seed: int = 0) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from dataset_files import random_xytp, write_nmnist_bin

    rng = np.random.default_rng(seed)
    for i in range(n):
        x, y, t, p = random_xytp(rng, events, 34, 34, t_max=300_000)
        write_nmnist_bin(os.path.join(root, "Train", str(i % 10), f"{i:05d}.bin"), x, y, t, p)


def _rate(pipe, batches: int) -> float:
    it = pipe.iterate(0)
    next(it)  # start-up (workers, first reads) not timed
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * pipe.batch_size / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=512, help="N-MNIST-format files to write")
    ap.add_argument("--events", type=int, default=4000, help="events per file (real N-MNIST: ~4k)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8, help="timed batches per configuration")
    ap.add_argument("--time-bins", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from spikejax import datasets as D

    rows = []
    with tempfile.TemporaryDirectory() as root:
        _write_nmnist(root, args.samples, args.events)
        nmnist = D.load("nmnist", root, "train")
        randman = D.load("randman", train_per_class=max(1, args.samples // 10))
        for name, src in (("nmnist (tonic read + ToFrame)", nmnist), ("randman (ToFrame)", randman)):
            enc = D.EventFrames(src.sensor_size, time_bins=args.time_bins)
            for w in args.workers:
                pipe = D.Pipeline(src, batch_size=args.batch_size, encode=enc, seed=0, shard_index=0,
                                  shard_count=1, num_workers=w)
                rows.append((name, f"{w} workers" if w else "threads", _rate(pipe, args.batches)))
        # JAX binning of the same N-MNIST events, padded to a fixed length
        cols, valid = zip(*(D.pad_events(nmnist[i][0], args.events) for i in range(args.batch_size)), strict=True)
        batch = {f: jnp.stack([c[f] for c in cols]) for f in cols[0]}
        valid = jnp.stack(valid)
        fn = jax.jit(jax.vmap(lambda c, v: D.to_frame(c, (34, 34, 2), n_time_bins=args.time_bins, valid=v,
                                                      layout="THWP")))
        fn(batch, valid).block_until_ready()
        t0 = time.perf_counter()
        for _ in range(args.batches):
            fn(batch, valid).block_until_ready()
        rows.append(("to_frame (jit+vmap, binning only)", jax.devices()[0].platform,
                     args.batches * args.batch_size / (time.perf_counter() - t0)))
    print(f"| pipeline | reading | samples/s |   (batch {args.batch_size}, T={args.time_bins}, "
          f"{args.events} events/sample, {os.cpu_count()} CPUs)")
    print("|---|---|---:|")
    for name, how, rate in rows:
        print(f"| {name} | {how} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
