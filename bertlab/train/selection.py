"""Which evaluation metric picks a fine-tuning run's best epoch and best seed
(train.select_metric), and the rule for ties.

The default is the number the task is judged by on the GLUE leaderboard / in the BERT paper's
table: Matthews correlation for CoLA, F1 for MRPC and QQP, Spearman for STS-B, the task's
primary metric (accuracy) elsewhere. Any metric the task reports can be chosen instead, and for
every classification task also `macro_f1` and `matthews` (`f1` too when it has two classes);
for a regression task `pearson`, `spearman` and their mean; or `loss` (the eval split's mean
unweighted loss), where lower is better.

Ties: an epoch must be strictly better than the best so far to replace it, so on equal values
the EARLIER epoch is kept (and the earlier seed in train.seeds order). The earlier epoch reached
the value with fewer updates, so it is the less fitted model of the two at equal quality, and
early stopping counts an equal epoch as no gain, as it always has.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from bertlab.data.tasks.metrics import METRICS
from bertlab.data.tasks.registry import TaskSpec
from bertlab.train.loop import TrainConfigError

LOSS = "loss"
# The GLUE tasks whose leaderboard / BERT-paper column is not the task's primary metric (the
# registry's primary metric of MRPC, QQP and STS-B is the mean of their two metrics).
GLUE_SELECT = {"cola": "matthews", "mrpc": "f1", "qqp": "f1", "stsb": "spearman"}
CLASSIFICATION_EXTRA = ("accuracy", "macro_f1", "matthews")
REGRESSION_EXTRA = ("pearson", "spearman", "pearson_spearman_mean")


def selectable(spec: TaskSpec) -> tuple[str, ...]:
    """The names train.select_metric may take for this task, loss last."""
    if spec.is_regression:
        extra = REGRESSION_EXTRA
    else:
        extra = CLASSIFICATION_EXTRA + (("f1",) if spec.num_labels == 2 else ())
    names = list(spec.metrics) + [name for name in extra if name not in spec.metrics]
    return tuple(names) + (LOSS,)


def default_metric(spec: TaskSpec) -> str:
    return GLUE_SELECT.get(spec.name, spec.metric)


def select_metric(value: str, spec: TaskSpec) -> str:
    """train.select_metric resolved for this task ("" = default_metric), or a one-line error."""
    name = str(value).strip() or default_metric(spec)
    if name not in selectable(spec):
        raise TrainConfigError(f"train.select_metric={value!r} is not a metric of {spec.name}; "
                               f"choose one of {', '.join(selectable(spec))}")
    return name


def rank(metrics: Mapping[str, float], name: str) -> float:
    """Higher is better: the metric, or minus the loss; -inf when missing or not finite (a
    diverged epoch is never the best)."""
    value = metrics.get(name, float("nan"))
    if value is None or not math.isfinite(value):
        return -math.inf
    return -float(value) if name == LOSS else float(value)


def improves(candidate: Mapping[str, float], best: Mapping[str, float] | None, name: str) -> bool:
    """Whether `candidate` replaces `best`: strictly better only (ties keep the earlier one)."""
    return best is None or rank(candidate, name) > rank(best, name)


def best_of(results: list[dict], name: str) -> dict:
    """The seed result whose eval is best by `name`; the first in order on a tie."""
    best = None
    for result in results:
        if best is None or improves(result.get("eval") or {}, best.get("eval") or {}, name):
            best = result
    return best


def with_selected(result: dict, name: str, spec: TaskSpec, predictions: np.ndarray,
                  labels: np.ndarray) -> dict:
    """`result` plus the selected metric when the task does not report it by itself (e.g.
    matthews on SST-2): computed from the same logits (argmax; regression: the one output)."""
    if name in result:
        return result
    predictions = np.asarray(predictions)
    if spec.is_regression:
        predictions = predictions.reshape(len(predictions), -1)[:, 0]
    elif predictions.ndim == 2:
        predictions = np.argmax(predictions, axis=-1)
    return {**result, name: METRICS[name](predictions, np.asarray(labels))}
