"""Training memory per remat mode (spikejax.remat): peak device memory and step time, largest T / batch.

Workloads (one training step: loss, gradients, AdamW update, all under one ``jax.jit``):

- ``lm``: the ``shakespeare`` preset of ``spikejax train lm`` (SpikingLM d=384, 6 layers, hybrid
  attention, ternary neurons, B=64, L=256; vocabulary 65);
- ``spikformer``: ``spikejax.models.create("spikformer_cifar10")`` on 32x32x3 images, B=64;
- ``sj_spikformer``: SpikingJelly's ``spikformer_cifar10`` (PyTorch, multi-step), plain and with
  ``memopt`` (``optimize_memory(level=1)``: checkpoint per block, bit-compressed spike inputs), the
  anchor; skipped where SpikingJelly or CUDA is missing.

Rows (``--rows``, comma-separated; default ``lm:4,lm:16,spikformer:4,spikformer:16,sj:4,sj:16,lm:maxT``):
``<workload>:<T>`` measures every mode (``--modes``) at that T; ``sj:<T>`` is the SpikingJelly anchor (plain
and ``memopt``); ``<workload>:maxT`` / ``<workload>:maxB`` the largest T (batch fixed) / batch (T = 4) that fits
per mode.

How, inside ``--budget-s`` (no row starts after it):

1. every JAX row is compiled first, ``--jobs`` subprocesses at a time, without running (``compile only``):
   ``memory_analysis()`` (temp, arguments, outputs, aliased) and the executable into a persistent
   compilation cache (``$TMPDIR/spikejax_memory_jax_cache``);
2. the largest T / batch per mode: the compiled total ``temp + args + out - alias`` is linear in T (and
   in the batch), so it is extrapolated from the two measured points to the device's memory
   (``bytes_limit``, or ``--limit-gib``) and checked by one parallel round of compile-only probes at
   0.85x, 1x and 1.15x of the estimate (a probe fits when its compiled total is below the limit);
3. once every compilation is done, the timed rows, one subprocess each (a fresh peak counter; an OOM
   cannot poison the next row), loading the executables from the cache: ``peak_bytes_in_use`` (GPU)
   and the median step time;
   ``offload`` rows get ``--offload-timeout`` seconds;
4. SpikingJelly's Spikformer, plain and with ``memopt`` (``optimize_memory(level=1)``), skipped where
   SpikingJelly or CUDA is missing.

Rows are appended as they finish to ``benchmarks/results/memory_<device>_<date>.jsonl`` and the markdown
table next to it is rewritten, so a killed run keeps its finished rows.

    python benchmarks/memory.py                            # the GPU run (--budget-s 300)
    python benchmarks/memory.py --rows lm:16,lm:maxT --modes none spikes
    python benchmarks/memory.py --quick --limit-gib 0.05   # tiny sizes on CPU (a smoke test of the script)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MODES = ("none", "block", "spikes", "offload")
DEFAULT_ROWS = "lm:4,lm:16,spikformer:4,spikformer:16,sj:4,sj:16,lm:maxT"
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# --- one measurement (runs in a subprocess) -----------------------------------------------------------


def _lm_config(T: int, remat: str, quick: bool, backend: str | None = None):
    from spikejax.nn import SpikingLMConfig
    from spikejax.train.presets import PRESETS

    p = PRESETS["lm"]["shakespeare"]
    size = dict(d_model=32, num_heads=2, num_layers=2, max_len=32) if quick else dict(
        d_model=p.d_model, num_heads=p.heads, num_layers=p.layers, max_len=p.seq_len)
    window = min(64, size["max_len"])
    return SpikingLMConfig(vocab_size=65, mlp_ratio=p.mlp_ratio, time_steps=T, attention=p.attention,
                           attention_kwargs={"window": window, "softmax": True, "eps": 1.0}, neuron=p.neuron,
                           neuron_kwargs={"beta": p.beta, "threshold": p.threshold}, dropout=p.dropout,
                           dtype=p.dtype, remat=remat, **({"backend": backend} if backend else {}),
                           **size), p.batch_size


def _jax_step(workload: str, T: int, batch: int | None, remat: str, quick: bool, backend: str | None = None):
    """(jitted step, its arguments, batch) of one training step of ``workload``."""
    import jax
    import optax
    from flax import nnx

    if workload == "lm":
        cfg, default_batch = _lm_config(T, remat, quick, backend)
        B = batch or (2 if quick else default_batch)
        model = cfg.build(seed=0)
        tokens = jax.random.randint(jax.random.key(1), (B, cfg.max_len + 1), 0, cfg.vocab_size)

        def loss_fn(model, key):
            logits = model(tokens[:, :-1], dropout_key=key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    else:
        from spikejax import models

        B = batch or (2 if quick else 64)
        kw = dict(embed_dims=32, num_heads=2, depths=1) if quick else {}
        if backend:
            kw["backend"] = backend
        model = models.create("spikformer_cifar10", T=T, remat=remat, seed=0, **kw)
        size = 8 if quick else 32
        images = jax.random.normal(jax.random.key(1), (B, size, size, 3))
        labels = jax.random.randint(jax.random.key(2), (B,), 0, 10)

        def loss_fn(model, key):
            return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))

    def step(state, key):
        model, opt = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(loss_fn)(model, key)
        opt.update(model, grads)
        return loss, nnx.state((model, opt))

    return jax.jit(step, donate_argnums=0), (state, jax.random.key(0)), B


def _is_oom(err: BaseException) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def measure_jax(workload: str, T: int, batch: int | None, remat: str, quick: bool, reps: int,
                compile_only: bool = False, backend: str | None = None) -> dict:
    import jax


    step, (state, key), B = _jax_step(workload, T, batch, remat, quick, backend)
    row = dict(workload=workload, T=T, batch=B, remat=remat, device=jax.devices()[0].device_kind)
    t0 = time.perf_counter()
    try:
        compiled = step.lower(state, key).compile()
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        row.update(fits=False, error="out of memory (compile)")
        return row
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    ma = compiled.memory_analysis()
    if ma is not None:
        row.update(temp_mib=ma.temp_size_in_bytes / 2**20, args_mib=ma.argument_size_in_bytes / 2**20,
                   out_mib=ma.output_size_in_bytes / 2**20, alias_mib=getattr(ma, "alias_size_in_bytes", 0) / 2**20,
                   host_temp_mib=getattr(ma, "host_temp_size_in_bytes", 0) / 2**20)
        row["total_mib"] = row["temp_mib"] + row["args_mib"] + row["out_mib"] - row["alias_mib"]
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        row["limit_mib"] = stats["bytes_limit"] / 2**20
    if compile_only:
        return row
    times = []
    try:
        for _ in range(reps + 1):
            t = time.perf_counter()
            loss, state = compiled(state, key)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t)
    except Exception as err:  # noqa: BLE001
        if not _is_oom(err):
            raise
        row.update(fits=False, error="out of memory")
        return row
    row.update(fits=True, loss=float(loss), step_ms=1e3 * statistics.median(times[1:]) if reps else None)
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        row["peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return row


def measure_spikingjelly(T: int, batch: int, memopt: bool, reps: int) -> dict:
    import torch
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model import spikformer

    if not torch.cuda.is_available():
        return dict(workload="sj_spikformer", T=T, batch=batch, remat="memopt" if memopt else "none",
                    skipped="no CUDA (SpikingJelly's memopt measures CUDA memory)")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    net = spikformer.spikformer_cifar10(T=T, num_classes=10)
    functional.set_step_mode(net, "m")
    net = net.to(dev)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    if memopt:
        from spikingjelly.activation_based import memopt as sj_memopt

        if hasattr(sj_memopt, "optimize_memory"):  # SpikingJelly 2.0
            sj_memopt.optimize_memory(net, (spikformer.SpikformerBlock,), lambda m: m(x), level=1, compress=True)
        else:  # the memory_optimization pipeline of the development branch
            net = sj_memopt.memory_optimization(net, (spikformer.SpikformerBlock,), dummy_input=(x,), compress_x=True,
                                                level=1).to(dev)
        functional.reset_net(net)  # the example forward left membrane state behind
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    row = dict(workload="sj_spikformer", T=T, batch=batch, remat="memopt" if memopt else "none",
               device=torch.cuda.get_device_name())
    times = []
    try:
        for _ in range(reps + 1):
            torch.cuda.synchronize()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = net(x)  # [T, B, classes]: SpikingJelly's Spikformer leaves the time average to the caller
            loss = torch.nn.functional.cross_entropy(out.mean(0) if out.ndim == 3 else out, y)
            loss.backward()
            opt.step()
            functional.reset_net(net)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            if len(times) == 1:
                torch.cuda.reset_peak_memory_stats()
    except torch.cuda.OutOfMemoryError:
        row.update(fits=False, error="out of memory")
        return row
    row.update(fits=True, step_ms=1e3 * statistics.median(times[1:]),
               peak_mib=torch.cuda.max_memory_allocated() / 2**20)
    return row


# --- the driver ------------------------------------------------------------------------------------


def _run_row(spec: dict, timeout: float, cache: str | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--row", json.dumps(spec)]
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # a peak counter of this row, not the pool
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # the whole GPU (JAX caps it at 0.75 otherwise)
    if cache:  # compile-only probes fill it, the timed rows read it
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, for `import spikejax`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout), env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    wall = round(time.monotonic() - t0, 1)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "wall_s": wall}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = any("RESOURCE_EXHAUSTED" in ln or "out of memory" in ln.lower() for ln in tail)
    return {**spec, "fits": False if oom else None, "error": " | ".join(tail)[:300], "wall_s": wall}


class Writer:
    """Appends rows to ``<stem>.jsonl`` and rewrites ``<stem>.md`` after each one."""

    COLS = ("workload", "T", "batch", "remat", "fits", "temp_mib", "total_mib", "peak_mib", "step_ms", "compile_s",
            "note")

    def __init__(self, stem: str):
        self.stem, self.rows, self.lock = stem, [], threading.Lock()
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        open(stem + ".jsonl", "w").close()

    def add(self, row: dict) -> None:
        with self.lock:
            self._add(row)

    def _add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.stem + ".jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        lines = ["| " + " | ".join(self.COLS) + " |", "|" + "---|" * len(self.COLS)]
        for r in self.rows:
            note = r.get("skipped") or r.get("error") or r.get("search") or ("compile only" if r.get("compile_only")
                                                                               else "")
            vals = [r.get(c, "") if c != "note" else note for c in self.COLS]
            lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in vals) + " |")
        with open(self.stem + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        print(json.dumps(row), flush=True)


def parse_rows(text: str) -> list[tuple[str, str]]:
    """``"lm:4,sj:16,lm:maxT"`` -> ``[("lm", "4"), ("sj", "16"), ("lm", "maxT")]``; ValueError naming ``--rows``."""
    rows = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        workload, _, what = item.partition(":")
        ok_w = workload in ("lm", "spikformer") or (workload == "sj" and what.isdigit())
        if not ok_w or not (what.isdigit() and int(what) > 0 or what in ("maxT", "maxB")):
            raise ValueError(f"--rows: expected <lm|spikformer>:<T|maxT|maxB> or sj:<T>, got {item!r}")
        rows.append((workload, what))
    if not rows:
        raise ValueError("--rows: no rows given")
    return rows


def extrapolate(points: list[tuple[int, float]], limit: float) -> int | None:
    """The largest integer ``v`` with ``a + b v <= limit`` for the line through the two ``(v, total)`` points
    (compiled memory is affine in T and in the batch); None when it does not grow or is missing."""
    if len(points) < 2:
        return None
    (v0, m0), (v1, m1) = sorted(points)[:2]
    if v1 == v0 or m1 <= m0:
        return None
    b = (m1 - m0) / (v1 - v0)
    return max(0, math.floor(v0 + (limit - m0) / b))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test)")
    ap.add_argument("--rows", default=DEFAULT_ROWS, help=f"what to measure (default {DEFAULT_ROWS})")
    ap.add_argument("--modes", nargs="+", default=["none", "block", "spikes"], choices=MODES)
    ap.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget: no row starts after it")
    ap.add_argument("--jobs", type=int, default=2,
                    help="parallel compile-only subprocesses (default 2: on the H200, 8 at once ran out of device "
                         "memory in XLA's autotuning of the T = 16 steps; 1 if that happens)")
    ap.add_argument("--reps", type=int, default=5, help="timed steps per row (after one warm-up)")
    ap.add_argument("--row-timeout", type=float, default=120.0, help="seconds per subprocess")
    ap.add_argument("--offload-timeout", type=float, default=45.0, help="seconds per offload row (a short probe)")
    ap.add_argument("--limit-gib", type=float, default=None,
                    help="device memory for the largest-T / batch search (default the device's bytes_limit)")
    ap.add_argument("--backend", default=None, help="neuron backend of the JAX models (default their config's)")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/memory_<device>_<date>)")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.row:  # one measurement, in this subprocess
        spec = json.loads(args.row)
        if spec["workload"] == "sj_spikformer":
            row = measure_spikingjelly(spec["T"], spec["batch"], spec["remat"] == "memopt", spec["reps"])
        else:
            row = measure_jax(spec["workload"], spec["T"], spec.get("batch"), spec["remat"], spec["quick"],
                              spec["reps"], spec.get("compile_only", False), spec.get("backend"))
        print(json.dumps({**spec, **row}), flush=True)
        return

    try:
        rows = parse_rows(args.rows)
    except ValueError as err:
        ap.error(str(err))
    import jax

    start = time.monotonic()
    deadline = start + args.budget_s
    device = jax.devices()[0].device_kind.replace(" ", "_").lower()
    stem = args.out or os.path.join(RESULTS, f"memory_{device}{'_quick' if args.quick else ''}_"
                                             f"{datetime.date.today().isoformat()}")
    cache = os.path.join(tempfile.gettempdir(), "spikejax_memory_jax_cache")
    out = Writer(stem)
    reps = 1 if args.quick else args.reps
    base_B = 2 if args.quick else 64
    small_T = 2 if args.quick else 4
    limit_mib = args.limit_gib * 1024 if args.limit_gib else None

    def spec(workload, T, mode, batch=None, **kw):
        s = dict(workload=workload, T=T, remat=mode, quick=args.quick, reps=reps, backend=args.backend,
                 id=[workload, T, mode, batch], **kw)
        return s if batch is None else {**s, "batch": batch}

    def run(s: dict) -> dict:
        left = deadline - time.monotonic()
        if left < 5:
            return {**s, "skipped": "time budget spent"}
        timeout = args.offload_timeout if s["remat"] == "offload" else args.row_timeout
        return _run_row(s, min(left, timeout), cache)

    def key(s):
        return tuple(s["id"])  # (workload, T, mode, the batch asked for or None)

    timed = sorted(((w, int(v)) for w, v in rows if v.isdigit() and w != "sj"), key=lambda r: -r[1])
    searches = [(w, v) for w, v in rows if v in ("maxT", "maxB")]
    pool = concurrent.futures.ThreadPoolExecutor(max(1, args.jobs))
    # 1. compile-only, in parallel: every timed row, and the two points each search extrapolates from
    probes = {key(s): s for s in (spec(w, T, m, compile_only=True) for w, T in timed for m in args.modes)}
    for w, what in searches:
        for m in args.modes:
            for v in ((small_T, 16 if not args.quick else 4) if what == "maxT" else (base_B // 2, base_B)):
                s = spec(w, v, m, compile_only=True) if what == "maxT" else spec(w, small_T, m, v, compile_only=True)
                probes.setdefault(key(s), s)
    futures = {k: pool.submit(run, s) for k, s in probes.items()}
    for f in futures.values():
        f.add_done_callback(lambda f: out.add(f.result()))

    # 2. the largest T / batch per mode (a thread: extrapolate once its two points are compiled, then one
    # parallel round of compile-only checks at 0.85x, 1x, 1.15x of the estimate)
    def search(w: str, what: str, m: str) -> None:
        name = "T" if what == "maxT" else "batch"

        def at(v, **kw):
            return spec(w, v, m, **kw) if what == "maxT" else spec(w, small_T, m, v, **kw)

        points = [(v, futures[key(at(v))].result()) for v in ((small_T, 16 if not args.quick else 4) if what == "maxT"
                                                               else (base_B // 2, base_B))]
        lim = limit_mib or next((r["limit_mib"] for _, r in points if r.get("limit_mib")), None)
        pts = [(v, r["total_mib"]) for v, r in points if r.get("total_mib") is not None]
        est = extrapolate(pts, 0.97 * lim) if lim else None
        probed = []

        def check(cands):
            cands = [v for v in cands if v not in {p[0] for p in probed}]
            for v, c in zip(cands, [pool.submit(run, at(v, compile_only=True)) for v in cands], strict=True):
                r = c.result()
                probed.append((v, None if r.get("total_mib") is None else r["total_mib"] <= lim, r.get("total_mib")))

        if est:
            check(sorted({max(1, round(est * f)) for f in (0.85, 1.0, 1.15)}))
            # the total is not quite affine (small-T constants): a second round on the line through the
            # measured points that bracket the limit (or the two nearest it), unless a fit sits next to a miss
            measured = sorted((v, t) for v, _, t in probed if t is not None) + pts
            below = max(((v, t) for v, t in measured if t <= lim), default=None)
            above = min(((v, t) for v, t in measured if t > lim), default=None)
            pair = [q for q in (below, above) if q] if below and above else sorted(measured, key=lambda q: q[0])[-2:]
            est2 = extrapolate(pair, 0.99 * lim)
            cands = {max(1, round(est2 * f)) for f in (0.97, 1.0)} if est2 else set()
            if below and above:  # only values strictly inside the bracket
                cands = {v for v in cands | {below[0] + 1} if below[0] < v < above[0]}
                cands = set(sorted(cands)[-2:])
            check(sorted(cands))
        best = max((v for v, f, _ in probed if f), default=None)
        row = dict(workload=w, remat=m, search=f"largest {name} (compiled total <= {lim and round(lim)} MiB)",
                   **{name: best}, estimate=est, fits=best is not None, note_probes=probed, points=pts)
        if what == "maxB":
            row["T"] = small_T
        if not probed or all(f is None for _, f, _ in probed):
            row.update(fits=None, error="not measured (two compiled points, a memory limit and the budget needed)")
        out.add(row)

    searchers = [threading.Thread(target=search, args=(w, what, m)) for w, what in searches for m in args.modes]
    for t in searchers:
        t.start()
    # 3. the timed rows, one at a time on the device, once every compilation is done (a compile beside a
    # timed row slows its host: the LM's T = 16 "spikes" step measured 656 ms so, 544 ms alone); 4. the anchor
    concurrent.futures.wait(futures.values())
    for t in searchers:
        t.join()
    for w, T in timed:
        for m in args.modes:
            c = futures[key(spec(w, T, m))].result()
            r = run(spec(w, T, m))
            r.setdefault("compile_only_s", c.get("compile_s"))
            out.add(r)
    sj_T = sorted((int(v) for w, v in rows if w == "sj"), reverse=True)
    if sj_T:
        try:
            import spikingjelly.activation_based.memopt  # noqa: F401
            why = None
        except Exception as err:  # noqa: BLE001 - any import failure: the anchor is skipped
            why = f"SpikingJelly memopt not importable ({type(err).__name__})"
        for T in sj_T:
            for mm in ("none", "memopt"):
                s = dict(workload="sj_spikformer", T=T, batch=base_B, remat=mm, quick=args.quick, reps=reps,
                         id=["sj", T, mm, base_B])
                out.add(run(s) if why is None else {**s, "skipped": why})
    pool.shutdown()
    print(f"wrote {stem}.jsonl and {stem}.md in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
