"""Shared pytest hooks: ``@pytest.mark.gpu`` tests are skipped unless JAX's default backend is a GPU;
``@pytest.mark.triton`` tests also need the triton and jax_triton packages."""

import importlib

import pytest


def _triton_missing() -> str | None:
    for mod in ("triton", "jax_triton"):
        try:
            importlib.import_module(mod)
        except ImportError as err:
            return f"backend='triton' needs {mod!r} (pip install 'spikejax[gpu]'): {err}"
    return None


def pytest_collection_modifyitems(config, items):
    import jax

    if jax.default_backend() != "gpu":
        skip = pytest.mark.skip(reason=f"needs a GPU; jax.default_backend() is {jax.default_backend()!r}")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
        return
    if any("triton" in item.keywords for item in items) and (reason := _triton_missing()):
        for item in items:
            if "triton" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
