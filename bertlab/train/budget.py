"""Training time and batch size as a pretraining run goes: the time budget
(train.budget_minutes) and the batch-size ramp (train.batch_ramp).

Time budget (cramming, Geiping & Goldstein 2022; academic-budget-bert, Izsak et al. 2021): the
run ends when its TRAINING time reaches the budget, and the learning rate follows
progress = elapsed / budget (bertlab.train.schedules.of_progress) instead of the step count.
Training time is the sum of step times measured on the host (each step is waited for, so the
clock sees the device's work, not the dispatch); the first step after every (re)start compiles
and is not counted, nor are evaluations and checkpoint saves. The elapsed seconds are saved in
every checkpoint's meta (`train_seconds`), so a resumed run continues its budget where it
stopped. The progress reaches the step as a float scalar: one compiled step for the whole run.

Which clock (train.budget_clock): "wall" (the default) counts wall-clock seconds, what a budget
on a machine of your own means. "cpu" counts this process's CPU seconds (time.process_time: all
its threads together) over the same intervals. On a shared machine that is the fair clock for
comparing runs: a run that waits for the CPU spends no budget while it waits. It is comparable
between runs only when they use the same number of compute threads (pin each run to one core and
one XLA thread, as experiments/recipes does), and it means nothing for work on an accelerator,
where the host mostly waits.

Batch-size ramp (cramming's batch_size_ramp): the examples per update grow linearly from one
micro-batch (data.batch_size / optimizer.grad_accum_steps) to data.batch_size over the first
train.batch_ramp fraction of training (of the steps, or of the budget), in whole micro-batches.
The step's batch shape never changes: it always holds K = grad_accum_steps micro-batches, of
which the first k carry examples and the rest are copies of the first with example_weights 0,
which the step skips (steps.train_step's skip_empty_micro_batches). So there is one compiled
step, an update over k micro-batches costs k micro-batch passes, and the loss is normalised by
the masked tokens of the k real micro-batches, as a k-micro-batch update would be.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

# Checkpoint meta key of the training seconds spent so far.
ELAPSED_KEY = "train_seconds"


class TrainingClock:
    """Seconds of training so far. `tick()` after each (finished) step adds the time since the
    previous tick or restart(); the first tick after construction only starts the clock (that
    step compiled). restart() after an evaluation or a save leaves their time out. `clock` is
    any monotonic seconds function (tests pass a fake one)."""

    def __init__(self, elapsed: float = 0.0, *, clock: Callable[[], float] = time.perf_counter):
        self.elapsed = float(elapsed)
        self.clock = clock
        self.mark: float | None = None

    def tick(self) -> None:
        now = self.clock()
        if self.mark is not None:
            self.elapsed += now - self.mark
        self.mark = now

    def restart(self) -> None:
        self.mark = self.clock()


def progress(elapsed_seconds: float, budget_minutes: float) -> float:
    """The spent fraction of the budget, in [0, 1]."""
    return min(1.0, max(0.0, elapsed_seconds / (60.0 * budget_minutes)))


def micro_batches_at(fraction: float, ramp: float, total: int) -> int:
    """Micro-batches in the update at this fraction of training: 1 at the start, growing by one
    at equal intervals to `total` at fraction `ramp` (1 + floor((K - 1) * fraction / ramp));
    `total` without a ramp (ramp <= 0)."""
    if ramp <= 0 or total == 1:
        return total
    return int(min(total, 1 + np.floor((total - 1) * max(fraction, 0.0) / ramp)))


def ramp_batch(micro_batches: list[dict], total: int) -> dict:
    """k micro-batches (dicts of (m, ...) arrays) laid out as one batch of `total` micro-batches
    for the step: row j * total + i is row j of micro-batch i (the step's split), micro-batches
    k..total-1 are copies of the first with example_weights 0 (skipped by the step)."""
    k = len(micro_batches)
    if not 1 <= k <= total:
        raise ValueError(f"ramp_batch: {k} micro-batches for a batch of {total}")
    rows = len(next(iter(micro_batches[0].values())))
    padded = list(micro_batches) + [micro_batches[0]] * (total - k)
    weights = [np.full((rows,), 1.0 if i < k else 0.0, np.float32) for i in range(total)]
    out = {}
    for key in micro_batches[0]:
        stacked = np.stack([np.asarray(mb[key]) for mb in padded])  # (K, m, ...)
        out[key] = stacked.swapaxes(0, 1).reshape((rows * total,) + stacked.shape[2:])  # (m*K, ...)
    out["example_weights"] = np.stack(weights).swapaxes(0, 1).reshape(-1)  # (m*K,)
    return out


CLOCKS = ("wall", "cpu")


def now() -> float:
    """The wall clock a run's TrainingClock reads (tests replace it with a fake one)."""
    return time.perf_counter()


def cpu_now() -> float:
    """The CPU clock (train.budget_clock="cpu"): this process's CPU seconds, all threads."""
    return time.process_time()


class Pace:
    """How far a run is, for the schedule and the ramp: the fraction of training done (of the
    time budget with train.budget_minutes, else of train.num_steps), the micro-batches of the
    next update, and whether the budget is spent."""

    def __init__(self, train_config, accum_steps: int, *, elapsed: float = 0.0):
        self.budget_minutes = float(train_config.budget_minutes)
        self.ramp = float(train_config.batch_ramp)
        self.num_steps = int(train_config.num_steps)
        self.accum_steps = int(accum_steps)
        read = cpu_now if train_config.get("budget_clock", "wall") == "cpu" else now
        self.clock = TrainingClock(elapsed, clock=lambda: read())

    @property
    def timed(self) -> bool:
        return self.budget_minutes > 0

    def fraction(self, step: int) -> float:
        """The fraction of training done before update `step + 1`."""
        if self.timed:
            return progress(self.clock.elapsed, self.budget_minutes)
        return step / self.num_steps

    def spent(self) -> bool:
        return self.timed and self.clock.elapsed >= 60.0 * self.budget_minutes

    def micro_batches(self, step: int) -> int:
        return micro_batches_at(self.fraction(step), self.ramp, self.accum_steps)

    def step_args(self, step: int) -> tuple:
        """The train step's extra arguments: the budget's progress, when there is a budget."""
        return (self.fraction(step),) if self.timed else ()

    def record(self, step: int) -> dict:
        """What a train line of metrics.jsonl says about the pace."""
        out = {}
        if self.timed:
            out.update(train_seconds=self.clock.elapsed, budget_progress=self.fraction(step))
        if self.ramp > 0:
            out["micro_batches"] = self.micro_batches(step)
        return out
