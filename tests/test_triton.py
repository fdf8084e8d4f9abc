"""Triton-specific checks. GPU (``@pytest.mark.gpu``, skipped unless JAX's default backend is a
GPU and jax_triton imports): the kernel functions follow the backends contract, and ``auto``
picks a kernel backend. CPU: the error raised where Triton cannot run, ``auto`` -> ``xla`` on CPU,
and ``import spikejax`` / ``import triton_kernels`` never need triton. The comparison of every
neuron, option and gradient against the ``lax.scan`` reference is in test_kernel_backends.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spikejax as sj
from spikejax import backends

needs_triton = [pytest.mark.gpu, pytest.mark.triton]

def test_kernel_contract_direct():
    """triton_kernels' functions follow the backends contract (shapes, dtypes, None membrane)."""
    import triton_kernels

    T, M = 6, 45
    x = (jax.random.normal(jax.random.key(7001), (T, M)) + 0.3).astype(jnp.bfloat16)
    vec = [jnp.zeros((M,)), jnp.zeros((M,)), jnp.full((M,), 0.9), jnp.ones((M,)), jnp.zeros((M,)),
           jnp.zeros((M,)), jnp.full((M,), 2.0)]
    cfg = backends.ScanSpec().kernel_config()
    s, vT, aT, vseq, res = triton_kernels.neuron_scan_forward(x, *vec, **cfg)
    assert s.shape == (T, M) and s.dtype == jnp.bfloat16 and vseq is None
    assert vT.dtype == aT.dtype == jnp.float32 and vT.shape == aT.shape == (M,)
    grads = triton_kernels.neuron_scan_backward(res, jnp.ones_like(s), vT, aT, None, **cfg)
    assert grads[0].shape == (T, M) and grads[0].dtype == jnp.bfloat16
    assert all(g.shape == (M,) and g.dtype == jnp.float32 for g in grads[1:])


def test_auto_on_gpu_picks_a_kernel_backend():
    name = backends.resolve_backend("auto", backends.ScanSpec(), (128, 1 << 20))
    assert name in ("pallas", "triton")


# every test above needs the GPU and jax_triton
for _name, _obj in list(globals().items()):
    if _name.startswith("test_") and callable(_obj):
        for _mark in needs_triton:
            _obj = _mark(_obj)
        globals()[_name] = _obj


# --- CPU: errors, auto, imports (not gpu-marked) ------------------------------------------------


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error raised off the GPU")
def test_triton_off_gpu_raises_with_reason():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"backend='triton' needs an NVIDIA GPU.*install"):
        sj.lif(x, backend="triton")
    reason = backends.unavailable_reason("triton")
    assert reason is not None and "spikejax[gpu]" in reason and "xla" in reason
    assert "triton" not in backends.available_backends()


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the CPU rule")
def test_auto_is_xla_on_cpu():
    assert backends.auto_choice(backends.ScanSpec(), (128, 1 << 20)) == "xla"
    assert backends.resolve_backend("auto", backends.ScanSpec(), (8, 4 << 20)) == "xla"
    x = jax.random.normal(jax.random.key(7002), (5, 2, 3)) + 0.5
    s_auto, st_auto = sj.lif(x, backend="auto")
    s_xla, st_xla = sj.lif(x, backend="xla")
    np.testing.assert_array_equal(s_auto, s_xla)
    np.testing.assert_array_equal(st_auto.v, st_xla.v)


def test_auto_rule_gpu_order(monkeypatch):
    """The GPU branch of the rule (monkeypatched platform and availability) follows BENCHMARKS.md
    (run 15): Pallas fastest at every measured shape but the long scan over few neurons (512 x 16K),
    where Triton is; then the other kernel backend; xla last."""
    monkeypatch.setattr(backends, "_platform", lambda: "gpu")
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: None)
    spec = backends.ScanSpec()
    for shape in [(128, 1 << 20), (32, 1 << 16), (8, 1 << 22), (1, 7), (1024, 1 << 20), (128, 1 << 14)]:
        assert backends.auto_choice(spec, shape) == "pallas", shape
    for shape in [(512, 1 << 14), (256, 100), (2048, (1 << 18) - 1)]:
        assert backends.auto_choice(spec, shape) == "triton", shape
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: None if name == "triton" else "no")
    assert backends.auto_choice(spec, (128, 1 << 20)) == "triton"
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: None if name == "pallas" else "no")
    assert backends.auto_choice(spec, (512, 1 << 14)) == "pallas"
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: "no")
    assert backends.auto_choice(spec, (512, 1 << 14)) == "xla"


def test_auto_rule_mosaic(monkeypatch):
    """Scans of T >= 32 steps (a multiple of 8) take the engine's Mosaic GPU lowering for built-in one-state
    neurons on float32 inputs (measured faster at 128 x 1M, 32 x 64K, 512 x 16K) and for any step on float32
    or bfloat16 inputs over >= 2^18 neurons (measured at 128 x 1M: LIF bf16, CUBA, ALIF, Izhikevich);
    everything else keeps the order of test_auto_rule_gpu_order."""
    monkeypatch.setattr(backends, "_platform", lambda: "gpu")
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: None)
    f32, bf16 = jnp.float32, jnp.bfloat16
    lif, alif = backends.ScanSpec(), backends.ScanSpec(adaptive=True)
    for shape in [(128, 1 << 20), (32, 1 << 16), (512, 1 << 14), (40, 300)]:
        assert backends.auto_choice(lif, shape, dtype=f32) == "pallas_mosaic", shape
    assert backends.auto_choice(lif, (8, 1 << 22), dtype=f32) == "pallas"  # short: not measured faster
    assert backends.auto_choice(lif, (36, 1 << 20), dtype=f32) == "pallas"  # T % 8 != 0
    for spec, custom in [(lif, False), (alif, False), (lif, True), (None, True)]:  # wide: any step
        for dtype in (f32, bf16):
            assert backends.auto_choice(spec, (128, 1 << 20), dtype=dtype, custom=custom) == "pallas_mosaic"
    assert backends.auto_choice(lif, (32, 1 << 16), dtype=bf16) == "pallas"  # bf16, narrow: Triton faster
    assert backends.auto_choice(alif, (32, 1 << 16), dtype=f32) == "pallas"  # two states, narrow
    assert backends.auto_choice(None, (512, 1 << 14), dtype=f32, custom=True) == "pallas"
    assert backends.auto_choice(lif, (128, 1 << 20), dtype=jnp.float16) == "pallas"  # not measured
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: "no" if name == "pallas_mosaic" else None)
    assert backends.auto_choice(lif, (128, 1 << 20), dtype=f32) == "pallas"


_BLOCK_TRITON = (
    "import sys\n"
    "class _Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('triton', 'jax_triton'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, _Block())\n"
)


def test_import_without_triton():
    """spikejax and triton_kernels import (and spikejax runs) with triton / jax_triton unimportable."""
    code = _BLOCK_TRITON + (
        "import jax.numpy as jnp, spikejax, triton_kernels\n"
        "assert 'triton' not in sys.modules and 'jax_triton' not in sys.modules\n"
        "s, st = spikejax.lif(jnp.ones((3, 4)), backend='xla')\n"
        "assert 'triton' not in spikejax.available_backends()\n"
        "try:\n"
        "    triton_kernels.neuron_scan_forward(jnp.ones((3, 4)), *([jnp.ones(4)] * 7))\n"
        "except ValueError as e:\n"
        "    assert 'pip install' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('expected ValueError')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_kernels_in_the_triton_interpreter():
    """The Triton kernels in Triton's CPU interpreter: forward values and every gradient equal the
    lax.scan reference for every neuron kind, reset, surrogate, reset order, f32/bf16, one/partial/
    several checkpoint chunks and a batch-major (vmapped) call; and the JAX layer (custom_vjp, vmap
    folding, vmap over cotangents, a tuning change between forward and backward) with jax_triton
    replaced by the interpreter (cases in tests/triton_interpret_check.py). Needs only the triton
    package, no GPU. The subprocess imports this checkout's packages, whatever is installed."""
    pytest.importorskip("triton", reason="needs the triton package (pip install triton) for its interpreter")
    pytest.importorskip("torch", reason="the Triton interpreter runs the kernels on torch CPU tensors")
    script = os.path.join(os.path.dirname(__file__), "triton_interpret_check.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TRITON_INTERPRET="1", JAX_PLATFORMS="cpu", PYTHONPATH=path)
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=900, env=env)
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    failures = [r for r in results if r["error"] is not None]
    assert out.returncode == 0 and results and not failures, (failures or out.stderr[-3000:])
