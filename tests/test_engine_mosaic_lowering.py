"""The engine's Mosaic GPU lowering (``pallas_kernels.engine_mosaic``) on a machine without a GPU:
every built-in and dynamics neuron's forward and backward kernels lower to Mosaic GPU MLIR
(``jax.jit(...).trace(...).lower(lowering_platforms=("cuda",))``), so a primitive the Mosaic GPU
lowering lacks is caught here, not first on the GPU. The GPU tests (``-m gpu``, backend
``"pallas_mosaic"``) check the values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import engine, engine_mosaic
from spikejax import backends
from spikejax.neurons import dynamics
from spikejax.neurons.steps import ScanParams, ScanSpec, builtin_step


@pytest.fixture
def cross_lowering(monkeypatch):
    monkeypatch.setattr(engine_mosaic, "available", lambda: None)  # lowering only: no GPU needed


def _lower(step, params, n, T=16, M=256, return_states=True):
    leaves, treedef = jax.tree.flatten(params)
    leaves = [jnp.full((1,), v, jnp.float32) if jnp.ndim(v) == 0 else jnp.asarray(v, jnp.float32) for v in leaves]
    x = jnp.ones((T, M), jnp.bfloat16)

    def f(x):
        s, stT, states, res = engine.scan_forward(step, treedef, x, [jnp.zeros((M,))] * n, leaves,
                                                  return_states=return_states, lowering="mosaic_gpu")
        return engine.scan_backward(step, treedef, res, s, stT, states)

    try:
        text = jax.jit(f).trace(x).lower(lowering_platforms=("cuda",)).as_text()
    except (RuntimeError, ImportError) as err:  # a jaxlib without the Mosaic GPU dialects
        if "mosaic" in str(err).lower() and "NotImplemented" not in type(err).__name__:
            pytest.skip(f"no Mosaic GPU cross-lowering here: {err}")
        raise
    assert text.count("mosaic_gpu") >= 2 or "custom_call" in text  # the two kernels are in the module


BUILTIN = {
    "lif": ScanSpec(decay_input=True),
    "alif_zero_reset": ScanSpec(adaptive=True, reset="zero", surrogate="sigmoid"),
    "ternary": ScanSpec(kind="ternary", detach_reset=True, surrogate="triangular"),
    "multilevel": ScanSpec(kind="multilevel", levels=3),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_neurons_lower_to_mosaic_gpu(name, cross_lowering):
    spec = BUILTIN[name]
    one = jnp.ones((1,))
    p = backends._scan_params(spec, ScanParams(one * 0.5, one, one * 0.1, one * 0.9, one * 2.0))
    _lower(builtin_step(spec), p, 2 if spec.adaptive else 1)


@pytest.mark.parametrize("name", sorted(dynamics.DYNAMICS))
def test_every_dynamics_neuron_lowers_to_mosaic_gpu(name, cross_lowering):
    step, params, n = dynamics.DYNAMICS[name]
    _lower(step, params, n, T=8, M=128)
