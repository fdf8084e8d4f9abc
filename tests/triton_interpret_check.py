"""The Triton kernels in Triton's CPU interpreter against the ``lax.scan`` reference.

Run as a script with ``TRITON_INTERPRET=1`` set before triton is imported (the test in
test_triton.py does so in a subprocess). Two parts:

* kernels: ``triton_kernels``' forward and backward kernels launched directly on torch CPU tensors
  with the launch plan the JAX wrappers use; forward outputs and every gradient against ``jax.vjp``
  of ``spikejax.backends.reference_scan`` on fresh random inputs;
* JAX layer: the wrappers (custom_vjp through ``spikejax.backends``, the custom_vmap folding, the
  residuals) with ``jax_triton`` replaced by :func:`interpreter_triton_call`, which runs the same
  kernels in the interpreter through ``jax.pure_callback``: grad, vmap of grad with batched
  parameters, vmap over cotangents only, and a tuning change between forward and backward.

Prints one JSON line per case (``{"case", "error"}``, error None when it matches) and exits 1 if
any case fails.
"""

from __future__ import annotations

import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import torch

from spikejax import backends
from triton_kernels import neuron_scan as tk

CASES: list[tuple[dict, tuple[int, int, int], str]] = [
    # (ScanSpec fields, (B, T, M), dtype); with the default checkpoint interval K = 16 (and K = 4 in
    # the SPIKEJAX_TRITON_CHECKPOINT cases) T covers one chunk, a partial chunk and several chunks
    (dict(), (1, 19, 37), "float32"),
    (dict(decay_input=True, reset="zero", surrogate="sigmoid"), (1, 8, 33), "float32"),
    (dict(reset="none", surrogate="fast_sigmoid", return_membrane=True), (1, 17, 20), "float32"),
    (dict(detach_reset=True, surrogate="triangular"), (1, 1, 9), "float32"),
    (dict(reset="zero", detach_reset=True, surrogate="rectangular"), (1, 24, 15), "float32"),
    (dict(adaptive=True), (1, 21, 18), "float32"),
    (dict(adaptive=True, reset="zero", decay_input=True, return_membrane=True), (1, 9, 11), "float32"),
    (dict(kind="ternary", surrogate="sigmoid"), (1, 13, 16), "float32"),
    (dict(kind="multilevel", levels=3, reset="zero", detach_reset=True), (1, 12, 10), "float32"),
    (dict(reset_delay=True), (1, 18, 14), "float32"),
    (dict(reset_delay=True, reset="zero", decay_input=True, return_membrane=True), (1, 10, 12), "float32"),
    (dict(reset_delay=True, kind="ternary", detach_reset=True), (1, 7, 8), "float32"),
    (dict(surrogate="sigmoid", decay_input=True, reset="zero"), (1, 20, 24), "bfloat16"),
    (dict(adaptive=True, return_membrane=True), (3, 11, 13), "float32"),  # vmapped (batch-major)
    (dict(decay_input=True, surrogate="sigmoid"), (1, 40, 9), "float32"),
    (dict(kind="ternary", adaptive=True), (2, 32, 7), "float32"),  # T a multiple of K, two chunks
]
# reruns with short checkpoint intervals / forward chunks (many chunks, forward chunk > K)
TUNED_RUNS = [(i, {"SPIKEJAX_TRITON_CHECKPOINT": "4"}) for i in (0, 5, 9, 13)]
TUNED_RUNS += [(i, {"SPIKEJAX_TRITON_CHECKPOINT": "4", "SPIKEJAX_TRITON_CHUNK": "8"}) for i in (2, 6, 14, 15)]

_TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _to_torch(a) -> torch.Tensor:
    """A JAX / numpy array (f32 or bf16) as a torch CPU tensor of the same dtype."""
    a = np.asarray(a)
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def _from_torch(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _empty(sd) -> torch.Tensor:
    return torch.zeros(sd.shape, dtype=_TORCH[jnp.dtype(sd.dtype).name])


def _data(spec: backends.ScanSpec, lead: tuple[int, ...], T: int, M: int, dtype: str, seed: int):
    """Fresh random ``x[*lead, T, M]``, ``v0``, ``a0`` and parameters ``[*lead, M]``."""
    k = iter(jax.random.split(jax.random.key(seed), 8))
    x = (jax.random.normal(next(k), (*lead, T, M)) * 1.2 + 0.4).astype(dtype)
    v0 = jax.random.normal(next(k), (*lead, M)) * 0.5
    a0 = jax.random.uniform(next(k), (*lead, M)) if spec.adaptive else jnp.zeros((*lead, M))
    u = lambda lo, hi: lo + (hi - lo) * jax.random.uniform(next(k), (*lead, M))  # noqa: E731
    return x, v0, a0, backends.ScanParams(u(0.5, 0.95), u(0.6, 1.4), u(0.1, 0.6), u(0.5, 0.95), u(1.0, 3.0))


def run_kernels(spec: backends.ScanSpec, x, v0, a0, p, g, dtype: str):
    """Forward and backward kernels on ``x[B, T, M]``; returns (forward outputs, gradients) as numpy."""
    cfg = tk._config(**spec.kernel_config())
    B, T, Mi = x.shape
    out_shape, grid, _, flags = tk._fwd_plan(cfg, B, T, Mi, jnp.dtype(dtype))
    outs = [_empty(sd) for sd in out_shape]
    ins = [_to_torch(q) for q in (x, v0, a0, *p[:4])]
    tk._scan_fwd_kernel[(grid,)](*ins, *outs, **flags)
    s, vT, aT, vseq, ckv, cka = outs
    out_shape, grid, _, bflags = tk._bwd_plan(cfg, B, T, Mi, jnp.dtype(dtype))
    gouts = [_empty(sd) for sd in out_shape]
    g_s, g_vT, g_aT, g_vseq = g
    bins = [ins[0], ckv, cka, *(_to_torch(q) for q in (g_s, g_vseq, g_vT, g_aT, v0, a0, *p))]
    tk._scan_bwd_kernel[(grid,)](*bins, *gouts, **bflags)
    f32 = lambda t: _from_torch(t).astype(np.float32)  # noqa: E731
    fwd = [f32(s), f32(vT), f32(aT) if spec.adaptive else None, f32(vseq) if spec.return_membrane else None]
    return fwd, [f32(t) for t in gouts]


def check(spec_fields: dict, shape: tuple[int, int, int], dtype: str, seed: int) -> str | None:
    spec = backends.ScanSpec(**spec_fields)
    B, T, Mi = shape
    x, v0, a0, p = _data(spec, (B,), T, Mi, dtype, seed)
    k = iter(jax.random.split(jax.random.key(seed + 1_000_000), 4))
    g_s = jax.random.normal(next(k), shape).astype(dtype)
    g_vT, g_aT = jax.random.normal(next(k), (B, Mi)), jax.random.normal(next(k), (B, Mi))
    g_vseq = jax.random.normal(next(k), shape) if spec.return_membrane else jnp.zeros((1,))

    def ref(x, v0, a0, p):
        r = backends.reference_scan(spec, x, v0, a0, p)
        return r.spikes, r.v, r.a, (r.membrane if spec.return_membrane else jnp.zeros((1,)))

    ref_b = jax.vmap(ref)
    (s, vT, aT, vseq), vjp = jax.vjp(ref_b, x, v0, a0, p)
    g_vseq_b = g_vseq if spec.return_membrane else jnp.zeros((B, 1))
    gx, gv0, ga0, gp = vjp((g_s, g_vT, g_aT if spec.adaptive else jnp.zeros_like(g_aT), g_vseq_b))
    flat = lambda a: np.asarray(a, np.float32).reshape(-1)  # noqa: E731
    fwd, grads = run_kernels(spec, x, flat(v0), flat(a0), [flat(q) for q in p],
                             (g_s, flat(g_vT), flat(g_aT) if spec.adaptive else np.zeros(B * Mi, np.float32),
                              g_vseq if spec.return_membrane else np.zeros((1,), np.float32)), dtype)
    low = dtype != "float32"
    rtol, atol = (2e-2, 2e-2) if low else (2e-4, 2e-5)
    pairs = [("s", fwd[0], s, 0, 0), ("v_T", fwd[1], vT, 2e-5, 2e-5)]
    if spec.adaptive:
        pairs.append(("a_T", fwd[2], aT, 2e-5, 2e-5))
    if spec.return_membrane:
        pairs.append(("v_seq", fwd[3], vseq, 2e-5, 2e-5))
    names = ["g_x", "g_v0", "g_a0", "g_beta", "g_threshold", "g_adapt_scale", "g_adapt_decay", "g_alpha"]
    refs = [gx, gv0, ga0, *gp]
    for i, (name, r) in enumerate(zip(names, refs, strict=True)):
        if name in ("g_a0", "g_adapt_scale", "g_adapt_decay") and not spec.adaptive:
            continue
        pairs.append((name, grads[i], r, rtol, atol))
    for name, got, want, rt, at in pairs:
        want = np.asarray(want, np.float32).reshape(got.shape)
        scale = max(1.0, float(np.abs(want).max()))
        if not np.allclose(got, want, rtol=rt, atol=at * scale):
            err = float(np.abs(got - want).max())
            return f"{name}: max |kernel - reference| = {err:.3g} (scale {scale:.3g})"
    return None


# --- the JAX layer, with jax_triton replaced by the interpreter -------------------------------------


def interpreter_triton_call(*args, kernel, out_shape, grid, num_warps=4, num_stages=1, enable_fp_fusion=True,
                            name="", **flags):
    """``jax_triton.triton_call``'s signature, run in Triton's interpreter via ``jax.pure_callback``."""
    del num_warps, num_stages, enable_fp_fusion, name

    def host(*arrays):
        outs = [_empty(sd) for sd in out_shape]
        kernel[grid](*(_to_torch(a) for a in arrays), *outs, **flags)
        return tuple(_from_torch(o) for o in outs)

    return list(jax.pure_callback(host, tuple(out_shape), *args))


def _layer_loss(spec, kernel: backends.KernelBackend | None):
    def loss(x, v0, a0, p):
        if kernel is None:
            r = backends.reference_scan(spec, x, v0, a0, p)
        else:
            r = backends._kernel_scan(kernel, spec, x, v0, a0, p)
        w = jnp.cos(jnp.arange(r.spikes.size, dtype=jnp.float32)).reshape(r.spikes.shape)
        out = (r.spikes.astype(jnp.float32) * w).sum() + (r.v ** 2).sum() + (0.7 * r.a).sum()
        return out + (jnp.sin(r.membrane).sum() if spec.return_membrane else 0.0)

    return loss


def _max_rel_err(got, want) -> float:
    errs = []
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        errs.append(float(np.abs(g - w).max()) / max(1.0, float(np.abs(w).max())))
    return max(errs)


def check_jax_layer(kernel: backends.KernelBackend, spec_fields: dict, T: int, M: int, dtype: str,
                    seed: int) -> str | None:
    spec = backends.ScanSpec(**spec_fields)
    tol = 3e-2 if dtype != "float32" else 2e-4
    grad = lambda kb: jax.grad(_layer_loss(spec, kb), argnums=(0, 1, 2, 3))  # noqa: E731
    errors = []
    args = _data(spec, (), T, M, dtype, seed)
    errors.append(("grad", _max_rel_err(grad(kernel)(*args), grad(None)(*args))))
    args = _data(spec, (3,), T, M, dtype, seed + 1)  # batched x, state and parameters
    errors.append(("vmap(grad)", _max_rel_err(jax.vmap(grad(kernel))(*args), jax.vmap(grad(None))(*args))))
    x, v0, a0, p = _data(spec, (), T, M, dtype, seed + 2)

    def rows(kb):  # vmap over cotangents only (what jacrev does): residuals unbatched
        f = lambda x: (backends.reference_scan(spec, x, v0, a0, p) if kb is None  # noqa: E731
                       else backends._kernel_scan(kb, spec, x, v0, a0, p)).v
        return jax.vmap(jax.vjp(f, x)[1])(jnp.eye(M)[:3])

    errors.append(("vmap over cotangents", _max_rel_err(rows(kernel), rows(None))))
    # tuning changed between the forward and the backward: the backward must use the forward's K
    fwd = lambda kb: jax.vjp(lambda x: _layer_loss(spec, kb)(x, v0, a0, p), x)[1]  # noqa: E731
    vjp_kernel, vjp_ref = fwd(kernel), fwd(None)
    os.environ["SPIKEJAX_TRITON_CHECKPOINT"] = "3"
    try:
        errors.append(("tuning changed before the backward",
                       _max_rel_err(vjp_kernel(jnp.float32(1.0)), vjp_ref(jnp.float32(1.0)))))
    finally:
        del os.environ["SPIKEJAX_TRITON_CHECKPOINT"]
    bad = [f"{name}: max relative error {e:.3g}" for name, e in errors if not e < tol]
    return "; ".join(bad) or None


LAYER_CASES = [
    (dict(adaptive=True, return_membrane=True), 21, 7, "float32"),
    (dict(reset_delay=True, reset="zero", surrogate="sigmoid"), 37, 5, "float32"),
    (dict(decay_input=True), 12, 6, "bfloat16"),
]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 before running this check", file=sys.stderr)
        return 2
    failed = 0
    runs = [(i, {}) for i in range(len(CASES))]
    runs += TUNED_RUNS
    for i, env in runs:
        fields, shape, dtype = CASES[i]
        os.environ.update(env)
        try:
            err = check(fields, shape, dtype, seed=100 + i)
        except Exception as e:  # noqa: BLE001 - report every case
            err = f"{type(e).__name__}: {e}"
        for key in env:
            del os.environ[key]
        failed += err is not None
        print(json.dumps(dict(case=dict(spec=fields, shape=shape, dtype=dtype, env=env), error=err)), flush=True)
    sys.modules["jax_triton"] = types.SimpleNamespace(triton_call=interpreter_triton_call)
    kernel = backends.KernelBackend(tk.neuron_scan_forward, tk.neuron_scan_backward)
    for i, (fields, T, M, dtype) in enumerate(LAYER_CASES):
        try:
            err = check_jax_layer(kernel, fields, T, M, dtype, seed=500 + 10 * i)
        except Exception as e:  # noqa: BLE001 - report every case
            err = f"{type(e).__name__}: {e}"
        failed += err is not None
        print(json.dumps(dict(case=dict(layer=fields, T=T, M=M, dtype=dtype), error=err)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
