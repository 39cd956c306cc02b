"""Evaluation metrics for fine-tuning, and the GLUE score as the leaderboard computes it.

Pure functions of (predictions, labels): numpy, and scipy.stats for the correlations. Degenerate cases return the value that ranks a
model correctly instead of NaN: a classifier that predicts one class for everything has Matthews
correlation 0, a regressor that predicts a constant has Pearson and Spearman correlation 0, and
F1 is 0 when there are no positives predicted or present (the scikit-learn convention). Empty or
mismatched inputs are errors, never a silent NaN in a results table.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from bertlab.data.tasks.registry import TASKS, TaskSpec, canonical_name

# The nine tasks the GLUE leaderboard averages; MNLI enters once, as the mean of m and mm.
GLUE_SCORE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def _pair(first, second, names=("predictions", "labels")):
    """Both inputs as 1-D arrays of one length, or an error that says which is wrong."""
    first, second = np.asarray(first), np.asarray(second)
    if first.ndim != 1 or second.ndim != 1:
        raise ValueError(f"{names[0]} and {names[1]} must be 1-D, got shapes {first.shape} "
                         f"and {second.shape}")
    if len(first) != len(second):
        raise ValueError(f"{names[0]} and {names[1]} differ in length: "
                         f"{len(first)} vs {len(second)}")
    if len(first) == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty: no examples to score")
    for name, values in zip(names, (first, second)):
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise ValueError(f"{name} contain NaN or infinite values")
    return first, second


def accuracy(preds, labels) -> float:
    preds, labels = _pair(preds, labels)
    return float(np.mean(preds == labels))


def f1(preds, labels, positive=1) -> float:
    """F1 of the `positive` class: 2TP / (2TP + FP + FN)."""
    preds, labels = _pair(preds, labels)
    predicted, actual = preds == positive, labels == positive
    true_positives = np.sum(predicted & actual)
    denominator = np.sum(predicted) + np.sum(actual)
    return float(2 * true_positives / denominator) if denominator else 0.0


def macro_f1(preds, labels) -> float:
    """Unweighted mean of the per-class F1 over the classes present in labels or predictions."""
    preds, labels = _pair(preds, labels)
    classes = np.union1d(preds, labels)
    return float(np.mean([f1(preds, labels, positive=c) for c in classes]))


def confusion_matrix(preds, labels, num_labels: int) -> np.ndarray:
    """counts[true, predicted] (rows are the gold labels, as in scikit-learn)."""
    preds, labels = _pair(preds, labels)
    for name, values in (("predictions", preds), ("labels", labels)):
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise ValueError(f"{name} must be class ids (integers)")
        if values.min() < 0 or values.max() >= num_labels:
            raise ValueError(f"{name} must lie in [0, {num_labels}), found "
                             f"[{values.min()}, {values.max()}]")
    counts = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(counts, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return counts


def matthews(preds, labels) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K); 0 when either side
    is constant, where the formula divides by zero."""
    preds, labels = _pair(preds, labels)
    classes, ids = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    counts = confusion_matrix(ids[len(labels):], ids[:len(labels)], len(classes)).astype(
        np.float64)
    n, correct = counts.sum(), np.trace(counts)
    true_totals, predicted_totals = counts.sum(axis=1), counts.sum(axis=0)
    covariance = correct * n - predicted_totals @ true_totals
    variance = (n * n - predicted_totals @ predicted_totals) * (n * n - true_totals @ true_totals)
    return float(covariance / np.sqrt(variance)) if variance > 0 else 0.0


def _is_constant(values: np.ndarray) -> bool:
    return bool(values.min() == values.max())


def pearson(x, y) -> float:
    """Pearson correlation (scipy.stats.pearsonr); 0 when either side is constant, where scipy
    gives NaN with a warning."""
    x, y = _pair(x, y, ("x", "y"))
    if _is_constant(x) or _is_constant(y):  # also a single pair
        return 0.0
    from scipy import stats  # deferred: task loaders import this module and not scipy (~0.5 s)

    result = stats.pearsonr(x.astype(np.float64), y.astype(np.float64))
    return float(np.clip(result.statistic, -1.0, 1.0))


def average_ranks(values) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span (scipy's 'average')."""
    from scipy import stats

    return stats.rankdata(np.asarray(values).reshape(-1), method="average")


def spearman(x, y) -> float:
    """Spearman correlation (scipy.stats.spearmanr: Pearson correlation of the average ranks);
    0 when either side is constant."""
    x, y = _pair(x, y, ("x", "y"))
    if _is_constant(x) or _is_constant(y):
        return 0.0
    from scipy import stats

    return float(np.clip(stats.spearmanr(x, y).statistic, -1.0, 1.0))


def accuracy_f1_mean(preds, labels) -> float:
    return (accuracy(preds, labels) + f1(preds, labels)) / 2.0


def pearson_spearman_mean(preds, labels) -> float:
    return (pearson(preds, labels) + spearman(preds, labels)) / 2.0


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy, "f1": f1, "macro_f1": macro_f1, "matthews": matthews,
    "pearson": pearson, "spearman": spearman, "accuracy_f1_mean": accuracy_f1_mean,
    "pearson_spearman_mean": pearson_spearman_mean,
}
_COMPOSITES = {"accuracy_f1_mean": ("accuracy", "f1"),
               "pearson_spearman_mean": ("pearson", "spearman")}


def task_metrics(spec: TaskSpec, predictions, labels) -> dict[str, float]:
    """Every metric of `spec`. Predictions are class ids, or logits of shape (N, num_labels)
    (argmax taken); for regression, values of shape (N,) or (N, 1)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if labels.size and np.all(labels == -1):
        raise ValueError(f"{spec.name}: labels are all -1, an unlabelled (test) split; "
                         f"score it on the task's server instead")
    if spec.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
    elif predictions.ndim == 2:
        if predictions.shape[1] != spec.num_labels:
            raise ValueError(f"{spec.name}: logits have {predictions.shape[1]} columns for "
                             f"{spec.num_labels} labels")
        predictions = np.argmax(predictions, axis=-1)
    return {name: METRICS[name](predictions, labels) for name in spec.metrics}


def task_score(task: str, metrics: Mapping[str, float]) -> float:
    """The number a task contributes to the GLUE score: its primary metric, where a two-metric
    task (MRPC, QQP, STS-B) may give just the two parts, as leaderboard rows do."""
    name = TASKS[canonical_name(task)].metric
    if name in metrics:
        return float(metrics[name])
    parts = _COMPOSITES.get(name, ())
    if parts and all(part in metrics for part in parts):
        return float(np.mean([metrics[part] for part in parts]))
    raise KeyError(f"{task}: results have no {name!r}"
                   + (f" (nor {' and '.join(parts)})" if parts else "")
                   + f"; found {', '.join(metrics) or 'nothing'}")


def glue_score(results: Mapping[str, Mapping[str, float]],
               tasks: tuple[str, ...] = GLUE_SCORE_TASKS) -> float:
    """The GLUE average, computed as the leaderboard does (Wang et al. 2019).

    Each task contributes one number: CoLA Matthews correlation; SST-2, QNLI, RTE, WNLI accuracy;
    MRPC and QQP the mean of F1 and accuracy; STS-B the mean of Pearson and Spearman; MNLI the mean
    of matched (`results["mnli"]`) and mismatched (`results["mnli-mm"]`) accuracy, so MNLI counts
    once, as one of nine tasks. AX is not averaged. The result is in the units given (fractions
    from task_metrics, or points from a paper). E.g. BERT-large's leaderboard row gives 80.5.
    Pass `tasks` to average a subset (e.g. without WNLI, as many papers do); every named task
    must be present.
    """
    tasks = tuple(canonical_name(t) for t in tasks)
    results = {canonical_name(task): metrics for task, metrics in results.items()}
    needed = [t for t in tasks if t != "mnli"] + (["mnli", "mnli-mm"] if "mnli" in tasks else [])
    missing = [t for t in needed if t not in results]
    if missing:
        raise KeyError(f"GLUE score needs results for {', '.join(missing)} "
                       f"(have {', '.join(results) or 'none'}); pass tasks= to average a subset")
    scores = []
    for task in tasks:
        score = task_score(task, results[task])
        if task == "mnli":
            score = (score + task_score("mnli-mm", results["mnli-mm"])) / 2.0
        scores.append(score)
    return float(np.mean(scores))


# The "Average" column of the BERT paper (Devlin et al. 2019, Table 1): one metric per task, MNLI
# matched and mismatched as two entries, WNLI left out.
BERT_PAPER_COLUMNS = (("mnli", "accuracy"), ("mnli-mm", "accuracy"), ("qqp", "f1"),
                      ("qnli", "accuracy"), ("sst2", "accuracy"), ("cola", "matthews"),
                      ("stsb", "spearman"), ("mrpc", "f1"), ("rte", "accuracy"))


def bert_paper_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """The BERT paper's GLUE average (BERT-base test: 79.6), which differs from glue_score."""
    results = {canonical_name(task): metrics for task, metrics in results.items()}
    missing = [f"{task} {metric}" for task, metric in BERT_PAPER_COLUMNS
               if metric not in results.get(task, {})]
    if missing:
        raise KeyError(f"the BERT paper average needs {', '.join(missing)}")
    return float(np.mean([results[task][metric] for task, metric in BERT_PAPER_COLUMNS]))
