"""SpikingLM / Spikformer / blocks: causality, incremental decoding, jit + gradients, configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spikejax import nn as snn

V, B, L = 19, 2, 6
NEURON = {"threshold": 0.3}


def _lm(attention, seed=0, attention_kwargs=None, neuron_kwargs=NEURON, **kw):
    # attn_threshold below Spikformer's 0.5 so the attention neuron fires at these tiny sizes
    akw = {"attn_threshold": 0.1, **({"window": 3} if attention in ("sliding", "hybrid") else {}),
           **(attention_kwargs or {})}
    cfg = snn.SpikingLMConfig(vocab_size=V, d_model=16, num_heads=2, num_layers=2, mlp_ratio=2.0, time_steps=2,
                              max_len=16, attention=attention, attention_kwargs=akw, neuron_kwargs=neuron_kwargs,
                              backend="xla", **kw)
    return cfg.build(seed=seed)


def _tokens(seed=0, shape=(B, L)):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, size=shape), jnp.int32)


LM_CASES = [("linear", {}), ("sliding", {"shortcut": "spike"}), ("hybrid", {}), ("ssa", {"shortcut": "spike"}),
            ("sdsa", {"attention_kwargs": {"kv_threshold": 1.0}})]


@pytest.mark.parametrize("attention, kw", LM_CASES)
def test_lm_causal_and_incremental_decoding(attention, kw):
    model = _lm(attention, **kw)
    toks = _tokens(1)
    p = 2
    changed = toks.at[:, p].set((toks[:, p] + 1) % V)

    @nnx.jit
    def run(model, toks, changed):
        logits = model(toks)
        logits2 = model(changed)

        def body(state, tok):
            out, state = model.decode_step(tok, state)
            return state, out

        _, stepped = jax.lax.scan(body, model.init_state(B), toks.T)
        prefill, state = model(toks[:, :3], return_state=True)
        rest = []
        for i in range(3, L):
            out, state = model.decode_step(toks[:, i], state)
            rest.append(out)
        return logits, logits2, jnp.swapaxes(stepped, 0, 1), jnp.concatenate([prefill, jnp.stack(rest, 1)], 1)

    logits, logits2, stepped, prefilled = run(model, toks, changed)
    assert logits.shape == (B, L, V) and logits.dtype == jnp.float32
    # causality: changing token p never changes logits before p; it does change p and later
    np.testing.assert_array_equal(np.asarray(logits2[:, :p]), np.asarray(logits[:, :p]))
    assert not np.allclose(np.asarray(logits2[:, p]), np.asarray(logits[:, p]))
    assert not np.allclose(np.asarray(logits2[:, p + 1:]), np.asarray(logits[:, p + 1:]))  # through attention
    # incremental decoding equals the full forward, position by position (from empty and after prefill)
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(prefilled), np.asarray(logits), rtol=1e-5, atol=1e-5)


def test_lm_generate_greedy_matches_full_forward_argmax():
    model = _lm("hybrid", seed=3)
    prompt = _tokens(2, (B, 3))
    out = model.generate(prompt, 4, key=jax.random.key(0), temperature=0.0)
    assert out.shape == (B, 7)
    np.testing.assert_array_equal(np.asarray(out[:, :3]), np.asarray(prompt))
    # greedy: each new token is the argmax of the (causal) full forward over the generated sequence
    logits = nnx.jit(lambda m, t: m(t))(model, out[:, :-1])
    np.testing.assert_array_equal(np.asarray(out[:, 3:]), np.asarray(jnp.argmax(logits[:, 2:], -1)))
    # sampling: reproducible for a key, top_k=1 is greedy, tokens in range
    s1 = model.generate(prompt, 4, key=jax.random.key(5), temperature=1.5, top_k=3)
    s2 = model.generate(prompt, 4, key=jax.random.key(5), temperature=1.5, top_k=3)
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert int(s1.min()) >= 0 and int(s1.max()) < V
    np.testing.assert_array_equal(np.asarray(model.generate(prompt, 4, key=jax.random.key(9), top_k=1)),
                                  np.asarray(out))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, 14, key=jax.random.key(0))
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, key=jax.random.key(0), top_k=0)


def _nonzero_grads(model, loss):
    grads = nnx.jit(nnx.grad(loss))(model)
    flat = nnx.to_flat_state(grads) if hasattr(nnx, "to_flat_state") else grads.flat_state()
    missing = []
    count = 0
    for path, leaf in flat:
        g = np.asarray(leaf[...] if hasattr(leaf, "__getitem__") else leaf)
        count += 1
        assert np.all(np.isfinite(g)), path
        if not np.any(g != 0):
            missing.append("/".join(map(str, path)))
    assert count > 0
    assert not missing, f"zero gradient for {missing}"


@pytest.mark.parametrize("attention, kw", [("hybrid", {"neuron": "plif", "neuron_kwargs": {"threshold": 0.3}}),
                                           ("ssa", {"norm": "bn", "shortcut": "spike"})])
def test_lm_jit_and_gradients_reach_every_parameter(attention, kw):
    model = _lm(attention, **kw)
    toks = _tokens(4)
    n_params = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params > 10

    def loss(m):
        logits = m(toks[:, :-1])
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, toks[:, 1:, None], -1).mean()

    val = nnx.jit(loss)(model)
    assert np.isfinite(float(val))
    _nonzero_grads(model, loss)


def test_spikformer_forward_jit_and_gradients():
    cfg = snn.SpikformerConfig(image_size=8, in_channels=3, patch_size=4, num_classes=5, d_model=16, num_heads=2,
                               num_layers=1, mlp_ratio=2.0, time_steps=2, neuron_kwargs={"threshold": 0.3},
                               attention_kwargs={"scale": 0.5})
    model = cfg.build(seed=1)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32))
    logits = nnx.jit(lambda m, x: m(x))(model, images)
    assert logits.shape == (3, 5)
    labels = jnp.arange(3) % 5
    _nonzero_grads(model, lambda m: -jnp.take_along_axis(jax.nn.log_softmax(m(images)), labels[:, None], -1).mean())
    # deterministic in eval mode; pre-encoded spikes [T, B, H, W, C] are accepted
    model.eval()
    a = nnx.jit(lambda m, x: m(x))(model, images)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(nnx.jit(lambda m, x: m(x))(model, images)))
    assert model(jnp.stack([images, images])).shape == (3, 5)
    with pytest.raises(ValueError, match="images: expected H=W=image_size=8"):
        model(jnp.zeros((3, 16, 16, 3)))


@pytest.mark.parametrize("norm, shortcut", [("pre", "membrane"), ("bn", "spike")])
def test_block_structure(norm, shortcut):
    blk = snn.SpikingTransformerBlock(16, 2, attention="sdsa", norm=norm, shortcut=shortcut, mlp_ratio=2.0,
                                      neuron_kwargs=NEURON, rngs=nnx.Rngs(0))
    assert (blk.attn_norm is not None) == (norm == "pre")
    assert (blk.attn.q_norm is not None) == (norm == "bn")
    assert (blk.attn.input_neuron is not None) == (shortcut == "membrane")
    assert (blk.mlp.output_neuron is not None) == (shortcut == "spike")
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, B, L, 16)) < 0.5, jnp.float32)
    y = blk(x)
    assert y.shape == x.shape
    if shortcut == "spike":  # spikes plus spikes: integer counts
        np.testing.assert_array_equal(np.asarray(y), np.round(np.asarray(y)))
    mlp = snn.SpikingMLP(16, 8, rngs=nnx.Rngs(0))
    assert mlp(x).shape == x.shape


def test_configs_round_trip_and_validate():
    cfg = snn.SpikingLMConfig(vocab_size=50, d_model=32, num_heads=4, attention="hybrid",
                              attention_kwargs={"window": 8, "softmax": True}, neuron="plif",
                              neuron_kwargs={"init_tau": 3.0})
    assert snn.SpikingLMConfig.from_dict(cfg.to_dict()) == cfg
    assert snn.SpikingLMConfig.from_json(cfg.to_json()) == cfg
    scfg = snn.SpikformerConfig(image_size=16, patch_size=4, attention="sdsa", shortcut="membrane")
    assert snn.SpikformerConfig.from_json(scfg.to_json()) == scfg
    assert scfg.num_patches == 16
    small = cfg.replace(d_model=16, num_heads=2, num_layers=1, max_len=8, time_steps=1)
    model = small.build(seed=0)
    assert isinstance(model, snn.SpikingLM) and model.config == small
    assert model.head.kernel[...].shape == (16, 50)
    with pytest.raises(ValueError, match="d_model: 30 is not divisible by num_heads=4"):
        snn.SpikingLMConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="attention"):
        snn.SpikingLMConfig(attention="flash")
    with pytest.raises(ValueError, match="image_size: 30 is not divisible by patch_size=4"):
        snn.SpikformerConfig(image_size=30)
    with pytest.raises(ValueError, match=r"data: unknown SpikingLMConfig fields \['width'\]"):
        snn.SpikingLMConfig.from_dict({"width": 3})


def test_lm_shape_errors_name_the_argument():
    model = _lm("linear")
    with pytest.raises(ValueError, match=r"tokens: expected integer token ids \[B, L\]"):
        model(jnp.zeros((L,), jnp.int32))
    with pytest.raises(TypeError, match="tokens: expected an integer dtype"):
        model(jnp.zeros((B, L), jnp.float32))
    with pytest.raises(ValueError, match="tokens: sequence length 20 exceeds max_len=16"):
        model(jnp.zeros((B, 20), jnp.int32))
    with pytest.raises(ValueError, match=r"token: expected integer token ids \[B\]"):
        model.decode_step(jnp.zeros((B, 1), jnp.int32), model.init_state(B))
