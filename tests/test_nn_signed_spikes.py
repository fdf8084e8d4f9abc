"""Linear / hybrid attention with signed (ternary) spikes: a positive normaliser, finite gradients."""

import jax
import numpy as np
import pytest
from flax import nnx

from spikejax.nn import LinearSpikeAttention, SpikingLMConfig


@pytest.mark.parametrize("attention", ["linear", "hybrid"])
def test_ternary_lm_has_finite_gradients(attention):
    akw = {"window": 4} if attention == "hybrid" else {}
    cfg = SpikingLMConfig(vocab_size=32, d_model=32, num_heads=2, num_layers=2, max_len=16, attention=attention,
                          attention_kwargs=akw, neuron="ternary", neuron_kwargs={"threshold": 0.5})
    model = cfg.build(seed=0)
    assert model.blocks[0].attn.feature_map == "relu"  # "auto" for signed spikes
    tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 32)
    logits = model(tokens)
    g = nnx.grad(lambda m: (m(tokens) ** 2).mean())(model)
    assert np.all(np.isfinite(logits))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(nnx.state(g, nnx.Param)))


def test_identity_feature_map_with_signed_spikes_is_refused():
    with pytest.raises(ValueError, match="feature_map"):
        LinearSpikeAttention(16, 2, neuron="ternary", feature_map="identity", rngs=nnx.Rngs(0))
    assert LinearSpikeAttention(16, 2, rngs=nnx.Rngs(0)).feature_map == "identity"  # binary spikes: unchanged
