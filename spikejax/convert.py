"""ANN→SNN conversion of NNX models built from standard layers.

A trained ANN given as an ``nnx.Sequential`` (nested ones allowed) of

- synaptic / affine layers: ``nnx.Linear``, ``nnx.Conv``, ``nnx.BatchNorm`` (eval mode: an affine
  map), ``nnx.Dropout`` (identity at inference), :class:`Flatten`, ``nnx.avg_pool`` (plain or
  ``functools.partial``);
- ``nnx.LayerNorm`` only before the first activation (on the analog input, where it is exact);
- activations ``relu``, ``gelu``, ``silu``/``swish`` (``jax.nn`` / ``nnx`` functions)

becomes a :class:`ConvertedSNN` in which each activation is a spiking layer and every other layer
is applied to each time step. The input is direct-encoded (the analog ``x`` at every step) and the
output is the mean over the ``T`` steps. Two neuron choices (``method``):

- ``"rate"``: an IF neuron (no leak, soft reset) with threshold ``θ = λ``; the layer emits
  ``λ · S_t``, ``S_t ∈ {0, 1}``, whose mean over T approximates ``clip(a, 0, λ)``
  (Rueckauer et al. 2017; Diehl et al. 2015);
- ``"multilevel"`` (sINT): a multi-level IF neuron with ``θ = λ / L`` emitting ``θ · S_t``,
  ``S_t = clip(floor(H_t / θ), 0, L)``: ``L`` levels per step, so few steps suffice (T = 1 is a
  uniform ``L``-level quantization of ``clip(a, 0, λ)``).

``λ`` is calibrated per activation layer from data: the ``percentile`` (default 99.9) of that
activation's ANN outputs on the calibration batch ("robust normalization"). The membrane starts at
``init_membrane · θ`` (default ½θ, which turns truncation into rounding; Bu et al. 2022).
``gelu``/``silu`` are converted like ``relu`` (the spike rate is non-negative); their small negative
lobe (≥ -0.17 / -0.28) is lost. A layer the converter cannot map raises ``ValueError`` naming the
layer (``layers[3]``), its type, and the reason.

Usage::

    ann = nnx.Sequential(nnx.Linear(64, 128, rngs=r), nnx.relu, nnx.Linear(128, 10, rngs=r))
    snn = convert(ann, x_calib, method="multilevel", time_steps=4, levels=4)
    logits = snn(x)                   # x[B, 64] -> [B, 10]; snn(x, per_step=True) -> [T, B, 10]

``python -m spikejax.convert`` trains an MLP on sklearn digits and prints ANN vs SNN accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax.neurons import NeuronState
from spikejax.nn.neurons import IF, MultiLevel

Array = jax.Array

__all__ = ["Flatten", "ConvertedSNN", "convert", "calibrate", "METHODS", "ACTIVATIONS"]

METHODS = ("rate", "multilevel")
ACTIVATIONS: dict[Callable, str] = {jax.nn.relu: "relu", jax.nn.gelu: "gelu", jax.nn.silu: "silu"}
"""Activation functions the converter replaces by spiking layers."""

_REJECTED_ACTIVATIONS = {
    jax.nn.tanh: "its outputs are negative for negative inputs, and spike rates are non-negative",
    jnp.tanh: "its outputs are negative for negative inputs, and spike rates are non-negative",
    jax.nn.sigmoid: "it saturates at 1 and is not zero at 0, so it is not a clipped-linear spike rate",
    jax.nn.softmax: "it normalizes across features, which per-neuron spike rates cannot do",
    jax.nn.elu: "its outputs are negative for negative inputs, and spike rates are non-negative",
    jax.nn.leaky_relu: "its outputs are negative for negative inputs, and spike rates are non-negative",
    nnx.max_pool: "the max over spike trains is not the max of their rates; use nnx.avg_pool",
}


class Flatten(nnx.Module):
    """Flatten every axis after the batch axis: ``x[B, ...] -> [B, prod(...)]`` (ANN), applied per
    time step in the SNN (``[T, B, ...] -> [T, B, prod(...)]``)."""

    def __call__(self, x: Array) -> Array:
        return x.reshape(x.shape[0], -1)


# --- walking the ANN ---------------------------------------------------------------------------------


def _flatten_layers(model: Any, prefix: str = "layers") -> list[tuple[str, Any]]:
    if isinstance(model, nnx.Sequential):
        out = []
        for i, layer in enumerate(model.layers):
            out += _flatten_layers(layer, f"{prefix}[{i}]") if isinstance(layer, nnx.Sequential) else [
                (f"{prefix}[{i}]", layer)]
        return out
    if isinstance(model, (list, tuple)):
        return [item for i, layer in enumerate(model) for item in _flatten_layers(
            nnx.Sequential(layer) if not isinstance(layer, nnx.Sequential) else layer, f"{prefix}[{i}]")]
    raise TypeError(
        f"model: expected an nnx.Sequential (or a list of layers) of standard layers, got {type(model).__name__}; "
        "a custom module's __call__ cannot be split at its activations — express the network as nnx.Sequential"
    )


def _fn_of(layer) -> Callable | None:
    if isinstance(layer, functools.partial):
        return layer.func
    return layer if callable(layer) and not isinstance(layer, nnx.Module) else None


def _describe(layer) -> str:
    if isinstance(layer, nnx.Module):
        return type(layer).__name__
    fn = _fn_of(layer)
    return getattr(fn, "__name__", type(layer).__name__)


def _classify(name: str, layer, seen_activation: bool) -> str:
    """'activation' | 'step' (applied per time step) | 'input' (analog-only, before any activation)."""
    fn = _fn_of(layer)
    if fn is not None:
        if fn in ACTIVATIONS:
            return "activation"
        if fn is nnx.avg_pool:
            return "step"
        why = _REJECTED_ACTIVATIONS.get(fn)
        if why is None:
            why = ("it is not a recognized layer or activation, and the converter must know whether a function "
                   f"is linear; supported activations: {sorted(ACTIVATIONS.values())}")
        raise ValueError(f"model: {name} ({_describe(layer)}) cannot be converted: {why}")
    if isinstance(layer, (nnx.Linear, nnx.Conv, Flatten, nnx.Dropout)):
        return "step"
    if isinstance(layer, nnx.BatchNorm):
        if not layer.use_running_average:
            raise ValueError(f"model: {name} (BatchNorm) is in training mode (batch statistics); call model.eval() "
                             "before converting so it is a fixed affine map")
        return "step"
    if isinstance(layer, nnx.LayerNorm):
        if seen_activation:
            raise ValueError(
                f"model: {name} (LayerNorm) comes after a spiking activation: normalizing each time step's spikes "
                "is not the normalization of their rates (it is not linear), so the SNN would not match the ANN; "
                "only a LayerNorm on the analog input (before the first activation) is supported"
            )
        return "step"
    raise ValueError(
        f"model: {name} ({_describe(layer)}) cannot be converted: not a supported layer; supported: nnx.Linear, "
        "nnx.Conv, nnx.BatchNorm (eval), nnx.LayerNorm (before the first activation), nnx.Dropout, Flatten, "
        f"nnx.avg_pool and the activations {sorted(ACTIVATIONS.values())}"
    )


def _apply_ann(layer, x: Array) -> Array:
    if isinstance(layer, nnx.Dropout):
        return x
    return layer(x)


def _apply_steps(layer, h: Array) -> Array:
    """Apply an ANN layer to every time step of ``h[T, B, ...]``."""
    if isinstance(layer, nnx.Dropout):
        return h
    T, B = h.shape[:2]
    y = _apply_ann(layer, h.reshape(T * B, *h.shape[2:]))
    return y.reshape(T, B, *y.shape[1:])


# --- calibration and the converted model ---------------------------------------------------------------


def calibrate(model: nnx.Sequential | Sequence, x: Array, *, percentile: float = 99.9) -> dict[str, float]:
    """Run the ANN on ``x[B, ...]`` and return ``{activation layer name: λ}``, the ``percentile`` of
    that activation's outputs (λ > 0; a layer that never activates gets λ = 1)."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile: expected a value in (0, 100], got {percentile}")
    layers = _flatten_layers(model)
    lam: dict[str, float] = {}
    h = jnp.asarray(x)
    seen = False
    for name, layer in layers:
        kind = _classify(name, layer, seen)
        h = _apply_ann(layer, h)
        if kind == "activation":
            seen = True
            v = float(np.percentile(np.asarray(h, np.float64), percentile))
            lam[name] = v if v > 0 else 1.0
    if not seen:
        raise ValueError("model: has no relu/gelu/silu activation to replace by spiking neurons")
    return lam


class ConvertedSNN(nnx.Module):
    """The spiking network produced by :func:`convert`.

    ``layers`` holds the ANN's layers (copies) with each activation replaced by a spiking layer
    (:class:`spikejax.nn.IF` or :class:`spikejax.nn.MultiLevel`, threshold θ), and ``scales[i]`` the
    value of one spike of layer ``i`` (θ). Call: ``x[B, ...]`` (analog, direct-encoded over
    ``time_steps``) or ``x[T, B, ...]`` with ``encoded=True`` → mean over T of the last layer's output;
    ``per_step=True`` returns the running mean ``[T, B, ...]`` (the output after 1..T steps).
    """

    def __init__(self, layers: list, names: list[str], scales: list[float | None], *, time_steps: int,
                 init_membrane: float, method: str):
        self.layers = nnx.List(layers)
        self.names = tuple(names)
        self.scales = tuple(scales)
        self.time_steps = int(time_steps)
        self.init_membrane = float(init_membrane)
        self.method = method

    def __call__(self, x: Array, *, per_step: bool = False, encoded: bool = False) -> Array:
        x = jnp.asarray(x)
        if encoded:
            if x.ndim < 2:
                raise ValueError(f"x: expected [T, B, ...] with encoded=True, got shape {tuple(x.shape)}")
            h = x
        else:
            if x.ndim < 1:
                raise ValueError("x: expected [B, ...], got a scalar")
            h = jnp.broadcast_to(x[None], (self.time_steps, *x.shape))
        for layer, scale in zip(self.layers, self.scales, strict=True):
            if scale is None:
                h = _apply_steps(layer, h)
            else:
                v0 = jnp.full(h.shape[1:], self.init_membrane * layer.threshold, jnp.float32)
                h = layer(h, state=NeuronState(v0)) * jnp.asarray(scale, h.dtype)
        if per_step:
            steps = jnp.arange(1, h.shape[0] + 1, dtype=h.dtype).reshape((-1,) + (1,) * (h.ndim - 1))
            return jnp.cumsum(h, axis=0) / steps
        return h.mean(axis=0)

    @property
    def thresholds(self) -> dict[str, float]:
        """``{activation layer name: θ}``."""
        return {n: float(s) for n, s in zip(self.names, self.scales, strict=True) if s is not None}


def convert(model: nnx.Sequential | Sequence, calibration_data: Array, *, method: str = "multilevel",
            time_steps: int = 4, levels: int = 4, percentile: float = 99.9, init_membrane: float = 0.5,
            backend: str = "xla") -> ConvertedSNN:
    """Convert a trained ANN (``nnx.Sequential`` of standard layers) to a :class:`ConvertedSNN`.

    Args:
      model: the ANN (not modified; its layers are copied).
      calibration_data: ``x[B, ...]``, a batch of training inputs for threshold calibration.
      method: ``"multilevel"`` (sINT, θ = λ/L) or ``"rate"`` (binary IF, θ = λ).
      time_steps: T, the SNN's simulation steps.
      levels: L, spikes per step of the multi-level neuron (ignored for ``"rate"``).
      percentile: the activation percentile used as λ (99.9 clips rare outliers; 100 is the max).
      init_membrane: initial membrane as a fraction of θ (0.5: rounding; 0: truncation).
      backend: the neuron backend (``"xla"``, ``"pallas"``, ...).

    Raises:
      ValueError naming the first layer that cannot be converted and why.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown conversion method {method!r}; expected one of {METHODS}")
    for name, val in (("time_steps", time_steps), ("levels", levels)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name}: expected a positive integer, got {val!r}")
    if not 0.0 <= init_membrane < 1.0:
        raise ValueError(f"init_membrane: expected a fraction of θ in [0, 1), got {init_membrane}")
    lam = calibrate(model, calibration_data, percentile=percentile)
    layers, names, scales = [], [], []
    seen = False
    for name, layer in _flatten_layers(model):
        kind = _classify(name, layer, seen)
        names.append(name)
        if kind == "activation":
            seen = True
            if method == "rate":
                theta = lam[name]
                neuron = IF(threshold=theta, reset="subtract", backend=backend)
            else:
                theta = lam[name] / levels
                neuron = MultiLevel(levels=levels, threshold=theta, reset="subtract", backend=backend)
            layers.append(neuron)
            scales.append(theta)
        else:
            layers.append(nnx.clone(layer) if isinstance(layer, nnx.Module) else layer)
            scales.append(None)
    return ConvertedSNN(layers, names, scales, time_steps=time_steps, init_membrane=init_membrane, method=method)


# --- a small demonstration on sklearn digits -------------------------------------------------------------


def _digits_demo(steps: int = 400, seed: int = 0, activation: Callable = jax.nn.relu) -> dict[str, float]:
    """Train an MLP 64-128-64-10 on sklearn digits, convert it, return accuracies (test split)."""
    import optax
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    r = nnx.Rngs(seed)
    ann = nnx.Sequential(nnx.Linear(64, 128, rngs=r), activation, nnx.Linear(128, 64, rngs=r), activation,
                         nnx.Linear(64, 10, rngs=r))
    opt = nnx.Optimizer(ann, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(ann, opt, xb, yb):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
        loss, g = nnx.value_and_grad(loss_fn)(ann)
        opt.update(ann, g)
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(Xtr), 128)
        step(ann, opt, jnp.asarray(Xtr[idx]), jnp.asarray(ytr[idx]))
    acc = lambda logits: float(np.mean(np.asarray(jnp.argmax(logits, -1)) == yte))
    out = {"ann": acc(ann(jnp.asarray(Xte)))}
    for method, T, L in (("multilevel", 1, 4), ("multilevel", 4, 4), ("rate", 8, 1), ("rate", 32, 1)):
        snn = convert(ann, jnp.asarray(Xtr[:512]), method=method, time_steps=T, levels=L)
        out[f"{method} T={T}" + (f" L={L}" if method == "multilevel" else "")] = acc(snn(jnp.asarray(Xte)))
    return out


if __name__ == "__main__":  # pragma: no cover
    for act in (jax.nn.relu, jax.nn.gelu):
        res = _digits_demo(activation=act)
        print(f"activation={act.__name__}: " + ", ".join(f"{k}: {v:.4f}" for k, v in res.items()))
