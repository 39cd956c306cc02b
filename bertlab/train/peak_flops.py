"""The peak FLOP/s that MFU divides by: measured once as the best matmul rate of a device.

Vendor peaks are rarely reached by a plain matmul (and CPUs have no published figure), so a
measured rate says how far the train step is from what this device does on its best kernel.
The matmul runs in the model's compute dtype at jax's default precision, exactly as the model's
own matmuls do: on GPUs a float32 matmul then uses TF32 tensor cores, and measuring the slower
full-precision rate would put MFU above 1.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def matmul_size(platform: str) -> int:
    """Large enough to saturate the device, small enough to take well under a second."""
    return {"cpu": 2048}.get(platform, 8192)


def measure_matmul_flops(size: int | None = None, repeats: int = 5, device=None,
                         dtype: str = "float32") -> float:
    """Best-of-`repeats` FLOP/s of a (size x size) @ (size x size) matmul in `dtype`, one device."""
    device = device or jax.local_devices()[0]
    size = size or matmul_size(device.platform)
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    b = jax.device_put(jnp.full((size, size), 0.5, dtype), device)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best
