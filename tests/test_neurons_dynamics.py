"""The neuron models of spikejax.neurons.dynamics against their peers' own classes on fresh random
inputs: snnTorch ``Synaptic`` / ``Alpha``, SpikingJelly 2.0 ``CUBALIFNode`` / ``IzhikevichNode`` /
``EIFNode`` / ``QIFNode`` (step mode "m", CPU: its torch implementation), Norse 1.1 ``LIFRefracCell``
/ ``LIFAdExCell``, and a NumPy loop for adLIF. Spikes must be equal, states within 1e-5, and the
gradients of the xla path (jax.grad of the lax.scan) equal torch autograd of the peer with the
same surrogate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spikejax as sj
from spikejax.neurons import dynamics as D

torch = pytest.importorskip("torch")

T, B, N = 20, 3, 6
ATOL = 1e-5


def _x(seed, scale=1.5, shift=0.4, shape=(T, B, N)):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape) * scale + shift, np.float32)


def _close(a, b, atol=ATOL, what=""):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=atol, rtol=1e-5,
                               err_msg=what)


def _spikes_equal(ours, theirs, lo=0.02, hi=0.98):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    np.testing.assert_array_equal(ours, theirs)
    assert lo < ours.mean() < hi, f"firing rate {ours.mean()} makes the comparison vacuous"


def _grad_weights(seed, shape=(T, B, N)):
    return np.asarray(jax.random.normal(jax.random.key(1000 + seed), shape), np.float32)


# --- snnTorch ----------------------------------------------------------------------------------


def _snntorch_run(cell, x, n_states):
    xs = torch.tensor(x, requires_grad=True)
    outs, states = [], [[] for _ in range(n_states)]
    for t in range(x.shape[0]):
        out = cell(xs[t])
        outs.append(out[0])
        for k in range(n_states):
            states[k].append(out[1 + k])
    return xs, torch.stack(outs), [torch.stack(s) for s in states]


@pytest.mark.parametrize("reset,reset_delay", [("subtract", True), ("zero", True), ("none", True),
                                               ("zero", False), ("none", False)])
def test_cuba_lif_equals_snntorch_synaptic(reset, reset_delay):
    snn = pytest.importorskip("snntorch")
    seed = hash((reset, reset_delay)) % 1000
    x = _x(seed)
    beta = np.asarray(np.random.default_rng(seed).uniform(0.6, 0.95, N), np.float32)  # per channel
    alpha, thr = 0.7, 1.1
    a_t, b_t = torch.tensor(alpha, requires_grad=True), torch.tensor(beta, requires_grad=True)
    cell = snn.Synaptic(alpha=a_t, beta=b_t, threshold=thr, reset_mechanism=reset, reset_delay=reset_delay)
    # learnable parameters are registered by snnTorch only with learn_*; swap in our leaf tensors
    cell.alpha, cell.beta = a_t, b_t
    xs, spk, (syn, mem) = _snntorch_run(cell, x, 2)
    w = _grad_weights(seed)
    (spk * torch.tensor(w)).sum().add(mem[-1].sum() * 0.3).backward()

    def run(x, alpha, beta):
        # snnTorch detaches the delayed reset, not the same-step one (do_reset = spk - reset)
        return D.cuba_lif(x, alpha=alpha, beta=beta, threshold=thr, reset=reset, reset_delay=reset_delay,
                          detach_reset=reset_delay, return_states=True)

    s, final, (i_seq, v_seq) = run(jnp.asarray(x), alpha, beta)
    _spikes_equal(s, spk.detach().numpy())
    _close(i_seq, syn.detach().numpy(), what="syn")
    _close(v_seq, mem.detach().numpy(), what="mem")

    def loss(x, alpha, beta):
        s, final, _ = run(x, alpha, beta)
        return jnp.sum(s * w) + 0.3 * jnp.sum(final[1])

    gx, ga, gb = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(x), alpha, jnp.asarray(beta))
    _close(gx, xs.grad.numpy(), atol=1e-4, what="grad x")
    _close(ga, a_t.grad.numpy(), atol=1e-3, what="grad alpha")
    _close(gb, b_t.grad.numpy(), atol=1e-3, what="grad beta")


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_alpha_neuron_equals_snntorch_alpha(reset):
    snn = pytest.importorskip("snntorch")
    seed = 7 + len(reset)
    x = _x(seed, scale=1.0, shift=0.3)
    alpha, beta, thr = 0.85, 0.6, 0.8
    cell = snn.Alpha(alpha=alpha, beta=beta, threshold=thr, reset_mechanism=reset)
    xs, spk, (exc, inh, mem) = _snntorch_run(cell, x, 3)
    w = _grad_weights(seed)
    (spk * torch.tensor(w)).sum().backward()

    def run(x):
        return D.alpha_neuron(x, alpha=alpha, beta=beta, threshold=thr, reset=reset, detach_reset=True,
                              return_states=True)

    s, _, (e_seq, n_seq, v_seq) = run(jnp.asarray(x))
    _spikes_equal(s, spk.detach().numpy())
    for ours, theirs, what in [(e_seq, exc, "syn_exc"), (n_seq, inh, "syn_inh"), (v_seq, mem, "mem")]:
        _close(ours, theirs.detach().numpy(), what=what)
    gx = jax.grad(lambda x: jnp.sum(run(x)[0] * w))(jnp.asarray(x))
    _close(gx, xs.grad.numpy(), atol=1e-4, what="grad x")


# --- SpikingJelly ------------------------------------------------------------------------------


def _sj_run(node, x, **initial):
    node.step_mode = "m"
    for k, v in initial.items():
        setattr(node, k, torch.tensor(v))
    xs = torch.tensor(x, requires_grad=True)
    return xs, node(xs)


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_cuba_lif_equals_spikingjelly_cubalif(v_reset):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    seed = 21 if v_reset is None else 22
    x = _x(seed)
    c0, v0 = _x(seed + 1, 0.5, 0.0, (B, N)), _x(seed + 2, 0.5, 0.0, (B, N))
    node = neuron.CUBALIFNode(c_decay=0.6, v_decay=0.8, v_threshold=1.2, v_reset=v_reset,
                              surrogate_function=surrogate.ATan(alpha=2.0))
    xs, spk = _sj_run(node, x, v=v0, c=c0)
    w = _grad_weights(seed)
    (spk * torch.tensor(w)).sum().backward()
    reset = "subtract" if v_reset is None else "zero"

    def run(x):
        return D.cuba_lif(x, alpha=0.6, beta=0.8, threshold=1.2, reset=reset, state=(c0, v0))

    s, (i_T, v_T) = run(jnp.asarray(x))
    _spikes_equal(s, spk.detach().numpy())
    _close(i_T, node.c.detach().numpy(), what="c")
    _close(v_T, node.v.detach().numpy(), what="v")
    gx = jax.grad(lambda x: jnp.sum(run(x)[0] * w))(jnp.asarray(x))
    _close(gx, xs.grad.numpy(), atol=1e-4, what="grad x")


def _sj_nodes():
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    return neuron


_SJ_CASES = {
    # name: (SpikingJelly class, its kwargs, our kwargs, state names (ours, in order), input scale/shift)
    "izhikevich": ("IzhikevichNode",
                   dict(tau=2.5, v_c=0.7, a0=1.2, v_threshold=1.0, v_rest=-0.1, tau_w=3.0, a=0.2, b=0.3),
                   dict(tau=2.5, v_c=0.7, a0=1.2, threshold=1.0, v_rest=-0.1, tau_w=3.0, a=0.2, b=0.3),
                   ("v", "w"), (1.0, 0.6)),
    "eif": ("EIFNode", dict(tau=3.0, delta_T=0.7, theta_rh=0.6, v_threshold=1.0, v_rest=0.05),
            dict(tau=3.0, delta_T=0.7, theta_rh=0.6, threshold=1.0, v_rest=0.05), ("v",), (1.0, 0.5)),
    "qif": ("QIFNode", dict(tau=2.5, v_c=0.6, a0=0.8, v_threshold=1.0, v_rest=0.0),
            dict(tau=2.5, v_c=0.6, a0=0.8, threshold=1.0, v_rest=0.0), ("v",), (1.0, 0.5)),
}


@pytest.mark.parametrize("v_reset", [-0.1, None])
@pytest.mark.parametrize("name", sorted(_SJ_CASES))
def test_nonlinear_neurons_equal_spikingjelly(name, v_reset):
    neuron = _sj_nodes()
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    cls, theirs, ours, names, (scale, shift) = _SJ_CASES[name]
    seed = 31 + sorted(_SJ_CASES).index(name) * 2 + (v_reset is None)
    x = _x(seed, scale, shift)
    init = {k: _x(seed + 5 + j, 0.3, 0.0, (B, N)) for j, k in enumerate(names)}
    node = getattr(neuron, cls)(**theirs, v_reset=v_reset, surrogate_function=surrogate.ATan(alpha=2.0),
                                step_mode="m", store_v_seq=True)
    xs, spk = _sj_run(node, x, **init)
    w = _grad_weights(seed)
    (spk * torch.tensor(w)).sum().backward()
    fn = getattr(D, name)
    kw = dict(ours, reset="subtract" if v_reset is None else "zero", v_reset=0.0 if v_reset is None else v_reset)

    def run(x):
        return fn(x, **kw, state=tuple(init[k] for k in names), return_states=True)

    s, final, states = run(jnp.asarray(x))
    _spikes_equal(s, spk.detach().numpy())
    for k, ours_T in zip(names, final, strict=True):
        _close(ours_T, getattr(node, k).detach().numpy(), what=k)
    _close(states[0], node.v_seq.detach().numpy(), what="v_seq")
    gx = jax.grad(lambda x: jnp.sum(run(x)[0] * w))(jnp.asarray(x))
    _close(gx, xs.grad.numpy(), atol=1e-4, what="grad x")


# --- Norse -------------------------------------------------------------------------------------


def _norse_run(cell, x, state):
    xs = torch.tensor(x, requires_grad=True)
    outs, states = [], []
    for t in range(x.shape[0]):
        z, state = cell(xs[t], state)
        outs.append(z)
        states.append(state)
    return xs, torch.stack(outs), states


@pytest.mark.parametrize("alpha", [0.0, 0.75])
def test_refractory_lif_equals_norse(alpha):
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional.lif import LIFFeedForwardState
    from norse.torch.functional.lif_refrac import LIFRefracFeedForwardState

    seed = 41 + int(alpha > 0)
    x = _x(seed, 1.5, 0.8)
    beta, thr, v_leak, v_reset, refr = 0.875, 1.0, 0.1, -0.2, 3.0  # 1 - β = dt τ_mem⁻¹ exactly (dt = 1)
    p = norse.LIFRefracParameters(
        norse.LIFParameters(tau_syn_inv=torch.tensor(1.0 - alpha), tau_mem_inv=torch.tensor(1.0 - beta),
                            v_leak=torch.tensor(v_leak), v_th=torch.tensor(thr), v_reset=torch.tensor(v_reset),
                            method="super", alpha=100.0),
        rho_reset=torch.tensor(refr))
    cell = norse.LIFRefracCell(p, dt=1.0)
    v0, i0 = _x(seed + 1, 0.3, 0.0, (B, N)), _x(seed + 2, 0.3, 0.0, (B, N))
    rho0 = np.asarray(np.random.default_rng(seed).integers(0, 3, (B, N)), np.float32)
    state = LIFRefracFeedForwardState(LIFFeedForwardState(torch.tensor(v0), torch.tensor(i0)), torch.tensor(rho0))
    xs, spk, states = _norse_run(cell, x, state)
    w = _grad_weights(seed)
    (spk * torch.tensor(w)).sum().backward()

    def run(x):
        return D.refractory_lif(x, beta=beta, alpha=alpha, threshold=thr, v_leak=v_leak, v_reset=v_reset,
                                refractory=refr, surrogate=sj.surrogate.fast_sigmoid(1.0), state=(v0, i0, rho0),
                                return_states=True)

    s, _, (v_seq, i_seq, rho_seq) = run(jnp.asarray(x))
    _spikes_equal(s, spk.detach().numpy())
    _close(v_seq, torch.stack([st.lif.v for st in states]).detach().numpy(), what="v")
    _close(i_seq, torch.stack([st.lif.i for st in states]).detach().numpy(), what="i")
    _close(rho_seq, torch.stack([st.rho for st in states]).detach().numpy(), what="rho")
    assert np.asarray(rho_seq).max() == refr  # the refractory period was exercised
    gx = jax.grad(lambda x: jnp.sum(run(x)[0] * w))(jnp.asarray(x))
    _close(gx, xs.grad.numpy(), atol=1e-4, what="grad x")


def test_adex_equals_norse():
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional.lif_adex import LIFAdExFeedForwardState

    seed = 51
    x = _x(seed, 1.0, 0.5)
    tau, alpha, tau_w, a, b, dT, thr = 4.0, 0.75, 8.0, 0.5, 0.25, 0.5, 1.0
    p = norse.LIFAdExParameters(
        adaptation_current=torch.tensor(a), adaptation_spike=torch.tensor(b), delta_T=torch.tensor(dT),
        tau_ada_inv=torch.tensor(1.0 / tau_w), tau_syn_inv=torch.tensor(1.0 - alpha),
        tau_mem_inv=torch.tensor(1.0 / tau), v_leak=torch.tensor(0.0), v_th=torch.tensor(thr),
        v_reset=torch.tensor(0.0), method="super", alpha=100.0)
    cell = norse.LIFAdExCell(p, dt=1.0)
    v0, i0, w0 = (_x(seed + k, 0.3, 0.0, (B, N)) for k in (1, 2, 3))
    state = LIFAdExFeedForwardState(torch.tensor(v0), torch.tensor(i0), torch.tensor(w0))
    xs, spk, states = _norse_run(cell, x, state)
    wts = _grad_weights(seed)
    (spk * torch.tensor(wts)).sum().backward()

    def run(x):
        return D.adex(x, tau=tau, alpha=alpha, delta_T=dT, theta_rh=thr, a=a, b=b, tau_w=tau_w, threshold=thr,
                      v_rest=0.0, v_reset=0.0, surrogate=sj.surrogate.fast_sigmoid(1.0), state=(v0, i0, w0),
                      return_states=True)

    s, _, (v_seq, i_seq, w_seq) = run(jnp.asarray(x))
    _spikes_equal(s, spk.detach().numpy())
    _close(v_seq, torch.stack([st.v for st in states]).detach().numpy(), what="v")
    _close(i_seq, torch.stack([st.i for st in states]).detach().numpy(), what="i")
    _close(w_seq, torch.stack([st.a for st in states]).detach().numpy(), what="a")
    gx = jax.grad(lambda x: jnp.sum(run(x)[0] * wts))(jnp.asarray(x))
    _close(gx, xs.grad.numpy(), atol=1e-4, what="grad x")


# --- adLIF: a NumPy loop (no peer class) ---------------------------------------------------------


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_adlif_equals_numpy_loop(reset):
    seed = 61 + (reset == "zero")
    x = _x(seed, 4.0, 2.5)
    alpha = np.asarray(np.random.default_rng(seed).uniform(0.7, 0.95, N), np.float32)
    beta, a, b, thr = 0.9, 0.4, 0.8, 1.0
    u0, w0 = _x(seed + 1, 0.3, 0.0, (B, N)), _x(seed + 2, 0.3, 0.0, (B, N))
    u, w = u0.astype(np.float64), w0.astype(np.float64)
    spikes, us, ws = [], [], []
    for t in range(T):
        s_prev = (u >= thr).astype(np.float64)
        w = beta * w + a * u + b * s_prev
        kept = u - thr * s_prev if reset == "subtract" else u * (1 - s_prev)
        u = alpha * kept + (1 - alpha) * (x[t] - w)
        spikes.append((u >= thr).astype(np.float32))
        us.append(u)
        ws.append(w)
    s, final, (u_seq, w_seq) = D.adlif(jnp.asarray(x), alpha=alpha, beta=beta, a=a, b=b, threshold=thr, reset=reset,
                                       state=(u0, w0), return_states=True)
    _spikes_equal(s, np.stack(spikes))
    _close(u_seq, np.stack(us), what="u")
    _close(w_seq, np.stack(ws), what="w")


# --- the functional layer: registry, options, errors, learnable surrogate -------------------------


def test_registry_lists_every_model_with_a_working_default_step():
    names = {"cuba_lif", "alpha_neuron", "adlif", "refractory_lif", "izhikevich", "eif", "adex", "qif"}
    assert names <= set(D.DYNAMICS)
    x = jnp.asarray(_x(71, shape=(3, 2)))
    for name, (step, params, n) in D.DYNAMICS.items():
        s, final = sj.custom_neuron(step, num_states=n)(x, params, backend="xla")
        assert len(final) == n and s.shape == x.shape, name
        if name != "cuba_li":
            assert set(np.unique(np.asarray(s))) <= {0.0, 1.0}, name
    # equal options give the same (cached) step function, so compiled kernels are shared
    assert D.cuba_lif_step(reset="zero") is D.cuba_lif_step(reset="zero")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_cuba_lif_without_synapse_equals_builtin_lif_with_every_gradient(reset):
    """α = 0 makes CUBA a LIF (I_t = X_t): values and the gradients of x, β, θ and a learnable
    surrogate's α must equal spikejax.lif's (an independent implementation)."""
    x = jnp.asarray(_x(72 + (reset == "zero")))
    w = jnp.asarray(_grad_weights(72))
    beta = jnp.asarray(np.random.default_rng(72).uniform(0.5, 0.95, N), jnp.float32)

    def ours(x, beta, thr, a):
        s, (_, v) = D.cuba_lif(x, alpha=0.0, beta=beta, threshold=thr, reset=reset,
                               surrogate=sj.surrogate.learnable("sigmoid", a))
        return jnp.sum(s * w) + 0.5 * jnp.sum(v)

    def builtin(x, beta, thr, a):
        s, st = sj.lif(x, beta=beta, threshold=thr, reset=reset, surrogate=sj.surrogate.learnable("sigmoid", a))
        return jnp.sum(s * w) + 0.5 * jnp.sum(st.v)

    args = (x, beta, jnp.float32(1.1), jnp.float32(3.0))
    _close(ours(*args), builtin(*args))
    for g_ours, g_ref in zip(jax.grad(ours, argnums=(0, 1, 2, 3))(*args),
                             jax.grad(builtin, argnums=(0, 1, 2, 3))(*args), strict=True):
        _close(g_ours, g_ref, atol=1e-4)


def test_custom_surrogate_runs_and_sets_the_backward():
    x = jnp.asarray(_x(73))
    fs = sj.surrogate.custom(lambda u: 1.0 / (1.0 + 25.0 * jnp.abs(u)) ** 2, name="fs25")
    g_custom = jax.grad(lambda x: jnp.sum(D.eif(x, surrogate=fs)[0]))(x)
    g_named = jax.grad(lambda x: jnp.sum(D.eif(x, surrogate=sj.surrogate.fast_sigmoid(25.0))[0]))(x)
    _close(g_custom, g_named, atol=1e-6)


def test_bad_arguments_name_the_argument():
    x = jnp.ones((4, 2, 3))
    with pytest.raises(ValueError, match="beta"):
        D.cuba_lif(x, beta=1.5)
    with pytest.raises(ValueError, match="reset"):
        D.izhikevich(x, reset="soft")
    with pytest.raises(ValueError, match="alpha, beta"):
        D.alpha_neuron(x, alpha=0.5, beta=0.7)
    with pytest.raises(ValueError, match="tau"):
        D.qif(x, tau=0.0)
    with pytest.raises(ValueError, match="threshold"):
        D.adlif(x, threshold=np.ones(4))  # not broadcastable to the 3 channels
    with pytest.raises(ValueError, match="state"):
        D.adex(x, state=(jnp.zeros((2, 3)),))
    with pytest.raises(ValueError, match="x"):
        D.eif(jnp.ones((4,)))
    with pytest.raises(TypeError, match="unexpected"):
        D.dynamics_step("qif", tau_w=3.0)
