"""Learning-rate schedules, as optax schedules: `step -> lr` with `step` = updates applied so far.

Two named recipes, because they differ in a way that matters when reproducing numbers:

* `triangular` (HF/optax convention): linear warm-up 0 -> peak over `warmup_steps`, then a linear
  decay that *starts* at the peak and reaches 0 at `num_steps`, i.e. decays over T - W steps.
* `bert` (google-research/bert optimization.py): one linear decay `peak * (1 - step / T)` over
  ALL T steps, and while `step < W` the warm-up `peak * step / W` *replaces* it. After warm-up the
  rate is therefore already below the peak (at step W it is peak * (1 - W/T)).

* `constant`: linear warm-up to the peak over W steps (none when W = 0), then the peak for ever:
  Keras' fixed-rate Adam, which the KerasNLP guides and the SNLI tutorial's baseline use.

All three give 0 at step 0 when W > 0: the first update of the original BERT is a no-op, and we keep that.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def _check(peak_lr: float, warmup_steps: int, num_steps: int) -> None:
    if num_steps <= 0:
        raise ValueError(f"schedule: num_steps must be positive, got {num_steps}")
    if not 0 <= warmup_steps <= num_steps:
        raise ValueError(f"schedule: warmup_steps={warmup_steps} must lie in [0, num_steps="
                         f"{num_steps}]")
    if peak_lr < 0:
        raise ValueError(f"schedule: the peak learning rate must be >= 0, got {peak_lr}")


def triangular(peak_lr: float, warmup_steps: int, num_steps: int) -> Schedule:
    """Warm-up to the peak over W steps, then decay to zero at T (over T - W steps)."""
    _check(peak_lr, warmup_steps, num_steps)
    decay_steps = num_steps - warmup_steps

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = step / max(warmup_steps, 1)
        decay = (num_steps - step) / max(decay_steps, 1)
        frac = jnp.where(step < warmup_steps, warm, decay)
        return peak_lr * jnp.clip(frac, 0.0, 1.0)

    return schedule


def bert(peak_lr: float, warmup_steps: int, num_steps: int) -> Schedule:
    """The original BERT rate: linear decay over all T steps, replaced by warm-up while step < W."""
    _check(peak_lr, warmup_steps, num_steps)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        decayed = peak_lr * jnp.maximum(1.0 - step / num_steps, 0.0)
        warm = peak_lr * step / max(warmup_steps, 1)
        return jnp.where(step < warmup_steps, warm, decayed)

    return schedule


SCHEDULES = {"triangular": triangular, "bert": bert}


def constant(peak_lr: float, warmup_steps: int, num_steps: int | None = None) -> Schedule:
    """Warm-up to the peak over W steps, then the peak; W = 0 is the peak from the first step."""
    _check(peak_lr, warmup_steps, max(num_steps or warmup_steps, warmup_steps, 1))

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps == 0:
            return jnp.full_like(step, peak_lr)
        return peak_lr * jnp.clip(step / warmup_steps, 0.0, 1.0)

    return schedule


# --------------------------------------------------------------------------------------------
# Schedules over the progress of a time budget (train.budget_minutes).
# --------------------------------------------------------------------------------------------

# The step schedule each optimizer uses (bertlab.train.optimizer), and so its budget shape.
SHAPES = ("triangular", "bert", "constant")


def of_progress(shape: str, peak_lr: float, warmup_fraction: float, *,
                warmup_from: float = 0.0) -> Schedule:
    """`progress -> lr` with progress = the fraction of the time budget spent, in [0, 1].

    The same three shapes as the step schedules with T = 1 and W = warmup_fraction, because a
    budgeted run does not know its step count in advance (cramming, Geiping & Goldstein 2022;
    academic-budget-bert, Izsak et al. 2021: the schedule follows the clock). The host measures
    the progress and passes it to the step as a scalar, so the step compiles once.
    `warmup_from` is the rate at progress 0 as a fraction of the peak: cramming's budget-triangle2
    rises from 0.25 x peak to the peak at 75 % of the budget, then falls to 0
    (warmup_fraction=0.75, warmup_from=0.25)."""
    if shape not in SHAPES:
        raise ValueError(f"schedule: unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"schedule: warmup_fraction={warmup_fraction} must lie in [0, 1)")
    if not 0.0 <= warmup_from <= 1.0:
        raise ValueError(f"schedule: warmup_from={warmup_from} must lie in [0, 1]")
    if peak_lr < 0:
        raise ValueError(f"schedule: the peak learning rate must be >= 0, got {peak_lr}")
    w = float(warmup_fraction)

    def schedule(progress):
        p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
        warm = warmup_from + (1.0 - warmup_from) * p / max(w, 1e-12)
        if shape == "triangular":
            after = (1.0 - p) / (1.0 - w)
        elif shape == "bert":
            after = 1.0 - p
        else:
            after = jnp.ones_like(p)
        return peak_lr * jnp.where(p < w, warm, after)

    return schedule
