"""Data parallelism with ``jax.sharding``: one ``Mesh`` over every device of every process
(axis ``"data"``), the batch split along its first axis, parameters and optimizer state replicated.
XLA inserts the gradient all-reduce; the loss equals the single-device loss up to float rounding.
FSDP and tensor parallelism (a second mesh axis ``"model"``: ``make_mesh(tensor_parallel=M)``)
shard the parameters instead: :mod:`spikejax.train.partition`.

Multi-host: call :func:`init_distributed` (``jax.distributed.initialize``) in every process first;
each process then builds the same global batch from ``(seed, step)`` and hands its own rows to
:func:`shard_batch`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["init_distributed", "make_mesh", "replicate", "shard_batch", "check_batch_size"]


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` for multi-host runs (no-op when all three are None).

    Args:
      coordinator: ``host:port`` of process 0, reachable from every process.
      num_processes: total number of processes.
      process_id: this process's index in ``[0, num_processes)``.
    """
    if coordinator is None and num_processes is None and process_id is None:
        return
    if coordinator is None or num_processes is None or process_id is None:
        raise ValueError("coordinator, num_processes, process_id: give all three for a multi-host run "
                         f"(got {coordinator!r}, {num_processes!r}, {process_id!r})")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: expected 0 <= process_id < num_processes={num_processes}, got {process_id}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def make_mesh(devices: list | None = None, *, tensor_parallel: int = 1) -> Mesh:
    """A mesh over ``devices`` (default: all devices of all processes): 1-D, axis ``"data"``, when
    ``tensor_parallel == 1``; else 2-D ``("data", "model")`` of shape ``(n / tensor_parallel,
    tensor_parallel)``, consecutive devices (those of one host) forming one ``"model"`` group."""
    devices = jax.devices() if devices is None else list(devices)
    if isinstance(tensor_parallel, bool) or not isinstance(tensor_parallel, int) or tensor_parallel < 1:
        raise ValueError(f"tensor_parallel: expected a positive integer, got {tensor_parallel!r}")
    if tensor_parallel == 1:
        return Mesh(np.array(devices), ("data",))
    n = len(devices)
    if n % tensor_parallel:
        raise ValueError(f"tensor_parallel: {tensor_parallel} does not divide the {n} devices")
    local = jax.local_device_count()
    if jax.process_count() > 1 and local % tensor_parallel:
        raise ValueError(f"tensor_parallel: {tensor_parallel} does not divide the {local} devices of one process "
                         "(a tensor-parallel group must not span hosts)")
    return Mesh(np.array(devices).reshape(n // tensor_parallel, tensor_parallel), ("data", "model"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """``ValueError`` unless ``batch_size`` splits evenly over the mesh's ``"data"`` axis."""
    n = int(dict(mesh.shape).get("data", 1))
    if batch_size % n:
        raise ValueError(f"batch_size: {batch_size} is not divisible by the {n} devices of the data mesh axis")


def replicate(tree, mesh: Mesh):
    """Put every leaf of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch, mesh: Mesh):
    """Split a global batch (a tuple of numpy arrays with a leading batch axis, identical in every
    process) along the mesh: each process contributes its rows to one global ``jax.Array``."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    nproc, pid = jax.process_count(), jax.process_index()

    def one(x):
        x = np.asarray(x)
        if nproc == 1:
            return jax.device_put(x, sharding)
        rows = x.shape[0] // nproc
        return jax.make_array_from_process_local_data(sharding, x[pid * rows:(pid + 1) * rows], x.shape)

    return tuple(one(x) for x in batch)
