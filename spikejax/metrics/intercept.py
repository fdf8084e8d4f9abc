"""Call interception scoped to the module instances of one NNX model.

:func:`intercept_calls` observes (and optionally rewrites) the ``__call__`` of chosen modules of a
model for the duration of a ``with`` block, without touching any class and without changing the
model's code, parameters or graph structure. Python looks ``__call__`` up on the type, so each
intercepted *instance* gets, for the block, an intercepting subclass of its own class (same name,
same attributes, ``isinstance`` unchanged) whose ``__call__`` runs the hooks registered for that
instance and then the original method; on exit every instance gets its class back. Any other
instance of the same class, called inside the block or from another thread, runs the original
class untouched and is not seen.

Several interceptions may cover one instance at once (nested blocks over the same model, or two
models sharing a layer); the most recently entered one is the outermost wrapper of the call.
Copies made inside the block (``nnx.split`` / ``nnx.merge`` of an intercepted model, e.g. by an
NNX transform) are new instances and are not intercepted.

Usage::

    def record(module, args, out): ...
    with intercept_calls(model, record, (nnx.Linear,)):
        model(x)                       # record(linear, (input,), output) for every Linear of model
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flax import nnx

__all__ = ["intercept_calls"]

Record = Callable[[nnx.Module, tuple, Any], None]
Before = Callable[[nnx.Module, tuple], tuple]
After = Callable[[nnx.Module, tuple, Any], Any]


class _Hook:
    """One :func:`intercept_calls` block: its callbacks and the instances currently inside a call."""

    def __init__(self, record: Record, before: Before | None, after: After | None):
        self.record, self.before, self.after = record, before, after
        self.active: set[int] = set()

    def __call__(self, module: nnx.Module, call: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if id(module) in self.active:  # a module calling itself: only its outermost call is seen
            return call(*args, **kwargs)
        self.active.add(id(module))
        try:
            if self.before is not None:
                args = tuple(self.before(module, args))
            out = call(*args, **kwargs)
            if self.after is not None:
                out = self.after(module, args, out)
        finally:
            self.active.discard(id(module))
        self.record(module, args, out)
        return out


_lock = threading.Lock()
# id(instance) -> its active hooks, first entered first; tuples replaced (never mutated) under _lock, so a
# call in another thread iterates a consistent one
_hooks: dict[int, tuple[_Hook, ...]] = {}
_restore: dict[int, type | None] = {}  # id(instance) -> its class before interception (None: left as is)
_scoped: dict[type, type] = {}  # class -> its intercepting subclass


def _scoped_class(cls: type) -> type:
    """The intercepting subclass of ``cls`` (created once per class): its ``__call__`` runs the hooks
    registered for the instance, innermost first, around ``cls.__call__``."""
    if getattr(cls, "__intercepted_base__", None) is not None:
        return cls
    if cls not in _scoped:
        def __call__(self, *args, **kwargs):
            def call(*a, **kw):
                return cls.__call__(self, *a, **kw)

            for hook in _hooks.get(id(self), ()):
                call = _bind(hook, self, call)
            return call(*args, **kwargs)

        _scoped[cls] = type(cls.__name__, (cls,), {
            "__call__": __call__, "__intercepted_base__": cls, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})
    return _scoped[cls]


def _bind(hook: _Hook, module: nnx.Module, call: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *args, **kwargs: hook(module, call, args, kwargs)


def _attach(node: nnx.Module, hook: _Hook) -> None:
    key = id(node)
    if key not in _hooks:
        cls = type(node)
        scoped = _scoped_class(cls)
        _restore[key] = None if scoped is cls else cls
        # object.__setattr__: the class swap is not an NNX attribute (not recorded in the graph)
        object.__setattr__(node, "__class__", scoped)
        _hooks[key] = ()
    _hooks[key] += (hook,)


def _detach(node: nnx.Module, hook: _Hook) -> None:
    key = id(node)
    hooks = tuple(h for h in _hooks.get(key, ()) if h is not hook)
    if hooks:
        _hooks[key] = hooks
    else:
        _hooks.pop(key, None)
        original = _restore.pop(key, None)
        if original is not None:
            object.__setattr__(node, "__class__", original)


@contextlib.contextmanager
def intercept_calls(model: nnx.Module, record: Record, bases: tuple[type, ...], *,
                    before: Before | None = None, after: After | None = None) -> Iterator[None]:
    """Within the ``with`` block, call ``record(module, args, output)`` after every ``__call__`` of a
    module of ``model`` (found by ``nnx.iter_graph``, ``model`` itself included) that is an instance
    of ``bases`` (outermost call per module only). Other instances of the same classes are not seen.

    Optional hooks change the intercepted call: ``before(module, args) -> args`` replaces its
    positional arguments and ``after(module, args, output) -> output`` its result (e.g. adding zero
    "probes" whose gradient is ``∂L/∂x`` at a layer's input or ``∂L/∂s`` at its output);
    ``record`` sees the replaced values.

    No class is modified and nothing in the model's state or graph changes; each intercepted
    instance carries an intercepting subclass of its class for the block only (see the module
    docstring). Traceable: the hooks run wherever the call runs (``jit``, ``grad``, ``eval_shape``).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected an nnx.Module, got {type(model)!r}")
    if not isinstance(bases, tuple) or not all(isinstance(b, type) for b in bases):
        raise TypeError(f"bases: expected a tuple of classes, got {bases!r}")
    for name, fn in (("record", record), ("before", before), ("after", after)):
        if not callable(fn) and (fn is not None or name == "record"):
            raise TypeError(f"{name}: expected a callable, got {type(fn)!r}")
    hook = _Hook(record, before, after)
    nodes = list({id(n): n for _, n in nnx.iter_graph(model) if isinstance(n, nnx.Module) and isinstance(n, bases)
                  }.values())
    attached: list[nnx.Module] = []
    try:
        with _lock:
            for node in nodes:
                _attach(node, hook)
                attached.append(node)
        yield
    finally:
        with _lock:
            for node in attached:
                _detach(node, hook)
