"""Data parallelism with jax.sharding: a 1-D mesh "data" over every device of every host.

The batch is split along its first axis over the mesh; parameters and optimizer state are
replicated. jit then inserts the gradient all-reduce itself, so the train step is written as if
for one device. On several hosts, each process feeds only its own rows (BatchIterator's process
slice) and `global_batch` assembles them into one array without any host-to-host copy.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def distributed_arguments(env=os.environ) -> dict:
    """jax.distributed.initialize's arguments from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
    and JAX_PROCESS_ID where set. jax 0.10.2 reads only the address from the environment itself
    (a process count and id it cannot discover on a plain cluster must be passed), so we read
    the other two; on TPU pods, SLURM and GKE, left unset, jax discovers them."""
    arguments = {}
    if env.get("JAX_COORDINATOR_ADDRESS"):
        arguments["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
    for name, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if env.get(name, "").strip():
            try:
                arguments[key] = int(env[name])
            except ValueError:
                raise ValueError(f"{name}={env[name]!r} is not an integer") from None
    return arguments


def initialize_distributed(enabled: bool, env=os.environ) -> None:
    """jax.distributed.initialize() once, before any device is touched (multi-host runs), with
    distributed_arguments(env). CPU processes exchange gradients through gloo (jax's CPU
    collectives are off by default, and a multi-process CPU job then fails at its first
    all-reduce), so it is switched on first; the setting concerns the CPU backend only."""
    if not enabled or getattr(initialize_distributed, "_done", False):
        return
    if jax.distributed.is_initialized():  # the caller joined the job itself
        initialize_distributed._done = True
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**distributed_arguments(env))
    initialize_distributed._done = True


def data_mesh(devices=None) -> Mesh:
    """All devices (of all processes) on one axis, in jax's global device order."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """First axis split over the devices, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divides(global_batch: int, mesh: Mesh, *, what: str = "data.batch_size") -> None:
    if global_batch % mesh.size:
        raise ValueError(f"{what}={global_batch} is not divisible by the {mesh.size} devices "
                         f"of the mesh; use a multiple of {mesh.size}")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> one global array per key, sharded along the batch axis.

    Each process passes its contiguous slice (process_index order), as BatchIterator yields."""
    sharding = batch_sharded(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in local_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every array of the tree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
