"""Parameter checks of the functional neurons: eager and concrete-at-trace-time values are checked
when called; traced values under ``spikejax.checks.checked`` (checkify user checks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spikejax as sj


def test_traced_negative_threshold_is_unchecked_by_default_and_caught_in_checked_mode():
    x = jax.random.normal(jax.random.key(0), (5, 6)) * 0.1
    fire = lambda th: sj.lif(x, beta=0.5, threshold=th)[0].mean()  # noqa: E731
    assert float(jax.jit(fire)(-1.0)) == 1.0  # documented: a traced value is not checked, every neuron fires
    checked = sj.checks.checked(fire)
    np.testing.assert_allclose(float(checked(1.0)), float(fire(1.0)))  # same result when the check passes
    with pytest.raises(ValueError, match="threshold: expected values > 0.0, got min -1.0"):
        checked(-1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(beta=jnp.nan), "beta: expected finite"),
    (dict(beta=2.0), "beta: expected values <= 1.0"),
    (dict(tau=jnp.inf), "tau: expected finite"),
    (dict(tau=0.5), "tau: expected values >= 1"),
])
def test_checked_mode_names_each_parameter(kw, match):
    x = jnp.ones((3, 4))
    (name, value), = kw.items()
    with pytest.raises(ValueError, match=match):
        sj.checks.checked(lambda v: sj.lif(x, **{name: v})[0])(value)


@pytest.mark.parametrize("call, match", [
    (lambda x: sj.lif(x, beta=float("nan")), "beta: expected finite values, got nan"),
    (lambda x: sj.lif(x, threshold=float("inf")), "threshold: expected finite"),
    (lambda x: sj.lif(x, tau=float("nan")), "tau: expected finite"),
    (lambda x: sj.alif(x, adapt_decay=float("nan")), "adapt_decay: expected finite"),
    (lambda x: sj.multilevel(x, levels=2**31), "levels: 2147483648 .* float32"),
    (lambda x: sj.multilevel(x.astype(jnp.bfloat16), levels=257), "levels: 257 .* bfloat16 .* 256"),
    (lambda x: sj.multilevel(x.astype(jnp.float16), levels=2049), "levels: 2049 .* float16 .* 2048"),
    (lambda x: sj.ternary(x, amplitude=jnp.ones(3)), r"amplitude: shape \(3,\) is not broadcastable"),
    (lambda x: sj.alif(x, reset_delay=True), "reset_delay: .*alif"),
])
def test_bad_values_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call(jnp.ones((3, 4)))


def test_largest_exact_count_still_runs():
    x = jnp.full((2, 3), 300.0, jnp.bfloat16)
    s, _ = sj.multilevel(x, levels=256, threshold=1.0)
    assert float(s.astype(jnp.float32).max()) == 256.0
