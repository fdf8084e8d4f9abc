"""Spiking attention: cores and modules against dense numpy references written with explicit loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spikejax
from spikejax import nn as snn

T, B, L, D, H = 3, 2, 7, 16, 2
d = D // H
NEURON = {"threshold": 0.15}  # denser spikes than the default, so the attention has work to do
ATTN_THRESHOLD = 0.1  # (Spikformer's 0.5 is for L, d ~ 64; at these sizes it would rarely fire)
COMMON = dict(neuron_kwargs=NEURON, attn_threshold=ATTN_THRESHOLD)


def _spikes(rng, shape, p=0.5):
    return (rng.uniform(size=shape) < p).astype(np.float32)


# --- numpy references (loops over positions) ---------------------------------------------------


def ref_ssa(q, k, v, scale, causal):
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for i in range(q.shape[-2]):
        for j in range(q.shape[-2]):
            if causal and j > i:
                continue
            w = np.sum(q[..., i, :] * k[..., j, :], axis=-1, keepdims=True)
            out[..., i, :] += w * v[..., j, :]
    return out * scale


def phi(x, kind):
    return {"identity": x, "relu": np.maximum(x, 0), "elu1": np.where(x > 0, x + 1, np.exp(x))}[kind]


def ref_linear(q, k, v, feature, normalize, eps, scale, causal=True):
    q, k = phi(q, feature), phi(k, feature)
    num = np.zeros(q.shape[:-1] + (v.shape[-1],))
    den = np.zeros(q.shape[:-1] + (1,))
    n = q.shape[-2]
    for i in range(n):
        for j in range(n if not causal else i + 1):
            w = np.sum(q[..., i, :] * k[..., j, :], axis=-1, keepdims=True)
            num[..., i, :] += w * v[..., j, :]
            den[..., i, :] += w
    return num / (den + eps) if normalize else num * scale


def ref_window(q, k, v, window, scale, softmax):
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for i in range(q.shape[-2]):
        js = list(range(max(0, i - window + 1), i + 1))
        s = np.stack([np.sum(q[..., i, :] * k[..., j, :], axis=-1) for j in js], -1)
        if softmax:
            s = s * scale
            w = np.exp(s - s.max(-1, keepdims=True))
            w = w / w.sum(-1, keepdims=True)
        else:
            w = s * scale
        for n, j in enumerate(js):
            out[..., i, :] += w[..., n : n + 1] * v[..., j, :]
    return out


# --- cores --------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [3, 12])  # L < d and L > d take different contraction orders
def test_ssa_core(causal, length):
    rng = np.random.default_rng(0)
    q, k, v = (_spikes(rng, (T, B, H, length, d)) for _ in range(3))
    out = snn.ssa_core(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), scale=0.125, causal=causal)
    np.testing.assert_allclose(np.asarray(out), ref_ssa(q, k, v, 0.125, causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("feature, normalize", [("identity", True), ("elu1", True), ("relu", False)])
def test_linear_attention_core(chunk, feature, normalize):
    rng = np.random.default_rng(1)
    q, k = (_spikes(rng, (T, B, H, L, d)) - (0.3 if feature != "identity" else 0.0) for _ in range(2))
    v = _spikes(rng, (T, B, H, L, d))
    out = snn.linear_attention_core(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), feature=feature,
                                    normalize=normalize, eps=1e-6, scale=0.3, chunk_size=chunk)
    ref = ref_linear(q, k, v, feature, normalize, 1e-6, 0.3)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


def test_linear_attention_core_noncausal():
    rng = np.random.default_rng(2)
    q, k, v = (_spikes(rng, (T, B, H, L, d)) for _ in range(3))
    out = snn.linear_attention_core(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), causal=False, eps=1e-6)
    np.testing.assert_allclose(np.asarray(out), ref_linear(q, k, v, "identity", True, 1e-6, 1.0, causal=False),
                               rtol=1e-5, atol=1e-5)


def test_linear_attention_gradient_is_bounded_for_a_query_without_spikes():
    """Default ε = 1: ``∂y_{i,e}/∂q_{i,d} = (S_{i,de} - y_{i,e} z_{i,d}) / (n_i + ε)``, so on a query row
    with no spikes (n_i = 0) ``|∂L/∂q_{i,d}| <= 2 max|v| z_{i,d} Σ_e |g_{i,e}| / ε``; with ε = 1e-6 the
    same row's gradient is ~1e6 times larger."""
    assert snn.LINEAR_ATTENTION_EPS == 1.0
    rng = np.random.default_rng(4)
    q, k, v = (_spikes(rng, (T, B, H, L, d)) for _ in range(3))
    i = 4
    q[..., i, :] = 0.0  # position i of every (t, b, h): a query with no spikes
    g = rng.standard_normal(q.shape).astype(np.float32)  # upstream gradient dL/dy
    z_i = k[..., : i + 1, :].sum(-2)  # z_i = Σ_{j<=i} k_j
    bound = 2.0 * np.abs(v).max() * z_i * np.abs(g[..., i, :]).sum(-1, keepdims=True)

    def grad_q(**kw):
        return np.asarray(jax.grad(lambda q: (snn.linear_attention_core(q, jnp.asarray(k), jnp.asarray(v),
                                                                         chunk_size=3, **kw) * g).sum())(
            jnp.asarray(q)))

    gq = grad_q()
    assert np.isfinite(gq).all()
    assert (np.abs(gq[..., i, :]) <= bound + 1e-5).all()
    others = np.abs(np.delete(gq, i, axis=-2)).max()
    assert np.abs(gq[..., i, :]).max() <= 10 * others  # the same order as rows with spikes
    # the decode step (same default) and the modules' default agree with the core
    step_q = jax.grad(lambda qi: (snn.attention.linear_attention_step(
        qi, jnp.asarray(k[..., i, :]), jnp.asarray(v[..., i, :]),
        snn.LinearAttentionState(jnp.asarray(np.einsum("...jd,...je->...de", k[..., :i, :], v[..., :i, :])),
                                 jnp.asarray(k[..., :i, :].sum(-2))))[0] * g[..., i, :]).sum())(
        jnp.asarray(q[..., i, :]))
    np.testing.assert_allclose(np.asarray(step_q), gq[..., i, :], rtol=1e-5, atol=1e-5)
    for cls in (snn.LinearSpikeAttention, snn.HybridSpikeAttention):
        assert cls(D, H, rngs=nnx.Rngs(0)).eps == 1.0
    # the ill-conditioned normaliser this default replaces
    assert np.abs(grad_q(eps=1e-6)[..., i, :]).max() > 1e4 * np.abs(gq[..., i, :]).max()


@pytest.mark.parametrize("window", [1, 3, L, L + 5])
@pytest.mark.parametrize("softmax", [False, True])
def test_sliding_window_core(window, softmax):
    rng = np.random.default_rng(3)
    q, k, v = (_spikes(rng, (T, B, H, L, d)) for _ in range(3))
    out = snn.sliding_window_core(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), window=window, scale=0.4,
                                  softmax=softmax)
    np.testing.assert_allclose(np.asarray(out), ref_window(q, k, v, window, 0.4, softmax), rtol=1e-5, atol=1e-5)
    if window >= L and not softmax:  # full causal attention
        np.testing.assert_allclose(np.asarray(out), ref_ssa(q, k, v, 0.4, True), rtol=1e-5, atol=1e-5)


# --- modules against references assembled from their layers ------------------------------------


def _np(p):
    return np.asarray(p[...], np.float64)


def _lin(layer, x):
    return x @ _np(layer.kernel) + _np(layer.bias)


def _lif(x, threshold=1.0):
    return np.asarray(spikejax.lif(jnp.asarray(x, jnp.float32), threshold=threshold)[0], np.float64)


def _layer_norm(x, ln):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.epsilon) * _np(ln.scale) + _np(ln.bias)


def _heads(x):
    return x.reshape(T, B, -1, H, d).transpose(0, 1, 3, 2, 4)


def _merge(x):
    return x.transpose(0, 1, 3, 2, 4).reshape(T, B, x.shape[3], -1)


KINDS = {
    "ssa": dict(causal=True),
    "ssa_bidirectional": dict(causal=False),
    "sdsa": dict(causal=True),
    "sdsa_bidirectional": dict(causal=False),
    "linear": dict(chunk_size=3),
    "sliding": dict(window=3),
    "sliding_softmax": dict(window=4, softmax=True),
    "hybrid": dict(window=3, chunk_size=4),
    "hybrid_softmax": dict(window=2, softmax=True),
    "hybrid_mixnorm": dict(window=3, mix_norm="layer"),
}


def _build(kind, seed=0, **extra):
    name = kind.split("_")[0]
    kw = {**KINDS[kind], **extra}
    return snn.make_attention(name, D, H, neuron_kwargs=NEURON, attn_threshold=ATTN_THRESHOLD,
                              rngs=nnx.Rngs(seed), **kw)


def _reference(attn, kind, x):
    """Dense numpy reference of the whole module: spiking projections, mixing loops, projection."""
    q = _lif(_lin(attn.q_proj, x), NEURON["threshold"])
    k = _lif(_lin(attn.k_proj, x), NEURON["threshold"])
    v = _lif(_lin(attn.v_proj, x), NEURON["threshold"])
    causal = "bidirectional" not in kind
    name = kind.split("_")[0]
    qh, kh, vh = _heads(q), _heads(k), _heads(v)
    if name == "ssa":
        mixed = _merge(ref_ssa(qh, kh, vh, attn.scale, causal))
    elif name == "sdsa":
        kv = k * v
        kv = np.cumsum(kv, axis=2) if causal else kv.sum(axis=2, keepdims=True)
        att = q * _lif(kv, attn.kv_threshold)
        return _lin(attn.out_proj, att), (q, k, v, att)
    elif name == "linear":
        mixed = _merge(ref_linear(qh, kh, vh, "identity", True, attn.eps, attn.scale))
    elif name == "sliding":
        mixed = _merge(ref_window(qh, kh, vh, attn.window, attn.scale, attn.softmax))
    else:
        mixed = np.concatenate([_merge(ref_linear(qh, kh, vh, "identity", True, attn.eps, attn.scale)),
                                _merge(ref_window(qh, kh, vh, attn.window, attn.scale, attn.softmax))], -1)
    if attn.mix_norm is not None:
        mixed = _layer_norm(mixed, attn.mix_norm)
    att = _lif(mixed, ATTN_THRESHOLD)
    return _lin(attn.out_proj, att), (q, k, v, att)


@pytest.mark.parametrize("kind", list(KINDS))
def test_module_matches_dense_reference(kind):
    rng = np.random.default_rng(10)
    x = _spikes(rng, (T, B, L, D))
    attn = _build(kind, seed=1)
    out = nnx.jit(lambda m, x: m(x))(attn, jnp.asarray(x))
    ref, spikes = _reference(attn, kind, x.astype(np.float64))
    for s in spikes:  # Q, K, V and the attention spikes are neither silent nor saturated
        assert 0.02 < s.mean() < 0.98
    assert out.shape == (T, B, L, D)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


def _decode_all(attn, x):
    """Full forward (with final state) and position-by-position decoding, in one jit."""

    @nnx.jit
    def run(attn, x):
        full, final = attn(x, return_state=True)

        def body(state, xi):
            y, state = attn.decode_step(xi[:, :, None], state)
            return state, y[:, :, 0]

        state, ys = jax.lax.scan(body, attn.init_state(B, T), jnp.moveaxis(x, 2, 0))
        return full, final, jnp.moveaxis(ys, 0, 2), state

    return run(attn, x)


@pytest.mark.parametrize("kind", ["ssa", "sdsa", "linear", "sliding", "sliding_softmax", "hybrid",
                                  "hybrid_softmax", "hybrid_mixnorm"])
def test_decode_step_equals_full_forward(kind):
    rng = np.random.default_rng(11)
    x = jnp.asarray(_spikes(rng, (T, B, L, D)))
    attn = _build(kind, seed=2)
    full, final, stepped, state = _decode_all(attn, x)
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    # the output depends on the past: flipping position 0 changes later positions
    full2 = nnx.jit(lambda m, x: m(x))(attn, x.at[:, :, 0].set(1.0 - x[:, :, 0]))
    assert not np.allclose(np.asarray(full2[:, :, 1:]), np.asarray(full[:, :, 1:]))


def test_mix_norm_lifts_the_attention_neuron_and_is_refused_by_sdsa():
    """Normalised attention outputs are averages of V spikes, mostly below the attention neuron's
    threshold; the LayerNorm before it makes it fire more (same weights)."""
    rng = np.random.default_rng(13)
    x = jnp.asarray(_spikes(rng, (T, B, L, D)))
    plain = snn.LinearSpikeAttention(D, H, attn_threshold=1.0, neuron_kwargs=NEURON, rngs=nnx.Rngs(5))
    normed = snn.LinearSpikeAttention(D, H, attn_threshold=1.0, mix_norm="layer", neuron_kwargs=NEURON,
                                      rngs=nnx.Rngs(5))
    rate = nnx.jit(lambda m, x: m.attn_neuron(m.mix_norm(m.mix(*m.qkv(x))) if m.mix_norm else m.mix(*m.qkv(x))).mean())
    assert float(rate(plain, x)) < 0.02 < float(rate(normed, x))
    with pytest.raises(ValueError, match="mix_norm"):
        snn.SpikeDrivenSelfAttention(D, H, mix_norm="layer", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mix_norm"):
        snn.LinearSpikeAttention(D, H, mix_norm="rms", rngs=nnx.Rngs(0))


def test_window_at_least_L_equals_full_causal_attention():
    rng = np.random.default_rng(12)
    x = jnp.asarray(_spikes(rng, (T, B, L, D)))
    ssa = snn.SpikingSelfAttention(D, H, causal=True, **COMMON, rngs=nnx.Rngs(3))
    windows = [snn.SlidingWindowSpikeAttention(D, H, window=w, **COMMON, rngs=nnx.Rngs(4)) for w in (L, L + 3, 2)]
    for swa in windows:
        nnx.update(swa, nnx.state(ssa, nnx.Param))
    outs = nnx.jit(lambda ms, x: [m(x) for m in ms])([ssa, *windows], x)
    ref = np.asarray(outs[0])
    np.testing.assert_allclose(np.asarray(outs[1]), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(outs[2]), ref, rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(outs[3]), ref)


@pytest.mark.parametrize("softmax", [False, True])
def test_hybrid_is_consistent_with_its_parts(softmax):
    rng = np.random.default_rng(13)
    x = jnp.asarray(_spikes(rng, (T, B, L, D)))
    hyb = snn.HybridSpikeAttention(D, H, window=3, softmax=softmax, chunk_size=2, **COMMON, rngs=nnx.Rngs(5))
    lin = snn.LinearSpikeAttention(D, H, chunk_size=5, **COMMON, rngs=nnx.Rngs(6))
    swa = snn.SlidingWindowSpikeAttention(D, H, window=3, softmax=softmax, **COMMON, rngs=nnx.Rngs(7))

    @nnx.jit
    def run(hyb, lin, swa, x):
        q, k, v = hyb.qkv(x)
        parts = jnp.concatenate([lin.mix(q, k, v), swa.mix(q, k, v)], -1)
        # the output is the projection of the spiking concatenation of the parts
        ref = hyb.out_proj(hyb.attn_neuron(parts))
        out, state = hyb(x, return_state=True)
        return hyb.mix(q, k, v), parts, out, ref, state, lin.final_state(q, k, v), swa.final_state(q, k, v)

    mixed, parts, out, ref, state, st_lin, st_swa = run(hyb, lin, swa, x)
    assert mixed.shape == (T, B, L, 2 * D)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(parts), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves((st_lin, st_swa)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_attention_errors_name_the_argument():
    with pytest.raises(ValueError, match="d_model: 30 is not divisible by num_heads=4"):
        snn.SpikingSelfAttention(30, 4, rngs=nnx.Rngs(0))
    attn = snn.LinearSpikeAttention(D, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x: expected \[T, B, L, D\] with D=d_model=16"):
        attn(jnp.zeros((T, B, L, D + 1)))
    with pytest.raises(ValueError, match=r"x: expected \[T, B, L, D\]"):
        attn(jnp.zeros((B, L, D)))
    with pytest.raises(ValueError, match="x: decode_step takes one position"):
        attn.decode_step(jnp.zeros((T, B, 2, D)), attn.init_state(B, T))
    with pytest.raises(ValueError, match="causal"):
        snn.SpikingSelfAttention(D, H, causal=False, rngs=nnx.Rngs(0)).decode_step(
            jnp.zeros((T, B, 1, D)), None)
    with pytest.raises(ValueError, match="window"):
        snn.SlidingWindowSpikeAttention(D, H, window=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="feature_map"):
        snn.LinearSpikeAttention(D, H, feature_map="exp", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="eps"):
        snn.LinearSpikeAttention(D, H, eps=0.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="eps"):
        snn.HybridSpikeAttention(D, H, eps=-1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attention"):
        snn.make_attention("flash", D, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="norm"):
        snn.SpikingSelfAttention(D, H, norm="group", rngs=nnx.Rngs(0))
