"""benchmarks/models.py: the jaxpr FLOP count (against hand-derived counts) and the roofline arithmetic."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.models import matmul_flops, md_row, roofline, summary


def test_matmul_flops_counts_dots_convs_and_scans():
    rng = np.random.default_rng(0)
    B, H, W, C, O, K, G = int(rng.integers(1, 4)), 6, 5, 4, 8, 3, 2
    x = jnp.zeros((B, H, W, C))
    w = jnp.zeros((K, K, C // G, O))  # HWIO, grouped
    a, b = jnp.zeros((7, 3, 5)), jnp.zeros((7, 5, 2))

    def f(x, w, a, b):
        y = jax.lax.conv_general_dilated(x, w, (2, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=G)
        z = jnp.einsum("tij,tjk->tik", a, b)  # batched dot
        s = jax.lax.scan(lambda c, m: (c @ m, None), jnp.zeros((3, 3)), jnp.zeros((4, 3, 3)))[0]
        return jax.jit(lambda y: y.sum())(y) + z.sum() + s.sum()

    conv = 2 * (B * 3 * 5 * O) * (K * K * C // G)  # output [B, ceil(6/2), 5, O], K*K*C/G taps each
    dot = 2 * (7 * 3 * 2) * 5
    scan = 4 * 2 * (3 * 3) * 3
    assert matmul_flops(jax.make_jaxpr(f)(x, w, a, b)) == conv + dot + scan


def test_roofline_and_rows():
    args = types.SimpleNamespace(peak_bf16=1000.0, peak_f32=500.0, copy_bw=4.0)
    count = {"forward_matmul_flops": 1e12, "neuron_elements": 10**9}
    r32, r16 = roofline(count, "float32", args), roofline(count, "bfloat16", args)
    # 3x the forward FLOPs at the peak + 4 passes over (input + spikes) of every neuron at copy bandwidth
    assert np.isclose(r32["roofline_s"], 3e12 / 500e12 + 4 * 2 * 1e9 * 4 / 4e12)
    assert np.isclose(r16["roofline_s"], 3e12 / 1000e12 + 4 * 2 * 1e9 * 2 / 4e12)
    assert roofline({"error": "x"}, "float32", args) == {}
    rows = [dict(model="m", dtype="float32", framework="spikejax", config="pallas", ms_per_step=10.0, peak_mib=100.0,
                 x_roofline=2.0),
            dict(model="m", dtype="float32", framework="spikingjelly", config="triton", ms_per_step=30.0,
                 peak_mib=200.0),
            dict(model="m", dtype="float32", framework="spikingjelly", config="compile", ms_per_step=25.0,
                 peak_mib=300.0),
            dict(model="m", dtype="float32", framework="spikingjelly", config="cuda", error="timeout | 300 s")]
    assert "| 10.00 (pallas) | 25.00 (compile) | 2.50x | 100 / 300 | 2.00 |" in summary(rows)
    assert md_row(rows[3]).rstrip().endswith("| timeout / 300 s |")


def test_ablation_variants_compute_the_librarys_function():
    """benchmarks/ablate_spikformer.py times rewrites of Spikformer's layers: each must give the library's
    loss and gradients (a small model, fresh random weights and inputs)."""
    from benchmarks.ablate_spikformer import VARIANTS, check_variant, variant

    seed = int(np.random.default_rng().integers(2**31))
    for name in VARIANTS:
        assert check_variant(name, seed=seed) < 1e-5, (name, seed)
    with pytest.raises(ValueError, match="variant"):
        with variant("nope"):
            pass


def test_ablation_max_pool_gradient_goes_to_the_first_maximum():
    """The argmax-saving max-pool VJP against XLA's (select_and_scatter), with many ties in each window."""
    from flax import nnx

    from benchmarks.ablate_spikformer import max_pool_argmax

    rng = np.random.default_rng()
    for shape, (k, s, p) in [((2, 9, 9, 3), ((3, 3), (2, 2), (1, 1))), ((2, 7, 6, 2), ((2, 2), (2, 2), (0, 0)))]:
        x = jnp.asarray(np.round(rng.normal(size=shape) * 2) / 2, jnp.float32)  # values on a 0.5 grid: ties
        y_ref, vjp_ref = jax.vjp(lambda x, k=k, s=s, p=p: nnx.max_pool(x, k, s, [(p[0], p[0]), (p[1], p[1])]), x)
        y, vjp = jax.vjp(max_pool_argmax(k, s, p), x)
        g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], rtol=1e-6, atol=1e-6)
