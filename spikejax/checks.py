"""Checked mode: the neurons' parameter range checks, also on values traced under ``jit``.

Outside ``jit`` (and for values known at trace time) every neuron checks its parameters when it is
called: ``sj.lif(x, threshold=-1.0)`` raises a ``ValueError`` naming ``threshold``. A value traced
under ``jit`` (a learned parameter, an argument of a jitted function) has no value at trace time, so
by default it is not checked: ``jax.jit(lambda th: sj.lif(x, threshold=th))(-1.0)`` runs, and every
neuron fires. :func:`checked` runs a function with those checks compiled in, through
``jax.experimental.checkify`` user checks::

    f = sj.checks.checked(lambda th: sj.lif(x, threshold=th)[0])
    f(-1.0)           # ValueError: threshold: expected values > 0 ...

The flag that turns the checks on is read at trace time from a context variable that
:func:`checked` sets while it traces (no environment variable).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import checkify

__all__ = ["checked", "enabled", "check_range"]

_ENABLED = contextvars.ContextVar("spikejax_checks", default=False)


def enabled() -> bool:
    """Whether the function being traced runs under :func:`checked`."""
    return _ENABLED.get()


@contextlib.contextmanager
def _enable():
    token = _ENABLED.set(True)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def check_range(name: str, value, *, low=None, high=None, low_open: bool = False) -> None:
    """Emit checkify checks that the traced ``value`` is finite and inside the bounds (under
    :func:`checked` only; a no-op otherwise)."""
    if not enabled():
        return
    v = jnp.asarray(value, jnp.float32)
    checkify.check(jnp.all(jnp.isfinite(v)), f"{name}: expected finite values, got {{}}", jnp.min(v))
    if low is not None:
        ok = jnp.all(v > low) if low_open else jnp.all(v >= low)
        checkify.check(ok, f"{name}: expected values {'>' if low_open else '>='} {low}, got min {{}}", jnp.min(v))
    if high is not None:
        checkify.check(jnp.all(v <= high), f"{name}: expected values <= {high}, got max {{}}", jnp.max(v))


def checked(fn: Callable) -> Callable:
    """``fn`` jitted with the neurons' parameter checks on traced values; a failed check raises a
    ``ValueError`` with the check's message (naming the parameter) instead of returning."""
    run = jax.jit(checkify.checkify(fn, errors=checkify.user_checks))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _enable():
            err, out = run(*args, **kwargs)
        msg = err.get()
        if msg is not None:
            raise ValueError(msg.split(" (check failed at")[0].replace(" (`check` failed)", "").strip())
        return out

    return wrapper
