"""Functional neurons against hand-derived values, snnTorch / SpikingJelly, and finite differences."""

import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

import spikejax as sj
from spikejax import surrogate as sg

A = np.testing.assert_allclose


def col(*values):
    """A [T, 1] input from a list of per-step values."""
    return jnp.asarray(values, jnp.float32)[:, None]


# --- hand-derived sequences -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reset,spikes,membrane",
    [
        ("subtract", [0, 0, 1, 1], [0.6, 0.9, 0.05, 0.525]),
        ("zero", [0, 0, 1, 1], [0.6, 0.9, 0.0, 0.0]),
        ("none", [0, 0, 1, 1], [0.6, 0.9, 1.05, 2.025]),
    ],
)
def test_lif_beta_hand_values(reset, spikes, membrane):
    s, st, v = sj.lif(col(0.6, 0.6, 0.6, 1.5), beta=0.5, reset=reset, return_membrane=True)
    A(s[:, 0], spikes)
    A(v[:, 0], membrane, atol=1e-6)
    A(st.v, [membrane[-1]], atol=1e-6)


@pytest.mark.parametrize(
    "reset,spikes,membrane",
    [("subtract", [0, 0, 1, 0, 1], [0.4, 0.8, 0.2, 0.6, 2.1]), ("zero", [0, 0, 1, 0, 1], [0.4, 0.8, 0, 0.4, 0])],
)
def test_if_hand_values(reset, spikes, membrane):
    s, _, v = sj.if_(col(0.4, 0.4, 0.4, 0.4, 2.5), reset=reset, return_membrane=True)
    A(s[:, 0], spikes)
    A(v[:, 0], membrane, atol=1e-6)


def test_lif_tau_decay_input_hand_values():
    # H = V + (X - V)/τ with τ = 2: 0.5, 0.75, 0.875 (no spike); then X=2 gives H = 1 -> spike (Θ(0) = 1)
    s, _, v = sj.lif(col(1.0, 1.0, 1.0, 2.0), tau=2.0, return_membrane=True)
    A(s[:, 0], [0, 0, 0, 1])
    A(v[:, 0], [0.5, 0.75, 0.875, 1.4375 - 1.0], atol=1e-6)
    # without decay_input: H = V - V/τ + X
    s, _, v = sj.lif(col(0.5, 0.5), tau=2.0, decay_input=False, return_membrane=True)
    A(v[:, 0], [0.5, 0.75], atol=1e-6)


def test_alif_hand_values():
    s, st, v = sj.alif(col(1.2, 1.2, 1.2), beta=1.0, adapt_scale=0.5, adapt_decay=0.5, return_membrane=True)
    A(s[:, 0], [1, 0, 1])
    A(v[:, 0], [0.2, 1.4, 1.35], atol=1e-6)
    A(st.a, [1.25], atol=1e-6)


def test_ternary_hand_values():
    s, _, v = sj.ternary(col(1.5, -3.0, 0.2), beta=1.0, amplitude=2.0, return_membrane=True)
    A(s[:, 0], [2, -2, -2])
    A(v[:, 0], [0.5, -1.5, -0.3], atol=1e-6)
    s, _, v = sj.ternary(col(1.5, -3.0, 0.2), beta=1.0, reset="zero", return_membrane=True)
    A(s[:, 0], [1, -1, 0])
    A(v[:, 0], [0.0, 0.0, 0.2], atol=1e-6)


def test_multilevel_hand_values():
    s, _, v = sj.multilevel(col(2.5, 0.7, 5.0), levels=3, return_membrane=True)
    A(s[:, 0], [2, 1, 3])
    A(v[:, 0], [0.5, 0.2, 2.2], atol=1e-6)


def test_snntorch_order_hand_values():
    s, _, v = sj.lif(col(1.2, 0.2, 0.0), beta=0.5, reset_delay=True, return_membrane=True)
    A(s[:, 0], [1, 0, 0])
    A(v[:, 0], [1.2, -0.2, -0.1], atol=1e-6)
    s, _, v = sj.lif(col(1.2, 0.2, 0.0), beta=0.5, reset="zero", reset_delay=True, return_membrane=True)
    A(v[:, 0], [1.2, 0.2, 0.1], atol=1e-6)


def test_plif_equals_lif_with_matching_tau_per_channel():
    x = jax.random.normal(jax.random.key(0), (9, 4, 2)) + 0.5
    w = jnp.array([0.0, -jnp.log(3.0)])  # sigmoid(w) = 1/2, 1/4 -> τ = 2, 4
    s, st, v = sj.plif(x, decay_logit=w, return_membrane=True)
    s2, st2, v2 = sj.lif(x, tau=jnp.array([2.0, 4.0]), return_membrane=True)
    A(s, s2)
    A(v, v2, rtol=1e-5, atol=1e-6)


def test_per_channel_params_equal_separate_runs():
    x = jax.random.normal(jax.random.key(1), (7, 3, 2)) * 2
    thr = jnp.array([0.5, 1.5])
    s, _ = sj.lif(x, beta=jnp.array([0.3, 0.9]), threshold=thr)
    for c, (b, t) in enumerate([(0.3, 0.5), (0.9, 1.5)]):
        A(s[..., c], sj.lif(x[..., c], beta=b, threshold=t)[0])


def test_state_carries_between_calls():
    x = jax.random.normal(jax.random.key(2), (10, 5))
    for fn in (sj.lif, sj.alif, sj.ternary):
        full, st_full = fn(x)
        a, st = fn(x[:4])
        b, st2 = fn(x[4:], state=st)
        A(jnp.concatenate([a, b]), full)
        A(st2.v, st_full.v, atol=1e-6)


# --- against snnTorch and SpikingJelly ---------------------------------------------------------


def _random_current(seed, T=16, n=24):
    return np.random.default_rng(seed).normal(0.4, 0.8, size=(T, n)).astype(np.float32)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("beta", [0.9, 0.6])
def test_matches_snntorch_leaky(reset, beta):
    torch = pytest.importorskip("torch")
    snn = pytest.importorskip("snntorch")
    x = _random_current(int(beta * 10) + len(reset))
    w_s, w_v = np.random.default_rng(5).normal(size=(2, *x.shape)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    neuron = snn.Leaky(beta=beta, threshold=1.0, spike_grad=snn.surrogate.atan(alpha=2.0), reset_mechanism=reset)
    mem = neuron.init_leaky()
    spk_t, mem_t = [], []
    for t in range(x.shape[0]):
        spk, mem = neuron(xt[t], mem)
        spk_t.append(spk)
        mem_t.append(mem)
    spk_t, mem_t = torch.stack(spk_t), torch.stack(mem_t)
    ((spk_t * torch.tensor(w_s)).sum() + (mem_t * torch.tensor(w_v)).sum()).backward()

    def f(x):
        s, _, v = sj.lif(x, beta=beta, reset=reset, reset_delay=True, detach_reset=True,
                         surrogate=sg.atan(2.0), return_membrane=True)
        return (s * w_s).sum() + (v * w_v).sum(), (s, v)

    (_, (s, v)), g = jax.value_and_grad(f, has_aux=True)(jnp.asarray(x))
    assert s.sum() > 0
    A(s, spk_t.detach().numpy())
    A(v, mem_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    A(g, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("surr", ["atan", "sigmoid"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_matches_spikingjelly_lifnode(reset, decay_input, surr, detach_reset):
    torch = pytest.importorskip("torch")
    sjn = pytest.importorskip("spikingjelly.activation_based.neuron")
    sjs = pytest.importorskip("spikingjelly.activation_based.surrogate")
    tau = 3.0
    x = _random_current(7, T=12) * (2.0 if decay_input else 1.0)
    w_s, w_v = np.random.default_rng(9).normal(size=(2, *x.shape)).astype(np.float32)
    surr_t = {"atan": sjs.ATan(alpha=2.0), "sigmoid": sjs.Sigmoid(alpha=4.0)}[surr]
    node = sjn.LIFNode(tau=tau, decay_input=decay_input, v_threshold=1.0,
                       v_reset=None if reset == "subtract" else 0.0, surrogate_function=surr_t,
                       detach_reset=detach_reset, step_mode="m", store_v_seq=True)
    xt = torch.tensor(x, requires_grad=True)
    spikes_t = node(xt)
    v_t = node.v_seq
    ((spikes_t * torch.tensor(w_s)).sum() + (v_t * torch.tensor(w_v)).sum()).backward()

    def f(x):
        s, _, v = sj.lif(x, tau=tau, decay_input=decay_input, reset=reset, detach_reset=detach_reset,
                         surrogate=surr, return_membrane=True)
        return (s * w_s).sum() + (v * w_v).sum(), (s, v)

    (_, (s, v)), g = jax.value_and_grad(f, has_aux=True)(jnp.asarray(x))
    assert s.sum() > 0
    A(s, spikes_t.detach().numpy())
    A(v, v_t.detach().numpy(), rtol=1e-5, atol=1e-5)
    A(g, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


# --- gradients: finite differences of the surrogate (smooth) model ----------------------------


@pytest.fixture
def smooth_model(monkeypatch):
    """Make the spike forward the smooth relaxation σ_α itself: the model becomes differentiable,
    and its exact gradient exercises every path of the scan's surrogate gradient."""
    monkeypatch.setattr(sg, "spike", lambda shape, x, alpha: sg.SURROGATES[shape][0][0](x, alpha))
    monkeypatch.setattr(sg, "spike_count", lambda surr, levels, h, thr: sum(
        surr.relaxation(h - k * thr) for k in range(1, levels + 1)))


NEURON_CASES = {
    "lif": (sj.lif, dict(beta=0.8, threshold=0.9), ("beta", "threshold")),
    "lif_tau": (sj.lif, dict(tau=2.5, threshold=1.1), ("tau", "threshold")),
    "if": (sj.if_, dict(threshold=1.0), ("threshold",)),
    "plif": (sj.plif, dict(decay_logit=jnp.array([0.1, -0.3, 0.4]), threshold=jnp.array([0.8, 1.0, 1.2])),
             ("decay_logit", "threshold")),
    "alif": (sj.alif, dict(beta=0.85, threshold=0.8, adapt_scale=0.4, adapt_decay=0.7),
             ("beta", "threshold", "adapt_scale", "adapt_decay")),
    "ternary": (sj.ternary, dict(beta=0.9, threshold=0.7, amplitude=1.3), ("beta", "threshold", "amplitude")),
    "multilevel": (sj.multilevel, dict(levels=3, beta=0.95, threshold=0.6), ("beta", "threshold")),
}


@pytest.mark.parametrize("name", sorted(NEURON_CASES))
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("surr", ["sigmoid", "atan"])
def test_gradients_match_finite_differences(smooth_model, name, reset, surr):
    fn, params, diff_names = NEURON_CASES[name]
    key = jax.random.key(zlib.crc32(f"{name}{reset}{surr}".encode()))
    kx, kv, kw = jax.random.split(key, 3)
    x = jax.random.normal(kx, (6, 2, 3)) * 0.8 + 0.5
    v0 = jax.random.normal(kv, (2, 3)) * 0.3
    w = jax.random.normal(kw, x.shape)
    alpha = jnp.float32(2.0)
    fixed = {k: v for k, v in params.items() if k not in diff_names}

    def loss(x, v0, alpha, *diffs):
        state = sj.NeuronState(v0, v0 * 0.5) if name == "alif" else v0
        kw_ = dict(zip(diff_names, diffs, strict=True))
        s, st = fn(x, state=state, reset=reset, surrogate=sg.Surrogate(surr, alpha), **fixed, **kw_)
        return (s * w).sum() + (st.v**2).sum()

    args = (x, v0, alpha) + tuple(jnp.asarray(params[k], jnp.float32) for k in diff_names)
    check_grads(loss, args, order=1, modes=("rev",), eps=1e-2, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_snntorch_order_gradients_match_finite_differences(smooth_model, reset):
    """detach_reset=True is deliberately not the true gradient; it is checked against snnTorch."""
    x = jax.random.normal(jax.random.key(3), (7, 4)) + 0.6
    w = jax.random.normal(jax.random.key(4), x.shape)

    def loss(x, beta, thr):
        s, _, v = sj.lif(x, beta=beta, threshold=thr, reset=reset, reset_delay=True,
                         surrogate="sigmoid", return_membrane=True)
        return (s * w).sum() + (v * w).sum()

    check_grads(loss, (x, jnp.float32(0.7), jnp.float32(0.9)), order=1, modes=("rev",), eps=1e-2,
                atol=5e-2, rtol=5e-2)


def test_heaviside_model_gradient_uses_surrogate_at_forward_points():
    """One step, v0 = 0: dS/dx = γ σ'(γx - θ) exactly."""
    x = jnp.linspace(-1, 3, 11)[None, :]
    g = jax.grad(lambda x: sj.lif(x, tau=2.0, surrogate="atan")[0].sum())(x)
    A(g[0], 0.5 * sg.atan().grad(0.5 * x[0] - 1.0), rtol=1e-6)


def test_every_parameter_receives_gradient():
    x = jax.random.normal(jax.random.key(5), (8, 4, 3)) + 0.8
    surr = sg.learnable("atan", jnp.full((3,), 2.0))

    def loss(p):
        s, st = sj.alif(x, state=sj.NeuronState(p["v0"], p["a0"]), beta=p["beta"], threshold=p["thr"],
                        adapt_scale=p["b"], adapt_decay=p["rho"], surrogate=p["surr"])
        return (s * jnp.arange(3.0)).sum() + st.v.sum() + st.a.sum()

    p = dict(v0=jnp.zeros((4, 3)), a0=jnp.zeros((4, 3)), beta=jnp.full((3,), 0.9), thr=jnp.ones(3),
             b=jnp.full((3,), 0.3), rho=jnp.full((3,), 0.8), surr=surr)
    g = jax.grad(loss)(p)
    for name, leaf in jax.tree_util.tree_leaves_with_path(g):
        assert jnp.all(jnp.isfinite(leaf)), name
        assert jnp.abs(leaf).sum() > 0, name


# --- transformations, dtypes and shapes ---------------------------------------------------------


class TransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("if", sj.if_), ("lif", sj.lif), ("alif", sj.alif), ("plif", sj.plif), ("ternary", sj.ternary),
        ("multilevel", sj.multilevel),
    )
    def test_jit_vmap_grad_compose(self, fn):
        x = jax.random.normal(jax.random.key(0), (3, 5, 4)) + 0.7  # vmapped over the leading 3
        run = self.variant(lambda x: fn(x)[0])
        batched = jax.vmap(run)(x)
        chex.assert_shape(batched, (3, 5, 4))
        for i in range(3):
            A(batched[i], fn(x[i])[0])
        g = self.variant(jax.grad(lambda x: jax.vmap(lambda xi: fn(xi)[0])(x).sum()))(x)
        chex.assert_shape(g, x.shape)
        chex.assert_tree_all_finite(g)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bf16_matches_f32_of_rounded_input(self):
        x = jax.random.normal(jax.random.key(1), (12, 6, 8)).astype(jnp.bfloat16) + 0.5
        s, st = self.variant(lambda x: sj.lif(x, beta=0.9))(x)
        chex.assert_type(s, jnp.bfloat16)
        chex.assert_type(st.v, jnp.float32)
        s32, st32 = sj.lif(x.astype(jnp.float32), beta=0.9)
        A(s.astype(jnp.float32), s32)
        A(st.v, st32.v, rtol=1e-6)
        g = self.variant(jax.grad(lambda x: sj.lif(x, beta=0.9)[0].astype(jnp.float32).sum()))(x)
        chex.assert_type(g, jnp.bfloat16)


@pytest.mark.parametrize("shape", [(1, 5), (1, 2, 3), (4, 3), (3, 2, 3), (3, 2, 2, 3), (2, 2, 1, 2, 3)])
def test_ranks_2_to_5_and_single_step(shape):
    x = jax.random.normal(jax.random.key(len(shape)), shape) + 0.8
    thr = jnp.linspace(0.5, 1.5, shape[-1])
    s, st, v = sj.lif(x, threshold=thr, return_membrane=True)
    chex.assert_shape([s, v], shape)
    chex.assert_shape(st.v, shape[1:])
    flat = x.reshape(shape[0], -1)
    s2, _ = sj.lif(flat, threshold=jnp.broadcast_to(thr, shape[1:]).reshape(-1))
    A(s.reshape(shape[0], -1), s2)


def test_inside_lax_scan():
    xs = jax.random.normal(jax.random.key(9), (3, 4, 5)) + 0.5  # 3 chunks of 4 steps

    def body(v, x):
        s, st = sj.lif(x, state=v)
        return st.v, s

    _, s = jax.lax.scan(body, jnp.zeros(5), xs)
    A(s.reshape(12, 5), sj.lif(xs.reshape(12, 5))[0])


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: sj.lif(jnp.ones(5)), "x: expected rank >= 2"),
        (lambda: sj.lif(jnp.ones((4, 3), jnp.int32)), "x: expected a floating dtype"),
        (lambda: sj.lif(jnp.ones((4, 3)), threshold=jnp.ones(2)), r"threshold: shape \(2,\) is not broadcastable"),
        (lambda: sj.lif(jnp.ones((4, 3)), beta=jnp.ones((4,))), "beta: shape"),
        (lambda: sj.lif(jnp.ones((4, 3)), reset="soft"), "reset: unknown reset 'soft'"),
        (lambda: sj.lif(jnp.ones((4, 3)), surrogate="gauss"), "surrogate: unknown shape 'gauss'"),
        (lambda: sj.lif(jnp.ones((4, 3)), backend="cuda"), "backend: unknown backend 'cuda'"),
        (lambda: sj.lif(jnp.ones((4, 3)), threshold=-1.0), "threshold: expected values > 0"),
        (lambda: sj.lif(jnp.ones((4, 3)), beta=1.5), "beta: expected values <= 1"),
        (lambda: sj.lif(jnp.ones((4, 3)), tau=0.5), "tau: expected values >= 1"),
        (lambda: sj.lif(jnp.ones((4, 3)), tau=2.0, beta=0.5), "beta, tau: give one"),
        (lambda: sj.multilevel(jnp.ones((4, 3)), levels=0), "levels: expected an integer >= 1"),
        (lambda: sj.lif(jnp.ones((4, 3)), state=jnp.zeros(4)), "state.v: shape"),
        (lambda: sj.lif(jnp.ones((4, 3)), surrogate=sg.atan(-1.0)), "surrogate.alpha: expected values > 0"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError if "dtype" not in match else TypeError, match=match):
        call()


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error raised off the GPU")
@pytest.mark.parametrize("backend", ["pallas", "triton"])
def test_gpu_backends_explain_why_they_cannot_run_on_cpu(backend):
    with pytest.raises(ValueError, match=f"backend='{backend}' needs .*GPU.*install"):
        sj.lif(jnp.ones((4, 3)), backend=backend)


def test_auto_is_xla_on_cpu():
    from spikejax.backends import resolve_backend

    if jax.default_backend() == "cpu":
        assert resolve_backend("auto") == "xla"
    A(sj.lif(jnp.ones((4, 3)), backend="auto")[0], sj.lif(jnp.ones((4, 3)))[0])
