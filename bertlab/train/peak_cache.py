"""The peak FLOP/s that MFU divides by, measured once per machine and kept on disk.

Measuring the peak (bertlab.train.peak_flops) at every launch made MFU move between launches of
the same run at the same tokens/s (issue 16: 21.9 % -> 40.7 %), because a matmul timed for a
second on a busy machine is a noisy number. So the first measurement on a machine is kept and
every later launch divides by the same figure; `train.peak_flops` (> 0) overrides it, and the
value used is written into the run's metrics with where it came from.

The cache is one JSON file, peak_flops.json, keyed by what the figure depends on: the device
kind (jax's device_kind, e.g. "NVIDIA H100 80GB HBM3" or "cpu"; the peak is per device), the
dtype and the jax version (a new XLA may reach another rate). Where: $BERTLAB_CACHE_DIR if set ("off" or empty: no cache, measure
every time), else $XDG_CACHE_HOME/bertlab (~/.cache/bertlab), beside the compilation cache of
bertlab.train.compile_cache. An unreadable or unwritable cache only means measuring again: a run
never fails for it. The tests set BERTLAB_CACHE_DIR=off (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
from typing import Callable

ENV = "BERTLAB_CACHE_DIR"
CACHE_FILE = "peak_flops.json"


def cache_dir(env=os.environ) -> str | None:
    """The cache directory, or None when caching is off."""
    if ENV in env:
        path = env[ENV].strip()
        return None if not path or path.lower() == "off" else path
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bertlab")


def cache_key(device_kind: str, dtype: str, jax_version: str) -> str:
    return f"{device_kind} | {dtype} | jax {jax_version}"


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(path: str, table: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except OSError:
        pass


def peak_flops(configured: float, dtype: str, *, measure: Callable[[str], float] | None = None,
               env=os.environ) -> tuple[float, str]:
    """(FLOP/s of one device, where it came from: "config", "cache" or "measured").

    `configured` > 0 is train.peak_flops and wins; else the cached figure of this device kind,
    dtype and jax version; else `measure(dtype)` (default: peak_flops.measure_matmul_flops), which
    is then cached."""
    if configured and configured > 0:
        return float(configured), "config"
    import jax

    device = jax.local_devices()[0]
    key = cache_key(getattr(device, "device_kind", device.platform), str(dtype), jax.__version__)
    directory = cache_dir(env)
    path = os.path.join(directory, CACHE_FILE) if directory else None
    if path:
        entry = _read(path).get(key)
        if isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float)) \
                and entry["flops"] > 0:
            return float(entry["flops"]), "cache"
    if measure is None:
        from bertlab.train.peak_flops import measure_matmul_flops

        measure = lambda d: measure_matmul_flops(dtype=d)  # noqa: E731
    value = float(measure(str(dtype)))
    if path and jax.process_index() == 0:
        table = _read(path)  # re-read: another run may have added its own device meanwhile
        table[key] = {"flops": value}
        _write(path, table)
    return value, "measured"
