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
and ``<stem>.json`` (``{"format", "version", "model", "config", "keys"}``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = [
    "FORMAT",
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
        meta["config"] = config.to_dict()
    else:
        meta["config"] = None
    return meta


def _paths(path: str | Path) -> dict[str, Path]:
    """``<stem>.safetensors``, ``<stem>.pt``, ``<stem>.json`` for a path with or without one of those suffixes."""
    path = Path(path)
    if path.suffix in (".safetensors", ".pt", ".json"):
        path = path.with_suffix("")
    return {ext: path.with_name(path.name + "." + ext) for ext in ("safetensors", "pt", "json")}


def export_torch(model: nnx.Module, path: str | Path, *, formats: tuple[str, ...] = ("safetensors", "pt")
                 ) -> dict[str, Path]:
    """Write ``model``'s PyTorch-style state dict and config next to ``path``.

    Args:
      model: an NNX module (a :class:`spikejax.nn.SpikingLM` / :class:`~spikejax.nn.Spikformer`
        carries its config; any other module exports its weights with ``config: null``).
      path: ``<stem>`` or ``<stem>.safetensors`` / ``.pt`` / ``.json``; the parent folder is created.
      formats: any of ``"safetensors"`` (always possible) and ``"pt"`` (skipped when torch is not
        installed).

    Returns:
      ``{"safetensors": Path, "pt": Path, "json": Path}`` for the files written.
    """
    from safetensors.numpy import save_file

    unknown = sorted(set(formats) - {"safetensors", "pt"})
    if unknown:
        raise ValueError(f"formats: unknown formats {unknown}; expected 'safetensors' and/or 'pt'")
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
    """Read a ``.safetensors`` (numpy, no torch) or ``.pt`` (needs torch) state dict as numpy arrays."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if path.suffix == ".pt":
        import torch

        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(obj, Mapping):
            raise ValueError(f"path: {str(path)!r} does not hold a state dict (got {type(obj).__name__})")
        return {k: v.detach().cpu().numpy() for k, v in obj.items()}
    raise ValueError(f"path: expected a .safetensors or .pt file, got {str(path)!r}")


def read_config(path: str | Path) -> dict[str, Any]:
    """Read the ``<stem>.json`` written by :func:`export_torch` (``model``, ``config``, ``keys``)."""
    path = _paths(path)["json"]
    if not path.exists():
        raise FileNotFoundError(f"path: no config file {str(path)!r} next to the weights")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"path: {str(path)!r} is not a {FORMAT} export (format={meta.get('format')!r})")
    return meta


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> nnx.Module:
    """Load a PyTorch-style state dict into ``model`` in place (and return it); the inverse of
    :func:`to_torch_state_dict`.

    Values may be numpy arrays, torch tensors or anything ``np.asarray`` takes. Every key is checked
    first, and nothing is assigned unless all fit: a :class:`StateDictError` names every missing,
    unexpected (with ``strict``) and mis-shaped key. ``num_batches_tracked`` is optional and
    ignored. Values are cast to each variable's dtype.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of name -> array, got {type(state_dict)!r}")
    entries = torch_key_map(model)
    missing = [k for k, e in entries.items() if k not in state_dict and e.layout != "counter"]
    unexpected = [k for k in state_dict if k not in entries]
    mis_shaped: list[str] = []
    updates: list[tuple[nnx.Variable, Any]] = []
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


def import_torch(path: str | Path, *, model: nnx.Module | None = None, seed: int = 0) -> nnx.Module:
    """Load an export (``.safetensors`` preferred, else ``.pt``) back into a spikejax model.

    Args:
      path: the export's ``<stem>`` or one of its files.
      model: load into this module; default: rebuild the model from ``<stem>.json`` (a
        :class:`~spikejax.nn.SpikingLM` or :class:`~spikejax.nn.Spikformer`).
      seed: initializer seed of the rebuilt model (all its weights are then overwritten).
    """
    paths = _paths(path)
    if Path(path).suffix in (".safetensors", ".pt"):
        weights = Path(path)
    else:
        weights = paths["safetensors"] if paths["safetensors"].exists() else paths["pt"]
    state = read_state_dict(weights)
    if model is None:
        meta = read_config(paths["json"])
        model = _build(meta, seed)
    return load_torch_state_dict(model, state)


def _build(meta: dict[str, Any], seed: int) -> nnx.Module:
    from spikejax import nn as snn

    configs = {"SpikingLM": snn.SpikingLMConfig, "Spikformer": snn.SpikformerConfig}
    name = meta.get("model")
    if name not in configs or meta.get("config") is None:
        raise ValueError(f"model: the export holds a {name!r} without a buildable config; pass model= to load it "
                         f"into (buildable: {sorted(configs)})")
    return configs[name].from_dict(meta["config"]).build(seed=seed)
