"""The model zoo registry: ``register(name)``, :func:`list_models`, :func:`create`.

A registered builder is a function ``builder(*, rngs: nnx.Rngs, **kwargs) -> nnx.Module`` whose
keyword arguments follow the SpikingJelly 2.0 builder of the same name (``T``, ``num_classes``,
``in_channels``, ...) plus spikejax's own (e.g. ``backend``)::

    @register("spikformer_cifar10")
    def spikformer_cifar10(*, T: int = 4, num_classes: int = 10, rngs: nnx.Rngs, **kwargs):
        ...

    model = create("spikformer_cifar10", num_classes=100, seed=0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from flax import nnx

__all__ = ["register", "list_models", "create", "get_builder", "min_image_size"]

Builder = Callable[..., nnx.Module]

_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding ``builder`` to the zoo under ``name`` (each name once)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty string, got {name!r}")

    def add(builder: Builder) -> Builder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"name: a model named {name!r} is already registered")
        if "rngs" not in inspect.signature(builder).parameters:
            raise TypeError(f"builder: {builder.__qualname__} must take a keyword argument 'rngs'")
        _BUILDERS[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    """The registered model names, sorted."""
    _load_zoo()
    return sorted(_BUILDERS)


def get_builder(name: str) -> Builder:
    """The builder registered as ``name`` (a clear ``ValueError`` listing the names if unknown)."""
    _load_zoo()
    if name not in _BUILDERS:
        raise ValueError(f"name: unknown model {name!r}; expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[name]


def create(name: str, *, rngs: nnx.Rngs | None = None, seed: int = 0, **overrides) -> nnx.Module:
    """Build the zoo model ``name`` with its builder's defaults changed by ``overrides``.

    Args:
      name: one of :func:`list_models` (SpikingJelly's builder names, e.g. ``"sew_resnet18"``).
      rngs: initializer ``nnx.Rngs``; default ``nnx.Rngs(seed)``.
      seed: used when ``rngs`` is None.
      **overrides: the builder's keyword arguments (e.g. ``num_classes=10``, ``cnf="IAND"``).

    Returns:
      the NNX model (in training mode; call ``model.eval()`` for inference).
    """
    builder = get_builder(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = sorted(k for k, p in params.items() if k != "rngs" and p.kind is not inspect.Parameter.VAR_POSITIONAL)
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise TypeError(f"{name}: unknown keyword arguments {unknown}; expected a subset of {allowed}")
    if rngs is None:
        rngs = nnx.Rngs(seed)
    return builder(rngs=rngs, **overrides)


def min_image_size(name: str, **overrides) -> int:
    """The smallest image side ``create(name, **overrides)`` takes (its config's ``min_image_size``,
    e.g. 32 for the standard VGGs' five 2x2 max-pools; 1 for models without one), read from an
    abstract build (``nnx.eval_shape``: nothing is allocated), so callers can refuse small data early."""
    model = nnx.eval_shape(lambda: create(name, **overrides))
    return int(getattr(getattr(model, "config", None), "min_image_size", 1))


def _load_zoo() -> None:
    """Import the model modules (their ``@register`` calls fill the registry)."""
    import spikejax.models  # noqa: F401  (imports every family module)
