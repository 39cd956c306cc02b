"""Per-example output tables: hand-computed rows in each format."""

import csv
import json
import math

import numpy as np
import pytest

from bertlab.data.tasks.prediction_table import prediction_rows, write_prediction_table


def test_classification_rows_carry_ids_texts_gold_and_probabilities():
    logits = np.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])  # probs (.25,.75), (.8,.2)
    rows = prediction_rows(logits=logits, label_names=["neg", "pos"], texts=["a", "b"],
                           text_pairs=["x", "y"], ids=["q7", "q9"], gold=np.array([1, 1]))
    assert rows[0] == {"id": "q7", "text": "a", "text_pair": "x", "gold": "pos",
                       "prediction": "pos", "prob_neg": 0.25, "prob_pos": 0.75, "correct": 1}
    assert rows[1]["prediction"] == "neg" and rows[1]["correct"] == 0
    assert rows[1]["prob_neg"] == pytest.approx(0.8)


def test_unlabelled_rows_and_default_ids():
    rows = prediction_rows(logits=np.array([[1.0, 0.0]]), label_names=["a", "b"], texts=["t"],
                           gold=np.array([-1]))
    assert rows[0]["id"] == "0" and rows[0]["gold"] == "" and rows[0]["correct"] == ""
    rows = prediction_rows(logits=np.array([[1.0, 0.0]]), label_names=["a", "b"], texts=["t"])
    assert "correct" not in rows[0] and rows[0]["gold"] == ""


def test_regression_rows():
    rows = prediction_rows(logits=np.array([[3.25], [1.0]]), label_names=[], texts=["a", "b"],
                           gold=np.array([4.0, np.nan]))
    assert rows[0] == {"id": "0", "text": "a", "gold": 4.0, "prediction": 3.25}
    assert rows[1]["gold"] == ""


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl"])
def test_formats_round_trip(tmp_path, ext):
    rows = prediction_rows(logits=np.array([[0.0, 1.0]]), label_names=["n", "p"],
                           texts=['he said "hi", twice\tok'], ids=["7"], gold=np.array([1]))
    path = write_prediction_table(str(tmp_path / f"out{ext}"), rows)
    with open(path, encoding="utf-8") as f:
        if ext == ".jsonl":
            back = [json.loads(line) for line in f]
            assert back == rows
        else:
            back = list(csv.DictReader(f, delimiter="," if ext == ".csv" else "\t"))
            assert back[0]["text"] == rows[0]["text"] and back[0]["prediction"] == "p"
            assert list(back[0]) == list(rows[0])


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown table format '.xlsx'"):
        write_prediction_table(str(tmp_path / "out.xlsx"), [])
