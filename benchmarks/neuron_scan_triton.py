"""Time the neuron scan (LIF, forward and forward+backward) per backend against SpikingJelly 2.0.

A minimal timing script for the Triton backend (``benchmarks/neuron_scan.py`` is the full one):
every backend in ``spikejax.available_backends()`` and SpikingJelly's fused multi-step LIF at
(T, M) = (128, 1M), (32, 64K), (512, 16K), (8, 4M) in float32 and bfloat16. The neuron is
SpikingJelly's default LIF: τ = 2 with decay_input (H = V + (X - V)/τ), hard reset to 0, sigmoid
surrogate (α = 4). Forward+backward is one ``jax.vjp`` of the spikes w.r.t. x (all parameter
gradients are computed by the kernels too) against ``out.backward(g)`` in PyTorch.

    python benchmarks/neuron_scan_triton.py [--shapes 128x1048576,...] [--sweep] [--json out.json]

``--sweep`` also times Triton launch configurations (``SPIKEJAX_TRITON_BLOCK``/``_WARPS``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

import spikejax as sj

SHAPES = [(128, 1 << 20), (32, 1 << 16), (512, 1 << 14), (8, 1 << 22)]
HBM_BYTES_PER_S = 2.9e12  # measured copy bandwidth of the H100 here (DESIGN.md)


def _time(fn, reps: int = 5, inner: int = 5) -> float:
    """Median over ``reps`` of the mean time of ``inner`` back-to-back calls, in ms."""
    jax.block_until_ready(fn())
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            r = fn()
        jax.block_until_ready(r)
        out.append((time.perf_counter() - t0) / inner * 1e3)
    return statistics.median(out)


def time_spikejax(backend: str, T: int, M: int, dtype) -> tuple[float, float]:
    x = (jax.random.normal(jax.random.key(0), (T, M), jnp.float32) + 0.5).astype(dtype)
    g = jax.random.normal(jax.random.key(1), (T, M), jnp.float32).astype(dtype)

    def spikes(x):
        return sj.lif(x, tau=2.0, reset="zero", surrogate="sigmoid", backend=backend)[0]

    fwd = jax.jit(spikes)
    fwd_bwd = jax.jit(lambda x, g: jax.vjp(spikes, x)[1](g)[0])
    return _time(lambda: fwd(x)), _time(lambda: fwd_bwd(x, g))


def time_spikingjelly(T: int, M: int, dtype) -> tuple[float, float] | str:
    try:
        import torch
        from spikingjelly.activation_based import neuron
    except ImportError as err:  # pragma: no cover - depends on the install
        return f"not installed: {err}"
    tdt = {jnp.float32: torch.float32, jnp.bfloat16: torch.bfloat16}[dtype]
    node = neuron.LIFNode(tau=2.0, step_mode="m").cuda()
    x = (torch.randn(T, M, device="cuda") + 0.5).to(tdt).requires_grad_(True)
    g = torch.randn(T, M, device="cuda").to(tdt)

    def fwd():
        node.reset()
        with torch.no_grad():
            return node(x)

    def fwd_bwd():
        node.reset()
        out = node(x)
        out.backward(g)
        return x.grad

    def timed(fn, reps=5, inner=5):
        fn()
        torch.cuda.synchronize()
        res = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            torch.cuda.synchronize()
            res.append((time.perf_counter() - t0) / inner * 1e3)
        return statistics.median(res)

    return timed(fwd), timed(fwd_bwd)


def floor_ms(T: int, M: int, dtype, backend: str) -> float:
    """Bytes moved / HBM bandwidth for the Triton plan: fwd x, s, H(f32); bwd g_s, H, g_x."""
    e = jnp.dtype(dtype).itemsize
    return T * M * (3 * e + 2 * 4 + e) / HBM_BYTES_PER_S * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(f"{t}x{m}" for t, m in SHAPES))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtypes = [getattr(jnp, d) for d in args.dtypes.split(",")]
    backends = sj.available_backends()
    print(f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; backends {backends}")
    rows = []
    print("| T | M | dtype | impl | fwd ms | fwd+bwd ms | floor fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|")
    for T, M in shapes:
        for dt in dtypes:
            results = {}
            for b in backends:
                results[b] = time_spikejax(b, T, M, dt)
            if args.sweep and "triton" in backends:
                for block, warps in [(256, 2), (512, 4), (1024, 8), (2048, 8)]:
                    os.environ["SPIKEJAX_TRITON_BLOCK"], os.environ["SPIKEJAX_TRITON_WARPS"] = (
                        str(block), str(warps))
                    try:
                        results[f"triton[{block},{warps}]"] = time_spikejax("triton", T, M, dt)
                    finally:
                        del os.environ["SPIKEJAX_TRITON_BLOCK"], os.environ["SPIKEJAX_TRITON_WARPS"]
            if not args.no_peers:
                results["spikingjelly"] = time_spikingjelly(T, M, dt)
            for impl, r in results.items():
                name = jnp.dtype(dt).name
                if isinstance(r, str):
                    print(f"| {T} | {M} | {name} | {impl} | {r} | | |")
                    continue
                fl = floor_ms(T, M, dt, impl)
                print(f"| {T} | {M} | {name} | {impl} | {r[0]:.3f} | {r[1]:.3f} | {fl:.3f} |")
                rows.append(dict(T=T, M=M, dtype=name, impl=impl, fwd_ms=r[0], fwd_bwd_ms=r[1]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=jax.devices()[0].device_kind, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
