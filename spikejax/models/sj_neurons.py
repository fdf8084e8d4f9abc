"""SpikingJelly-style neuron arguments for the zoo builders, mapped onto :mod:`spikejax.nn` layers.

SpikingJelly's builders take ``spiking_neuron`` (a neuron class) and pass the remaining keyword
arguments to it. spikejax's builders take the same arguments by name::

    create("sew_resnet18", cnf="ADD", spiking_neuron="IFNode", v_threshold=1.0, detach_reset=True)

``spiking_neuron``: ``"LIFNode"`` / ``"lif"``, ``"IFNode"`` / ``"if"``, ``"ParametricLIFNode"`` /
``"plif"``. Neuron keyword arguments (SpikingJelly's names): ``tau`` (``init_tau`` for PLIF),
``decay_input``, ``v_threshold``, ``v_reset`` (``0.0``: hard reset to zero; ``None``: soft
reset by subtraction), ``detach_reset``, ``surrogate_function`` (a spikejax surrogate name,
SpikingJelly's class name ``"Sigmoid"`` / ``"ATan"`` / ``"Rect"``, or a
:class:`spikejax.surrogate.Surrogate`), ``surrogate_alpha``; plus ``backend`` (spikejax's kernel).
Defaults are SpikingJelly's (``LIFNode``: τ = 2, decay_input, V_th = 1, v_reset = 0,
``Sigmoid(alpha=4)``, no detach). The equations (SpikingJelly's, in spikejax's form):

- LIF: ``H_t = (1 - 1/τ) V_{t-1} + X_t/τ`` (decay_input) or ``(1 - 1/τ) V_{t-1} + X_t``;
- IF: ``H_t = V_{t-1} + X_t``;  PLIF: LIF with ``1/τ = sigmoid(w)``, ``w`` learnable (scalar);
- ``S_t = Θ(H_t - V_th)``, ``V_t = H_t (1 - S_t)`` (v_reset = 0) or ``H_t - V_th S_t`` (None).

Spike recording: the zoo's convolutional models fire their neurons through :func:`fire`; after
``record_spikes(model)``, ``logits, inter = nnx.capture(model, nnx.Intermediate)(x)`` holds each
neuron layer's ``spikes[T, B, ...]`` at the layer's module path (``inter[path]["spikes"]``), which
mirrors SpikingJelly's module names (``layer1.0.sn1``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

from spikejax import surrogate as _surrogate
from spikejax.nn.neurons import IF, LIF, PLIF

__all__ = ["NeuronSpec", "neuron_spec", "NEURON_ARGS", "fire", "record_spikes", "spikingjelly_keys"]

_KINDS = {"lif": "lif", "lifnode": "lif", "if": "if", "ifnode": "if", "plif": "plif",
          "parametriclifnode": "plif"}
_SJ_SURROGATES = {"sigmoid": "sigmoid", "atan": "atan", "rect": "rectangular"}
NEURON_ARGS = ("tau", "init_tau", "decay_input", "v_threshold", "v_reset", "detach_reset",
               "surrogate_function", "surrogate_alpha", "backend")


@dataclasses.dataclass(frozen=True)
class NeuronSpec:
    """One neuron configuration (validated); :meth:`build` makes a fresh layer of it."""

    kind: str = "lif"
    tau: float = 2.0
    decay_input: bool = True
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = False
    surrogate: str = "sigmoid"
    surrogate_alpha: float | None = None
    backend: str = "xla"

    def __post_init__(self):
        if self.kind not in ("lif", "if", "plif"):
            raise ValueError(f"spiking_neuron: expected LIFNode, IFNode or ParametricLIFNode, got {self.kind!r}")
        if self.kind != "if" and not self.tau > 1.0:
            raise ValueError(f"tau: expected > 1 (SpikingJelly's LIF/PLIF), got {self.tau}")
        if self.v_reset is not None and self.v_reset != 0.0:
            raise ValueError(f"v_reset: spikejax resets to 0.0 (hard) or by subtraction (None), got {self.v_reset}")
        if not self.v_threshold > 0:
            raise ValueError(f"v_threshold: expected > 0, got {self.v_threshold}")

    def build(self) -> nnx.Module:
        """A new :mod:`spikejax.nn` neuron layer with these settings (multi-step over ``[T, ...]``)."""
        common = dict(threshold=self.v_threshold, reset="subtract" if self.v_reset is None else "zero",
                      detach_reset=self.detach_reset, surrogate=self.surrogate,
                      surrogate_alpha=self.surrogate_alpha, backend=self.backend)
        if self.kind == "if":
            return IF(**common)
        if self.kind == "lif":
            return LIF(tau=self.tau, decay_input=self.decay_input, **common)
        return PLIF(init_tau=self.tau, learn_threshold=False, decay_input=self.decay_input, **common)


def _surrogate_args(value: Any, alpha: float | None) -> tuple[str, float | None]:
    if isinstance(value, _surrogate.Surrogate):
        if alpha is not None:
            raise ValueError("surrogate_alpha: give it in the Surrogate object or here, not both")
        return value.shape, float(value.alpha)
    if not isinstance(value, str):
        raise TypeError(f"surrogate_function: expected a surrogate name or a spikejax Surrogate, got {value!r}")
    name = _SJ_SURROGATES.get(value.lower(), value)
    _surrogate.get(name)  # validates the name
    return name, alpha


def neuron_spec(spiking_neuron: str | None, kwargs: dict[str, Any], *,
                defaults: dict[str, Any] | None = None) -> NeuronSpec:
    """The :class:`NeuronSpec` of a builder's ``spiking_neuron`` and neuron ``kwargs``.

    As SpikingJelly: ``defaults`` (the builder's own neuron, e.g. MS-ResNet's LIF) apply only when
    ``spiking_neuron`` is None; otherwise the neuron class's own defaults apply. Unknown keyword
    arguments raise ``TypeError`` naming them.
    """
    unknown = sorted(set(kwargs) - set(NEURON_ARGS))
    if unknown:
        raise TypeError(f"unknown keyword arguments {unknown}; neuron arguments are {list(NEURON_ARGS)}")
    args = dict(defaults or {}) if spiking_neuron is None else {}
    args.update(kwargs)
    kind = "lif" if spiking_neuron is None else spiking_neuron
    if not isinstance(kind, str) or kind.lower() not in _KINDS:
        raise ValueError(f"spiking_neuron: expected one of LIFNode, IFNode, ParametricLIFNode (or lif/if/plif), "
                         f"got {spiking_neuron!r}")
    kind = _KINDS[kind.lower()]
    if "init_tau" in args:
        if "tau" in args:
            raise ValueError("tau, init_tau: give one of them")
        args["tau"] = args.pop("init_tau")
    if "surrogate_function" in args or "surrogate_alpha" in args:
        args["surrogate"], args["surrogate_alpha"] = _surrogate_args(
            args.pop("surrogate_function", "sigmoid"), args.pop("surrogate_alpha", None))
    for name in ("tau", "v_threshold"):
        if name in args:
            args[name] = float(args[name])
    return NeuronSpec(kind=kind, **args)


def fire(owner: nnx.Module, neuron: nnx.Module, x):
    """``neuron(x)``; when ``owner.record_spikes`` is set, also sow the spikes on ``neuron`` as the
    ``nnx.Intermediate`` named ``"spikes"`` (collected by ``nnx.capture``)."""
    spikes = neuron(x)
    if getattr(owner, "record_spikes", False):
        neuron.sow(nnx.Intermediate, "spikes", spikes)
    return spikes


def record_spikes(model: nnx.Module, on: bool = True) -> nnx.Module:
    """Switch spike recording (see :func:`fire`) on or off for every module of ``model``."""
    model.set_attributes(record_spikes=bool(on), raise_if_not_found=False)
    return model


def spikingjelly_keys(model: nnx.Module) -> dict:
    """SpikingJelly key map of a zoo model whose module tree mirrors SpikingJelly's
    (:func:`spikejax.interop.spikingjelly.mirrored_key_map`), with PLIF's ``decay_logit`` under
    SpikingJelly's name ``w`` (``ParametricLIFNode.w``, ``1/τ = sigmoid(w)``)."""
    from spikejax.interop.spikingjelly import mirrored_key_map

    out = {}
    for key, entry in mirrored_key_map(model).items():
        prefix, _, name = key.rpartition(".")
        out[f"{prefix}.w" if name == "decay_logit" else key] = entry
    return out
