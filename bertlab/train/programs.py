"""A run's XLA programs compiled ahead of time, in background threads, as soon as their shapes
are known.

A short fine-tune spends much of its life compiling: at MiniLM size the packed train step takes
~7 s to compile on the 2-core CPU (each planned row bucket is one program), the eval step ~1.5
s more, while the run itself is ~13 s of steps (experiments/bench/startup_finetune.md). Every
shape is known once the data is tokenised and the batches are planned, before the backbone is
probed or the parameters exist, so `AheadOfTime` lowers each program from its argument shapes
(`jit(f).lower(*shapes).compile()`) on a thread pool right then: XLA compiles with the GIL
released, so the programs compile in parallel with each other and with the main thread's own
start-up work. jax keeps an AOT-compiled program in the jitted function's cache, so the first
real call with those shapes runs it instead of compiling again (tests/test_startup.py counts
the compilations); the results are the same programs, so numbers are unchanged.

The caller must `wait(key)` before the first call with a key's shapes: a call racing its own
background compile would compile the program a second time.

BERTLAB_PRECOMPILE=off compiles on first use instead, as before (to measure, or rule us out).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any, Callable, Hashable

from bertlab.train import startup_profile

ENV = "BERTLAB_PRECOMPILE"


def enabled(environ=os.environ) -> bool:
    return environ.get(ENV, "").strip().lower() not in ("off", "0", "false", "no")


def default_workers() -> int:
    """One compile per core: XLA:CPU compiles one program on one thread."""
    return max(1, min(4, os.cpu_count() or 1))


class AheadOfTime:
    """Programs compiling in the background, by key. `submit` starts one, `wait` blocks until
    it is ready (re-raising what its compilation raised), `close` waits for the rest."""

    def __init__(self, workers: int | None = None):
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers or default_workers(), thread_name_prefix="bertlab-compile")
        self._futures: dict[Hashable, concurrent.futures.Future] = {}
        self.compiled: list[Hashable] = []  # keys in the order their compilation finished
        self._lock = threading.Lock()

    def submit(self, key: Hashable, jitted: Callable, *args: Any) -> None:
        """Compiles jitted for args (arrays or jax.ShapeDtypeStructs with their shardings)."""
        if key not in self._futures:
            self._futures[key] = self._pool.submit(self._compile, key, jitted, args)

    def _compile(self, key: Hashable, jitted: Callable, args: tuple) -> None:
        started = time.time()
        jitted.lower(*args).compile()
        with self._lock:
            self.compiled.append(key)
        startup_profile.event(f"compile {describe(key)}", started)

    def keys(self) -> list[Hashable]:
        return list(self._futures)

    def wait(self, key: Hashable) -> None:
        """Blocks until the program of `key` is compiled; nothing to do for an unknown key."""
        future = self._futures.get(key)
        if future is not None:
            future.result()

    def close(self, *, failed: bool = False) -> None:
        """Waits for every submitted compilation (their errors are not raised again here: the
        call that needs a failed program raises it). failed: the run is ending on an error, so
        programs not yet started are dropped (one already compiling still finishes)."""
        self._pool.shutdown(wait=True, cancel_futures=failed)


def describe(key: Hashable) -> str:
    if isinstance(key, tuple):
        return " ".join(str(part) for part in key)
    return str(key)
