"""Training memory per remat mode (spikejax.remat): peak device memory and step time, largest T / batch.

Workloads (one training step: loss, gradients, AdamW update, all under one ``jax.jit``):

- ``lm``: the ``shakespeare`` preset of ``spikejax train lm`` (SpikingLM d=384, 6 layers, hybrid
  attention, ternary neurons, B=64, L=256; vocabulary 65);
- ``spikformer``: ``spikejax.models.create("spikformer_cifar10")`` on 32x32x3 images, B=64;
- ``sj_spikformer``: SpikingJelly's ``spikformer_cifar10`` (PyTorch, multi-step), plain and with
  ``memopt`` (``optimize_memory(level=1)``: checkpoint per block, bit-compressed spike inputs), the
  anchor; skipped where SpikingJelly or CUDA is missing.

For every workload, T in (4, 16) and mode: the compiled ``memory_analysis()`` (temp, arguments,
outputs), the device's ``peak_bytes_in_use`` (``jax.devices()[0].memory_stats()``, GPU), the median
step time. Then, per mode, the largest T (batch fixed) and the largest batch (T=4) that fit: doubling
then bisection, each probe a compile plus one step that catches out-of-memory errors, capped in
probes and by the script's time budget. Every measurement runs in its own subprocess (a fresh peak
counter, an OOM cannot poison the next row). Rows are appended as they finish to
``benchmarks/results/memory_<device>_<date>.jsonl`` and the markdown table next to it is rewritten,
so a killed run keeps its finished rows.

    python benchmarks/memory.py                  # the GPU run: no row starts after --budget-s (450 s)
    python benchmarks/memory.py --quick          # tiny sizes on CPU (a smoke test of the script)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("none", "block", "spikes", "offload")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# --- one measurement (runs in a subprocess) -----------------------------------------------------------


def _lm_config(T: int, remat: str, quick: bool):
    from spikejax.nn import SpikingLMConfig
    from spikejax.train.presets import PRESETS

    p = PRESETS["lm"]["shakespeare"]
    size = dict(d_model=32, num_heads=2, num_layers=2, max_len=32) if quick else dict(
        d_model=p.d_model, num_heads=p.heads, num_layers=p.layers, max_len=p.seq_len)
    window = min(64, size["max_len"])
    return SpikingLMConfig(vocab_size=65, mlp_ratio=p.mlp_ratio, time_steps=T, attention=p.attention,
                           attention_kwargs={"window": window, "softmax": True, "eps": 1.0}, neuron=p.neuron,
                           neuron_kwargs={"beta": p.beta, "threshold": p.threshold}, dropout=p.dropout,
                           dtype=p.dtype, remat=remat, **size), p.batch_size


def _jax_step(workload: str, T: int, batch: int | None, remat: str, quick: bool):
    """(jitted step, its arguments, batch) of one training step of ``workload``."""
    import jax
    import optax
    from flax import nnx

    if workload == "lm":
        cfg, default_batch = _lm_config(T, remat, quick)
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


def measure_jax(workload: str, T: int, batch: int | None, remat: str, quick: bool, reps: int) -> dict:
    import jax

    step, (state, key), B = _jax_step(workload, T, batch, remat, quick)
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
                   out_mib=ma.output_size_in_bytes / 2**20,
                   host_temp_mib=getattr(ma, "host_temp_size_in_bytes", 0) / 2**20)
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
        row["limit_mib"] = stats.get("bytes_limit", 0) / 2**20
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
            loss = torch.nn.functional.cross_entropy(net(x), y)
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


def _run_row(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--row", json.dumps(spec)]
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # a peak counter of this row, not the pool
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, for `import spikejax`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout), env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = any("RESOURCE_EXHAUSTED" in ln or "out of memory" in ln.lower() for ln in tail)
    return {**spec, "fits": False if oom else None, "error": " | ".join(tail)[:300]}


class Writer:
    """Appends rows to ``<stem>.jsonl`` and rewrites ``<stem>.md`` after each one."""

    COLS = ("workload", "T", "batch", "remat", "fits", "temp_mib", "peak_mib", "step_ms", "compile_s", "note")

    def __init__(self, stem: str):
        self.stem, self.rows = stem, []
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        open(stem + ".jsonl", "w").close()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.stem + ".jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        lines = ["| " + " | ".join(self.COLS) + " |", "|" + "---|" * len(self.COLS)]
        for r in self.rows:
            note = r.get("skipped") or r.get("error") or r.get("search", "")
            vals = [r.get(c, "") if c != "note" else note for c in self.COLS]
            lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in vals) + " |")
        with open(self.stem + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        print(json.dumps(row), flush=True)


def _largest(probe, start: int, cap: int, max_probes: int) -> tuple[int | None, int]:
    """The largest value in [start, cap] for which ``probe(value)`` fits: doubling, then bisection."""
    lo, hi, n, v = None, None, 0, start
    while v <= cap and n < max_probes:
        n += 1
        if probe(v):
            lo, v = v, v * 2
        else:
            hi = v
            break
    if lo is None:
        return None, n
    if hi is None:
        hi = min(v, cap + 1)
    while hi - lo > max(1, lo // 8) and n < max_probes:  # within 1/8
        n += 1
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--workloads", nargs="+", default=["lm", "spikformer", "sj_spikformer"],
                    choices=["lm", "spikformer", "sj_spikformer"])
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole run")
    ap.add_argument("--reps", type=int, default=5, help="timed steps per row (after one warm-up)")
    ap.add_argument("--max-probes", type=int, default=5, help="probes per largest-T / largest-batch search")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/memory_<device>_<date>)")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.row:  # one measurement, in this subprocess
        spec = json.loads(args.row)
        if spec["workload"] == "sj_spikformer":
            row = measure_spikingjelly(spec["T"], spec["batch"], spec["remat"] == "memopt", spec["reps"])
        else:
            row = measure_jax(spec["workload"], spec["T"], spec.get("batch"), spec["remat"], spec["quick"],
                              spec["reps"])
        print(json.dumps({**spec, **row}), flush=True)
        return

    import jax

    deadline = time.monotonic() + args.budget_s
    device = jax.devices()[0].device_kind.replace(" ", "_").lower()
    stem = args.out or os.path.join(RESULTS, f"memory_{device}{'_quick' if args.quick else ''}_"
                                             f"{datetime.date.today().isoformat()}")
    out = Writer(stem)
    reps = 1 if args.quick else args.reps
    Ts = (2, 4) if args.quick else (4, 16)

    def row(spec: dict) -> dict:
        left = deadline - time.monotonic()
        if left < 5:
            return {**spec, "skipped": "time budget spent"}
        return _run_row({**spec, "quick": args.quick, "reps": spec.get("reps", reps)}, left)

    # the long-T rows first (what the budget must not cut), the anchor first of all (no compile)
    jax_workloads = [w for w in args.workloads if w != "sj_spikformer"]
    if "sj_spikformer" in args.workloads:
        try:
            import spikingjelly.activation_based.memopt  # noqa: F401
            have_sj = True
        except Exception as err:  # noqa: BLE001 - any import failure: the anchor is skipped
            have_sj, why = False, f"SpikingJelly memopt not importable ({type(err).__name__})"
        for T in reversed(Ts):
            for mm in ("none", "memopt"):
                spec = dict(workload="sj_spikformer", T=T, batch=2 if args.quick else 64, remat=mm)
                out.add(row(spec) if have_sj else {**spec, "skipped": why})
    for T in reversed(Ts):
        for workload in jax_workloads:
            for mode in args.modes:
                out.add(row(dict(workload=workload, T=T, remat=mode)))
    # largest T (batch as above) and largest batch (T = 4) per mode
    cap_T, cap_B = (8, 8) if args.quick else (512, 4096)
    for workload in jax_workloads:
        for mode in args.modes:
            for what, start, cap in (("T", Ts[-1], cap_T), ("batch", 2 if args.quick else 64, cap_B)):
                probes = []

                def fits(v, workload=workload, mode=mode, what=what, probes=probes):
                    spec = dict(workload=workload, T=v if what == "T" else Ts[0], remat=mode, reps=0)
                    if what == "batch":
                        spec["batch"] = v
                    r = row(spec)
                    probes.append((v, r.get("fits")))
                    return bool(r.get("fits"))

                best, n = _largest(fits, start, cap, args.max_probes)
                result = dict(workload=workload, remat=mode, search=f"largest {what}", **{what: best},
                              fits=best is not None, note_probes=probes)
                if all(f is None for _, f in probes):  # no probe measured (budget spent, or an error)
                    result.update(fits=None, error="not measured")
                out.add(result)
    print(f"wrote {stem}.jsonl and {stem}.md")


if __name__ == "__main__":
    main()
