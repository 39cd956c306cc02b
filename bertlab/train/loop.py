"""The skeleton both training loops share: run setup, metric windows, the non-finite stop,
evaluation batches, signals.

bertlab.train.pretrain (steps, checkpoints, resume) and bertlab.train.finetune (epochs, seeds,
best-epoch export) are two drivers over these pieces; what differs between them stays in the
driver, what they have in common exists only here:

  check_numbers                               every numeric config key in range, before any work
  workdir_session                             the workdir created, locked for the run (one process
                                              per workdir), and removed again when a failed
                                              start leaves it empty
  check_rerun / write_config                  config.json, and the refusal of a workdir made by
                                              an incompatible config (bertlab.run_files keeps a
                                              finished run's config and results until the new
                                              run finishes)
  MetricWindow                                the train metrics since the last log: the
                                              non-finite-loss check (NonFiniteLossError names the
                                              step range) and their means
  pad_rows / eval_batches / with_progress     fixed-shape batches (padding rows weigh 0) and one
                                              progress bar for a long evaluation
  StopRequest                                 SIGTERM / SIGINT: finish the step, save, return
"""

from __future__ import annotations

import contextlib
import dataclasses
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

@dataclasses.dataclass(frozen=True)
class Range:
    """Where a numeric config value may lie; None: unbounded on that side."""

    low: float | None = 0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open
                                                               and value == self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


AT_LEAST_ONE = Range(1)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1)                  # [0, 1]
PROBABILITY_BELOW_ONE = Range(0, 1, high_open=True)  # [0, 1): dropout, Adam's betas
DEFAULT_RANGE = Range(0)                # a key without an entry: finite and >= 0


def check_numbers(config, ranges: Mapping[str, Range]) -> None:
    """Every numeric key of `config` (ints, floats, and the numbers of a tuple such as
    train.seeds) must be finite and in its Range; keys without one must be finite and >= 0 (no
    count, size, rate or seed of ours is negative), so a key added later is checked too.
    None (a placeholder left unset) is skipped. Called before anything is read or written."""
    for key, value in flat_keys(config.to_dict() if hasattr(config, "to_dict") else config).items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            allowed = ranges.get(key, DEFAULT_RANGE)
            if not allowed.holds(float(item)):
                shown = value if len(values) == 1 else tuple(values)
                raise TrainConfigError(f"{key}={shown} must be {allowed}")


@contextlib.contextmanager
def workdir_session(workdir: str, *, is_main: bool) -> Iterator[str]:
    """`with workdir_session(path, is_main=...) as workdir:` the absolute workdir, created if
    missing (a path that is a file is a one-line WorkdirError) and locked for the block (only the
    main process of a multi-host run locks; a second run on it is refused, naming the holder).
    A workdir this start created and that holds nothing but the lock when the block fails is
    removed again: a failed start leaves no empty directory behind."""
    from bertlab import workdir_lock

    existed = os.path.isdir(os.path.abspath(os.path.expanduser(workdir)))
    workdir = workdir_lock.ensure_directory(workdir)
    try:
        with workdir_lock.locked(workdir, is_main=is_main):
            yield workdir
    except BaseException:
        if is_main and not existed:
            workdir_lock.remove_if_unused(workdir)
        raise


def write_config(workdir: str, config_dict: Mapping[str, Any]) -> None:
    """workdir/config.json: the full config of the latest (re)start."""
    write_json(os.path.join(workdir, CONFIG_FILE), dict(config_dict), default=json_default)


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


def check_rerun(workdir: str, config_dict: Mapping[str, Any], *, free: Iterable[str],
                added: Mapping[str, Any] | None = None) -> None:
    """Refuses a workdir whose config.json differs from this run's outside `free` keys: results
    already there would otherwise be mixed with results of another recipe. `added` (dotted key
    -> value): keys the config gained after older workdirs were written, with the value that
    stands for what such a run did, so a record that lacks one compares as that value (and the
    refusal names a setting the user can actually give)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    flat_saved = flat_keys(saved)
    saved = {**{key: value for key, value in (added or {}).items() if key not in flat_saved},
             **flat_saved}
    difference = first_difference(saved, flat_keys(config_dict), free=free)
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
    return json.loads(json.dumps(value, default=json_default))


def json_default(value):
    """What json.dump cannot write of a config record: numpy scalars, tuples, sets."""
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
