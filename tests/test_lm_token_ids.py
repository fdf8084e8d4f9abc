"""SpikingLM token-id checks: out-of-range ids are a ValueError naming them in eager calls and NaN
logits (never a wrapped or silent answer) under jit; an empty sequence is a named error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spikejax.nn as snn

V = 11


@pytest.fixture(scope="module")
def lm():
    cfg = snn.SpikingLMConfig(vocab_size=V, d_model=8, num_heads=2, num_layers=1, mlp_ratio=2.0, time_steps=2,
                              max_len=8, neuron_kwargs={"beta": 0.5, "threshold": 0.5})
    return cfg.build(seed=0)


@pytest.mark.parametrize("bad", [V, -1, V + 5])
def test_eager_call_names_the_ids(lm, bad):
    tokens = np.random.default_rng(0).integers(0, V, (2, 6))
    tokens[1, 3] = bad
    with pytest.raises(ValueError, match=rf"tokens: token ids must lie in \[0, vocab_size={V}\), got {bad}$"):
        lm(jnp.asarray(tokens))
    with pytest.raises(ValueError, match="prompt: token ids"):
        lm.generate(jnp.asarray(tokens), 1, key=jax.random.key(0))
    state = lm.init_state(2)
    with pytest.raises(ValueError, match=f"token: token ids .* got {bad}"):
        lm.decode_step(jnp.asarray([0, bad]), state)


@pytest.mark.parametrize("bad", [V, -1])
def test_under_jit_an_out_of_range_id_gives_nan_logits(lm, bad):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, V, (2, 6))
    good = np.asarray(jax.jit(lambda t: lm(t))(jnp.asarray(tokens)))
    assert np.isfinite(good).all()
    np.testing.assert_allclose(good, np.asarray(lm(jnp.asarray(tokens))), rtol=1e-6, atol=1e-6)
    tokens[1, 3] = bad
    logits = np.asarray(jax.jit(lambda t: lm(t))(jnp.asarray(tokens)))
    assert np.isnan(logits[1, 3]).all()  # the bad position: all NaN (-1 does not wrap to id V - 1)
    np.testing.assert_allclose(logits[0], good[0], rtol=1e-6, atol=1e-6)  # the other sequence is untouched
    np.testing.assert_allclose(logits[1, :3], good[1, :3], rtol=1e-6, atol=1e-6)  # causal: earlier positions too


def test_empty_sequence_is_a_named_error(lm):
    with pytest.raises(ValueError, match=r"tokens: expected at least one token per sequence \(L >= 1\), "
                                         r"got shape \(2, 0\)"):
        lm(jnp.zeros((2, 0), jnp.int32))
    with pytest.raises(ValueError, match="prompt: expected at least one token"):
        lm.generate(jnp.zeros((1, 0), jnp.int32), 3, key=jax.random.key(0))
