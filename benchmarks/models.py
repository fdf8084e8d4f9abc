"""Whole-model training step: spikejax's zoo against SpikingJelly 2.0 on the same architecture.

One training step = forward, cross-entropy on the T-averaged logits, backward, gradient clipping
to norm 1 and AdamW (weight decay on matrices only), at batch 64, T = 4, CIFAR-10 shape
(32x32x3 images, 10 classes), for ``spikformer_cifar10``, ``sdt_8_384`` and ``sew_resnet18``
(SEW ADD, LIF τ = 2 with a detached hard reset), in float32 and bfloat16:

* spikejax: ``spikejax.models.create(name, backend=..., dtype=...)`` (``backend="pallas"``, the fused
  engine, and ``"xla"``, the unrolled ``lax.scan`` that XLA fuses with the BatchNorms, on a GPU;
  ``"xla"`` on a CPU; ``dtype="bfloat16"``: bf16 convs / linears / activations / spikes, float32
  parameters, BatchNorm statistics and logits), the step of
  :func:`spikejax.train.steps.make_steps` with :func:`~spikejax.train.steps.make_optimizer`,
  compiled ahead of time (``jit(step).lower(...).compile()``; its ``cost_analysis()`` is recorded).
* SpikingJelly 2.0: the builders of ``spikingjelly.activation_based.model`` (multi-step,
  ``step_mode="m"``), fused ``torch.optim.AdamW``, ``cudnn.benchmark``, TF32 matmuls
  (``set_float32_matmul_precision("high")``; cuDNN's convolutions use TF32 by default); configurations
  ``triton`` (eager; its Triton LIF kernels, ``SJ_LIF_CUDA_IMPLEMENTATION=triton``), ``compile``
  (``torch.compile(model)``; SpikingJelly then selects its Triton neurons itself), ``cuda``
  (eager, its native CUDA neurons where they are built), ``eager`` (its own choice; the CPU default).
  ``cuda`` and ``compile`` on a CPU are not in the default runs. bfloat16 is its
  recipe ``spikingjelly.activation_based.precision.prepare_model_for_precision(model, device,
  PrecisionConfig(mode="bf16", neuron_storage="bf16"))``: bf16 autocast, bf16 neuron storage in
  its Triton kernels (the backward is written out: ``PrecisionArtifacts.backward`` reads the clipped
  norm back to the host every step, a synchronisation the fp32 rows do not have).

Timing: after ``--warmup`` steps, ``--reps`` timed regions of ``--steps`` steps each, one
synchronisation per region (JAX: ``block_until_ready`` on the last loss; torch:
``cuda.synchronize``); ms/step is the best region divided by ``--steps`` (all regions are in the
json). Peak memory: ``jax.devices()[0].memory_stats()["peak_bytes_in_use"]`` (JAX preallocation
off) and ``torch.cuda.max_memory_allocated()``, each over its own process: every (framework,
model, dtype, config) runs in its own subprocess with a timeout. Up to ``--jobs`` subprocesses
run at once so that compilation overlaps, but the GPU part of a run (warm-up and timed regions)
holds an exclusive file lock; the first, compiling step of a ``torch.compile`` run and XLA's
compile-time autotuning happen outside the lock (``--jobs 1`` for fully serial runs).

Roofline of one step (the same for both frameworks: the architectures are identical):

* matmul / conv FLOPs: counted from the jaxpr of spikejax's forward at the benchmark's shapes
  (every ``dot_general`` and ``conv_general_dilated``, sub-jaxprs and scans included), times 3 for
  the training step (input and weight gradients; the first layer's unneeded input gradient is
  included), at the GPU's dense peak: ``--peak-bf16`` (H200: 989 TFLOP/s) and ``--peak-f32``
  (494 TFLOP/s: TF32 tensor cores, which XLA and cuDNN use for f32 convolutions by default;
  strict FP32 would be 67 TFLOP/s);
* elementwise work: for every neuron layer, its input (the BatchNorm output) ``y`` and its spikes
  ``s`` (shapes from spikejax's spike recording), each written once and read once in the forward,
  and their gradients written once and read once in the backward: ``4 · Σ (|y| + |s|)`` elements at
  the step's activation width (4 bytes f32, 2 bytes bf16), at ``--copy-bw`` (H200: 4.0 TB/s measured
  device copy). A lower bound: pooling, residual adds, attention products and the optimizer's
  parameter traffic are not counted.

``roofline ms = FLOPs / peak + bytes / bandwidth`` and ``x roofline = measured / roofline``. The
matmul count is dense: it includes the zero-padding taps of 3x3 convolutions on the small late
feature maps (SEW-ResNet's layer 4 is 1x1 at 32x32 inputs), which XLA's ``cost_analysis`` leaves out;
its FLOPs of the compiled spikejax step (every op, elementwise included, without the Pallas
kernels) are the "XLA GFLOP" column. Both frameworks build the same architecture ("params M"
shows the parameter counts).

Usage (the H200 run, after ``source .whl/gpu-env.sh`` as for the other benchmarks; about 9 minutes)::

    python -m benchmarks.models

    python -m benchmarks.models --models sew_resnet18 --dtypes bfloat16 --frameworks spikejax --steps 50
    python -m benchmarks.models --configs spikingjelly:cuda spikingjelly:triton    # other peer configurations
    python -m benchmarks.models --quick        # CPU: batch 2, 16x16 images, a few steps (tests the script)

Each finished configuration appends one json line and one markdown row to
``benchmarks/results/models_<device>_<date>.{jsonl,md}`` (``--out`` changes the folder), so a killed
run keeps its rows; a summary (speed-up and memory against SpikingJelly's fastest configuration,
per model and dtype) follows when all are done.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types

MODELS = ("spikformer_cifar10", "sdt_8_384", "sew_resnet18")
DTYPES = ("float32", "bfloat16")
FRAMEWORKS = ("spikejax", "spikingjelly")
GPU_CONFIGS = {"spikejax": ("pallas", "xla"), "spikingjelly": ("triton", "compile")}
CPU_CONFIGS = {"spikejax": ("xla",), "spikingjelly": ("eager",)}  # torch.compile takes minutes on a CPU
SJ_CONFIGS = ("triton", "compile", "cuda", "eager")
NUM_CLASSES = 10
RESULT_TAG = "RESULT "


# --- work in the subprocesses -------------------------------------------------------------------------


@contextlib.contextmanager
def gpu_lock(path: str | None):
    """Exclusive ``flock`` on ``path`` (no-op for None): one process on the GPU at a time."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _time_regions(step, sync, steps: int, reps: int) -> tuple[list[float], object]:
    """Seconds per step of ``reps`` regions of ``steps`` calls of ``step`` (``sync(out)`` waits for the last),
    and the last output."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        times.append((time.perf_counter() - t0) / steps)
    return times, out


def matmul_flops(jaxpr) -> float:
    """FLOPs of every ``dot_general`` / ``conv_general_dilated`` in a (closed) jaxpr, recursing into
    sub-jaxprs (``pjit``, ``custom_vjp_call``, ``remat``, ...; a ``scan`` body times its length, the
    largest ``cond`` branch); ``pallas_call`` kernels are elementwise here and are skipped."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_channels = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / out_channels
        elif name == "pallas_call":
            continue
        subs = []
        for value in eqn.params.values():
            for v in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(v, "jaxpr", v)
                if hasattr(inner, "eqns"):
                    subs.append(matmul_flops(inner))
        if subs:
            total += (max(subs) if name == "cond" else sum(subs)) * eqn.params.get("length", 1)
    return total


def count_model(name: str, batch: int, image: int, T: int) -> dict:
    """Forward matmul FLOPs and the neuron layers' element counts of spikejax's ``name`` (CPU, traced only)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from spikejax.models import create
    from spikejax.models.sj_neurons import record_spikes

    model = record_spikes(nnx.eval_shape(lambda: create(name, num_classes=NUM_CLASSES, T=T)))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((batch, image, image, 3), jnp.float32)

    def forward(state, x):
        return nnx.capture(nnx.merge(graphdef, state), nnx.Intermediate)(x)

    jaxpr = jax.make_jaxpr(forward)(state, x)
    _, inter = jax.eval_shape(forward, state, x)
    spikes = [leaf for leaf in jax.tree.leaves(inter) if hasattr(leaf, "shape")]
    return {"model": name, "forward_matmul_flops": matmul_flops(jaxpr), "neuron_layers": len(spikes),
            "neuron_elements": int(sum(math.prod(s.shape) for s in spikes))}


def build_spikejax_step(model: str, dtype: str, config: str, batch: int, image: int, T: int):
    """spikejax's compiled training step of ``model``: ``(step, split, compile_s, cost)`` where
    ``step()`` runs one step on a fixed random batch and returns its loss (``split``: the model's
    :class:`~spikejax.train.steps.ModelSplit`, ``cost``: the compiled step's ``cost_analysis()``)."""
    import jax
    import jax.numpy as jnp
    import optax

    from spikejax.models import create
    from spikejax.train.steps import ModelSplit, make_optimizer, make_steps

    def loss_fn(net, b, key=None):
        del key
        logits = net(b[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, b[1]).mean(), {}

    net = create(model, num_classes=NUM_CLASSES, T=T, dtype=dtype, backend=config)
    split = ModelSplit(net)
    kx, ky = jax.random.split(jax.random.key(0))
    data = (jax.random.normal(kx, (batch, image, image, 3), jnp.float32),
            jax.random.randint(ky, (batch,), 0, NUM_CLASSES))
    fns = make_steps(split, make_optimizer(1e-3, 10_000, warmup=0), loss_fn, lambda n, b: {}, data)
    state = fns.init()
    t0 = time.perf_counter()
    compiled = fns.train.lower(state, data).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    box = {"state": state}

    def step():
        box["state"], metrics = compiled(box["state"], data)
        return metrics["loss"]

    return step, split, compile_s, cost


def run_spikejax(model: str, dtype: str, config: str, batch: int, image: int, T: int, steps: int, warmup: int,
                 reps: int, lock: str | None) -> dict:
    import jax

    step, split, compile_s, cost = build_spikejax_step(model, dtype, config, batch, image, T)
    with gpu_lock(lock):
        for _ in range(warmup):
            loss = step()
        jax.block_until_ready(loss)
        times, loss = _time_regions(step, jax.block_until_ready, steps, reps)
    stats = jax.devices()[0].memory_stats() or {}
    return {"times_s": times, "peak_bytes": stats.get("peak_bytes_in_use"), "compile_s": compile_s,
            "xla_flops": (cost or {}).get("flops"), "xla_bytes_accessed": (cost or {}).get("bytes accessed"),
            "loss": float(loss), "device": str(jax.devices()[0].device_kind), "num_params": split.num_params}


def _sj_models():
    """SpikingJelly's zoo modules (:func:`spikejax.interop.spikingjelly.import_model_modules`)."""
    from spikejax.interop.spikingjelly import import_model_modules

    m = import_model_modules("sew_resnet", "spike_driven_transformer", "spikformer")
    return types.SimpleNamespace(sew=m.sew_resnet, sdt=m.spike_driven_transformer, spikformer=m.spikformer)


def build_spikingjelly(model: str, T: int):
    """SpikingJelly's model of the same architecture as ``spikejax.models.create(model, num_classes=10, T=T)``,
    multi-step."""
    from spikingjelly.activation_based import functional, neuron

    m = _sj_models()
    if model == "spikformer_cifar10":
        net = m.spikformer.spikformer_cifar10(T=T, num_classes=NUM_CLASSES)
    elif model == "sdt_8_384":
        net = m.sdt.sdt_8_384(T=T, num_classes=NUM_CLASSES)
    elif model == "sew_resnet18":
        net = m.sew.sew_resnet18(cnf="ADD", spiking_neuron=neuron.LIFNode, tau=2.0, detach_reset=True,
                                 num_classes=NUM_CLASSES)
    else:
        raise ValueError(f"model: no SpikingJelly builder mapped for {model!r}; expected one of {MODELS}")
    functional.set_step_mode(net, "m")
    return net


def run_spikingjelly(model: str, dtype: str, config: str, batch: int, image: int, T: int, steps: int, warmup: int,
                     reps: int, lock: str | None) -> dict:
    import torch
    from spikingjelly.activation_based import functional

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")  # TF32 matmuls, as cuDNN's convolutions and XLA's f32 default
    torch.manual_seed(0)
    net = build_spikingjelly(model, T).to(dev)
    autocast, report = contextlib.nullcontext, None
    if dtype == "bfloat16":
        from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

        storage = "bf16" if dev.type == "cuda" else None  # the Triton neurons' storage: CUDA only
        try:
            art = prepare_model_for_precision(net, dev, PrecisionConfig(mode="bf16", neuron_storage=storage))
            report = {k: len(v) for k, v in (art.triton_report or {}).items()}
        except RuntimeError as err:  # no Triton neurons for this configuration: autocast alone, noted in the row
            art = prepare_model_for_precision(net, dev, PrecisionConfig(mode="bf16"))
            report = {"error": f"bf16 neuron storage refused ({err}); autocast only"[:300]}
        net, autocast = art.model, art.autocast_context
    forward = torch.compile(net) if config == "compile" else net
    decay = [p for p in net.parameters() if p.ndim >= 2]
    other = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), fused=dev.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image, image, generator=gen).to(dev)
    x_seq = images.unsqueeze(0).repeat(T, 1, 1, 1, 1).contiguous()
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(dev)
    params = list(net.parameters())

    def step():
        functional.reset_net(net)
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = forward(x_seq)
        logits = (out.mean(0) if out.ndim == 3 else out).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=dev.type == "cuda")
        opt.step()
        return loss.detach()

    sync = (lambda out: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda out: out.item())
    t0 = time.perf_counter()
    if config == "compile":  # the compiling step, outside the GPU lock
        sync(step())
        warmup = max(warmup - 1, 0)
    compile_s = time.perf_counter() - t0
    with gpu_lock(lock):
        for _ in range(warmup):
            loss = step()
        if warmup:
            sync(loss)
        times, loss = _time_regions(step, sync, steps, reps)
    from importlib.metadata import version

    return {"times_s": times, "peak_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
            "compile_s": compile_s, "loss": float(loss),
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            "neuron_impl": os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION", "auto"), "bf16_neurons": report,
            "versions": f"torch {torch.__version__}, spikingjelly {version('spikingjelly')}",
            "num_params": sum(p.numel() for p in params)}


def child_main(spec: dict) -> None:
    """Run one job of the parent (``--child JSON``) and print its result line."""
    try:
        if spec["kind"] == "count":
            out = count_model(spec["model"], spec["batch"], spec["image"], spec["T"])
        else:
            run = run_spikejax if spec["framework"] == "spikejax" else run_spikingjelly
            out = run(spec["model"], spec["dtype"], spec["config"], spec["batch"], spec["image"], spec["T"],
                      spec["steps"], spec["warmup"], spec["reps"], spec.get("lock"))
        print(RESULT_TAG + json.dumps(out), flush=True)
    except Exception:  # noqa: BLE001 - reported to the parent
        traceback.print_exc()
        sys.exit(1)


# --- the parent ----------------------------------------------------------------------------------------


def device_name() -> str:
    """A short name of GPU 0 (``h200``) from ``nvidia-smi``, else ``cpu``."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        out = []
    if not out:
        return "gpu" if os.path.exists("/dev/nvidia0") else "cpu"
    words = [w for w in out[0].lower().replace("nvidia", "").split() if w not in ("geforce", "tesla")]
    return "_".join(words[:2]) or "gpu"


def triton_cache_env() -> dict[str, str]:
    """Environment for SpikingJelly's Triton kernels and inductor: writable cache folders (unless set) and
    :class:`benchmarks._triton_cache.WritableCacheManager` (on the benchmark machine Triton's cache knob
    reads back empty in a subprocess)."""
    root = os.path.join(tempfile.gettempdir(), "spikejax-triton")
    env = {}
    for var, sub in (("TRITON_HOME", ""), ("TRITON_CACHE_DIR", "cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        env[var] = os.environ.get(var) or os.path.join(root, sub)
        os.makedirs(env[var], exist_ok=True)
    env["SPIKEJAX_TRITON_CACHE"] = os.environ.get("SPIKEJAX_TRITON_CACHE", env["TRITON_CACHE_DIR"])
    env["TRITON_CACHE_MANAGER"] = os.environ.get("TRITON_CACHE_MANAGER",
                                                 "benchmarks._triton_cache:WritableCacheManager")
    return env


def run_child(spec: dict, env: dict, timeout: float) -> dict:
    """Run ``spec`` in a subprocess; its result dict, or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "benchmarks.models", "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    # its own session, so that a timeout also ends its workers (torch.compile's compile pool)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timeout after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    for line in stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            return {**json.loads(line[len(RESULT_TAG):]), "wall_s": time.perf_counter() - t0}
    lines = [ln for ln in (stderr + stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return {"error": (errors or lines or [f"exit status {proc.returncode}"])[-1][:400],
            "wall_s": time.perf_counter() - t0}


def roofline(count: dict | None, dtype: str, args) -> dict:
    """FLOPs, bytes and the roofline time of one training step (see the module docstring)."""
    if not count or "forward_matmul_flops" not in count:
        return {}
    flops = 3.0 * count["forward_matmul_flops"]
    nbytes = 4.0 * 2 * count["neuron_elements"] * (2 if dtype == "bfloat16" else 4)
    peak = args.peak_bf16 if dtype == "bfloat16" else args.peak_f32
    t = flops / (peak * 1e12) + nbytes / (args.copy_bw * 1e12)
    return {"matmul_flops": flops, "elementwise_bytes": nbytes, "roofline_s": t,
            "roofline_matmul_s": flops / (peak * 1e12), "roofline_bytes_s": nbytes / (args.copy_bw * 1e12)}


MD_HEADER = ("| model | dtype | framework | config | ms/step | peak MiB | params M | matmul GFLOP | XLA GFLOP | "
             "elementwise MB | roofline ms | x roofline | compile s | note |\n"
             "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")


def md_row(r: dict) -> str:
    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    note = r.get("error", "")
    bf16 = r.get("bf16_neurons") or {}
    if not note and bf16:
        note = bf16.get("error") or f"bf16 Triton neurons: {bf16.get('converted_modules', 0)}"
    return (f"| {r['model']} | {r['dtype']} | {r['framework']} | {r['config']} | {f(r.get('ms_per_step'), '.2f')} | "
            f"{f(r.get('peak_mib'), '.0f')} | {f(r.get('num_params') and r['num_params'] / 1e6, '.2f')} | "
            f"{f(r.get('matmul_flops') and r['matmul_flops'] / 1e9, '.1f')} | "
            f"{f(r.get('xla_flops') and r['xla_flops'] / 1e9, '.1f')} | "
            f"{f(r.get('elementwise_bytes') and r['elementwise_bytes'] / 1e6, '.0f')} | "
            f"{f(r.get('roofline_s') and r['roofline_s'] * 1e3, '.2f')} | {f(r.get('x_roofline'), '.2f')} | "
            f"{f(r.get('compile_s'), '.0f')} | {note.replace('|', '/')} |\n")


def summary(rows: list[dict]) -> str:
    """Per (model, dtype): spikejax's fastest configuration against SpikingJelly's."""
    lines = ["| model | dtype | spikejax ms (config) | SpikingJelly fastest ms (config) | speed-up | "
             "peak MiB spikejax / SJ | spikejax x roofline |", "|---|---|--:|--:|--:|--:|--:|"]
    keys = sorted({(r["model"], r["dtype"]) for r in rows})
    for model, dtype in keys:
        best = {}
        for fw in FRAMEWORKS:
            ok = [r for r in rows if (r["model"], r["dtype"], r["framework"]) == (model, dtype, fw)
                  and r.get("ms_per_step")]
            best[fw] = min(ok, key=lambda r: r["ms_per_step"]) if ok else None
        a, b = best["spikejax"], best["spikingjelly"]
        fmt = lambda r: f"{r['ms_per_step']:.2f} ({r['config']})" if r else "-"
        speed = f"{b['ms_per_step'] / a['ms_per_step']:.2f}x" if a and b else "-"
        mem = (f"{a['peak_mib']:.0f} / {b['peak_mib']:.0f}" if a and b and a.get("peak_mib") and b.get("peak_mib")
               else "-")
        roof = f"{a['x_roofline']:.2f}" if a and a.get("x_roofline") else "-"
        lines.append(f"| {model} | {dtype} | {fmt(a)} | {fmt(b)} | {speed} | {mem} | {roof} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    p.add_argument("--configs", nargs="+", metavar="FRAMEWORK:CONFIG",
                   help="replace the configurations (spikejax:pallas|xla|triton, "
                        "spikingjelly:triton|compile|cuda|eager)")
    p.add_argument("--steps", type=int, help="steps per timed region (default 20; --quick 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--reps", type=int, help="timed regions; the best is reported (default 3; --quick 1)")
    p.add_argument("--batch", type=int, help="batch size (default 64; --quick 2)")
    p.add_argument("--image", type=int, help="image side (default 32; --quick 16)")
    p.add_argument("--T", type=int, default=4, help="time steps (default 4)")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: batch 2, 16x16 images, 2 steps")
    p.add_argument("--jobs", type=int, help="subprocesses at once (default 3 on a GPU, 1 on a CPU)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration (default 300)")
    p.add_argument("--budget", type=float,
                   help="seconds: configurations not started by then are skipped (default 540; --quick 3600)")
    p.add_argument("--peak-bf16", type=float, default=989.0, help="dense bf16 TFLOP/s (H200: 989)")
    p.add_argument("--peak-f32", type=float, default=494.0, help="f32 matmul TFLOP/s (H200 TF32: 494)")
    p.add_argument("--copy-bw", type=float, default=4.0, help="device copy TB/s (H200 measured: 4.0)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, full, quick in (("steps", 20, 2), ("reps", 3, 1), ("batch", 64, 2), ("image", 32, 16),
                              ("budget", 540.0, 3600.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            p.error(f"argument --{name}: expected a positive integer, got {getattr(args, name)}")
    if args.warmup < 1:
        p.error(f"argument --warmup: expected at least 1, got {args.warmup}")
    if args.configs:
        for c in args.configs:
            fw, _, cfg = c.partition(":")
            if fw not in FRAMEWORKS or not cfg or (fw == "spikingjelly" and cfg not in SJ_CONFIGS):
                p.error(f"argument --configs: expected spikejax:BACKEND or spikingjelly:{'|'.join(SJ_CONFIGS)}, "
                        f"got {c!r}")
    return args


def plan(args, gpu: bool) -> list[dict]:
    """The jobs, longest (``torch.compile``) first."""
    if args.configs:
        configs = {fw: tuple(c.partition(":")[2] for c in args.configs if c.startswith(fw + ":")) for fw in FRAMEWORKS}
    else:
        configs = GPU_CONFIGS if gpu else CPU_CONFIGS
    jobs = [dict(kind="run", framework=fw, model=m, dtype=d, config=c, batch=args.batch, image=args.image, T=args.T,
                 steps=args.steps, warmup=args.warmup, reps=args.reps)
            for m in args.models for d in args.dtypes for fw in args.frameworks for c in configs.get(fw, ())]
    order = {"compile": 0, "pallas": 1, "triton": 1}
    return sorted(jobs, key=lambda j: order.get(j["config"], 2))


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return []
    start = time.perf_counter()
    device = device_name()
    gpu = device != "cpu"
    jobs_at_once = args.jobs or (3 if gpu else 1)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"models_{device}{'_quick' if args.quick else ''}_{datetime.date.today():%Y-%m-%d}")
    lock = os.path.join(tempfile.gettempdir(), f"spikejax-models-gpu-{os.getpid()}.lock")
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1", **triton_cache_env()}
    print(f"counting FLOPs and neuron activations of {args.models} (CPU) ...", flush=True)
    counts = {}
    with concurrent.futures.ThreadPoolExecutor(len(args.models)) as pool:
        futures = {m: pool.submit(run_child, dict(kind="count", model=m, batch=args.batch, image=args.image, T=args.T),
                                  {**env, "JAX_PLATFORMS": "cpu"}, args.timeout) for m in args.models}
        for m, fut in futures.items():
            counts[m] = fut.result()
            if "error" in counts[m]:
                print(f"  {m}: count failed: {counts[m]['error']}", flush=True)

    md_new = not os.path.exists(stem + ".md")
    with open(stem + ".md", "a") as f:
        if md_new:
            f.write(f"# Training step of the zoo models ({device})\n\n")
        f.write(f"\n## run {datetime.datetime.now():%Y-%m-%d %H:%M} "
                f"(batch {args.batch}, {args.image}x{args.image}x3, T={args.T}, {args.steps} steps x {args.reps}; "
                f"roofline: {args.peak_f32:g} / {args.peak_bf16:g} TFLOP/s f32 / bf16, {args.copy_bw:g} TB/s)\n\n")
        f.write(MD_HEADER)
    rows: list[dict] = []
    write = threading.Lock()

    def one(spec: dict) -> None:
        left = args.budget - (time.perf_counter() - start)
        if left <= 0:
            result = {"error": "skipped: --budget spent"}
        else:
            child_env = dict(env)
            if spec["framework"] == "spikingjelly" and spec["config"] in ("triton", "cuda"):
                child_env["SJ_LIF_CUDA_IMPLEMENTATION"] = spec["config"] if gpu else "auto"
            elif not gpu:
                child_env["JAX_PLATFORMS"] = "cpu"
            result = run_child({**spec, "lock": lock if gpu else None}, child_env, min(args.timeout, left + 30))
        row = {k: spec[k] for k in ("framework", "model", "dtype", "config", "batch", "image", "T", "steps")}
        row.update(result)
        if result.get("times_s"):
            row["ms_per_step"] = 1e3 * min(result["times_s"])
        if result.get("peak_bytes"):
            row["peak_mib"] = result["peak_bytes"] / 2**20
        row.update(roofline(counts.get(spec["model"]), spec["dtype"], args))
        if row.get("ms_per_step") and row.get("roofline_s"):
            row["x_roofline"] = row["ms_per_step"] / 1e3 / row["roofline_s"]
        with write:
            rows.append(row)
            with open(stem + ".jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            with open(stem + ".md", "a") as f:
                f.write(md_row(row))
            print(md_row(row), end="", flush=True)

    with concurrent.futures.ThreadPoolExecutor(jobs_at_once) as pool:
        for fut in [pool.submit(one, spec) for spec in plan(args, gpu)]:
            fut.result()
    table = summary(rows)
    with open(stem + ".md", "a") as f:
        f.write("\nSpeed-up = SpikingJelly's fastest configuration / spikejax's, same model and dtype.\n\n" + table)
    print("\n" + table + f"\n{stem}.md, {stem}.jsonl ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    main()
