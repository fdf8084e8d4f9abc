"""Training dropout of the spiking LM: time-shared inverted masks, off without a key, resumable keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spikejax.nn import SpikingLMConfig
from spikejax.nn.blocks import time_shared_dropout


def test_time_shared_dropout_mask_is_shared_over_time_and_inverted():
    x = jnp.ones((4, 8, 512))
    y = np.asarray(time_shared_dropout(x, 0.25, jax.random.key(0)))
    vals = np.unique(y)
    assert len(vals) == 2 and vals[0] == 0.0 and np.isclose(vals[1], 1.0 / 0.75)
    for t in range(1, 4):
        np.testing.assert_array_equal(y[t], y[0])  # one mask for all T steps
    assert abs((y[0] == 0).mean() - 0.25) < 0.02
    assert abs(y.mean() - 1.0) < 0.03  # inverted: the expectation is kept
    np.testing.assert_array_equal(time_shared_dropout(x, 0.25, None), x)
    np.testing.assert_array_equal(time_shared_dropout(x, 0.0, jax.random.key(0)), x)


def _pair(rate):
    kw = dict(vocab_size=32, d_model=32, num_heads=2, num_layers=2, max_len=16, attention="hybrid",
              attention_kwargs={"window": 4, "softmax": True}, neuron_kwargs={"beta": 0.5, "threshold": 0.5})
    with_drop = SpikingLMConfig(**kw, dropout=rate).build(seed=0)
    plain = SpikingLMConfig(**kw).build(seed=0)
    nnx.update(plain, nnx.state(with_drop, nnx.Param))
    return with_drop, plain


def test_lm_dropout_only_with_a_key():
    model, plain = _pair(0.3)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 32)
    np.testing.assert_array_equal(model(tokens), plain(tokens))  # no key: the deterministic model
    a = model(tokens, dropout_key=jax.random.key(2))
    b = model(tokens, dropout_key=jax.random.key(2))
    c = model(tokens, dropout_key=jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a))
    # a zero rate ignores the key
    np.testing.assert_array_equal(plain(tokens, dropout_key=jax.random.key(2)), plain(tokens))


def test_lm_dropout_gradients_and_causality():
    model, _ = _pair(0.3)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 32)

    def loss(m, toks):
        return m(toks, dropout_key=jax.random.key(5))[:, :8].sum()

    g = nnx.grad(loss)(model, tokens)
    leaves = jax.tree.leaves(nnx.state(g, nnx.Param))
    assert all(np.all(np.isfinite(x)) for x in leaves)
    changed = tokens.at[:, 12].set((tokens[:, 12] + 1) % 32)  # future positions do not reach 0..7
    np.testing.assert_allclose(model(tokens, dropout_key=jax.random.key(5))[:, :8],
                               model(changed, dropout_key=jax.random.key(5))[:, :8], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.2"])
def test_dropout_config_errors(bad):
    with pytest.raises(ValueError, match="dropout"):
        SpikingLMConfig(dropout=bad)
