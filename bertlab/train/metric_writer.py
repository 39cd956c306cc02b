"""Where metrics go: JSON lines (the record), TensorBoard (the dashboard), a tqdm bar (the console).

`metrics.jsonl` is the source of truth: one object per line, `{"step": s, "split": "train" |
"eval", <name>: <float>, ...}`, appended across resumes (a resumed run may repeat steps after the
last checkpoint; readers keep the last line for each (split, step)). Only process 0 writes.

TensorBoard gets a new events file per start. A start after an earlier one (a resume from the
checkpoint at `initial_step`) opens its file with TensorBoard's own restart marker, a
SessionLog START event at step initial_step + 1 (tensorboardX's purge_step): TensorBoard then
drops every earlier event of a later step, the steps this start redoes, as trim_metrics moves
their metrics.jsonl lines to metrics.abandoned.jsonl (bertlab.checkpoints.training_state), so
the dashboard and metrics.jsonl show the same history. The event files themselves keep those
events (nothing is deleted); TensorBoard hides them when it reads the directory in name order.

Files are opened at the first record, not before: a start that writes nothing (a rerun of a
finished run) leaves no empty events file behind. A write that fails (a full disk) is an
OSError naming metrics.jsonl or the events directory (bertlab.failures.naming).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
EVENTS_MARK = ".tfevents."  # in every events file's name (events.out.tfevents.<time>.<host>)


def _jsonable(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf: "nan", "inf"


class MetricWriter:
    """Writes train/eval scalars to metrics.jsonl, tensorboard/ and a progress bar."""

    def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0,
                 enabled: bool = True, progress: bool = True):
        """initial_step: the step this start resumes from (0: a fresh start); the bar starts
        there, and an earlier start's TensorBoard events after it are purged."""
        self.enabled = enabled
        self.initial_step = initial_step
        self.path = os.path.join(workdir, METRICS_FILE)
        self.tensorboard_dir = os.path.join(workdir, TENSORBOARD_DIR)
        self._file = self._tensorboard = self._bar = None
        if not enabled:
            return
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                             dynamic_ncols=True, mininterval=1.0)
        self._bar_step = initial_step

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        from bertlab.failures import naming

        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        record.update({name: _jsonable(value) for name, value in scalars.items()})
        with naming(self.path):
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        with naming(self.tensorboard_dir):
            if self._tensorboard is None:
                self._tensorboard = open_tensorboard(self.tensorboard_dir, self.initial_step)
            for name, value in scalars.items():
                self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))
            self._tensorboard.flush()

    def progress(self, step: int, **postfix: str) -> None:
        """Moves the bar to `step`, showing e.g. loss / tokens/s / MFU."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar_step)
        self._bar_step = step
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    def message(self, text: str) -> None:
        """A line on the console that does not break the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._file is not None:
            self._file.close()
        self._file = self._tensorboard = self._bar = None


def open_tensorboard(directory: str, initial_step: int):
    """A SummaryWriter on a new events file in `directory`. With an earlier start's files there,
    the new one starts with a purge at initial_step + 1 and gets a suffix that sorts it after
    them: tensorboardX names files by the second and opens them for writing, so two starts in
    one second would otherwise share (and truncate) one file."""
    from tensorboardX import SummaryWriter  # deferred: import cost only when logging

    earlier = [name for name in (os.listdir(directory) if os.path.isdir(directory) else [])
               if EVENTS_MARK in name]
    if not earlier:
        return SummaryWriter(directory)
    return SummaryWriter(directory, purge_step=int(initial_step) + 1,
                         filename_suffix=f".start{len(earlier):04d}")


def read_metrics(path: str) -> dict[str, dict[int, dict]]:
    """{split: {step: record}}, the last line winning for repeated steps (after a resume)."""
    out: dict[str, dict[int, dict]] = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write; the rest of the file is still good
            out.setdefault(record.get("split", "train"), {})[int(record["step"])] = record
    return out
