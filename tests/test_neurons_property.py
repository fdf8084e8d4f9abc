"""Property test of the functional API: random shapes (rank 2-5), dtypes, options and parameters for
every built-in neuron, the fused engine (``pallas_interpret``) against ``xla``: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikejax as sj

NEURONS = ["if_", "lif", "plif", "alif", "ternary", "multilevel"]


@st.composite
def cases(draw):
    name = draw(st.sampled_from(NEURONS))
    rank = draw(st.integers(2, 5))
    T = draw(st.integers(1, 6))
    dims = [draw(st.integers(1, 3)) for _ in range(rank - 2)] + [draw(st.integers(1, 6))]
    kw = dict(reset=draw(st.sampled_from(["subtract", "zero", "none"])), detach_reset=draw(st.booleans()),
              surrogate=draw(st.sampled_from(["atan", "sigmoid", "fast_sigmoid", "triangular", "rectangular"])))
    if name not in ("alif", "plif") and draw(st.booleans()):
        kw["reset_delay"] = True
    C = dims[-1]
    per_channel = draw(st.booleans())
    u = lambda lo, hi: (np.linspace(lo, hi, C) if per_channel else (lo + hi) / 2)  # noqa: E731
    if name in ("lif", "alif", "ternary", "multilevel"):
        kw["beta"] = u(0.4, 0.95)
    if name == "plif":
        kw["decay_logit"] = u(-1.0, 1.0)
    kw["threshold"] = u(0.5, 1.3)
    if name == "alif":
        kw.update(adapt_scale=u(0.1, 0.5), adapt_decay=u(0.5, 0.9))
    if name == "multilevel":
        kw["levels"] = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(["float32", "bfloat16"]))
    seed = draw(st.integers(0, 2**16))
    return name, (T, *dims), dtype, kw, seed


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_engine_equals_xla_on_random_neurons(case):
    name, shape, dtype, kw, seed = case
    fn = getattr(sj, name)
    x = (jax.random.normal(jax.random.key(seed), shape) * 1.5 + 0.5).astype(dtype)
    w = jnp.cos(jnp.arange(x.size, dtype=jnp.float32).reshape(shape))

    def loss(x, thr, backend):
        s, st_ = fn(x, backend=backend, **{**kw, "threshold": thr})
        return (s.astype(jnp.float32) * w).sum() + (st_.v ** 2).sum()

    thr = jnp.asarray(kw["threshold"], jnp.float32)
    for part in (0, 1):
        ref = fn(x, backend="xla", **kw)[part]
        got = fn(x, backend="pallas_interpret", **kw)[part]
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-5)
    g = jax.grad(loss, argnums=(0, 1))
    tol = 1e-4 if dtype == "float32" else 2e-2
    for a, b in zip(g(x, thr, "pallas_interpret"), g(x, thr, "xla"), strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))
