"""The peak FLOP/s that MFU divides by: the best matmul rate this machine reaches, measured.

Vendor peaks are rarely reached by a plain matmul (and CPUs have no published figure), so a
measured rate says how far the train step is from what this device does on its best kernel.
"Best" means with any library installed, not XLA's alone: on the 2-core CPU of issue 14, torch's
matmul (MKL/oneDNN) ran (4096x384)@(384x1536) at 323 GFLOP/s where XLA reached 189, and an MFU
over XLA's own rate hid that the machine can do more. So the same square matmul is timed
through XLA and, when torch is importable, through torch on the same kind of device, the two
taking turns, and the faster library's best time is the peak.

The matmul runs in the model's compute dtype at each library's default precision, as the
model's own matmuls do: on GPUs a float32 matmul then uses TF32 tensor cores in XLA, and
measuring a slower full-precision rate would put MFU above 1.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Callable

import jax
import jax.numpy as jnp


def matmul_size(platform: str) -> int:
    """Large enough to saturate the device, small enough to take well under a second."""
    return {"cpu": 2048}.get(platform, 8192)


def _xla_matmul(size: int, dtype: str, device) -> Callable[[], None]:
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    b = jax.device_put(jnp.full((size, size), 0.5, dtype), device)
    matmul = jax.jit(jnp.matmul)
    return lambda: matmul(a, b).block_until_ready()


def _torch_matmul(size: int, dtype: str, platform: str) -> Callable[[], None] | None:
    """torch's matmul on the same kind of device, or None (no torch, or not that device)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if platform == "cpu":
        device = "cpu"
    elif platform == "gpu" and torch.cuda.is_available():
        device = "cuda"
    else:
        return None
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(str(dtype))
    if torch_dtype is None:
        return None
    a = torch.ones((size, size), dtype=torch_dtype, device=device)
    b = torch.full((size, size), 0.5, dtype=torch_dtype, device=device)

    def call():
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    return call


def library_matmul_flops(size: int | None = None, repeats: int = 5, device=None,
                         dtype: str = "float32") -> dict[str, float]:
    """{library: best-of-`repeats` FLOP/s} of a (size x size) @ (size x size) matmul in `dtype`:
    "xla" always, "torch" when importable for this device. The libraries take turns."""
    device = device or jax.local_devices()[0]
    size = size or matmul_size(device.platform)
    calls = {"xla": _xla_matmul(size, dtype, device)}
    torch_call = _torch_matmul(size, dtype, device.platform)
    if torch_call is not None:
        calls["torch"] = torch_call
    best = {name: float("inf") for name in calls}
    for call in calls.values():
        call()  # compile / warm up
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: 2.0 * size ** 3 / seconds for name, seconds in best.items()}


def measure_matmul_flops(size: int | None = None, repeats: int = 5, device=None,
                         dtype: str = "float32") -> float:
    """The peak for MFU: the fastest library's best FLOP/s on one device (library_matmul_flops)."""
    return max(library_matmul_flops(size, repeats, device, dtype).values())
