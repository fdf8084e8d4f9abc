"""The quick-start demo: a two-layer spiking network trained on scikit-learn's digits.

Pure JAX + Optax, no download: ``x[B, 64]`` pixels in [0, 1] are repeated over ``T`` time steps
(direct encoding), ``H = LIF(x W1 + b1)`` gives spikes ``[T, B, hidden]``, and the logits are the
time average ``mean_t(S_t) W2 + b2``. Run ``spikejax demo`` (or ``python -m spikejax.demo``).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import spikejax as sj


def load_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (x_train, y_train, x_test, y_test), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def init_params(key: jax.Array, n_in: int, hidden: int, n_out: int) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (n_in, hidden)) * (2.0 / n_in) ** 0.5,
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, n_out)) * (1.0 / hidden) ** 0.5,
        "b2": jnp.zeros(n_out),
    }


def forward(params: dict, x: jax.Array, time_steps: int, backend: str = "xla") -> tuple[jax.Array, jax.Array]:
    """``x[B, n_in] -> (logits[B, n_out], spikes[T, B, hidden])``."""
    current = x @ params["w1"] + params["b1"]
    spikes, _ = sj.lif(jnp.broadcast_to(current, (time_steps, *current.shape)), tau=2.0, backend=backend)
    return spikes.mean(0) @ params["w2"] + params["b2"], spikes


def train(steps: int = 400, batch_size: int = 128, hidden: int = 256, time_steps: int = 8, lr: float = 3e-3,
          seed: int = 0, backend: str = "xla", log_every: int = 100) -> dict[str, float]:
    """Train and return the final metrics (test accuracy, firing rate, seconds)."""
    x_tr, y_tr, x_te, y_te = load_digits(seed)
    params = init_params(jax.random.key(seed), x_tr.shape[1], hidden, 10)
    opt = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=1e-4)
    opt_state = opt.init(params)

    def loss_fn(p, x, y):
        logits, spikes = forward(p, x, time_steps, backend)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), spikes.mean()

    @jax.jit
    def step(p, s, x, y):
        (loss, rate), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss, rate

    @jax.jit
    def accuracy(p, x, y):
        logits, spikes = forward(p, x, time_steps, backend)
        return (logits.argmax(-1) == y).mean(), spikes.mean()

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(1, steps + 1):
        idx = rng.integers(0, len(x_tr), batch_size)
        params, opt_state, loss, rate = step(params, opt_state, x_tr[idx], y_tr[idx])
        if log_every and (i % log_every == 0 or i == 1):
            print(f"step {i:5d}  loss {float(loss):.4f}  firing rate {float(rate):.3f}", flush=True)
    acc, rate = accuracy(params, x_te, y_te)
    return {"test_accuracy": float(acc), "firing_rate": float(rate), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict[str, float]:
    from spikejax.cli import HelpFormatter, add_backend_flag, check_backend, number, positive_int

    parser = argparse.ArgumentParser(prog="spikejax demo", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=400, help="optimizer steps")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per step")
    parser.add_argument("--hidden", type=positive_int, default=256, help="LIF neurons of the hidden layer")
    parser.add_argument("--time-steps", type=positive_int, default=8, help="time steps T")
    parser.add_argument("--lr", type=number(0, low_open=True), default=3e-3, help="peak learning rate (AdamW, cosine)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, data split and order")
    add_backend_flag(parser, default="xla", what="the LIF layer")
    args = parser.parse_args(argv)
    check_backend(parser, args.backend)
    print(f"spikejax {sj.__version__} on {jax.default_backend()}: LIF network on sklearn digits", flush=True)
    metrics = train(args.steps, args.batch_size, args.hidden, args.time_steps, lr=args.lr, seed=args.seed,
                    backend=args.backend)
    print(f"test accuracy {metrics['test_accuracy']:.3f}  firing rate {metrics['firing_rate']:.3f}  "
          f"({metrics['seconds']:.1f}s)")
    return metrics


if __name__ == "__main__":
    main()
