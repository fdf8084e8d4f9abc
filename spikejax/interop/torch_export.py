"""PyTorch-style state dicts of spikejax (Flax NNX) models: export, import, exact round trip.

Names and layouts are PyTorch's, so the export loads with ``load_state_dict(strict=True)`` into the
mirror modules of :mod:`spikejax.interop.torch_modules`. Module paths become dotted names
(``blocks.0.attn.q_proj``) and each NNX variable is renamed / transposed by its module's type:

==================  ==========================================  =========================================
NNX module          NNX variable ``[shape]``                    PyTorch key ``[shape]``
==================  ==========================================  =========================================
``nnx.Linear``      ``kernel[in, out]``, ``bias[out]``          ``weight[out, in]``, ``bias[out]``
``nnx.Conv``        ``kernel[kh, kw, in, out]``, ``bias``       ``weight[out, in, kh, kw]`` (OIHW), ``bias``
``nnx.Embed``       ``embedding[V, D]``                         ``weight[V, D]``
``nnx.LayerNorm``   ``scale``, ``bias``                         ``weight``, ``bias``
``nnx.BatchNorm``   ``scale``, ``bias``, ``mean``, ``var``      ``weight``, ``bias``, ``running_mean``,
                                                                ``running_var``, ``num_batches_tracked``
any other module    ``nnx.Param`` ``name``                      ``name`` (e.g. PLIF ``decay_logit[C]``,
                                                                ``threshold[C]``, ``amplitude[C]``,
                                                                ``surrogate_alpha[C]``, ``pos_embed[N, D]``)
==================  ==========================================  =========================================

``num_batches_tracked`` (int64 scalar, which PyTorch's BatchNorm expects in a strict load) has no NNX
counterpart: it is exported as 0 and, on import, optional and ignored. Only ``nnx.Param`` and
``nnx.BatchStat`` variables are exported (not streaming neuron state).

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

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

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
]

FORMAT = "spikejax-torch"
VERSION = 1
WEIGHT_FORMATS = ("safetensors", "pt")
"""The weight files :func:`export_torch` writes (``formats``)."""
_OPTIONAL = "num_batches_tracked"


class StateDictError(ValueError):
    """A state dict does not fit the model: lists the missing, unexpected and mis-shaped keys."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    variable: nnx.Variable | None  # None for num_batches_tracked
    layout: str  # "identity" | "linear" | "conv" | "counter"
    nnx_path: str

    def torch_shape(self) -> tuple[int, ...]:
        if self.variable is None:
            return ()
        shape = tuple(self.variable.get_value().shape)
        if self.layout == "linear":
            return shape[::-1]
        if self.layout == "conv":
            return (shape[-1], shape[-2], *shape[:-2])
        return shape


_RENAMES: dict[type, dict[str, tuple[str, str]]] = {
    nnx.Linear: {"kernel": ("weight", "linear"), "bias": ("bias", "identity")},
    nnx.Conv: {"kernel": ("weight", "conv"), "bias": ("bias", "identity")},
    nnx.Embed: {"embedding": ("weight", "identity")},
    nnx.LayerNorm: {"scale": ("weight", "identity"), "bias": ("bias", "identity")},
    nnx.RMSNorm: {"scale": ("weight", "identity")},
    nnx.BatchNorm: {"scale": ("weight", "identity"), "bias": ("bias", "identity"),
                    "mean": ("running_mean", "identity"), "var": ("running_var", "identity")},
}


def _rename(module: Any) -> dict[str, tuple[str, str]] | None:
    for cls, table in _RENAMES.items():
        if isinstance(module, cls):
            return table
    return None


def torch_key_map(model: nnx.Module) -> dict[str, _Entry]:
    """PyTorch key -> (NNX variable, layout) for every exported variable of ``model``, in model order."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected a flax.nnx.Module, got {type(model)!r}")
    nodes = list(nnx.iter_graph(model))
    modules = {path: node for path, node in nodes if isinstance(node, nnx.Module)}
    out: dict[str, _Entry] = {}
    for path, variable in nodes:
        if not isinstance(variable, (nnx.Param, nnx.BatchStat)):
            continue
        *parent_path, name = path
        parent = modules.get(tuple(parent_path))
        table = _rename(parent) if parent is not None else None
        prefix = ".".join(str(p) for p in parent_path)
        nnx_path = ".".join(str(p) for p in path)
        if table is not None:
            if name not in table:
                raise ValueError(f"model: variable {nnx_path!r} of {type(parent).__name__} has no PyTorch name")
            tname, layout = table[name]
        else:
            tname, layout = str(name), "identity"
        key = f"{prefix}.{tname}" if prefix else tname
        out[key] = _Entry(variable, layout, nnx_path)
        if isinstance(parent, nnx.BatchNorm) and name == "var":
            out[f"{prefix}.{_OPTIONAL}" if prefix else _OPTIONAL] = _Entry(None, "counter", nnx_path)
    return out


def _to_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return np.ascontiguousarray(value.T)
    if layout == "conv":
        nd = value.ndim
        return np.ascontiguousarray(np.transpose(value, (nd - 1, nd - 2, *range(nd - 2))))
    return np.ascontiguousarray(value)


def _from_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear":
        return np.ascontiguousarray(value.T)
    if layout == "conv":
        nd = value.ndim
        return np.ascontiguousarray(np.transpose(value, (*range(2, nd), 1, 0)))
    return value


def _host(value: Any) -> np.ndarray:
    arr = np.asarray(jax.device_get(value))
    if arr.dtype.kind == "V" or str(arr.dtype) in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        arr = arr.astype(np.float32)  # safetensors' numpy API has no bfloat16; exact widening
    return arr


def to_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters and batch statistics as a PyTorch-named, PyTorch-layout dict of numpy arrays."""
    out: dict[str, np.ndarray] = {}
    for key, entry in torch_key_map(model).items():
        if entry.variable is None:
            out[key] = np.zeros((), np.int64)
        else:
            out[key] = _to_torch_layout(_host(entry.variable.get_value()), entry.layout)
    return out


def _model_meta(model: nnx.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": type(model).__name__}
    if config is not None and hasattr(config, "to_dict"):
        meta["config"] = {k: v for k, v in config.to_dict().items() if k != "backend"}  # a run-time choice
    else:
        meta["config"] = None
    return meta


def _paths(path: str | Path) -> dict[str, Path]:
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
    paths = _paths(path)
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
    return {k: _as_numpy(v) for k, v in obj.items()}


def read_config(path: str | Path) -> dict[str, Any]:
    """Read the ``<stem>.json`` written by :func:`export_torch` (``model``, ``config``, ``keys``);
    errors name the file."""
    path = _paths(path)["json"]
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
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of name -> array, got {type(state_dict)!r}")
    entries = torch_key_map(model)
    missing = [k for k, e in entries.items() if k not in state_dict and e.layout != "counter"]
    unexpected = [k for k in state_dict if k not in entries]
    mis_shaped: list[str] = []
    updates: list[tuple[nnx.Variable, Any]] = []
    not_float = []
    for key, entry in entries.items():
        if key in state_dict and entry.variable is not None:
            dtype = _as_numpy(state_dict[key]).dtype
            if not jax.numpy.issubdtype(dtype, jax.numpy.floating):
                not_float.append(f"{key} ({dtype})")
    if not_float:
        raise TypeError(f"state_dict: expected floating-point values, got {', '.join(not_float)} "
                        f"(nothing was loaded into {type(model).__name__})")
    for key, entry in entries.items():
        if key not in state_dict:
            continue
        value = _as_numpy(state_dict[key])
        want = entry.torch_shape()
        if tuple(value.shape) != want:
            mis_shaped.append(f"{key}: expected shape {want}, got {tuple(value.shape)}")
            continue
        if entry.variable is None:
            continue
        old = entry.variable.get_value()
        updates.append((entry.variable, _from_torch_layout(value, entry.layout).astype(old.dtype)))
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected and strict:
        problems.append(f"unexpected keys {unexpected}")
    if mis_shaped:
        problems.append("mis-shaped keys [" + "; ".join(mis_shaped) + "]")
    if problems:
        raise StateDictError(f"state_dict: does not fit {type(model).__name__} (nothing was loaded): "
                             + ", ".join(problems))
    for variable, value in updates:
        variable.set_value(jax.numpy.asarray(value))
    return model


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


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
    paths = _paths(path)
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
