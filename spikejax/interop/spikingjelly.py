"""SpikingJelly 2.0 checkpoints: load them into spikejax zoo models, export spikejax models to them.

    model = load_spikingjelly("spikformer_cifar10", "ckpt.pth", num_classes=10)   # .pth or a state dict
    state = export_spikingjelly(model, "spikejax.pth")   # loads into SpikingJelly's class, strict=True

Key names: a zoo model's NNX module tree mirrors SpikingJelly's module tree, so its PyTorch key map
(:func:`mirrored_key_map`: dotted module paths, ``nnx.Conv`` kernels HWIO / ``[K, I, O]`` <-> OIHW /
``[O, I, K]``, ``nnx.Linear`` ``[in, out]`` <-> ``[out, in]``, BatchNorm
``scale/bias/mean/var/num_batches_tracked`` <-> ``weight/bias/running_mean/running_var/
num_batches_tracked``) *is* SpikingJelly's ``state_dict`` layout. A model family whose tree cannot
mirror SpikingJelly's defines a method ``spikingjelly_keys(self) -> dict[str, entry]``
(SpikingJelly key -> an entry of :func:`mirrored_key_map`) next to the model; this module has no
per-model branches.

``num_batches_tracked`` is optional on load (SpikingJelly's momentum 0.1 never reads it); the
BatchNorms of :mod:`spikejax.nn.temporal` carry it (an int32 ``BatchStat``, exported as int64), a
plain ``nnx.BatchNorm`` exports 0. Neuron
settings (τ, thresholds, resets, detach_reset) are not in a SpikingJelly ``state_dict``; they are the
builder's, so ``load_spikingjelly(name, ...)`` uses the settings of SpikingJelly's builder ``name``.

Files: ``.pth`` / ``.pt`` as written by ``torch.save``, holding a state dict or one wrapped as
``{"model": ...}``, ``{"state_dict": ...}``, ``{"module": ...}`` (the training scripts' and
DeepSpeed's wrappers), with ``module.`` (DDP) or ``_orig_mod.`` (``torch.compile``) key prefixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from spikejax.interop.state_dict import KeyEntry, load_entries, state_dict_arrays, torch_key_map

__all__ = [
    "spikingjelly_key_map",
    "mirrored_key_map",
    "unwrap_state_dict",
    "read_spikingjelly",
    "load_spikingjelly_state_dict",
    "load_spikingjelly",
    "to_spikingjelly_state_dict",
    "export_spikingjelly",
    "import_model_modules",
]

_WRAPPERS = ("model", "state_dict", "module", "model_state_dict", "net")
_PREFIXES = ("module.", "_orig_mod.")


def spikingjelly_key_map(model: nnx.Module) -> dict[str, KeyEntry]:
    """SpikingJelly ``state_dict`` key -> entry (NNX variable + layout) for every key of ``model``.

    The model's own ``spikingjelly_keys()`` if it defines one, else :func:`mirrored_key_map`."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model: expected a flax.nnx.Module, got {type(model)!r}")
    keys = getattr(model, "spikingjelly_keys", None)
    return dict(keys()) if callable(keys) else mirrored_key_map(model)


def mirrored_key_map(model: nnx.Module) -> dict[str, KeyEntry]:
    """The PyTorch key map of a model whose module tree mirrors the PyTorch one:
    :func:`spikejax.interop.state_dict.torch_key_map` (dotted module paths; the one-layer wrappers of
    :mod:`spikejax.nn.temporal` add no name; ``nnx.Conv`` ``kernel`` -> ``weight`` (``[kh, kw, I, O]`` /
    ``[k, I, O]`` <-> OIHW / ``[O, I, k]``), ``nnx.Linear`` ``kernel`` -> ``weight`` (transposed),
    BatchNorm (``nnx.BatchNorm`` and the temporal ones) ``scale/bias/mean/var/num_batches_tracked`` ->
    ``weight/bias/running_mean/running_var/num_batches_tracked``; any other ``nnx.Param`` /
    ``nnx.BatchStat`` keeps its name)."""
    return torch_key_map(model)


def unwrap_state_dict(obj: Any) -> dict[str, Any]:
    """The state dict inside ``obj``: unwraps ``{"model" | "state_dict" | "module" | ...: sd}``
    (repeatedly) and strips the ``module.`` / ``_orig_mod.`` prefixes that all keys share."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"state_dict: expected a mapping of name -> tensor, got {type(obj).__name__}")
    while True:
        inner = [k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)]
        if not inner or all(_is_tensor(v) for v in obj.values()):
            break
        obj = obj[inner[0]]
    sd = dict(obj)
    bad = sorted(str(k) for k, v in sd.items() if not isinstance(k, str) or not _is_tensor(v))
    if bad:
        raise TypeError(f"state_dict: expected name -> tensor entries; not tensors: {bad[:8]}"
                        + (" ..." if len(bad) > 8 else ""))
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def read_spikingjelly(path: str | Path, *, weights_only: bool = True) -> dict[str, Any]:
    """Read a ``.pth`` / ``.pt`` checkpoint (``torch.load`` on the CPU) and unwrap its state dict.

    ``weights_only=False`` is needed for checkpoints that also pickle Python objects (e.g. the
    training script's ``args``); only use it on files you trust."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError variants
        if weights_only:
            raise ValueError(f"path: {str(path)!r} could not be read with weights_only=True ({err}); if it "
                             "is a trusted checkpoint that pickles other objects, pass weights_only=False") from err
        raise
    return unwrap_state_dict(obj)


def load_spikingjelly_state_dict(model: nnx.Module, state_dict: Mapping[str, Any]) -> nnx.Module:
    """Load a SpikingJelly ``state_dict`` into ``model`` in place (and return it).

    Strict: a :class:`~spikejax.interop.StateDictError` names every missing, unexpected and
    mis-shaped key (with the expected shape), and nothing is assigned unless every key fits.
    ``num_batches_tracked`` is optional. Values are cast to the variables' dtypes.
    """
    return load_entries(model, spikingjelly_key_map(model), unwrap_state_dict(state_dict))


def load_spikingjelly(name: str, state_dict_or_path: Mapping[str, Any] | str | Path, *,
                      rngs: nnx.Rngs | None = None, weights_only: bool = True, **overrides) -> nnx.Module:
    """The zoo model ``name`` (:func:`spikejax.models.create` with ``overrides``, e.g.
    ``num_classes=10``) carrying the weights of a SpikingJelly 2.0 checkpoint of that model.

    Args:
      name: a :func:`spikejax.models.list_models` name (SpikingJelly's builder names).
      state_dict_or_path: a state dict (torch tensors or arrays; wrappers and prefixes allowed) or a
        ``.pth`` / ``.pt`` file (see :func:`read_spikingjelly`).
      rngs: initializers, used only for variables the checkpoint does not hold (the model is built
        abstractly, without running initializers, when it holds them all).
      weights_only: passed to ``torch.load`` for a path.
      **overrides: the builder's keyword arguments; they must match the checkpoint's model.

    Returns:
      the model in eval mode (BatchNorm uses the loaded running statistics).
    """
    from spikejax.models import create

    if isinstance(state_dict_or_path, (str, Path)):
        sd = read_spikingjelly(state_dict_or_path, weights_only=weights_only)
    else:
        sd = unwrap_state_dict(state_dict_or_path)
    # built abstractly (no initializer runs) when the state dict fills every variable, as for the zoo
    model = nnx.eval_shape(lambda: create(name, **overrides))
    load_spikingjelly_state_dict(model, sd)
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
        model = load_spikingjelly_state_dict(create(name, rngs=rngs, **overrides), sd)
    model.eval()
    return model


def to_spikingjelly_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """``model``'s SpikingJelly ``state_dict`` as numpy arrays (float32 weights, int64 counters)."""
    return state_dict_arrays(spikingjelly_key_map(model))


def export_spikingjelly(model: nnx.Module, path: str | Path | None = None) -> dict[str, Any]:
    """``model``'s weights as a SpikingJelly ``state_dict`` of torch tensors (that SpikingJelly's
    class of the same model loads with ``strict=True``), saved with ``torch.save`` to ``path``
    (a ``.pth`` file; parent folders are created) when given. Returns the state dict."""
    import torch

    state = {k: torch.from_numpy(np.array(v)) for k, v in to_spikingjelly_state_dict(model).items()}
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, str(path))
    return state


def import_model_modules(*names: str):
    """SpikingJelly 2.0's zoo modules ``spikingjelly.activation_based.model.<name>`` as a namespace
    (``import_model_modules("sew_resnet", "spikformer").sew_resnet``). Its ResNet / VGG files import
    torchvision only for the pretrained-weight download (``load_state_dict_from_url``); where
    torchvision does not import (a build that does not match torch), a stand-in module provides that
    one name while they import, and ``sys.modules`` is restored afterwards."""
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    import torch  # noqa: PLC0415

    try:
        import torchvision.models.utils  # noqa: F401, PLC0415
        stubs = {}
    except Exception:  # noqa: BLE001 - any import failure of torchvision
        utils = types.ModuleType("torchvision.models.utils")
        utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        stubs = {"torchvision": types.ModuleType("torchvision"),
                 "torchvision.models": types.ModuleType("torchvision.models"), "torchvision.models.utils": utils}
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "torchvision" or k.startswith("torchvision.")}
    sys.modules.update(stubs)
    try:
        mods = {n: importlib.import_module(f"spikingjelly.activation_based.model.{n}") for n in names}
    finally:
        for k in stubs:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return types.SimpleNamespace(**mods)
