"""The data mesh: batches split along their first axis, parameters replicated, and the batch
size check that names the key."""

import jax
import numpy as np
import pytest

from bertlab.train import mesh as mesh_lib


def test_one_axis_over_every_device_and_a_batch_split_along_it():
    mesh = mesh_lib.data_mesh()
    assert mesh.axis_names == (mesh_lib.DATA_AXIS,) and mesh.size == len(jax.devices())
    local = {"token_ids": np.arange(8 * 3, dtype=np.int32).reshape(8, 3)}  # (B, T)
    batch = mesh_lib.global_batch(local, mesh)
    assert batch["token_ids"].shape == (8, 3)
    np.testing.assert_array_equal(np.asarray(batch["token_ids"]), local["token_ids"])
    assert batch["token_ids"].sharding.spec == mesh_lib.batch_sharded(mesh).spec
    params = mesh_lib.replicate({"w": np.ones((2, 2), np.float32)}, mesh)
    assert params["w"].sharding.is_fully_replicated


def test_a_batch_that_does_not_divide_over_the_devices_names_the_key():
    mesh = mesh_lib.data_mesh(jax.devices()[:1])
    mesh_lib.check_batch_divides(7, mesh)  # one device divides anything
    fake = type("Mesh", (), {"size": 4})()
    with pytest.raises(ValueError, match=r"data.batch_size=6 is not divisible by the 4 devices "
                                         r"of the mesh; use a multiple of 4"):
        mesh_lib.check_batch_divides(6, fake)
    with pytest.raises(ValueError, match=r"^micro=6 "):
        mesh_lib.check_batch_divides(6, fake, what="micro")
