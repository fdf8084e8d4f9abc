"""NIR (Neuromorphic Intermediate Representation, the ``nir`` package >= 1.0.8) export and import
of feed-forward spikejax networks.

Supported: an ``nnx.Sequential`` (or any module with a ``layers`` list) of ``nnx.Linear``
(NIR ``Affine`` / ``Linear``), ``nnx.Conv`` 2-D (NIR ``Conv2d``), :class:`Flatten` (NIR
``Flatten``), and the neurons :class:`spikejax.nn.LIF`, :class:`spikejax.nn.IF`,
:class:`spikejax.nn.CubaLIF`, the non-spiking leaky integrator :class:`LI` and the current-based
:class:`spikejax.nn.CubaLI` (NIR ``LIF``, ``IF``, ``CubaLIF``, ``LI``, ``CubaLI``). Data is time-major
``x[T, B, ...]``, channels last (``[T, B, H, W, C]`` for convolutions, as in Flax).

Neuron mappings (NIR's continuous equations, forward-Euler with step ``dt``; default
``dt = 1e-4``, the value snnTorch's and SpikingJelly's NIR importers assume)::

    NIR LIF:  τ dv/dt = (v_leak - v) + R I,  spike when v >= v_threshold, then v = v_reset
      => v_t = (1 - dt/τ) v_{t-1} + (dt R / τ) I_t          (v_leak = 0)
    spikejax: H_t = β V_{t-1} + γ X_t,  S_t = Θ(H_t - θ),  V_t = H_t (1 - S_t)   (reset="zero")
      => β = 1 - dt/τ,  γ = dt R / τ;   τ = dt / (1 - β),  R = γ / (1 - β),  v_threshold = θ,
         v_leak = v_reset = 0
      LIF(tau=τ_s) (γ = 1/τ_s):  τ = τ_s dt,  R = 1;      LIF(beta=β) (γ = 1):  τ = dt/(1-β),  R = τ/dt

    NIR IF:   dv/dt = R I   => v_t = v_{t-1} + dt R I_t;   spikejax IF:  R = 1/dt,  v_reset = 0
    NIR LI:   τ dv/dt = (v_leak - v) + R I  (no spikes; the output is v) => LI(beta=β, gamma=γ)

    NIR CubaLIF:  τ_syn dI/dt = -I + w_in S,  τ_mem dv/dt = (v_leak - v) + R I,  reset to v_reset
      => I_t = (1 - dt/τ_syn) I_{t-1} + (dt w_in/τ_syn) X_t,  v_t = (1 - dt/τ_mem) v_{t-1} + (dt R/τ_mem) I_t
    spikejax CubaLIF: I_t = α I_{t-1} + X_t,  H_t = β V_{t-1} + I_t   (reset="zero", reset_delay=False)
      => α = 1 - dt/τ_syn,  β = 1 - dt/τ_mem,  w_in = τ_syn/dt,  R = τ_mem/dt  (both gains 1),
         v_threshold = θ,  v_leak = v_reset = 0       (snnTorch's Synaptic export/import mapping)
    NIR CubaLI:   the same without spikes (the output is v) => spikejax.nn.CubaLI(alpha=α, beta=β)

Neuron parameters may differ per neuron: per-channel arrays ``[C]`` export as NIR arrays over the
neuron shape (``(F,)``, or ``(C, H, W)`` constant over ``H, W``) and import back per channel
(``CubaLIF`` / ``CubaLI``; ``LIF`` / ``IF`` import needs uniform values).

NIR resets to ``v_reset`` (a hard reset), so only ``reset="zero"`` neurons (and no
``reset_delay``, ``detach_reset`` is irrelevant for the forward) can be exported; a soft-reset
neuron raises ``ValueError`` naming ``reset``. Conv weights are OIHW in NIR (``nnx.Conv``'s
``kernel[kh, kw, in, out]`` transposed), and :class:`Flatten` flattens channels-first
(``C, H, W``) as PyTorch does, so Linear weights after a conv have the same meaning everywhere.

Importers: snnTorch (``snntorch.import_nir.import_from_nir``) maps LIF exactly (β = 1 - dt/τ, the
input scale folded into the threshold) but maps IF to a leaky neuron (β = 0.9), so compare IF with
SpikingJelly (``spikingjelly.activation_based.nir_exchange.import_from_nir``), which maps IF, LIF
(R = 1 or R = τ/dt) exactly. Both need the ``nirtorch`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax.nn.dynamics import CubaLI, CubaLIF
from spikejax.nn.neurons import IF, LIF

Array = jax.Array

__all__ = ["LI", "Flatten", "export_nir", "import_nir", "write_nir", "read_nir", "DEFAULT_DT"]

DEFAULT_DT = 1e-4


class LI(nnx.Module):
    """Leaky integrator (non-spiking): ``V_t = β V_{t-1} + γ X_t``, output ``V[T, ...]`` (float32).

    Args:
      beta: decay β in [0, 1] (scalar or per neuron); gamma: input scale γ (default ``1 - β``).
    """

    def __init__(self, *, beta: float | Array = 0.5, gamma: float | Array | None = None):
        self.beta = np.asarray(beta, np.float32)
        self.gamma = np.asarray(1.0 - self.beta if gamma is None else gamma, np.float32)

    def __call__(self, x: Array) -> Array:
        if x.ndim < 2:
            raise ValueError(f"x: expected rank >= 2 with time first, [T, ...neurons], got shape {tuple(x.shape)}")
        beta, gamma = jnp.asarray(self.beta), jnp.asarray(self.gamma)

        def step(v, xt):
            v = beta * v + gamma * xt.astype(jnp.float32)
            return v, v

        _, out = jax.lax.scan(step, jnp.zeros(x.shape[1:], jnp.float32), x)
        return out


class Flatten(nnx.Module):
    """Flatten the neuron axes of ``x[T, B, ...]`` channels-first: ``[T, B, H, W, C] -> [T, B, C·H·W]``
    (PyTorch's ``nn.Flatten`` order, NIR ``Flatten(start_dim=0)``); ``[T, B, F]`` is unchanged."""

    def __call__(self, x: Array) -> Array:
        if x.ndim < 3:
            raise ValueError(f"x: expected [T, B, ...], got shape {tuple(x.shape)}")
        if x.ndim > 3:
            x = jnp.moveaxis(x, -1, 2)
        return x.reshape(*x.shape[:2], -1)


def _layers(model: Any) -> list:
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"model: expected an nnx.Sequential (a module with .layers), got {type(model)!r}")
    return list(layers)


def _lif_params(layer: LIF) -> tuple[float, float]:
    """(β, γ) in float64 from the layer's settings, as spikejax.neurons._decay defines them."""
    if layer.tau is not None:
        beta = 1.0 - 1.0 / layer.tau
        decay_input = True if layer.decay_input is None else bool(layer.decay_input)
    elif layer.beta is not None:
        beta = layer.beta
        decay_input = False if layer.decay_input is None else bool(layer.decay_input)
    else:
        beta, decay_input = 0.5, True if layer.decay_input is None else bool(layer.decay_input)
    return float(beta), (1.0 - float(beta)) if decay_input else 1.0


def _check_exportable_neuron(index: int, layer) -> None:
    if layer.reset != "zero":
        raise ValueError(f"model: layer {index} ({type(layer).__name__}) has reset={layer.reset!r}; NIR neurons "
                         "reset to v_reset (a hard reset), so export needs reset='zero'")
    if layer.reset_delay:
        raise ValueError(f"model: layer {index} ({type(layer).__name__}) has reset_delay=True, "
                         "which NIR cannot express")


def export_nir(model: Any, input_shape: tuple[int, ...], *, dt: float = DEFAULT_DT):
    """A ``nir.NIRGraph`` of a feed-forward ``model`` (see the module docstring for the mappings).

    Args:
      model: ``nnx.Sequential`` of ``nnx.Linear`` / ``nnx.Conv`` / :class:`Flatten` / ``LIF`` / ``IF`` /
        ``CubaLIF`` / :class:`LI` / ``CubaLI``.
      input_shape: one sample's shape without time and batch, in NIR's layout: ``(F,)`` or
        ``(C, H, W)`` for convolutional inputs.
      dt: the Euler step the NIR time constants are expressed in.

    Returns:
      ``nir.NIRGraph`` with nodes ``input``, ``0``, ``1``, ..., ``output`` chained in order.
    """
    import nir

    if not dt > 0:
        raise ValueError(f"dt: expected > 0, got {dt}")
    shape = tuple(int(s) for s in input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(shape))}
    edges = []
    prev = "input"
    for i, layer in enumerate(_layers(model)):
        node, shape = _export_layer(nir, i, layer, shape, dt)
        nodes[str(i)] = node
        edges.append((prev, str(i)))
        prev = str(i)
    nodes["output"] = nir.Output(output_type=np.array(shape))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def _export_layer(nir, i: int, layer, shape: tuple[int, ...], dt: float):
    f64 = np.float64
    if isinstance(layer, nnx.Linear):
        w = np.asarray(layer.kernel[...], np.float32).T
        if layer.bias is None:
            return nir.Linear(weight=w), (w.shape[0],)
        return nir.Affine(weight=w, bias=np.asarray(layer.bias[...], np.float32)), (w.shape[0],)
    if isinstance(layer, nnx.Conv):
        kernel = np.asarray(layer.kernel[...], np.float32)
        if kernel.ndim != 4:
            raise ValueError(f"model: layer {i} is a {kernel.ndim - 2}-D conv; only 2-D convs are exported")
        w = np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))
        stride = tuple(int(s) for s in np.broadcast_to(np.asarray(layer.strides or 1), (2,)))
        dilation = tuple(int(s) for s in np.broadcast_to(np.asarray(layer.kernel_dilation or 1), (2,)))
        padding = _conv_padding(i, layer.padding, w.shape[2:], dilation)
        bias = np.zeros(w.shape[0], np.float32) if layer.bias is None else np.asarray(layer.bias[...], np.float32)
        if len(shape) != 3:
            raise ValueError(f"model: layer {i} (conv) needs a (C, H, W) input, got input shape {shape}")
        C, H, W = shape
        Ho = (H + 2 * padding[0] - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
        Wo = (W + 2 * padding[1] - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
        node = nir.Conv2d(input_shape=(H, W), weight=w, stride=stride, padding=padding, dilation=dilation,
                          groups=int(layer.feature_group_count), bias=bias)
        return node, (w.shape[0], Ho, Wo)
    if isinstance(layer, Flatten):
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1), (int(np.prod(shape)),)
    full = np.ones(shape, f64)
    if isinstance(layer, IF):
        _check_exportable_neuron(i, layer)
        return nir.IF(r=full / dt, v_threshold=full * layer.threshold, v_reset=full * 0.0), shape
    if isinstance(layer, LIF):
        _check_exportable_neuron(i, layer)
        beta, gamma = _lif_params(layer)
        if not beta < 1.0:
            raise ValueError(f"model: layer {i} (LIF) has β = {beta}; NIR's τ = dt/(1-β) needs β < 1")
        tau = dt / (1.0 - beta)
        return nir.LIF(tau=full * tau, r=full * (gamma / (1.0 - beta)), v_leak=full * 0.0,
                       v_threshold=full * layer.threshold, v_reset=full * 0.0), shape
    if isinstance(layer, LI):
        beta = np.broadcast_to(layer.beta.astype(f64), shape)
        gamma = np.broadcast_to(layer.gamma.astype(f64), shape)
        return nir.LI(tau=dt / (1.0 - beta), r=gamma / (1.0 - beta), v_leak=full * 0.0), shape
    if isinstance(layer, CubaLIF):
        _check_exportable_neuron(i, layer)
        alpha, beta = _decays(i, layer, shape)
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=full * 0.0,
                           v_threshold=_per_neuron(layer.threshold, shape), v_reset=full * 0.0,
                           w_in=tau_syn / dt), shape
    if isinstance(layer, CubaLI):
        alpha, beta = _decays(i, layer, shape)
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        return nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=full * 0.0,
                          w_in=tau_syn / dt), shape
    raise TypeError(f"model: layer {i} is a {type(layer).__name__}, which has no NIR export "
                    "(supported: nnx.Linear, nnx.Conv, Flatten, LIF, IF, CubaLIF, LI, CubaLI)")


def _per_neuron(value, shape: tuple[int, ...]) -> np.ndarray:
    """A spikejax parameter (scalar, or per channel ``[C]`` over the last axis) as a float64 array over
    the NIR neuron shape (``(F,)`` or channels-first ``(C, H, W)``)."""
    arr = np.asarray(value[...] if isinstance(value, nnx.Param) else value, np.float64)
    if arr.ndim == 1 and len(shape) > 1:
        arr = arr.reshape((arr.shape[0],) + (1,) * (len(shape) - 1))
    return np.broadcast_to(arr, shape).copy()


def _decays(i: int, layer, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    alpha, beta = _per_neuron(layer.alpha, shape), _per_neuron(layer.beta, shape)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not np.all(value < 1.0):
            raise ValueError(f"model: layer {i} ({type(layer).__name__}) has {name} = {value.max()}; "
                             f"NIR's τ = dt/(1-{name}) needs {name} < 1")
    return alpha, beta


def _conv_padding(i: int, padding, kernel: tuple[int, ...], dilation: tuple[int, int]) -> tuple[int, int]:
    if isinstance(padding, str):
        if padding == "VALID":
            return (0, 0)
        if padding == "SAME" and all(k % 2 for k in kernel):
            return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        raise ValueError(f"model: layer {i} has padding={padding!r}; export supports 'VALID', 'SAME' with odd kernels "
                         "and symmetric explicit padding")
    pads = [(p, p) if isinstance(p, int) else tuple(p) for p in (padding if not isinstance(padding, int)
                                                                 else (padding, padding))]
    if any(lo != hi for lo, hi in pads):
        raise ValueError(f"model: layer {i} has asymmetric padding {padding!r}, which NIR Conv2d cannot express")
    return tuple(int(lo) for lo, _ in pads)


def _uniform(name: str, value: np.ndarray) -> float:
    u = np.unique(np.asarray(value))
    if u.size != 1:
        raise ValueError(f"{name}: spikejax layers take one value for all neurons, got {u.size} distinct values")
    return float(u[0])


def _per_channel(name: str, value) -> float | np.ndarray:
    """A NIR per-neuron array as a spikejax parameter: one float when uniform, else per channel
    (``(F,)`` as is; ``(C, H, W)`` must be constant over ``H, W``)."""
    arr = np.asarray(value, np.float64)
    if np.unique(arr).size == 1:
        return float(arr.ravel()[0])
    if arr.ndim == 1:
        return arr.astype(np.float32)
    per_c = arr.reshape(arr.shape[0], -1)
    if not np.all(per_c == per_c[:, :1]):
        raise ValueError(f"{name}: spikejax layers take one value per channel (the last axis); this {arr.shape} "
                         "array varies within a channel")
    return per_c[:, 0].astype(np.float32)


def _cuba_decays(name: str, node, dt: float) -> tuple[Any, Any]:
    tau_syn, tau_mem = np.asarray(node.tau_syn, np.float64), np.asarray(node.tau_mem, np.float64)
    if not np.allclose(node.v_leak, 0.0):
        raise ValueError(f"graph: node {name!r} ({type(node).__name__}): v_leak must be 0")
    for field, gain in (("w_in", np.asarray(node.w_in) * dt / tau_syn), ("r", np.asarray(node.r) * dt / tau_mem)):
        if not np.allclose(gain, 1.0, rtol=1e-6):
            raise ValueError(f"graph: node {name!r} ({type(node).__name__}): {field} must give a unit gain "
                             f"({'w_in = tau_syn/dt' if field == 'w_in' else 'r = tau_mem/dt'}), got gains "
                             f"{np.unique(gain)[:3]}")
    alpha = _per_channel(f"graph: node {name!r} tau_syn", 1.0 - dt / tau_syn)
    beta = _per_channel(f"graph: node {name!r} tau_mem", 1.0 - dt / tau_mem)
    return alpha, beta


def import_nir(graph: Any, *, dt: float = DEFAULT_DT, rngs: nnx.Rngs | None = None) -> nnx.Sequential:
    """An ``nnx.Sequential`` from a feed-forward ``nir.NIRGraph`` (or a path to a NIR file).

    ``LIF`` becomes ``spikejax.nn.LIF(beta=β, decay_input=..., reset="zero")`` with β = 1 - dt/τ
    (``decay_input`` when R = 1 - ... i.e. γ = dt R/τ equals 1 - β; γ = 1 otherwise; other R raise);
    ``IF`` needs R = 1/dt; ``LI`` becomes :class:`LI`; ``v_leak`` and ``v_reset`` must be 0 and
    neuron parameters uniform. ``CubaLIF`` / ``CubaLI`` become :class:`spikejax.nn.CubaLIF`
    (``reset="zero"``) / :class:`spikejax.nn.CubaLI` with unit gains required and per-channel
    parameters. The graph must be a chain from ``Input`` to ``Output``.
    """
    import nir

    if isinstance(graph, (str, Path)):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph: expected a nir.NIRGraph or a path, got {type(graph)!r}")
    rngs = rngs or nnx.Rngs(0)
    order = _chain(graph)
    layers = [_import_node(nir, name, graph.nodes[name], dt, rngs) for name in order]
    return nnx.Sequential(*layers)


def _chain(graph) -> list[str]:
    import nir

    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise ValueError(f"graph: expected one Input node, got {inputs}")
    order, node = [], inputs[0]
    seen = {node}
    while True:
        nxt = succ.get(node, [])
        if len(nxt) != 1:
            raise ValueError(f"graph: node {node!r} has {len(nxt)} successors; only feed-forward chains are supported")
        node = nxt[0]
        if node in seen:
            raise ValueError(f"graph: node {node!r} closes a cycle; only feed-forward chains are supported")
        seen.add(node)
        if isinstance(graph.nodes[node], nir.Output):
            return order
        order.append(node)


def _import_node(nir, name: str, node, dt: float, rngs: nnx.Rngs):
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, np.float32)
        bias = isinstance(node, nir.Affine)
        layer = nnx.Linear(w.shape[1], w.shape[0], use_bias=bias, rngs=rngs)
        layer.kernel.set_value(jnp.asarray(w.T))
        if bias:
            layer.bias.set_value(jnp.asarray(node.bias, jnp.float32))
        return layer
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight, np.float32)
        pad = tuple(int(p) for p in np.broadcast_to(np.asarray(node.padding), (2,))) if not isinstance(
            node.padding, str) else node.padding.upper()
        padding = pad if isinstance(pad, str) else tuple((p, p) for p in pad)
        stride = tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,)))
        dilation = tuple(int(s) for s in np.broadcast_to(np.asarray(node.dilation), (2,)))
        layer = nnx.Conv(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), strides=stride,
                         padding=padding, kernel_dilation=dilation, feature_group_count=int(node.groups), rngs=rngs)
        layer.kernel.set_value(jnp.asarray(np.transpose(w, (2, 3, 1, 0))))
        layer.bias.set_value(jnp.asarray(node.bias, jnp.float32))
        return layer
    if isinstance(node, nir.Flatten):
        return Flatten()
    if isinstance(node, (nir.LIF, nir.IF)):
        if not np.allclose(node.v_reset, 0.0):
            raise ValueError(f"graph: node {name!r}: v_reset must be 0 (spikejax resets to 0)")
        thr = _uniform(f"graph: node {name!r} v_threshold", node.v_threshold)
        if isinstance(node, nir.IF):
            r = _uniform(f"graph: node {name!r} r", node.r)
            if not np.isclose(r * dt, 1.0, rtol=1e-6):
                raise ValueError(f"graph: node {name!r} (IF): r = {r} must equal 1/dt = {1 / dt} (dt={dt})")
            return IF(threshold=thr, reset="zero")
        if not np.allclose(node.v_leak, 0.0):
            raise ValueError(f"graph: node {name!r} (LIF): v_leak must be 0")
        beta, gamma = _beta_gamma(name, node, dt)
        if np.isclose(gamma, 1.0 - beta, rtol=1e-6):
            return LIF(beta=beta, decay_input=True, threshold=thr, reset="zero")
        if np.isclose(gamma, 1.0, rtol=1e-6):
            return LIF(beta=beta, decay_input=False, threshold=thr, reset="zero")
        raise ValueError(f"graph: node {name!r} (LIF): input scale dt·r/τ = {gamma} must be 1 or dt/τ "
                         "(r = τ/dt or r = 1)")
    if isinstance(node, nir.CubaLIF):
        if not np.allclose(node.v_reset, 0.0):
            raise ValueError(f"graph: node {name!r}: v_reset must be 0 (spikejax resets to 0)")
        alpha, beta = _cuba_decays(name, node, dt)
        thr = _per_channel(f"graph: node {name!r} v_threshold", node.v_threshold)
        return CubaLIF(alpha=alpha, beta=beta, threshold=thr, reset="zero")
    if isinstance(node, nir.CubaLI):
        alpha, beta = _cuba_decays(name, node, dt)
        return CubaLI(alpha=alpha, beta=beta)
    if isinstance(node, nir.LI):
        if not np.allclose(node.v_leak, 0.0):
            raise ValueError(f"graph: node {name!r} (LI): v_leak must be 0")
        tau, r = np.asarray(node.tau, np.float64), np.asarray(node.r, np.float64)
        return LI(beta=(1.0 - dt / tau).astype(np.float32), gamma=(dt * r / tau).astype(np.float32))
    raise TypeError(f"graph: node {name!r} is a {type(node).__name__}, which has no spikejax import "
                    "(supported: Affine, Linear, Conv2d, Flatten, LIF, IF, CubaLIF, LI, CubaLI)")


def _beta_gamma(name: str, node, dt: float) -> tuple[float, float]:
    tau = _uniform(f"graph: node {name!r} tau", node.tau)
    r = _uniform(f"graph: node {name!r} r", node.r)
    return 1.0 - dt / tau, dt * r / tau


def write_nir(model: Any, path: str | Path, input_shape: tuple[int, ...], *, dt: float = DEFAULT_DT) -> Path:
    """:func:`export_nir` and ``nir.write`` to ``path`` (HDF5); returns the path."""
    import nir

    nir.write(str(path), export_nir(model, input_shape, dt=dt))
    return Path(path)


def read_nir(path: str | Path, *, dt: float = DEFAULT_DT) -> nnx.Sequential:
    """``nir.read`` and :func:`import_nir`."""
    return import_nir(Path(path), dt=dt)
