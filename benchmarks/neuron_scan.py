"""Time the LIF neuron scan: every spikejax backend against SpikingJelly, snnTorch and Spyx.

For each (T, M) in (128, 1M), (32, 64K), (512, 16K), (8, 4M) and f32 / bf16 inputs, times the
forward (``s = lif(x)``) and forward+backward (``g_x = vjp(lif)(g_s)``) of a LIF neuron with
τ = 2, decay_input, threshold 1, subtract reset, atan surrogate, for:

* every backend in ``spikejax.available_backends()`` (``pallas``, ``triton`` once it lands,
  ``xla`` = the ``lax.scan`` reference);
* SpikingJelly 2.0 ``LIFNode(step_mode="m")`` (its fused CUDA/Triton multi-step kernel on GPU),
  snnTorch 1.0 ``Leaky`` (a Python loop over time) and Spyx 1.0 ``LIF`` (``spyx.nn.run``,
  lax.scan), each only if it imports.

The floor is the minimum bytes a scan must move divided by the measured device-copy bandwidth
(``y = x + 1`` on 1 GiB): forward reads x and writes s, ``T·M·(b_x + b_s)``; forward+backward
adds reading g_s and writing g_x, ``T·M·(b_x + b_s + b_gs + b_gx)`` (no residual at all: a lower
bound no implementation reaches exactly; the Pallas backward re-reads x). "GB/s" is that minimum
divided by the measured time.

JAX timing: one jitted call runs the op on N distinct input buffers back to back (N chosen so the
call moves >= ~0.5 GB); each timing sample dispatches that call several times back to back (about
20 ms of work) and waits once, so dispatch and synchronisation are amortized; the median sample
divided by the number of ops is reported. PyTorch timing: the same N inputs in a loop, repeated
the same way, one synchronize at the end.

Usage::

    python -m benchmarks.neuron_scan [--quick] [--out DIR]

Writes ``neuron_scan.md`` (and ``.json``) under ``--out`` (default ``$OUT`` or ``.``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp

import spikejax as sj


def _writable_triton_cache() -> None:
    """SpikingJelly's Triton kernels need a writable cache: point the Triton cache settings at a temp
    dir unless set, and install :class:`benchmarks._triton_cache.WritableCacheManager` (the knob
    itself reads back empty inside this process on the GPU machine)."""
    root = os.path.join(tempfile.gettempdir(), "spikejax-triton")
    for var, sub in (("TRITON_HOME", ""), ("TRITON_CACHE_DIR", "cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        if not os.environ.get(var):
            os.environ[var] = os.path.join(root, sub)
        os.makedirs(os.environ[var], exist_ok=True)
    os.environ.setdefault("SPIKEJAX_TRITON_CACHE", os.environ["TRITON_CACHE_DIR"])
    os.environ.setdefault("TRITON_CACHE_MANAGER", "benchmarks._triton_cache:WritableCacheManager")


def _triton_cache_report() -> str:
    """Where triton thinks its caches are (for a failing peer's error line)."""
    try:
        import triton

        c = triton.knobs.cache
        env = os.environ.get("TRITON_CACHE_DIR")
        return f"triton {triton.__version__} cache.dir={c.dir!r} env TRITON_CACHE_DIR={env!r} manager={c.manager_class}"
    except Exception as err:  # noqa: BLE001 - diagnostics only
        return f"triton cache: {type(err).__name__}: {err}"


SHAPES = [(128, 1 << 20), (32, 1 << 16), (512, 1 << 14), (8, 1 << 22)]
DTYPES = ["float32", "bfloat16"]
TAU = 2.0


def _fmt_m(m: int) -> str:
    if m % (1 << 20) == 0:
        return f"{m >> 20}M"
    return f"{m >> 10}K" if m % (1 << 10) == 0 else str(m)


def _n_buffers(nbytes: int) -> int:
    return max(1, min(16, (512 << 20) // max(nbytes, 1)))


def _rounds(first_s: float, sample_s: float = 0.02) -> int:
    """Back-to-back repetitions per timing sample so that one sample lasts about ``sample_s``."""
    return max(1, min(100, round(sample_s / max(first_s, 1e-6))))


def _time_jax(fn: Callable, args_list: list, reps: int = 7) -> float:
    """Seconds per op: ``fn`` maps over the list of argument tuples inside one jit; each sample
    dispatches that call ``_rounds`` times back to back and waits once, so the host's dispatch and
    the final synchronisation are amortised as in a training loop (one blocking call per sample
    added 0.2-0.3 ms to every 128 x 1M measurement before 2026-11-24)."""
    call = jax.jit(lambda all_args: [fn(*a) for a in all_args])
    jax.block_until_ready(call(args_list))
    t0 = time.perf_counter()
    jax.block_until_ready(call(args_list))
    rounds = _rounds(time.perf_counter() - t0)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(rounds):  # in-order on the device: the last result is ready after all the others
            out = call(args_list)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / rounds)
    return statistics.median(times) / len(args_list)


def copy_bandwidth() -> tuple[float, str]:
    """Device-copy bandwidth in bytes/s (read + write of 1 GiB), the best of an XLA ``x + 1``
    and, when torch sees the GPU, ``torch.Tensor.copy_``; with a description."""
    x = jnp.ones((1 << 28,), jnp.float32)
    t = _time_jax(lambda a: a + 1.0, [(x,)], reps=10)
    found = {"xla x+1": 2 * x.nbytes / t}
    del x
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.ones(1 << 28, device="cuda")
            b = torch.empty_like(a)
            found["torch copy_"] = 2 * a.nbytes / _torch_time(lambda i: b.copy_(a), 10)
            del a, b
    except Exception:  # noqa: BLE001 - torch is optional
        pass
    best = max(found, key=found.get)
    return found[best], ", ".join(f"{k} {v / 1e9:.0f} GB/s" for k, v in found.items())


# --- spikejax backends ------------------------------------------------------------------------


def _sj_fwd(backend: str, **kw):
    return lambda x: sj.lif(x, tau=TAU, backend=backend, **kw)[0]


def _sj_fwdbwd(backend: str):
    def f(x, g):
        s, vjp = jax.vjp(lambda x: sj.lif(x, tau=TAU, backend=backend)[0], x)
        return s, vjp(g)[0]  # s is returned so the forward cannot be dead-code eliminated
    return f


def _inputs(T: int, M: int, dtype, n: int):
    keys = jax.random.split(jax.random.key(0), n)
    xs = [(jax.random.normal(k, (T, M), jnp.float32) * 1.5 + 0.6).astype(dtype) for k in keys]
    gs = [(jnp.cos(x.astype(jnp.float32))).astype(dtype) for x in xs[:1]] * n
    return xs, gs


def bench_spikejax(backend: str, T: int, M: int, dtype) -> dict:
    nbytes = T * M * jnp.dtype(dtype).itemsize
    n = _n_buffers(nbytes)
    xs, gs = _inputs(T, M, dtype, n)
    fwd = _time_jax(_sj_fwd(backend), [(x,) for x in xs])
    fb = _time_jax(_sj_fwdbwd(backend), list(zip(xs, gs, strict=True)))
    return {"fwd": fwd, "fwdbwd": fb}


# --- peers --------------------------------------------------------------------------------------


def _torch_time(step: Callable, n: int, reps: int = 5, budget_s: float = 20.0) -> float:
    """Seconds per ``step(i)``: each sample runs ``_rounds`` passes over the n inputs, one
    synchronisation at the end (the same amortisation as :func:`_time_jax`)."""
    import torch

    step(0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    torch.cuda.synchronize()
    rounds = _rounds(time.perf_counter() - t0)
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(rounds):
            for i in range(n):
                step(i)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / (n * rounds))
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def _torch_inputs(T, M, dtype, n):
    import torch

    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [(torch.randn(T, M, device="cuda", generator=g) * 1.5 + 0.6).to(tdt) for _ in range(n)]
    gs = torch.cos(xs[0].float()).to(tdt)
    return xs, gs


def bench_spikingjelly(T: int, M: int, dtype: str) -> dict:
    """SpikingJelly 2.0's multi-step LIF (``functional.lif_multi_step``, what ``LIFNode(step_mode="m")``
    calls) with an f32 initial membrane, so bf16 inputs also take its fused CUDA path (``LIFNode``
    materialises v in the input dtype, which sends bf16 to its unfused Torch reference)."""
    import torch
    from spikingjelly.activation_based import functional, surrogate

    n = _n_buffers(T * M * (4 if dtype == "float32" else 2))
    xs, gs = _torch_inputs(T, M, dtype, n)
    v0 = torch.zeros(M, device="cuda", dtype=torch.float32)
    sg = surrogate.ATan()

    def lif(x):
        return functional.lif_multi_step(x, v0, TAU, True, 1.0, None, sg, False, False)[0]

    def fwd(i):
        with torch.no_grad():
            lif(xs[i])

    xg = [x.clone().requires_grad_(True) for x in xs]

    def fb(i):
        lif(xg[i]).backward(gs)

    try:
        return {"fwd": _torch_time(fwd, n), "fwdbwd": _torch_time(fb, n)}
    except Exception as err:
        raise RuntimeError(f"{err} [{_triton_cache_report()}]") from err


def bench_snntorch(T: int, M: int, dtype: str) -> dict:
    import snntorch as snn
    import torch

    lif = snn.Leaky(beta=1.0 - 1.0 / TAU, threshold=1.0, reset_mechanism="subtract")
    n = min(_n_buffers(T * M * (4 if dtype == "float32" else 2)), 2)
    xs, gs = _torch_inputs(T, M, dtype, n)

    def run(x):
        mem = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            spk, mem = lif(x[t], mem)
            out.append(spk)
        return torch.stack(out)

    def fwd(i):
        with torch.no_grad():
            run(xs[i])

    xg = [x.clone().requires_grad_(True) for x in xs]

    def fb(i):
        run(xg[i]).backward(gs)

    return {"fwd": _torch_time(fwd, n, reps=3), "fwdbwd": _torch_time(fb, n, reps=3)}


def bench_spyx(T: int, M: int, dtype) -> dict:
    import spyx
    from flax import nnx

    model = spyx.nn.LIF((), beta=1.0 - 1.0 / TAU, threshold=1.0, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    def fwd_fn(x):
        m = nnx.merge(graphdef, state)
        return spyx.nn.run(m, x)[0]

    def fb_fn(x, g):
        out, vjp = jax.vjp(fwd_fn, x)
        return out, vjp(g.astype(out.dtype))[0]  # out kept live, as in training

    n = _n_buffers(T * M * jnp.dtype(dtype).itemsize)
    xs, gs = _inputs(T, M, dtype, n)
    return {"fwd": _time_jax(fwd_fn, [(x,) for x in xs]), "fwdbwd": _time_jax(fb_fn, list(zip(xs, gs, strict=True)))}


PEERS = {
    "spikingjelly": bench_spikingjelly,
    "snntorch": bench_snntorch,
    "spyx": bench_spyx,
}


def peers_available() -> dict[str, str | None]:
    """peer -> None if importable (and a CUDA device for the torch ones), else the reason."""
    out = {}
    for name, mod in (("spikingjelly", "spikingjelly"), ("snntorch", "snntorch"), ("spyx", "spyx")):
        try:
            __import__(mod)
            if name != "spyx":
                import torch

                if not torch.cuda.is_available():
                    raise RuntimeError("no CUDA device for torch")
            out[name] = None
        except Exception as err:  # noqa: BLE001 - report any import failure
            out[name] = f"{type(err).__name__}: {err}"
    return out


# --- the table ----------------------------------------------------------------------------------


def min_bytes(T: int, M: int, dtype: str) -> tuple[int, int]:
    b = jnp.dtype(dtype).itemsize
    return T * M * 2 * b, T * M * 4 * b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="first shape only")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--shapes", default=None, help="override, e.g. 8x1024,16x4096 (smoke tests)")
    ap.add_argument("--impls", default=None, help="only these rows, e.g. pallas,triton,spikingjelly")
    args = ap.parse_args()
    _writable_triton_cache()

    device = jax.devices()[0]
    bw, bw_note = copy_bandwidth()
    backends = sj.available_backends()
    peers = {} if args.no_peers else peers_available()
    header = [
        "## Neuron scan: LIF (tau=2, decay_input, subtract reset, atan)",
        "",
        f"- device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- measured copy bandwidth (floor uses the best): {bw_note}",
        f"- spikejax backends: {backends}; peers: "
        + ", ".join(f"{k}={'ok' if v is None else v}" for k, v in peers.items()),
        "",
        "| T x M | dtype | impl | fwd ms | fwd GB/s | fwd / floor | fwd+bwd ms | fwd+bwd GB/s | "
        "fwd+bwd / floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines = list(header)
    print("\n".join(header), flush=True)
    results = []
    shapes = SHAPES[:1] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    for T, M in shapes:
        for dtype in DTYPES:
            fb_bytes = min_bytes(T, M, dtype)
            impls: list[tuple[str, Callable]] = [
                (b, functools.partial(bench_spikejax, b, T, M, jnp.dtype(dtype))) for b in backends
            ]
            impls += [(p, functools.partial(PEERS[p], T, M, dtype)) for p, why in peers.items() if why is None]
            if args.impls:
                impls = [(n, f) for n, f in impls if n in args.impls.split(",")]
            for name, run in impls:
                try:
                    r = run()
                except Exception as err:  # noqa: BLE001
                    traceback.print_exc()
                    r = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"}
                row = {"T": T, "M": M, "dtype": dtype, "impl": name, **r}
                results.append(row)
                if "error" in r:
                    line = f"| {T}x{_fmt_m(M)} | {dtype} | {name} | {r['error']} | | | | | |"
                else:
                    cells = []
                    for key, nbytes in zip(("fwd", "fwdbwd"), fb_bytes, strict=True):
                        t = r[key]
                        floor = nbytes / bw
                        cells += [f"{t * 1e3:.3f}", f"{nbytes / t / 1e9:.0f}", f"{t / floor:.2f}"]
                    line = f"| {T}x{_fmt_m(M)} | {dtype} | {name} | " + " | ".join(cells) + " |"
                print(line, flush=True)
                lines.append(line)
                write_results(args.out, "neuron_scan", lines, results, bw, device)  # a cut run keeps its rows
    write_results(args.out, "neuron_scan", lines, results, bw, device)


def write_results(out: str, name: str, lines: list[str], results: list[dict], bw: float, device) -> None:
    """``<out>/<name>.md`` (the table lines) and ``<name>.json`` (bandwidth, device, the result rows)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"copy_bandwidth": bw, "device": device.device_kind, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
