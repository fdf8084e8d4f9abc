"""The one walk from an NNX module to PyTorch state-dict keys, and the loader and writer over it.

Both PyTorch targets use it: :mod:`spikejax.interop.torch_export` (spikejax's own models and their
mirrors in :mod:`spikejax.interop.torch_modules`) and :mod:`spikejax.interop.spikingjelly` (zoo
models whose module tree mirrors SpikingJelly's). :func:`torch_key_map` maps every ``nnx.Param`` and
``nnx.BatchStat`` to a :class:`KeyEntry`; :func:`state_dict_arrays` and :func:`load_entries` write
and read a state dict through such a map (a model with its own key names passes its own map).

Key names: dotted module paths (``blocks.0.attn.q_proj``); the one-layer wrappers of
:mod:`spikejax.nn.temporal` (``Conv2d.conv``, ``Conv1d.conv``, ``Linear.linear``) add no name.
Variables are renamed by their module's type (:data:`TORCH_NAMES`):

==================================  ==========================================  ====================================
module                              NNX variable ``[shape]``                    PyTorch key ``[shape]``
==================================  ==========================================  ====================================
``nnx.Linear``                      ``kernel[in, out]``, ``bias[out]``          ``weight[out, in]``, ``bias[out]``
``nnx.Conv``                        ``kernel[kh, kw, in, out]`` / ``[k, in,     ``weight[out, in, kh, kw]`` / ``[out,
                                    out]``, ``bias``                            in, k]``, ``bias``
``nnx.Embed``                       ``embedding[V, D]``                         ``weight[V, D]``
``nnx.LayerNorm`` / ``RMSNorm``     ``scale``, ``bias``                         ``weight``, ``bias``
``nnx.BatchNorm``, the temporal     ``scale``, ``bias``, ``mean``, ``var``,     ``weight``, ``bias``, ``running_mean``,
``BatchNorm`` / ``BNTT``            (``num_batches_tracked``)                   ``running_var``, ``num_batches_tracked``
any other module                    ``name``                                    ``name``
==================================  ==========================================  ====================================

``num_batches_tracked`` (an int64 scalar PyTorch's BatchNorm expects in a strict load) is a
``"counter"`` entry: a plain ``nnx.BatchNorm`` has none (exported as 0), the temporal BatchNorms
carry one; on load it is optional.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = [
    "KeyEntry",
    "LAYOUTS",
    "StateDictError",
    "TORCH_NAMES",
    "as_numpy",
    "from_torch_layout",
    "host_array",
    "load_entries",
    "state_dict_arrays",
    "to_torch_layout",
    "torch_key_map",
]

LAYOUTS = ("identity", "linear", "conv", "counter")
"""How a variable's array is laid out in PyTorch: as is, transposed (``Linear``), channels first
(``Conv``: ``[..., I, O] -> [O, I, ...]``), or an integer counter (``num_batches_tracked``)."""
COUNTER = "num_batches_tracked"


class StateDictError(ValueError):
    """A state dict does not fit the model: lists the missing, unexpected and mis-shaped keys."""


@dataclasses.dataclass(frozen=True)
class KeyEntry:
    """One PyTorch key: the NNX ``variable`` (None for a counter the module does not carry), its
    ``layout`` (one of :data:`LAYOUTS`) and its dotted NNX path."""

    variable: nnx.Variable | None
    layout: str
    nnx_path: str

    def torch_shape(self) -> tuple[int, ...]:
        """The shape of the PyTorch tensor."""
        if self.variable is None:
            return ()
        shape = tuple(self.variable.get_value().shape)
        if self.layout == "linear":
            return shape[::-1]
        if self.layout == "conv":
            return (shape[-1], shape[-2], *shape[:-2])
        return shape


def _bn_names() -> dict[str, tuple[str, str]]:
    return {"scale": ("weight", "identity"), "bias": ("bias", "identity"),
            "mean": ("running_mean", "identity"), "var": ("running_var", "identity"),
            COUNTER: (COUNTER, "counter")}


def _torch_names() -> dict[type, dict[str, tuple[str, str]]]:
    from spikejax.nn import temporal

    return {
        nnx.Linear: {"kernel": ("weight", "linear"), "bias": ("bias", "identity")},
        nnx.Conv: {"kernel": ("weight", "conv"), "bias": ("bias", "identity")},
        nnx.Embed: {"embedding": ("weight", "identity")},
        nnx.LayerNorm: {"scale": ("weight", "identity"), "bias": ("bias", "identity")},
        nnx.RMSNorm: {"scale": ("weight", "identity")},
        nnx.BatchNorm: _bn_names(),
        temporal.BatchNorm: _bn_names(),
        temporal.BNTT: _bn_names(),
    }


def _wrappers() -> dict[type, str]:
    from spikejax.nn import temporal

    return {temporal.Conv2d: "conv", temporal.Conv1d: "conv", temporal.Linear: "linear"}


TORCH_NAMES: dict[type, dict[str, tuple[str, str]]] = _torch_names()
"""Module type -> {NNX variable name: (PyTorch name, layout)} (the table of the module docstring)."""
_WRAPPERS = _wrappers()


def _names_of(module: Any) -> dict[str, tuple[str, str]] | None:
    for cls, table in TORCH_NAMES.items():
        if isinstance(module, cls):
            return table
    return None


def torch_key_map(model: nnx.Module) -> dict[str, KeyEntry]:
    """PyTorch key -> :class:`KeyEntry` for every ``nnx.Param`` / ``nnx.BatchStat`` of ``model``, in
    the order of ``nnx.iter_graph`` (see the module docstring for the names and layouts)."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected a flax.nnx.Module, got {type(model)!r}")
    nodes = list(nnx.iter_graph(model))
    modules = {path: node for path, node in nodes if isinstance(node, nnx.Module)}
    out: dict[str, KeyEntry] = {}
    for path, variable in nodes:
        if not isinstance(variable, (nnx.Param, nnx.BatchStat)):
            continue
        *prefix, name = (str(p) for p in path)
        nnx_path = ".".join(str(p) for p in path)
        parent = modules.get(tuple(path[:-1]))
        grand = modules.get(tuple(path[:-2])) if len(path) >= 2 else None
        if grand is not None and prefix and _WRAPPERS.get(type(grand)) == prefix[-1]:
            prefix = prefix[:-1]
        table = _names_of(parent)
        if table is None:
            tname, layout = name, "identity"
        elif name in table:
            tname, layout = table[name]
        else:
            raise ValueError(f"model: variable {nnx_path!r} of {type(parent).__name__} has no PyTorch name")
        key = ".".join([*prefix, tname])
        if key in out:
            raise ValueError(f"model: two variables map to the PyTorch key {key!r}")
        out[key] = KeyEntry(variable, layout, nnx_path)
        if isinstance(parent, nnx.BatchNorm) and name == "var":  # no NNX counter: exported as 0
            out[".".join([*prefix, COUNTER])] = KeyEntry(None, "counter", nnx_path)
    return out


def to_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    """An NNX array in the PyTorch layout ``layout`` (contiguous)."""
    if layout == "linear":
        return np.ascontiguousarray(value.T)
    if layout == "conv":
        nd = value.ndim
        return np.ascontiguousarray(np.transpose(value, (nd - 1, nd - 2, *range(nd - 2))))
    return np.ascontiguousarray(value)


def from_torch_layout(value: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of :func:`to_torch_layout`."""
    if layout == "linear":
        return np.ascontiguousarray(value.T)
    if layout == "conv":
        nd = value.ndim
        return np.ascontiguousarray(np.transpose(value, (*range(2, nd), 1, 0)))
    return value


def host_array(value: Any) -> np.ndarray:
    """A JAX array as numpy on the host; bfloat16 / float8 widened exactly to float32 (safetensors'
    numpy API has no bfloat16)."""
    arr = np.asarray(jax.device_get(value))
    if arr.dtype.kind == "V" or str(arr.dtype) in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        arr = arr.astype(np.float32)
    return arr


def as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (bfloat16 widened to float32), numpy array or array-like as numpy."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def state_dict_arrays(entries: Mapping[str, KeyEntry]) -> dict[str, np.ndarray]:
    """The state dict of a key map as numpy arrays in PyTorch layout (counters int64, 0 without a
    variable)."""
    out: dict[str, np.ndarray] = {}
    for key, entry in entries.items():
        if entry.variable is None:
            out[key] = np.zeros((), np.int64)
            continue
        value = to_torch_layout(host_array(entry.variable.get_value()), entry.layout).reshape(entry.torch_shape())
        out[key] = value.astype(np.int64) if value.dtype.kind in "iu" else value
    return out


def load_entries(model: nnx.Module, entries: Mapping[str, KeyEntry], state_dict: Mapping[str, Any], *,
                 strict: bool = True) -> nnx.Module:
    """Load ``state_dict`` into the variables of ``entries`` (a key map of ``model``) and return ``model``.

    Every key is checked first and nothing is assigned unless all fit: a :class:`StateDictError`
    names every missing, unexpected (with ``strict``) and mis-shaped key. Counters are optional.
    Values must be floating point (any width: they are cast to each variable's dtype; counters may be
    integers); an integer, boolean or complex value is a ``TypeError`` naming its key.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of name -> array, got {type(state_dict)!r}")
    values = {k: as_numpy(state_dict[k]) for k in entries if k in state_dict}
    not_float = [f"{k} ({v.dtype})" for k, v in values.items()
                 if entries[k].layout != "counter" and not jax.numpy.issubdtype(v.dtype, jax.numpy.floating)]
    if not_float:
        raise TypeError(f"state_dict: expected floating-point values, got {', '.join(not_float)} "
                        f"(nothing was loaded into {type(model).__name__})")
    missing = [k for k, e in entries.items() if k not in state_dict and e.layout != "counter"]
    unexpected = [k for k in state_dict if k not in entries]
    mis_shaped: list[str] = []
    updates: list[tuple[nnx.Variable, np.ndarray]] = []
    for key, value in values.items():
        entry = entries[key]
        want = entry.torch_shape()
        if tuple(value.shape) != want:
            mis_shaped.append(f"{key}: expected shape {want}, got {tuple(value.shape)}")
        elif entry.variable is not None:
            old = entry.variable.get_value()
            updates.append((entry.variable, from_torch_layout(value, entry.layout).astype(old.dtype)))
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
