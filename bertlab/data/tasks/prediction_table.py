"""Per-example outputs: one row per input with its id, text(s), gold label, prediction and scores.

Error analysis, ensembles and significance tests all start from the same table, so every
evaluation and prediction writes it in one shape. The format follows the file name: `.csv`,
`.tsv` or `.jsonl`. Columns, in order:

    id           the row's id from the data (GLUE `index`, `table.id_column`), else its 0-based
                 index in the split as read (before any subsetting: the id survives subsamples)
    text         the first text;  text_pair  the second one (pair tasks only)
    gold         the gold label's name, or the score for regression ("" when unlabelled)
    prediction   the predicted label's name, or the predicted score
    prob_<name>  one column per label: softmax probabilities (classification only)
    correct      1/0 when the gold label is known (classification only)
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Sequence

import numpy as np

from bertlab.files import write_text

FORMATS = (".csv", ".tsv", ".jsonl")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


def prediction_rows(*, logits: np.ndarray, label_names: Sequence[str], texts: Sequence[str],
                    text_pairs: Sequence[str] | None = None, ids: Sequence[str] | None = None,
                    gold: np.ndarray | None = None) -> list[dict]:
    """The table as dicts. `label_names` empty means regression (score in logits[:, 0]); `gold`
    holds class ids (-1 = unknown) or scores (NaN = unknown)."""
    logits = np.asarray(logits, np.float64)
    n = len(texts)
    if len(logits) != n:
        raise ValueError(f"{len(logits)} outputs for {n} texts")
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    regression = not label_names
    probs = None if regression else softmax(logits)
    rows = []
    for i in range(n):
        row = {"id": ids[i], "text": texts[i]}
        if text_pairs is not None:
            row["text_pair"] = text_pairs[i]
        if regression:
            known = gold is not None and np.isfinite(gold[i])
            row["gold"] = float(gold[i]) if known else ""
            row["prediction"] = round(float(logits[i, 0]), 6)
        else:
            known = gold is not None and int(gold[i]) >= 0
            predicted = int(np.argmax(logits[i]))
            row["gold"] = label_names[int(gold[i])] if known else ""
            row["prediction"] = label_names[predicted]
            for name, p in zip(label_names, probs[i]):
                row[f"prob_{name}"] = round(float(p), 6)
            if gold is not None:
                row["correct"] = int(predicted == int(gold[i])) if known else ""
        rows.append(row)
    return rows


def write_prediction_table(path: str, rows: Sequence[dict]) -> str:
    """Writes the rows as CSV/TSV/JSONL by the extension of `path`, atomically."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unknown table format {ext!r}; use one of {', '.join(FORMATS)}")
    if ext == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        columns = list(rows[0]) if rows else ["id", "text", "gold", "prediction"]
        writer = csv.DictWriter(buffer, columns, delimiter="," if ext == ".csv" else "\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    write_text(path, text)
    return path
