"""The skeleton both training loops share: run setup, metric windows, the non-finite stop,
evaluation batches, signals.

bertlab.train.pretrain (steps, checkpoints, resume) and bertlab.train.finetune (epochs, seeds,
best-epoch export) are two drivers over these pieces; what differs between them stays in the
driver, what they have in common exists only here:

  open_workdir / check_rerun / write_config   workdir, config.json, and the refusal of a workdir
                                              made by an incompatible config
  MetricWindow                                the train metrics since the last log: the
                                              non-finite-loss check (NonFiniteLossError names the
                                              step range) and their means
  pad_rows / eval_batches / with_progress     fixed-shape batches (padding rows weigh 0) and one
                                              progress bar for a long evaluation
  StopRequest                                 SIGTERM / SIGINT: finish the step, save, return
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import numpy as np

from bertlab.files import write_json

CONFIG_FILE = "config.json"
# Evaluations shorter than this many batches show no progress bar (it would only flicker).
PROGRESS_MIN_BATCHES = 20


class TrainConfigError(ValueError):
    """A config value (or the data it points to) this run cannot use; the message names the key."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message gives the step range and what was kept."""


# --------------------------------------------------------------------------------------------
# Run setup: the workdir and the config that made it.
# --------------------------------------------------------------------------------------------

def open_workdir(workdir: str) -> str:
    """The absolute workdir, created if missing."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    return workdir


def write_config(workdir: str, config_dict: Mapping[str, Any]) -> None:
    """workdir/config.json: the full config of the latest (re)start."""
    write_json(os.path.join(workdir, CONFIG_FILE), dict(config_dict), default=_json_default)


def first_difference(saved: Mapping[str, Any], current: Mapping[str, Any], *,
                     free: Iterable[str] = ()) -> tuple[str, Any, Any] | None:
    """(dotted key, saved value, current value) of the first key (in sorted order) whose value
    differs between two (nested) records, as JSON sees them; keys in `free` (and below them) are
    skipped; None when they agree. "<absent>" stands for a key one record lacks."""
    free = tuple(free)
    saved, current = flat_keys(saved), flat_keys(current)
    for key in sorted(saved.keys() | current.keys()):
        if any(key == f or key.startswith(f + ".") for f in free):
            continue
        before, now = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if _jsonish(before) != _jsonish(now):
            return key, before, now
    return None


def check_rerun(workdir: str, config_dict: Mapping[str, Any], *, free: Iterable[str]) -> None:
    """Refuses a workdir whose config.json differs from this run's outside `free` keys: results
    already there would otherwise be mixed with results of another recipe."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    difference = first_difference(saved, config_dict, free=free)
    if difference is not None:
        key, before, now = difference
        raise TrainConfigError(f"{path} was written by a run with {key}={before!r}, now {now!r}; "
                               f"use a new --workdir, or set {key} back to add seeds to that run")


def flat_keys(tree: Mapping, prefix: str = "") -> dict:
    """{"group.key": value} of a nested config record (config.json, ConfigDict.to_dict())."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _jsonish(value):
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------
# Metric windows and the non-finite stop.
# --------------------------------------------------------------------------------------------

class MetricWindow:
    """The train metrics (still on the device) of the steps since the last check.

    The loop adds every step's metrics without waiting for them; `close` fetches them once,
    stops the run if any loss is not finite, and returns their means. `what` prefixes the error
    ("seed 3: "); `advice` says which keys to change.
    """

    def __init__(self, last_good_step: int, *, what: str = "", advice: str = ""):
        self.pending: list[tuple[int, dict]] = []
        self.last_good_step = last_good_step
        self.what, self.advice = what, advice

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))

    def close(self, kept: str) -> dict[str, float]:
        """Mean of each metric over the window (the last learning rate); NonFiniteLossError
        naming the step range and `kept` (what survives the stop) if a loss was not finite."""
        pending = jax.device_get(self.pending)
        self.pending = []
        check_finite(pending, self.last_good_step, kept=kept, what=self.what, advice=self.advice)
        self.last_good_step = pending[-1][0]
        return window_means(pending)


def check_finite(pending: list[tuple[int, dict]], last_good_step: int, *, kept: str,
                 what: str = "", advice: str = "") -> None:
    """Raises NonFiniteLossError if any step of `pending` (fetched) had a non-finite loss."""
    for step, metrics in pending:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"{what}loss became {loss} within steps [{last_good_step + 1}, {pending[-1][0]}] "
                f"(first seen at step {step}); {kept}. {advice}".rstrip())


def window_means(pending: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of each train metric over the steps since the last log; the last learning rate."""
    names = pending[-1][1].keys()
    out = {name: float(np.mean([float(m[name]) for _, m in pending])) for name in names}
    if "learning_rate" in out:
        out["learning_rate"] = float(pending[-1][1]["learning_rate"])
    return out


# --------------------------------------------------------------------------------------------
# Fixed-shape batches and evaluation passes.
# --------------------------------------------------------------------------------------------

def pad_rows(rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows padded to batch_size with row 0, example_weights (B,): 1 on real rows, 0 on the
    padding), so every batch has one shape and the step compiles once."""
    count = len(rows)
    if count < batch_size:
        rows = np.concatenate([rows, np.zeros(batch_size - count, rows.dtype)])
    return rows, (np.arange(batch_size) < count).astype(np.float32)


def eval_batch_count(num_rows: int, batch_size: int, max_batches: int | None = None) -> int:
    """ceil(N / batch_size), at most max_batches: how many batches eval_batches yields."""
    count = math.ceil(num_rows / batch_size)
    return count if max_batches is None else min(max_batches, count)


def eval_batches(take: Callable[[np.ndarray], dict], num_rows: int, batch_size: int,
                 max_batches: int | None = None, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """The first eval_batch_count(...) batches of rows 0..N-1 in order, `take(rows)` each, with
    `example_weights` 0 on the rows that pad the last one; this process's share of each batch."""
    per_process = batch_size // process_count
    for b in range(eval_batch_count(num_rows, batch_size, max_batches)):
        rows = np.arange(b * batch_size, (b + 1) * batch_size)  # (B,) global rows
        rows = rows[process_index * per_process:(process_index + 1) * per_process]
        present = rows < num_rows
        batch = take(np.where(present, rows, 0))
        batch["example_weights"] = present.astype(np.float32)
        yield batch


def with_progress(batches: Iterable, total: int, desc: str, *, enabled: bool = True) -> Iterable:
    """`batches` behind a transient progress bar on stderr when the pass is long (a whole test
    split takes minutes on a CPU); short passes show nothing."""
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                disable=not enabled or total < PROGRESS_MIN_BATCHES)


# --------------------------------------------------------------------------------------------
# Signals.
# --------------------------------------------------------------------------------------------

class StopRequest:
    """Set by SIGTERM / SIGINT; the loop finishes its step, saves and returns. A second signal
    while stopping falls back to the default behaviour (so Ctrl-C twice always quits)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.signal_name is not None:
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
