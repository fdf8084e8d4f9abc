"""Ablation of three rewrites of Spikformer's layers, each timed against the library's own in the
training step of :mod:`benchmarks.models` (batch 64, 32x32x3, T = 4, AdamW).

Each variant computes the same function as the library (up to float summation order; checked by
:func:`check_variant` and ``tests/test_benchmark_models.py``); it is swapped in only while the
step is traced, so it measures how XLA compiles the alternative formulation:

- ``ssa_blockdiag``: spiking self-attention without splitting heads, ``q · (M ⊙ kᵀv) · 0.125``
  with ``kᵀv[T, B, D, D]`` over all channels and ``M`` the block-diagonal head mask (12x the
  attention FLOPs, no head transposes; exact on spikes, as the library's per-head ``q (kᵀ v)``);
- ``conv1x1_conv``: the 1x1 ``Conv1d`` projections as convolutions (``lax.conv_general_dilated``,
  cuDNN's) instead of the library's GEMM ``einsum("tblc,cd->tbld")``;
- ``maxpool_argmax``: the stem's 3x3/2 max-pool with its own VJP, the forward saving the int8
  index of each window's first maximum and the backward scattering the cotangent with nine
  strided pads (XLA's own VJP is a ``select_and_scatter``).

Usage (GPU)::

    python -m benchmarks.ablate_spikformer --dtype float32 --out benchmarks/results/ablate_spikformer_h200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import jax
import jax.numpy as jnp
from jax import lax

VARIANTS = ("ssa_blockdiag", "conv1x1_conv", "maxpool_argmax")


def ssa_blockdiag(q, k, v, num_heads: int, scale: float = 0.125):
    """``q, k, v[T, B, L, D]`` -> ``scale · q (M ⊙ kᵀ v)`` with ``M[D, D]`` = 1 within a head."""
    D = q.shape[-1]
    head = jnp.arange(D) // (D // num_heads)
    mask = (head[:, None] == head[None, :]).astype(jnp.float32)
    kv = jnp.einsum("tbld,tble->tbde", k, v, preferred_element_type=jnp.float32) * mask
    return (jnp.einsum("tbld,tbde->tble", q.astype(jnp.float32), kv) * scale).astype(q.dtype)


def conv1x1_conv(layer, x):
    """:class:`spikejax.nn.temporal.Conv1d` as a convolution whatever its kernel (the library runs 1x1 as a GEMM)."""
    from spikejax.nn.temporal import fold_time

    return fold_time(layer.conv, x)


def max_pool_argmax(kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
    """``pool(x[N, H, W, C]) -> y[N, H', W', C]``: max pooling (``-inf`` padding, the first maximum
    of a window takes the gradient, as XLA's and PyTorch's) with an argmax-saving ``custom_vjp``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding

    def taps(x):
        xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-jnp.inf)
        Ho, Wo = (x.shape[1] + 2 * ph - kh) // sh + 1, (x.shape[2] + 2 * pw - kw) // sw + 1
        for i in range(kh):
            for j in range(kw):
                yield lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (Ho - 1) + 1, j + sw * (Wo - 1) + 1,
                                                   xp.shape[3]), (1, sh, sw, 1))

    def forward(x):
        y = idx = None
        for n, t in enumerate(taps(x)):
            if y is None:
                y, idx = t, jnp.zeros(t.shape, jnp.int8)
            else:
                better = t > y
                y, idx = jnp.where(better, t, y), jnp.where(better, jnp.int8(n), idx)
        return y, idx

    @jax.custom_vjp
    def pool(x):
        return forward(x)[0]

    def pool_fwd(x):
        y, idx = forward(x)
        return y, (idx, x.shape)

    def pool_bwd(res, g):
        idx, (_, H, W, _) = res
        Ho, Wo = g.shape[1:3]
        zero = jnp.zeros((), g.dtype)
        dxp = 0
        for n in range(kh * kw):
            i, j = divmod(n, kw)
            cfg = ((0, 0, 0), (i, H + 2 * ph - i - (sh * (Ho - 1) + 1), sh - 1),
                   (j, W + 2 * pw - j - (sw * (Wo - 1) + 1), sw - 1), (0, 0, 0))
            dxp = dxp + lax.pad(jnp.where(idx == n, g, zero), zero, cfg)
        return (dxp[:, ph:ph + H, pw:pw + W, :],)

    pool.defvjp(pool_fwd, pool_bwd)
    return pool


@contextlib.contextmanager
def variant(name: str):
    """Swap the library's layer for the variant ``name`` (one of :data:`VARIANTS`, or ``""``: none)."""
    import spikejax.models.spikformer as spikformer
    from spikejax.nn import temporal

    if name and name not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {name!r}")
    swaps = {
        "ssa_blockdiag": (spikformer, "ssa_core", ssa_blockdiag),
        "conv1x1_conv": (temporal.Conv1d, "__call__", conv1x1_conv),
        "maxpool_argmax": (temporal.MaxPool2d, "__call__", lambda layer, x: temporal.fold_time(
            max_pool_argmax(layer.kernel_size, layer.stride, layer.padding), x)),
    }
    if not name:
        yield
        return
    obj, attr, new = swaps[name]
    old = getattr(obj, attr)
    setattr(obj, attr, new)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def check_variant(name: str, *, seed: int = 0, embed_dims: int = 32, num_heads: int = 4, batch: int = 2,
                  image: int = 8, T: int = 2) -> float:
    """Largest |difference| of the loss and of every gradient between the library's small Spikformer and the
    same model with ``name`` swapped in (float32, training mode, the same random weights and inputs from
    ``seed`` for both)."""
    import optax
    from flax import nnx

    from spikejax.models import create

    def loss_and_grads():
        k_model, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
        model = create("spikformer_cifar10", T=T, embed_dims=embed_dims, num_heads=num_heads, depths=1,
                       rngs=nnx.Rngs(k_model))
        x = jax.random.normal(k_x, (batch, image, image, 3))
        y = jax.random.randint(k_y, (batch,), 0, 10)

        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        return nnx.value_and_grad(loss_fn)(model)

    ref_loss, ref_grads = loss_and_grads()
    with variant(name):
        loss, grads = loss_and_grads()
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), nnx.to_pure_dict(ref_grads),
                         nnx.to_pure_dict(grads))
    return max([abs(float(loss) - float(ref_loss)), *jax.tree.leaves(diffs)])


def main(argv=None) -> list[dict]:
    from benchmarks.models import device_name, run_spikejax

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="xla")
    p.add_argument("--variants", default="," + ",".join(VARIANTS), help="comma-separated; empty = the library's")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=None, help="path stem for .jsonl / .md")
    args = p.parse_args(argv)
    rows, device = [], device_name()
    for name in args.variants.split(","):
        with variant(name):  # one process: the device's peak memory is not per variant, so it is not reported
            r = run_spikejax("spikformer_cifar10", args.dtype, args.backend, args.batch, args.image, args.T,
                             args.steps, warmup=5, reps=args.reps, lock=None)
        row = {"variant": name or "library", "dtype": args.dtype, "backend": args.backend,
               "ms_per_step": 1e3 * min(r["times_s"]), "times_s": r["times_s"], "loss": r["loss"],
               "compile_s": r["compile_s"], "device": device,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        rows.append(row)
        print(f"{row['variant']:16s} {args.dtype} {args.backend}: {row['ms_per_step']:.2f} ms/step", flush=True)
    base = rows[0]["ms_per_step"] if rows and rows[0]["variant"] == "library" else None
    md = [f"# Spikformer layer ablation ({rows[0]['device'] if rows else '?'}, {rows[0]['date'] if rows else ''})",
          "", f"batch {args.batch}, {args.image}x{args.image}x3, T={args.T}, {args.dtype}, backend={args.backend}", "",
          "| variant | ms/step | x library |", "|---|--:|--:|"]
    md += [f"| {r['variant']} | {r['ms_per_step']:.2f} | {r['ms_per_step'] / base if base else float('nan'):.3f} |"
           for r in rows]
    print("\n".join(md))
    if args.out:
        with open(args.out + ".jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with open(args.out + ".md", "a") as f:
            f.write("\n".join(md) + "\n\n")
    return rows


if __name__ == "__main__":
    main()
