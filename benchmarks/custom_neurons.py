"""Time the generic engine: built-in and user-defined neurons against the hand-written kernels,
``lax.scan`` and SpikingJelly 2.0's FlexSN, side by side in one run.

Rows per (T, M) in (128, 1M), (32, 64K), (512, 16K), (8, 4M) and dtype (f32, bf16), forward and
forward+backward (``s`` kept live), amortised timing as in :mod:`benchmarks.neuron_scan`:

* ``lif engine``: ``sj.lif(tau=2, backend="pallas")``, the engine running the built-in LIF step;
* ``lif mosaic`` / ``cuba mosaic`` / ...: the same engine lowered through Mosaic GPU
  (``backend="pallas_mosaic"``); the hand-written Pallas kernel these replaced was deleted after the
  2026-12-01 H200 runs (its numbers are in BENCHMARKS.md);
* ``lif triton``: the hand-written Triton kernel;
* ``cuba engine`` / ``cuba xla``: the README's CUBA step (two states, atan) via ``custom_neuron``;
* ``alif engine``, ``izhikevich engine`` (and their ``xla``) where defined;
* ``cuba flexsn``: SpikingJelly's FlexSN with the same CUBA core (its Triton path on CUDA), with
  its first-call (compile) time reported separately.

Usage: ``python -m benchmarks.custom_neurons [--shapes 128x1048576,...] [--dtypes float32] [--out DIR]``.
Writes ``custom_neurons.md`` / ``.json`` under ``--out`` (default ``$OUT`` or ``.``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
import traceback

import jax
import jax.numpy as jnp

import spikejax as sj
from benchmarks.neuron_scan import (
    SHAPES,
    _fmt_m,
    _inputs,
    _n_buffers,
    _time_jax,
    _torch_inputs,
    _torch_time,
    _writable_triton_cache,
    copy_bandwidth,
    min_bytes,
    write_results,
)


def cuba(params, state, x_t):
    """The README's current-based LIF: ``i = α i + x``, ``h = β v + i``, spike, subtract reset."""
    i, v = state
    i = params["alpha"] * i + x_t
    h = params["beta"] * v + i
    s = sj.surrogate.atan(alpha=2.0)(h - params["threshold"])
    return s, (i, h - s * params["threshold"])


CUBA = sj.custom_neuron(cuba, num_states=2)
CUBA_PARAMS = {"alpha": 0.8, "beta": 0.9, "threshold": 1.0}


def _dynamics(name: str):
    try:
        from spikejax.neurons import dynamics
    except ImportError:
        return None
    entry = getattr(dynamics, "DYNAMICS", {}).get(name)
    if entry is None:
        return None
    step, params, n = entry
    return sj.custom_neuron(step, num_states=n), params


def impls(dtype):
    rows = {
        "lif engine": lambda x: sj.lif(x, tau=2.0, backend="pallas")[0],
        "lif triton": lambda x: sj.lif(x, tau=2.0, backend="triton")[0],
        "lif xla": lambda x: sj.lif(x, tau=2.0, backend="xla")[0],
        "cuba engine": lambda x: CUBA(x, CUBA_PARAMS, backend="pallas")[0],
        "cuba xla": lambda x: CUBA(x, CUBA_PARAMS, backend="xla")[0],
        "alif engine": lambda x: sj.alif(x, tau=2.0, backend="pallas")[0],
        "alif xla": lambda x: sj.alif(x, tau=2.0, backend="xla")[0],
        "lif mosaic": lambda x: sj.lif(x, tau=2.0, backend="pallas_mosaic")[0],
        "cuba mosaic": lambda x: CUBA(x, CUBA_PARAMS, backend="pallas_mosaic")[0],
        "alif mosaic": lambda x: sj.alif(x, tau=2.0, backend="pallas_mosaic")[0],
    }
    izh = _dynamics("izhikevich")
    if izh is not None:
        neuron, params = izh
        rows["izhikevich engine"] = lambda x: neuron(x, params, backend="pallas")[0]
        rows["izhikevich xla"] = lambda x: neuron(x, params, backend="xla")[0]
        rows["izhikevich mosaic"] = lambda x: neuron(x, params, backend="pallas_mosaic")[0]
    return rows


def bench_jax(fn, T: int, M: int, dtype) -> dict:
    n = _n_buffers(T * M * jnp.dtype(dtype).itemsize)
    xs, gs = _inputs(T, M, dtype, n)

    def fb(x, g):
        s, vjp = jax.vjp(fn, x)
        return s, vjp(g)[0]

    return {"fwd": _time_jax(fn, [(x,) for x in xs]), "fwdbwd": _time_jax(fb, list(zip(xs, gs, strict=True)))}


_FLEX_SG = None  # SpikingJelly's ATan; a module global, since FlexSN refuses a core that captures a module


def _flex_core(x, i, v):
    i = 0.8 * i + x
    h = 0.9 * v + i
    s = _FLEX_SG(h - 1.0)
    return s, i, h - s * 1.0


def bench_flexsn(T: int, M: int, dtype: str) -> dict:
    import torch
    from spikingjelly.activation_based import surrogate
    from spikingjelly.activation_based.neuron.flexsn import FlexSN

    global _FLEX_SG
    _FLEX_SG = surrogate.ATan(alpha=2.0)
    core = _flex_core

    n = _n_buffers(T * M * (4 if dtype == "float32" else 2))
    xs, gs = _torch_inputs(T, M, dtype, n)
    node = FlexSN(core, num_states=2, step_mode="m").cuda()

    def run(x):
        node.reset()
        return node(x)

    t0 = time.perf_counter()
    with torch.no_grad():
        run(xs[0])
    xg = [x.clone().requires_grad_(True) for x in xs]
    run(xg[0]).backward(gs)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0

    def fwd(i):
        with torch.no_grad():
            run(xs[i])

    def fb(i):
        run(xg[i]).backward(gs)

    return {"fwd": _torch_time(fwd, n), "fwdbwd": _torch_time(fb, n), "first_call_s": compile_s}


def _engine_times(step, treedef, leaves, xs, gs, z, fwd_tiling, bwd_tiling, lowering=None) -> tuple[float, float]:
    """Seconds of the engine's forward and of its backward alone (direct calls, amortised timing) of
    ``step`` over the inputs ``xs`` (cotangents ``gs``) from the zero state ``z`` (also the final-state
    cotangent), with the given tilings and lowering."""
    from pallas_kernels import engine

    def fwd(x):
        return engine.scan_forward(step, treedef, x, z, leaves, tiling=fwd_tiling, lowering=lowering)

    tf = _time_jax(lambda x: fwd(x)[0], [(x,) for x in xs], reps=5)
    res = [fwd(x)[3] for x in xs]
    tb = _time_jax(lambda r, g: engine.scan_backward(step, treedef, r, g, z, tiling=bwd_tiling)[0],
                   list(zip(res, gs, strict=True)), reps=5)
    return tf, tb


SWEEP_BWD = [(256, 8, 4), (512, 8, 4), (512, 8, 8), (1024, 8, 8), (1024, 8, 4), (256, 16, 4), (512, 16, 8),
             (128, 8, 2), (64, 16, 1), (32, 16, 1)]
"""(block_m, checkpoint_every, num_warps) tried for the engine's backward."""


def sweep_backward(shapes, dtypes, lines) -> None:
    """Direct engine calls (built-in LIF step, scalar parameters): backward time per tiling."""
    from pallas_kernels import engine
    from spikejax.neurons.steps import ScanParams, ScanSpec, builtin_step

    step = builtin_step(ScanSpec(decay_input=True, alpha=2.0))
    p = ScanParams(jnp.full((1,), 0.5), jnp.ones((1,)), None, None, None)
    leaves, treedef = jax.tree.flatten(p)
    lines += ["", "### Engine backward tiling sweep (LIF, scalar params; ms)", "",
              "| T x M | dtype | block_m | K | warps | fwd | bwd |", "|---|---|---|---|---|---|---|"]
    for T, M in shapes:
        for dtype in dtypes:
            xs, gs = _inputs(T, M, jnp.dtype(dtype), 2)
            z = (jnp.zeros((M,), jnp.float32),)
            for bm, k, w in SWEEP_BWD:
                try:
                    ft = engine.Tiling(512 if M >= 1 << 18 else bm, k, 16 if k <= 16 else k, 4)
                    tf, tb = _engine_times(step, treedef, leaves, xs, gs, z, ft, engine.Tiling(bm, k, k, w))
                    line = f"| {T}x{_fmt_m(M)} | {dtype} | {bm} | {k} | {w} | {tf * 1e3:.3f} | {tb * 1e3:.3f} |"
                except Exception as err:  # noqa: BLE001
                    msg = f"error {type(err).__name__}: {str(err)[:60]}"
                    line = f"| {T}x{_fmt_m(M)} | {dtype} | {bm} | {k} | {w} | {msg} | |"
                print(line, flush=True)
                lines.append(line)


SWEEP_MOSAIC = [(256, 128, 8), (256, 128, 16), (256, 256, 16), (128, 128, 16), (256, 128, 4), (256, 256, 8)]
"""(forward block_m, backward block_m, checkpoint_every K) tried for the Mosaic GPU lowering."""


def sweep_mosaic(shapes, dtypes, lines) -> None:
    """Direct engine calls through Mosaic GPU (LIF and the two-state CUBA step, constant parameters):
    forward and backward time per tiling."""
    import numpy as np

    from pallas_kernels import engine, engine_mosaic
    from spikejax.backends import with_constants
    from spikejax.neurons.steps import ScanParams, ScanSpec, builtin_step

    lif = with_constants(builtin_step(ScanSpec(decay_input=True, alpha=2.0)),
                         ScanParams(np.float32(0.5), np.float32(1.0), None, None, None))
    cuba = with_constants(CUBA.step, {k: np.float32(v) for k, v in CUBA_PARAMS.items()})
    lines += ["", "### Mosaic GPU tiling sweep (constant parameters; ms)", "",
              "| T x M | dtype | neuron | fwd block_m | bwd block_m | K | fwd | bwd |",
              "|---|---|---|---|---|---|---|---|"]
    for T, M in shapes:
        for dtype in dtypes:
            xs, gs = _inputs(T, M, jnp.dtype(dtype), 2)
            for name, (step, treedef, leaves), n in (("lif", lif, 1), ("cuba", cuba, 2)):
                z = tuple(jnp.zeros((M,), jnp.float32) for _ in range(n))
                for bmf, bmb, k in SWEEP_MOSAIC:
                    try:
                        k = engine_mosaic.checkpoint_interval(T, k)
                        tf, tb = _engine_times(step, treedef, leaves, xs, gs, z,
                                               engine.Tiling(bmf, k, k, 4, engine_mosaic.STAGES),
                                               engine.Tiling(bmb, k, k, 4, engine_mosaic.STAGES), "mosaic_gpu")
                        line = (f"| {T}x{_fmt_m(M)} | {dtype} | {name} | {bmf} | {bmb} | {k} | {tf * 1e3:.3f} | "
                                f"{tb * 1e3:.3f} |")
                    except Exception as err:  # noqa: BLE001
                        line = (f"| {T}x{_fmt_m(M)} | {dtype} | {name} | {bmf} | {bmb} | {k} | "
                                f"error {type(err).__name__}: {str(err)[:80]} | |")
                    print(line, flush=True)
                    lines.append(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--shapes", default=None, help="e.g. 128x1048576,8x4194304")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--impls", default=None, help="only rows whose name contains one of these, comma separated")
    ap.add_argument("--sweep-bwd", action="store_true", help="only the engine backward tiling sweep")
    ap.add_argument("--sweep-mosaic", action="store_true", help="only the Mosaic GPU tiling sweep (LIF, CUBA)")
    args = ap.parse_args()
    _writable_triton_cache()
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    bw, bw_note = copy_bandwidth()
    device = jax.devices()[0]
    lines = [
        "## Generic engine: built-in and custom neurons",
        "",
        f"- device: {device.device_kind}, jax {jax.__version__}; "
        f"date {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- copy bandwidth: {bw_note}; floor = (x + s) bytes fwd, (x + s + g_s + g_x) fwd+bwd",
        "",
        "| T x M | dtype | impl | fwd ms | fwd / floor | fwd+bwd ms | fwd+bwd / floor | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results = []
    if args.sweep_bwd or args.sweep_mosaic:
        (sweep_mosaic if args.sweep_mosaic else sweep_backward)(shapes, args.dtypes.split(","), lines)
        write_results(args.out, "custom_neurons", lines, results, bw, device)
        return
    for T, M in shapes:
        for dtype in args.dtypes.split(","):
            rows = dict(impls(dtype))
            names = list(rows) + ["cuba flexsn"]
            if args.impls:  # exact row names, else substrings
                wanted = args.impls.split(",")
                names = [n for n in names if n in wanted or any(k in n for k in wanted if k not in names)]
            f_fwd, f_fb = (b / bw for b in min_bytes(T, M, dtype))
            for name in names:
                try:
                    if name == "cuba flexsn":
                        r = bench_flexsn(T, M, dtype)
                    else:
                        r = bench_jax(rows[name], T, M, jnp.dtype(dtype))
                    note = f"first call {r['first_call_s']:.1f} s" if "first_call_s" in r else ""
                    line = (f"| {T}x{_fmt_m(M)} | {dtype} | {name} | {r['fwd'] * 1e3:.3f} | {r['fwd'] / f_fwd:.2f} | "
                            f"{r['fwdbwd'] * 1e3:.3f} | {r['fwdbwd'] / f_fb:.2f} | {note} |")
                except Exception as err:  # noqa: BLE001 - a failing row is reported, the run goes on
                    traceback.print_exc()
                    r = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"}
                    line = f"| {T}x{_fmt_m(M)} | {dtype} | {name} | {r['error']} | | | | |"
                results.append({"T": T, "M": M, "dtype": dtype, "impl": name, **r})
                print(line, flush=True)
                lines.append(line)
                write_results(args.out, "custom_neurons", lines, results, bw, device)


if __name__ == "__main__":
    main()
