"""FSDP and tensor parallelism through ``jax.sharding``: path-based rules that map each trained
parameter (and its optimizer moments) to a ``PartitionSpec`` over a ``("data", "model")`` mesh.

Rules (``name`` is a flat parameter path, e.g. ``"blocks.0.attn.q_proj.kernel"``; kernels are
``[d_in, d_out]``):

- tensor parallelism (mesh axis ``"model"`` of size ``M > 1``, Megatron-style): the column-parallel
  projections ``q_proj``, ``k_proj``, ``v_proj``, ``fc1`` split their output columns,
  ``kernel -> P(·, "model")``, ``bias -> P("model")``: each device holds ``H / M`` whole heads
  (heads are contiguous column blocks of ``D``) and ``1 / M`` of the MLP's hidden units; the
  row-parallel ``out_proj`` and ``fc2`` split their input rows, ``kernel -> P("model", ·)``
  (their bias stays whole). XLA inserts the all-reduce after each row-parallel matmul.
- FSDP (``fsdp=True``, mesh axis ``"data"`` of size ``N``): every parameter additionally splits
  the largest dimension that is divisible by ``N`` and not taken by ``"model"`` (scalars and
  parameters with no such dimension stay whole). XLA all-gathers a weight where the forward needs
  it and reduce-scatters its gradient, so parameters, gradients and AdamW moments take ``1 / N``
  of their memory per device.
- otherwise a parameter is replicated (plain data parallelism).

The batch is split along ``"data"`` (replicated over ``"model"``); optimizer-state leaves that
mirror a parameter (AdamW's ``mu`` / ``nu``) take that parameter's spec; everything else (step
counters, BatchNorm statistics) is replicated. Sharding changes only where values live, not the
computation: the losses equal the single-device losses up to float summation order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA", "MODEL", "COLUMN_PARALLEL", "ROW_PARALLEL", "mesh_sizes", "param_spec", "param_specs",
           "state_shardings", "place_state", "shard_steps", "abstract_state", "train_step_memory"]

DATA, MODEL = "data", "model"
COLUMN_PARALLEL: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "fc1")
"""Projections whose output columns (heads, MLP hidden units) tensor parallelism splits."""
ROW_PARALLEL: tuple[str, ...] = ("out_proj", "fc2")
"""Projections whose input rows tensor parallelism splits (their outputs are all-reduced)."""


def mesh_sizes(mesh: Mesh) -> tuple[int, int]:
    """``(data, model)``: the sizes of the mesh's ``"data"`` and ``"model"`` axes (1 when absent)."""
    shape = dict(mesh.shape)
    unknown = set(shape) - {DATA, MODEL}
    if unknown:
        raise ValueError(f"mesh: expected axes {DATA!r} and optionally {MODEL!r}, got {tuple(shape)}")
    return int(shape.get(DATA, 1)), int(shape.get(MODEL, 1))


def _layer_and_leaf(name: str) -> tuple[str, str]:
    parts = name.split(".")
    return (parts[-2] if len(parts) > 1 else ""), parts[-1]


def param_spec(name: str, shape: Sequence[int], *, data: int = 1, model: int = 1, fsdp: bool = False
               ) -> PartitionSpec:
    """The ``PartitionSpec`` of parameter ``name`` of ``shape`` on a mesh of ``data`` x ``model``
    devices (the rules of this module's docstring).

    Raises ``ValueError`` (naming ``tensor_parallel``) when a tensor-parallel dimension is not
    divisible by ``model``: the heads or MLP width must split evenly.
    """
    shape = tuple(int(s) for s in shape)
    axes: list[str | None] = [None] * len(shape)
    layer, leaf = _layer_and_leaf(name)
    if model > 1 and leaf in ("kernel", "bias") and layer in COLUMN_PARALLEL + ROW_PARALLEL:
        dim = None
        if layer in COLUMN_PARALLEL:
            dim = len(shape) - 1  # kernel [d_in, d_out] and bias [d_out]: the output columns
        elif leaf == "kernel" and len(shape) == 2:
            dim = 0  # row-parallel kernel: its input rows
        if dim is not None:
            if shape[dim] % model:
                raise ValueError(f"tensor_parallel: {model} does not divide dimension {dim} (size {shape[dim]}) of "
                                 f"{name} {shape}; choose a degree that divides the heads and the MLP width")
            axes[dim] = MODEL
    if fsdp and data > 1:
        free = [i for i, s in enumerate(shape) if axes[i] is None and s % data == 0]
        if free:
            axes[max(free, key=lambda i: (shape[i], -i))] = DATA
    while axes and axes[-1] is None:
        axes.pop()
    return PartitionSpec(*axes)


def param_specs(params: Mapping[str, Any], mesh: Mesh, *, fsdp: bool = False) -> dict[str, PartitionSpec]:
    """``{name: PartitionSpec}`` of a flat parameter dict (arrays or ``ShapeDtypeStruct``) on ``mesh``."""
    data, model = mesh_sizes(mesh)
    return {k: param_spec(k, np.shape(v), data=data, model=model, fsdp=fsdp) for k, v in params.items()}


def _mirrored_name(path, leaf, params: Mapping[str, Any]) -> str | None:
    """The parameter an optimizer-state leaf mirrors: the last dict key on its path that names a
    parameter of the same shape (AdamW's ``mu[name]``), else ``None``."""
    for entry in reversed(path):
        key = getattr(entry, "key", None)
        if isinstance(key, str) and key in params:
            return key if np.shape(leaf) == np.shape(params[key]) else None
    return None


def state_shardings(state, mesh: Mesh, *, fsdp: bool = False):
    """A pytree like ``state`` (a :class:`~spikejax.train.steps.TrainState`) of ``NamedSharding``:
    parameters and the optimizer-state leaves that mirror them by :func:`param_specs`, the rest
    replicated."""
    specs = param_specs(state.params, mesh, fsdp=fsdp)
    replicated = NamedSharding(mesh, PartitionSpec())

    def opt(path, leaf):
        name = _mirrored_name(path, leaf, state.params)
        return replicated if name is None else NamedSharding(mesh, specs[name])

    return type(state)(
        replicated,
        {k: NamedSharding(mesh, specs[k]) for k in state.params},
        jax.tree.map(lambda _: replicated, state.stats),
        jax.tree_util.tree_map_with_path(opt, state.opt_state),
    )


def place_state(state, mesh: Mesh, *, fsdp: bool = False):
    """``state`` put on ``mesh`` by :func:`state_shardings` (replicated when ``fsdp`` is off and the
    mesh has no ``"model"`` axis: data parallelism).

    Single process only when anything is sharded: a ``ValueError`` (naming ``fsdp``) in a
    multi-process run, whose checkpoints read each array from this process's shards."""
    shardings = state_shardings(state, mesh, fsdp=fsdp)
    if jax.process_count() > 1 and not all(s.is_fully_replicated for s in jax.tree.leaves(shardings)):
        raise ValueError("fsdp / tensor_parallel: sharded parameters need a single-process run (one host, any "
                         "number of its devices); multi-host runs support data parallelism only")
    return jax.device_put(state, shardings)


def shard_steps(steps, state, mesh: Mesh):
    """``steps`` (:func:`~spikejax.train.steps.make_steps`) with ``train`` compiled so that the new
    state keeps the shardings of ``state`` (``out_shardings``; the old state is donated) and the
    metrics are replicated. ``eval`` and ``probe`` take their input shardings from the arrays."""
    shardings = jax.tree.map(lambda x: x.sharding, state)
    train = jax.jit(steps.train, out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
                    donate_argnums=0)
    return steps._replace(train=train)


def abstract_state(split, tx, mesh: Mesh, *, fsdp: bool = False):
    """The :class:`~spikejax.train.steps.TrainState` of ``split`` (a
    :class:`~spikejax.train.steps.ModelSplit`, whose arrays may be abstract, e.g. built under
    ``nnx.eval_shape``) and optimizer ``tx`` as ``ShapeDtypeStruct`` leaves carrying their
    shardings on ``mesh``: nothing is allocated."""
    from spikejax.train.steps import TrainState

    def init(params, stats):
        return TrainState(jax.numpy.zeros((), jax.numpy.int32), params, stats, tx.init(params))

    shapes = jax.eval_shape(init, split.params, split.stats)
    shardings = state_shardings(shapes, mesh, fsdp=fsdp)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def train_step_memory(train_fn, state, batch, mesh: Mesh) -> dict[str, int]:
    """Per-device bytes of one compiled train step, from XLA's ``memory_analysis()``: ``argument``
    (the sharded state and batch this device holds), ``temp`` (activations, gathered weights,
    gradients), ``output`` and ``total = argument + temp``.

    ``train_fn(state, batch) -> (state, metrics)``; ``state`` from :func:`abstract_state`;
    ``batch`` a tuple of ``ShapeDtypeStruct`` (global shapes; split along ``"data"``). Only lowers
    and compiles: no array is allocated.
    """
    batch_sharding = NamedSharding(mesh, PartitionSpec(DATA))
    batch = tuple(jax.ShapeDtypeStruct(b.shape, b.dtype, sharding=batch_sharding) for b in batch)
    shardings = jax.tree.map(lambda s: s.sharding, state)
    compiled = jax.jit(train_fn, out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
                       donate_argnums=0).lower(state, batch).compile()
    m = compiled.memory_analysis()
    out = {"argument": int(m.argument_size_in_bytes), "temp": int(m.temp_size_in_bytes),
           "output": int(m.output_size_in_bytes), "alias": int(m.alias_size_in_bytes)}
    out["total"] = out["argument"] + out["temp"]
    return out
