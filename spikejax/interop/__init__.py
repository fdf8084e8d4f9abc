"""PyTorch and NIR interop.

- :func:`export_torch` / :func:`import_torch` / :func:`load_torch_state_dict` /
  :func:`to_torch_state_dict` (:mod:`spikejax.interop.torch_export`): PyTorch-named, PyTorch-layout
  state dicts as ``.safetensors`` (no torch needed) and ``.pt``, plus the config as JSON; exact
  round trip.
- :mod:`spikejax.interop.torch_modules` (needs torch): plain PyTorch mirrors of the layers and models
  that load those state dicts with ``strict=True`` and compute the same outputs and gradients.
- :mod:`spikejax.interop.nir` (needs ``nir``): NIR export / import of feed-forward Linear/Conv +
  LIF/IF/LI networks.
- :func:`load_spikingjelly` / :func:`export_spikingjelly` (:mod:`spikejax.interop.spikingjelly`):
  SpikingJelly 2.0 model-zoo checkpoints into spikejax zoo models and back (strict key checks).
"""

from spikejax.interop.spikingjelly import (
    export_spikingjelly,
    load_spikingjelly,
    load_spikingjelly_state_dict,
    read_spikingjelly,
    to_spikingjelly_state_dict,
)
from spikejax.interop.torch_export import (
    StateDictError,
    export_torch,
    import_torch,
    load_torch_state_dict,
    read_config,
    read_state_dict,
    to_torch_state_dict,
    torch_key_map,
)

__all__ = [
    "StateDictError",
    "export_spikingjelly",
    "export_torch",
    "import_torch",
    "load_spikingjelly",
    "load_spikingjelly_state_dict",
    "load_torch_state_dict",
    "read_config",
    "read_spikingjelly",
    "read_state_dict",
    "to_spikingjelly_state_dict",
    "to_torch_state_dict",
    "torch_key_map",
]
