"""Every kernel backend against the ``lax.scan`` reference (``backend="xla"``).

One harness for the Pallas and Triton backends: values and every gradient (input, initial state,
beta / tau / decay_logit, threshold, adapt_scale, adapt_decay, amplitude, a learnable per-channel
surrogate α) on fresh random inputs, for every neuron, reset, surrogate and option, odd M, T = 1,
bf16, jit / eager, vmap (nested, with batched parameters) and inside ``lax.scan`` / ``nnx.scan``.
On CPU the Pallas kernels run in the interpreter (``pallas_interpret``, tiny shapes); ``pallas``
and ``triton`` run compiled on a GPU (``-m gpu``; triton also needs jax_triton).
Backend-specific checks live in test_pallas.py and test_triton.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spikejax as sj
from spikejax import surrogate as sg

SURROGATES = sorted(sg.SURROGATES)


BACKENDS = [
    "pallas_interpret",
    pytest.param("pallas", marks=pytest.mark.gpu),
    pytest.param("triton", marks=[pytest.mark.gpu, pytest.mark.triton]),
]

_seed = [0]


def _key():
    _seed[0] += 1
    return jax.random.key(1000 + _seed[0])


def _rand(shape, scale=1.0, lo=None, hi=None):
    if lo is not None:
        return lo + (hi - lo) * jax.random.uniform(_key(), shape, jnp.float32)
    return jax.random.normal(_key(), shape, jnp.float32) * scale


NEURONS = {"if_": sj.if_, "lif": sj.lif, "plif": sj.plif, "alif": sj.alif, "ternary": sj.ternary,
           "multilevel": sj.multilevel}

# differentiable keyword parameters: name -> sampler(channels)
_PARAMS = {
    "beta": lambda c: _rand((c,), lo=0.5, hi=0.95),
    "tau": lambda c: _rand((c,), lo=1.5, hi=4.0),
    "long_tau": lambda c: _rand((c,), lo=3.0, hi=30.0),  # γ = 1/τ on both sides of 1/8
    "decay_logit": lambda c: _rand((c,), 0.7),
    "threshold": lambda c: _rand((c,), lo=0.6, hi=1.4),
    "adapt_scale": lambda c: _rand((c,), lo=0.1, hi=0.6),
    "adapt_decay": lambda c: _rand((c,), lo=0.5, hi=0.95),
    "amplitude": lambda c: _rand((c,), lo=0.5, hi=1.5),
}


def _compare(neuron, backend, *, shape=(11, 3, 7), dtype=jnp.float32, params=("beta", "threshold"),
             surrogate="atan", state=True, return_membrane=True, jit=True, scalar=False, **static):
    """Values and all gradients of ``neuron(..., backend)`` equal ``backend="xla"`` (``scalar``: every
    parameter and the surrogate α one differentiable 0-d value instead of one per channel)."""
    fn = NEURONS[neuron]
    C = 1 if scalar else shape[-1]
    x = (_rand(shape, 1.2) + 0.35).astype(dtype)
    p = {("tau" if name == "long_tau" else name): _PARAMS[name](C) for name in params}
    alpha = _rand((C,), lo=0.5, hi=1.5) * sg.SURROGATES[surrogate][1]
    if scalar:
        p, alpha = {k: v[0] for k, v in p.items()}, alpha[0]
    adaptive = neuron == "alif"
    st = None
    if state:
        st = sj.NeuronState(_rand(shape[1:], 0.5), _rand(shape[1:], lo=0.0, hi=1.0) if adaptive else None)
    w = [_rand(shape) for _ in range(2)] + [_rand(shape[1:]) for _ in range(2)]

    def loss(x, st, p, alpha, backend):
        out = fn(x, state=st, surrogate=sg.Surrogate(surrogate, alpha, learnable=True), backend=backend,
                 return_membrane=return_membrane, **p, **static)
        s, final = out[0], out[1]
        total = (s.astype(jnp.float32) * w[0]).sum() + (final.v * w[2]).sum()
        if adaptive:
            total = total + (final.a * w[3]).sum()
        if return_membrane:
            total = total + (out[2] * w[1]).sum()
        return total, out

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)
    if jit:
        grad = jax.jit(grad, static_argnums=4)
    (l_ref, out_ref), g_ref = grad(x, st, p, alpha, "xla")
    (l_new, out_new), g_new = grad(x, st, p, alpha, backend)

    low = dtype != jnp.float32
    tol = dict(rtol=2e-2, atol=2e-2) if low else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(np.asarray(out_new[0], np.float32), np.asarray(out_ref[0], np.float32))
    assert out_new[0].dtype == out_ref[0].dtype == dtype
    for a, b in zip(jax.tree.leaves(out_new[1:]), jax.tree.leaves(out_ref[1:]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-4, atol=1e-4)
    for name, gn, gr in zip(["x", "state", "params", "alpha"], g_new, g_ref, strict=True):
        leaves_n, leaves_r = jax.tree.leaves(gn), jax.tree.leaves(gr)
        assert len(leaves_n) == len(leaves_r), name
        for a, b in zip(leaves_n, leaves_r, strict=True):
            assert a.dtype == b.dtype, name
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            scale = max(1.0, float(np.abs(b).max()))
            np.testing.assert_allclose(a, b, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=name)
    assert float(jnp.abs(g_ref[0].astype(jnp.float32)).sum()) > 0


CASES = [
    ("if_", dict(params=("threshold",), surrogate="rectangular")),
    ("if_", dict(params=("threshold",), reset="zero", surrogate="sigmoid")),
    ("lif", dict(params=("beta", "threshold"))),
    ("lif", dict(params=("beta", "threshold"), decay_input=True)),
    ("lif", dict(params=("tau", "threshold"), reset="zero", surrogate="triangular")),
    ("lif", dict(params=("long_tau", "threshold"), surrogate="fast_sigmoid")),
    ("lif", dict(params=("beta", "threshold"), reset="none", surrogate="fast_sigmoid")),
    ("lif", dict(params=("tau", "threshold"), detach_reset=True, surrogate="sigmoid")),
    ("lif", dict(params=("beta", "threshold"), reset="zero", detach_reset=True)),
    ("plif", dict(params=("decay_logit", "threshold"), surrogate="fast_sigmoid")),
    ("plif", dict(params=("decay_logit", "threshold"), decay_input=False, reset="zero")),
    ("alif", dict(params=("beta", "threshold", "adapt_scale", "adapt_decay"))),
    ("alif", dict(params=("tau", "threshold", "adapt_scale", "adapt_decay"), reset="zero",
                  surrogate="triangular")),
    ("alif", dict(params=("beta", "threshold", "adapt_scale", "adapt_decay"), detach_reset=True,
                  surrogate="sigmoid")),
    ("alif", dict(params=("beta", "threshold", "adapt_scale", "adapt_decay"), reset="none",
                  surrogate="rectangular")),
    ("ternary", dict(params=("beta", "threshold", "amplitude"))),
    ("ternary", dict(params=("tau", "threshold", "amplitude"), reset="zero", surrogate="rectangular")),
    ("ternary", dict(params=("beta", "threshold", "amplitude"), detach_reset=True, surrogate="sigmoid")),
    ("multilevel", dict(params=("threshold",), levels=3)),
    ("multilevel", dict(params=("beta", "threshold"), levels=2, reset="zero", surrogate="fast_sigmoid")),
    ("multilevel", dict(params=("tau", "threshold"), levels=4, detach_reset=True, surrogate="triangular")),
]

DELAY_CASES = [
    ("lif", dict(params=("beta", "threshold"))),
    ("lif", dict(params=("tau", "threshold"))),  # decay_input with the delayed subtract
    ("lif", dict(params=("beta", "threshold"), detach_reset=True, surrogate="fast_sigmoid")),
    ("lif", dict(params=("long_tau", "threshold"), reset="zero", surrogate="sigmoid")),
    ("lif", dict(params=("beta", "threshold"), reset="zero", detach_reset=True, surrogate="triangular")),
    ("if_", dict(params=("threshold",), reset="none", surrogate="rectangular")),
    ("ternary", dict(params=("beta", "threshold", "amplitude"))),
    ("ternary", dict(params=("beta", "threshold", "amplitude"), reset="zero")),
    ("multilevel", dict(params=("beta", "threshold"), levels=3, surrogate="sigmoid")),
]


def _id(case):
    neuron, kw = case
    extra = "-".join(f"{k}={v}" for k, v in kw.items() if k != "params")
    return f"{neuron}-{'+'.join(kw['params'])}" + (f"-{extra}" if extra else "")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_neuron_matches_xla(case, backend):
    _compare(case[0], backend, **case[1])


SCALAR_CASES = [
    ("lif", dict(params=("tau", "threshold"))),
    ("lif", dict(params=("beta", "threshold"), reset="zero", reset_delay=True, surrogate="sigmoid")),
    ("alif", dict(params=("beta", "threshold", "adapt_scale", "adapt_decay"), shape=(10, 131))),
    ("plif", dict(params=("decay_logit", "threshold"), shape=(9, 2, 70), surrogate="triangular")),
    ("ternary", dict(params=("beta", "threshold", "amplitude"), dtype=jnp.bfloat16)),
    ("multilevel", dict(params=("beta", "threshold"), levels=3, detach_reset=True)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SCALAR_CASES, ids=_id)
def test_scalar_parameters_match_xla(case, backend):
    """One β / θ / α for all neurons: the kernels' scalar-parameter path (no [M] parameter streams,
    per-program partial sums of the parameter gradients), several programs with a masked tail."""
    _compare(case[0], backend, scalar=True, **case[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", DELAY_CASES, ids=_id)
def test_reset_delay_matches_xla(case, backend):
    _compare(case[0], backend, reset_delay=True, **case[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_every_surrogate_ternary(surrogate, backend):
    _compare("ternary", backend, params=("beta", "threshold", "amplitude"), surrogate=surrogate, shape=(6, 5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_every_surrogate_multilevel_delayed(surrogate, backend):
    _compare("multilevel", backend, params=("beta", "threshold"), levels=3, surrogate=surrogate, shape=(6, 9),
             reset_delay=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 5), (1, 130), (8, 33), (9, 150), (17, 2, 3), (5, 1), (3, 2053)])
def test_shapes(shape, backend):
    """T = 1, M = 1, odd M, several programs with a masked tail."""
    _compare("lif", backend, shape=shape, params=("beta", "threshold"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_alif_several_blocks(backend):
    _compare("alif", backend, shape=(10, 131), params=("beta", "threshold", "adapt_scale", "adapt_decay"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("neuron", ["lif", "alif", "ternary"])
def test_bfloat16(neuron, backend):
    params = {"lif": ("tau", "threshold"), "alif": ("beta", "threshold", "adapt_scale", "adapt_decay"),
              "ternary": ("beta", "threshold", "amplitude")}[neuron]
    _compare(neuron, backend, dtype=jnp.bfloat16, params=params, shape=(9, 2, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_state_no_membrane_eager(backend):
    _compare("lif", backend, state=False, return_membrane=False, jit=False)


FORWARD_ONLY = [
    ("lif", dict(params=("beta", "threshold"))),
    ("alif", dict(params=("beta", "threshold", "adapt_scale", "adapt_decay"), shape=(10, 131))),
    ("ternary", dict(params=("beta", "threshold", "amplitude"), dtype=jnp.bfloat16)),
    ("multilevel", dict(params=("beta", "threshold"), levels=3, reset_delay=True)),
    ("lif", dict(params=("tau", "threshold"), reset_delay=True, return_membrane=False)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", FORWARD_ONLY, ids=lambda c: f"{c[0]}-{len(c[1])}")
def test_forward_only_matches_xla(case, backend):
    """Without differentiation the kernels skip the residual writes (checkpoints / traces): same outputs."""
    neuron, kw = case
    kw = dict(kw)
    shape, dtype = kw.pop("shape", (11, 3, 7)), kw.pop("dtype", jnp.float32)
    membrane = kw.pop("return_membrane", True)
    C = shape[-1]
    p = {name: _PARAMS[name](C) for name in kw.pop("params")}
    x = (_rand(shape, 1.2) + 0.35).astype(dtype)
    st = sj.NeuronState(_rand(shape[1:], 0.5), _rand(shape[1:], lo=0.0, hi=1.0) if neuron == "alif" else None)
    run = jax.jit(lambda x, st, p, backend: NEURONS[neuron](x, state=st, backend=backend, return_membrane=membrane,
                                                            **p, **kw), static_argnums=3)
    ref, new = run(x, st, p, "xla"), run(x, st, p, backend)
    np.testing.assert_array_equal(np.asarray(new[0], np.float32), np.asarray(ref[0], np.float32))
    for a, b in zip(jax.tree.leaves(new[1:]), jax.tree.leaves(ref[1:]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def _lif_loss(backend):
    def loss(x, beta, thr):
        s, st, v = sj.lif(x, beta=beta, threshold=thr, backend=backend, return_membrane=True)
        return (s * jnp.sin(x)).sum() + (v * v).sum() * 0.1 + st.v.sum()
    return loss


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_vmap_grad(backend):
    """jit(vmap(grad)) over a batch axis in front of time."""
    x = _rand((3, 7, 2, 5)) + 0.3
    beta, thr = _rand((5,), lo=0.5, hi=0.9), _rand((5,), lo=0.7, hi=1.2)

    def run(b):
        g = jax.grad(_lif_loss(b), argnums=(0, 1, 2))
        return jax.jit(jax.vmap(g, in_axes=(0, None, None)))(x, beta, thr)

    for a, r in zip(run(backend), run("xla"), strict=True):
        np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_vmap_batched_params(backend):
    """vmap(vmap(...)) with per-example parameters, and grad of a vmapped function."""
    x = _rand((2, 3, 6, 37)) + 0.3  # [B1, B2, T, M]
    beta = _rand((2, 37), lo=0.5, hi=0.9)  # batched over B1 only
    thr = _rand((37,), lo=0.7, hi=1.2)

    def run(b):
        inner = jax.vmap(_lif_loss(b), in_axes=(0, None, None))
        outer = jax.vmap(inner, in_axes=(0, 0, None))
        total = lambda x, beta, thr: outer(x, beta, thr).sum()
        return jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2)))(x, beta, thr)

    (l_new, g_new), (l_ref, g_ref) = run(backend), run("xla")
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-5, atol=1e-4)
    for a, r in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_lax_scan(backend):
    xs = _rand((3, 5, 4, 6)) + 0.3
    beta, thr = _rand((6,), lo=0.5, hi=0.9), _rand((6,), lo=0.7, hi=1.2)

    def total(xs, beta, thr, b):
        def body(v, x):
            s, st = sj.lif(x, state=v, beta=beta, threshold=thr, backend=b)
            return st.v, (s * x).sum()
        v, out = jax.lax.scan(body, jnp.zeros((4, 6)), xs)
        return out.sum() + (v * v).sum()

    g = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2)), static_argnums=3)
    (l_new, g_new), (l_ref, g_ref) = g(xs, beta, thr, backend), g(xs, beta, thr, "xla")
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-5)
    for a, r in zip(g_new, g_ref, strict=True):
        np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inside_nnx_scan(backend):
    """A stack of PLIF layers (per-channel learnable decay and threshold, built with nnx.vmap) applied
    by nnx.scan over the layer axis: output and every parameter gradient equal backend="xla"."""
    from flax import nnx

    L, C = 3, 6
    decay = _rand((L, C), 0.7)
    thr = _rand((L, C), lo=0.6, hi=1.2)
    xs = _rand((7, 2, C), 1.2) + 0.4
    w = _rand((7, 2, C))

    def build(b):
        @nnx.vmap(in_axes=0, out_axes=0, axis_size=L)
        def make(_):
            return sj.nn.PLIF(C, backend=b)

        stack = make(jnp.arange(L))
        stack.decay_logit[...] = decay
        stack.threshold[...] = thr
        return stack

    def loss(stack, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def layer(h, neuron):
            return 0.5 * h + neuron(h)

        return (layer(x, stack) * w).sum()

    grad = nnx.jit(nnx.value_and_grad(loss))
    l_ref, g_ref = grad(build("xla"), xs)
    l_new, g_new = grad(build(backend), xs)
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-5)
    assert float(jnp.abs(g_ref.decay_logit[...]).sum()) > 0


# --- the engine through Mosaic GPU (backend="pallas_mosaic"; GPU only) --------------------------

MOSAIC_CASES = [
    ("lif", dict(params=("tau", "threshold"), shape=(16, 2, 128))),
    ("lif", dict(params=("beta", "threshold"), shape=(8, 384), scalar=True)),
    ("lif", dict(params=("beta", "threshold"), shape=(24, 256), reset="zero", reset_delay=True,
                 surrogate="sigmoid")),
    ("lif", dict(params=("beta", "threshold"), shape=(12, 3, 70))),  # T % 8 != 0 (K = 6), M padded
    ("alif", dict(params=("beta", "threshold", "adapt_scale", "adapt_decay"), shape=(16, 512))),
    ("plif", dict(params=("decay_logit", "threshold"), shape=(8, 4, 64), surrogate="triangular", scalar=True)),
    ("ternary", dict(params=("beta", "threshold", "amplitude"), shape=(16, 256), dtype=jnp.bfloat16)),
    ("multilevel", dict(params=("beta", "threshold"), levels=3, shape=(8, 256), detach_reset=True)),
    ("if_", dict(params=("threshold",), shape=(32, 128), reset="none")),
    ("lif", dict(params=("tau", "threshold"), shape=(7, 130))),  # T prime (K = 7: one chunk)
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", MOSAIC_CASES, ids=_id)
@pytest.mark.parametrize("membrane", [False, True])
def test_mosaic_engine_matches_xla(case, membrane):
    """The engine lowered through Mosaic GPU (TMA pipelines): values, the membrane trajectory and
    every gradient equal lax.scan of the same step, including padded M and T % 8 != 0."""
    _compare(case[0], "pallas_mosaic", return_membrane=membrane, **case[1])


@pytest.mark.gpu
def test_mosaic_engine_under_vmap():
    """vmap over the Mosaic GPU engine (forward and backward) equals vmap over lax.scan."""
    x = _rand((3, 8, 2, 128)) + 0.3
    beta, thr = _rand((128,), lo=0.5, hi=0.9), _rand((128,), lo=0.7, hi=1.2)

    def loss(b):
        def f(x, beta, thr):
            s, st = sj.lif(x, beta=beta, threshold=thr, backend=b)
            return (s * jnp.sin(x)).sum() + st.v.sum()
        return f

    def run(b):
        g = jax.grad(loss(b), argnums=(0, 1, 2))
        return jax.jit(jax.vmap(g, in_axes=(0, None, None)))(x, beta, thr)

    for a, r in zip(run("pallas_mosaic"), run("xla"), strict=True):
        np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-5)
