"""Data parallelism with jax.sharding: a 1-D mesh "data" over every device of every host.

The batch is split along its first axis over the mesh; parameters and optimizer state are
replicated. jit then inserts the gradient all-reduce itself, so the train step is written as if
for one device. On several hosts, each process feeds only its own rows (BatchIterator's process
slice) and `global_batch` assembles them into one array without any host-to-host copy.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(enabled: bool) -> None:
    """jax.distributed.initialize() once, before any device is touched (multi-host runs).

    On TPU pods, SLURM and GKE the coordinator address and process ids are discovered from the
    environment; elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID."""
    if enabled and not getattr(initialize_distributed, "_done", False):
        jax.distributed.initialize()
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
