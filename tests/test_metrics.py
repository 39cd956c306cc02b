"""Metrics against values worked out by hand (and scipy as a reference), and the GLUE averages
against published leaderboard and paper rows."""

import numpy as np
import pytest
import scipy.stats

from bertlab.data.tasks import metrics
from bertlab.data.tasks.registry import TASKS

# preds vs labels: TP at 0 and 3, FP at 1, TN at 2, FN at 4.
PREDS = [1, 1, 0, 1, 0]
LABELS = [1, 0, 0, 1, 1]


def test_accuracy_and_f1_by_hand():
    assert metrics.accuracy(PREDS, LABELS) == pytest.approx(3 / 5)
    assert metrics.f1(PREDS, LABELS) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2/3
    # Class 0: predicted at 2 and 4, present at 1 and 2 -> TP 1, FP 1, FN 1.
    assert metrics.f1(PREDS, LABELS, positive=0) == pytest.approx(0.5)
    assert metrics.macro_f1(PREDS, LABELS) == pytest.approx((2 / 3 + 0.5) / 2)
    assert metrics.f1([0, 0], [0, 0]) == 0.0  # no positives anywhere


def test_matthews_binary_by_hand():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    assert metrics.matthews(PREDS, LABELS) == pytest.approx(1 / 6)
    assert metrics.matthews(LABELS, LABELS) == pytest.approx(1.0)
    assert metrics.matthews([1 - x for x in LABELS], LABELS) == pytest.approx(-1.0)


def test_matthews_multiclass_by_hand():
    # Correct 4 of 6, every class total 2: (4*6 - 12) / sqrt((36 - 12) * (36 - 12)) = 0.5
    assert metrics.matthews([0, 2, 1, 0, 1, 2], [0, 1, 2, 0, 1, 2]) == pytest.approx(0.5)


def test_degenerate_predictions_give_zero_not_nan():
    assert metrics.matthews([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert metrics.matthews([1, 1], [1, 1]) == 0.0
    assert metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert metrics.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0


def test_empty_and_mismatched_inputs_are_errors():
    for metric in (metrics.accuracy, metrics.f1, metrics.matthews, metrics.pearson,
                   metrics.spearman):
        with pytest.raises(ValueError, match="empty"):
            metric([], [])
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        metrics.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="must be 1-D"):
        metrics.accuracy([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="x contain NaN"):
        metrics.pearson([np.nan, 1.0], [1.0, 2.0])


def test_pearson_by_hand_and_against_scipy():
    # x deviations (-1.5, -0.5, 0.5, 1.5), y deviations (-3.25, -1.25, 0.75, 3.75):
    # sum xy = 11.5, sum xx = 5, sum yy = 26.75.
    x, y = [1, 2, 3, 4], [2, 4, 6, 9]
    assert metrics.pearson(x, y) == pytest.approx(11.5 / np.sqrt(5 * 26.75))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert metrics.pearson(a, a + b) == pytest.approx(scipy.stats.pearsonr(a, a + b)[0])


def test_spearman_uses_average_ranks_for_ties():
    assert metrics.average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    # Ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): sum xy 4.5, sum xx 4.5, sum yy 5 -> 3/sqrt(10).
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / np.sqrt(10))
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=200).astype(float)  # STS-like scores, many ties
    b = a + rng.integers(-2, 3, size=200)
    assert metrics.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0])


def test_confusion_matrix_rows_are_gold_labels():
    counts = metrics.confusion_matrix([0, 2, 1, 0], [0, 1, 1, 2], num_labels=3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        metrics.confusion_matrix([0, 1], [0, 2], num_labels=2)


def test_task_metrics_per_glue_task():
    cola = metrics.task_metrics(TASKS["cola"], PREDS, LABELS)
    assert cola == pytest.approx({"matthews": 1 / 6, "accuracy": 0.6})
    logits = np.eye(2)[PREDS] * 3.0 - 1.0  # argmax gives PREDS
    mrpc = metrics.task_metrics(TASKS["mrpc"], logits, LABELS)
    assert mrpc == pytest.approx({"accuracy": 0.6, "f1": 2 / 3,
                                  "accuracy_f1_mean": (0.6 + 2 / 3) / 2})
    stsb = metrics.task_metrics(TASKS["stsb"], np.asarray([[1.0], [2.0], [2.0], [3.0]]),
                                np.asarray([1.0, 3.0, 2.0, 4.0]))
    assert stsb["spearman"] == pytest.approx(3 / np.sqrt(10))
    assert stsb["pearson_spearman_mean"] == pytest.approx((stsb["pearson"] + stsb["spearman"]) / 2)
    assert metrics.task_metrics(TASKS["mnli"], [0, 1, 2], [0, 2, 2]) == pytest.approx(
        {"accuracy": 2 / 3})


def test_task_metrics_refuses_unlabelled_splits_and_wrong_logits():
    with pytest.raises(ValueError, match="unlabelled"):
        metrics.task_metrics(TASKS["sst2"], [0, 1], [-1, -1])
    with pytest.raises(ValueError, match="3 columns for 2 labels"):
        metrics.task_metrics(TASKS["sst2"], np.zeros((2, 3)), [0, 1])


# GLUE leaderboard rows (test sets), in points. The leaderboard's score averages nine task scores:
# MRPC/QQP mean of F1 and accuracy, STS-B mean of Pearson and Spearman, MNLI mean of m and mm.
BERT_LARGE = {"cola": {"matthews": 60.5}, "sst2": {"accuracy": 94.9},
              "mrpc": {"f1": 89.3, "accuracy": 85.4}, "stsb": {"pearson": 87.6, "spearman": 86.5},
              "qqp": {"f1": 72.1, "accuracy": 89.3}, "mnli": {"accuracy": 86.7},
              "mnli-mm": {"accuracy": 85.9}, "qnli": {"accuracy": 92.7},
              "rte": {"accuracy": 70.1}, "wnli": {"accuracy": 65.1}}
BERT_BASE = {"CoLA": {"matthews": 52.1}, "SST-2": {"accuracy": 93.5},
             "MRPC": {"f1": 88.9, "accuracy": 84.8}, "STS-B": {"pearson": 87.1, "spearman": 85.8},
             "QQP": {"f1": 71.2, "accuracy": 89.2}, "MNLI-m": {"accuracy": 84.6},
             "MNLI-mm": {"accuracy": 83.4}, "QNLI": {"accuracy": 90.5},
             "RTE": {"accuracy": 66.4}, "WNLI": {"accuracy": 65.1}}


def test_glue_score_matches_the_leaderboard():
    # BERT-large: (60.5 + 94.9 + 87.35 + 87.05 + 80.7 + 86.3 + 92.7 + 70.1 + 65.1) / 9 = 80.52
    assert metrics.glue_score(BERT_LARGE) == pytest.approx(724.7 / 9)
    assert round(metrics.glue_score(BERT_LARGE), 1) == 80.5
    assert round(metrics.glue_score(BERT_BASE), 1) == 78.3  # leaderboard names work too


def test_glue_score_subset_and_missing_tasks():
    without_wnli = tuple(t for t in metrics.GLUE_SCORE_TASKS if t != "wnli")
    assert metrics.glue_score(BERT_LARGE, tasks=without_wnli) == pytest.approx((724.7 - 65.1) / 8)
    partial = {k: v for k, v in BERT_LARGE.items() if k not in ("mnli-mm", "rte")}
    with pytest.raises(KeyError, match="needs results for rte, mnli-mm"):
        metrics.glue_score(partial)
    with pytest.raises(KeyError, match="no 'matthews'"):
        metrics.glue_score({**BERT_LARGE, "cola": {"accuracy": 80.0}})


def test_bert_paper_average():
    # Devlin et al. 2019, Table 1: MNLI m and mm count separately, F1 for QQP/MRPC, Spearman for
    # STS-B, no WNLI. BERT-base 79.6, BERT-large 82.1.
    base = {**BERT_BASE, "STS-B": {"spearman": 85.8}}
    assert round(metrics.bert_paper_average(base), 1) == 79.6
    assert round(metrics.bert_paper_average(BERT_LARGE), 1) == 82.1
    with pytest.raises(KeyError, match="qqp f1"):
        metrics.bert_paper_average({**BERT_LARGE, "qqp": {"accuracy": 89.3}})


def test_glue_score_from_task_metrics_output():
    classification = ("cola", "sst2", "mrpc", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli")
    results = {task: metrics.task_metrics(TASKS[task], PREDS, LABELS) for task in classification}
    results["stsb"] = metrics.task_metrics(TASKS["stsb"], [1.0, 2.0, 2.0, 3.0],
                                           [1.0, 3.0, 2.0, 4.0])
    accuracy_f1 = (0.6 + 2 / 3) / 2
    expected = (1 / 6 + 0.6 + accuracy_f1 + results["stsb"]["pearson_spearman_mean"] + accuracy_f1
                + 0.6 + 0.6 + 0.6 + 0.6) / 9
    assert metrics.glue_score(results) == pytest.approx(expected)
