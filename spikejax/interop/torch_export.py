"""PyTorch-style state dicts of spikejax (Flax NNX) models: export, import, exact round trip.

Names and layouts are PyTorch's, so the export loads with ``load_state_dict(strict=True)`` into the
mirror modules of :mod:`spikejax.interop.torch_modules`: module paths become dotted names
(``blocks.0.attn.q_proj``) and each NNX variable is renamed / transposed by its module's type, by the
one key map of :mod:`spikejax.interop.state_dict` (:func:`torch_key_map`: ``nnx.Linear``
``kernel[in, out]`` -> ``weight[out, in]``, ``nnx.Conv`` kernels -> OIHW, ``nnx.Embed`` ``embedding``
-> ``weight``, norms ``scale`` -> ``weight``, BatchNorm statistics -> ``running_mean`` /
``running_var``; any other ``nnx.Param`` keeps its name, e.g. PLIF ``decay_logit[C]``,
``threshold[C]``, ``amplitude[C]``, ``surrogate_alpha[C]``, ``pos_embed[N, D]``).

``num_batches_tracked`` (int64 scalar, which PyTorch's BatchNorm expects in a strict load) has no
``nnx.BatchNorm`` counterpart: it is exported as 0 and, on import, optional and ignored. Only
``nnx.Param`` and ``nnx.BatchStat`` variables are exported (not streaming neuron state).

Files (:func:`export_torch`): ``<stem>.safetensors`` (numpy API, no torch needed; the metadata
holds the config JSON), ``<stem>.pt`` (``torch.save`` of the state dict, when torch is installed)
and ``<stem>.json`` (``{"format", "version", "model", "config", "keys"}``). The config leaves out
the kernel ``backend``: that is a run-time choice (:func:`import_torch`'s ``backend``), so an
export of a model trained with ``pallas`` on a GPU loads on a CPU.

Every value loaded must be a floating-point array (``num_batches_tracked`` excepted); an integer,
boolean or complex one is a ``TypeError`` naming its key, never a silent cast. Every error of
:func:`read_state_dict`, :func:`read_config` and :func:`import_torch` names the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from spikejax.interop.state_dict import (
    StateDictError,
    as_numpy,
    load_entries,
    state_dict_arrays,
    torch_key_map,
)

__all__ = [
    "FORMAT",
    "WEIGHT_FORMATS",
    "StateDictError",
    "torch_key_map",
    "to_torch_state_dict",
    "export_torch",
    "load_torch_state_dict",
    "read_state_dict",
    "read_config",
    "import_torch",
    "export_paths",
]

FORMAT = "spikejax-torch"
VERSION = 1
WEIGHT_FORMATS = ("safetensors", "pt")
"""The weight files :func:`export_torch` writes (``formats``)."""


def to_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters and batch statistics as a PyTorch-named, PyTorch-layout dict of numpy arrays."""
    return state_dict_arrays(torch_key_map(model))


def _model_meta(model: nnx.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": type(model).__name__}
    if config is not None and hasattr(config, "to_dict"):
        meta["config"] = {k: v for k, v in config.to_dict().items() if k != "backend"}  # a run-time choice
    else:
        meta["config"] = None
    return meta


def export_paths(path: str | Path) -> dict[str, Path]:
    """``<stem>.safetensors``, ``<stem>.pt``, ``<stem>.json`` for a path with or without one of those suffixes."""
    path = Path(path)
    if path.suffix in (".safetensors", ".pt", ".json"):
        path = path.with_suffix("")
    return {ext: path.with_name(path.name + "." + ext) for ext in ("safetensors", "pt", "json")}


def _weight_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``formats`` as a tuple of names: one name (``"pt"``), a comma-separated string
    (``"safetensors,pt"``) or a sequence of names; ``ValueError`` for an unknown or empty one."""
    if isinstance(formats, str):
        names = tuple(f.strip() for f in formats.split(",") if f.strip())
    elif isinstance(formats, Sequence) and all(isinstance(f, str) for f in formats):
        names = tuple(formats)
    else:
        raise TypeError(f"formats: expected a str or a sequence of str, got {formats!r}")
    unknown = sorted(set(names) - set(WEIGHT_FORMATS))
    if unknown or not names:
        raise ValueError(f"formats: unknown formats {unknown or formats!r}; expected 'safetensors' and/or 'pt'")
    return names


def export_torch(model: nnx.Module, path: str | Path, *, formats: str | Sequence[str] = WEIGHT_FORMATS
                 ) -> dict[str, Path]:
    """Write ``model``'s PyTorch-style state dict and config next to ``path``.

    Args:
      model: an NNX module (a :class:`spikejax.nn.SpikingLM` / :class:`~spikejax.nn.Spikformer`
        carries its config; any other module exports its weights with ``config: null``).
      path: ``<stem>`` or ``<stem>.safetensors`` / ``.pt`` / ``.json``; the parent folder is created.
      formats: any of ``"safetensors"`` (always possible) and ``"pt"`` (skipped when torch is not
        installed): one name, a comma-separated string or a sequence of names.

    Returns:
      ``{"safetensors": Path, "pt": Path, "json": Path}`` for the files written.
    """
    from safetensors.numpy import save_file

    formats = _weight_formats(formats)
    paths = export_paths(path)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    state = to_torch_state_dict(model)
    meta = _model_meta(model)
    meta["keys"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in state.items()}
    written: dict[str, Path] = {}
    if "safetensors" in formats:
        save_file(state, str(paths["safetensors"]),
                  metadata={"format": FORMAT, "model": meta["model"], "config": json.dumps(meta["config"])})
        written["safetensors"] = paths["safetensors"]
    if "pt" in formats:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            torch.save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, str(paths["pt"]))
            written["pt"] = paths["pt"]
    paths["json"].write_text(json.dumps(meta, indent=1, sort_keys=True))
    written["json"] = paths["json"]
    return written


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` (numpy, no torch) or ``.pt`` (needs torch) state dict as numpy arrays.

    ``FileNotFoundError`` for a missing file; ``ValueError`` naming the file for one that does not
    parse (empty, truncated, not that format) or a ``.pt`` that is not a mapping of name -> tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    if path.suffix not in (".safetensors", ".pt"):
        raise ValueError(f"path: expected a .safetensors or .pt file, got {str(path)!r}")
    if path.stat().st_size == 0:
        raise ValueError(f"path: {str(path)!r} is empty")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises SafetensorError / OSError on damaged files
            raise ValueError(f"path: {str(path)!r} is not a readable safetensors file ({type(e).__name__}: "
                             f"{e})") from None
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors of a damaged or foreign file
        raise ValueError(f"path: {str(path)!r} is not a readable PyTorch state dict ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"path: {str(path)!r} does not hold a state dict (got {type(obj).__name__})")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"path: {str(path)!r} holds entries that are not named tensors: {', '.join(bad[:5])}"
                         + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return {k: as_numpy(v) for k, v in obj.items()}


def read_config(path: str | Path) -> dict[str, Any]:
    """Read the ``<stem>.json`` written by :func:`export_torch` (``model``, ``config``, ``keys``);
    errors name the file."""
    path = export_paths(path)["json"]
    if not path.exists():
        raise FileNotFoundError(f"path: no config file {str(path)!r} next to the weights")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"path: {str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"path: {str(path)!r} is not a {FORMAT} export (format={got!r})")
    return meta


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> nnx.Module:
    """Load a PyTorch-style state dict into ``model`` in place (and return it); the inverse of
    :func:`to_torch_state_dict`.

    Values may be numpy arrays, torch tensors or anything ``np.asarray`` takes. Every key is checked
    first, and nothing is assigned unless all fit: a :class:`StateDictError` names every missing,
    unexpected (with ``strict``) and mis-shaped key. ``num_batches_tracked`` is optional and
    ignored. Values must be floating point (any width: they are cast to each variable's dtype);
    an integer, boolean or complex value is a ``TypeError`` naming its key.
    """
    return load_entries(model, torch_key_map(model), state_dict, strict=strict)


def import_torch(path: str | Path, *, model: nnx.Module | None = None, seed: int = 0,
                 backend: str = "auto") -> nnx.Module:
    """Load an export (``.safetensors`` preferred, else ``.pt``) back into a spikejax model.

    Args:
      path: the export's ``<stem>`` or one of its files.
      model: load into this module; default: rebuild the model from ``<stem>.json`` (a
        :class:`~spikejax.nn.SpikingLM` or :class:`~spikejax.nn.Spikformer`).
      seed: initializer seed of the rebuilt model (all its weights are then overwritten).
      backend: kernel backend of the rebuilt model's neurons (``"auto"``: the fastest that runs
        here); unused with ``model``.

    Every error names the file it is about (missing, unreadable, a state dict that does not fit).
    """
    from spikejax.backends import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown backend {backend!r}; expected one of {BACKENDS}")
    paths = export_paths(path)
    if Path(path).suffix in (".safetensors", ".pt"):
        weights = Path(path)
    else:
        weights = paths["safetensors"] if paths["safetensors"].exists() else paths["pt"]
    state = read_state_dict(weights)
    if model is None:
        meta = read_config(paths["json"])
        try:
            model = _build(meta, seed, backend)
        except (TypeError, ValueError) as e:
            raise ValueError(f"path: {str(paths['json'])!r}: {e}") from None
    try:
        return load_torch_state_dict(model, state)
    except StateDictError as e:
        raise StateDictError(f"path: {str(weights)!r}: {e}") from None
    except TypeError as e:
        raise TypeError(f"path: {str(weights)!r}: {e}") from None


def _build(meta: dict[str, Any], seed: int, backend: str) -> nnx.Module:
    from spikejax import nn as snn

    configs = {"SpikingLM": snn.SpikingLMConfig, "Spikformer": snn.SpikformerConfig}
    name = meta.get("model")
    if name not in configs or not isinstance(meta.get("config"), dict):
        raise ValueError(f"model: the export holds a {name!r} without a buildable config; pass model= to load it "
                         f"into (buildable: {sorted(configs)})")
    return configs[name].from_dict({**meta["config"], "backend": backend}).build(seed=seed)
