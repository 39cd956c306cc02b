"""The peak FLOP/s that MFU divides by: measured once as the best float32 matmul rate of a device.

Vendor peaks are rarely reached by a plain matmul (and CPUs have no published figure), so a
measured rate says how far the train step is from what this device does on its best kernel.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def matmul_size(platform: str) -> int:
    """Large enough to saturate the device, small enough to take well under a second."""
    return {"cpu": 1024}.get(platform, 8192)


def measure_matmul_flops(size: int | None = None, repeats: int = 5, device=None) -> float:
    """Best-of-`repeats` FLOP/s of a float32 (size x size) @ (size x size) on one device."""
    device = device or jax.local_devices()[0]
    size = size or matmul_size(device.platform)
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    b = jax.device_put(jnp.full((size, size), 0.5, jnp.float32), device)
    # HIGHEST: true float32 on accelerators that would otherwise use reduced-precision passes.
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
    matmul(a, b).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best
