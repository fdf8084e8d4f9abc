"""Shared pytest hooks: ``@pytest.mark.gpu`` tests are skipped unless JAX's default backend is a GPU."""

import pytest


def pytest_collection_modifyitems(config, items):
    import jax

    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason=f"needs a GPU; jax.default_backend() is {jax.default_backend()!r}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
