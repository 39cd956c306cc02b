"""The GLUE leaderboard's submission files: one TSV per task, zipped together.

The server (gluebenchmark.com, "submit a model") takes a zip of eleven files and rejects the whole
upload when one is misnamed, has another header, a label string it does not know or a row count
other than its test set's. These rules live here, in one table, so writing and checking share them:

    file         task     rows     prediction column
    CoLA.tsv     cola     1063     0 / 1
    SST-2.tsv    sst2     1821     0 / 1
    MRPC.tsv     mrpc     1725     0 / 1
    STS-B.tsv    stsb     1379     a score, clipped to [0, 5]
    QQP.tsv      qqp      390965   0 / 1
    MNLI-m.tsv   mnli     9796     entailment / neutral / contradiction
    MNLI-mm.tsv  mnli-mm  9847     entailment / neutral / contradiction
    QNLI.tsv     qnli     5463     entailment / not_entailment
    RTE.tsv      rte      3000     entailment / not_entailment
    WNLI.tsv     wnli     146      0 / 1
    AX.tsv       ax       1104     entailment / neutral / contradiction (an MNLI model's output)

Every file starts with the header `index<TAB>prediction`; `index` is the test file's own index
column, in the test file's order. Label strings are the raw labels of the task's training files
(bertlab.data.tasks.glue.LAYOUTS), so a class id maps to what the server expects without a
second table.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Sequence

import numpy as np

from bertlab.data.tasks.glue import LAYOUTS
from bertlab.files import write_text

HEADER = ("index", "prediction")


@dataclasses.dataclass(frozen=True)
class SubmissionFile:
    task: str  # a key of bertlab.data.tasks.registry.TASKS
    file_name: str
    rows: int  # the official test set's size


SUBMISSION_FILES: tuple[SubmissionFile, ...] = (
    SubmissionFile("cola", "CoLA.tsv", 1063),
    SubmissionFile("sst2", "SST-2.tsv", 1821),
    SubmissionFile("mrpc", "MRPC.tsv", 1725),
    SubmissionFile("stsb", "STS-B.tsv", 1379),
    SubmissionFile("qqp", "QQP.tsv", 390965),
    SubmissionFile("mnli", "MNLI-m.tsv", 9796),
    SubmissionFile("mnli-mm", "MNLI-mm.tsv", 9847),
    SubmissionFile("qnli", "QNLI.tsv", 5463),
    SubmissionFile("rte", "RTE.tsv", 3000),
    SubmissionFile("wnli", "WNLI.tsv", 146),
    SubmissionFile("ax", "AX.tsv", 1104),
)
BY_TASK = {entry.task: entry for entry in SUBMISSION_FILES}
STSB_RANGE = (0.0, 5.0)


class SubmissionError(ValueError):
    """Predictions the server would reject; the message names the task, file and row."""


def submission_entry(task: str) -> SubmissionFile:
    if task not in BY_TASK:
        raise SubmissionError(f"task {task!r} has no GLUE submission file; GLUE tasks: "
                              f"{', '.join(BY_TASK)}")
    return BY_TASK[task]


def allowed_labels(task: str) -> tuple[str, ...] | None:
    """The prediction strings the server accepts for `task`; None for STS-B's scores."""
    return LAYOUTS[task].label_values


def prediction_strings(task: str, logits: np.ndarray) -> list[str]:
    """The server's prediction column from a model's outputs (N, num_labels): the argmax class's
    raw label, or for STS-B the score (column 0) clipped to the scale, 3 decimals."""
    logits = np.asarray(logits)
    labels = allowed_labels(task)
    if labels is None:
        scores = np.clip(logits.reshape(len(logits), -1)[:, 0], *STSB_RANGE)
        return [f"{score:.3f}" for score in scores]
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise SubmissionError(f"{task}: outputs of shape {logits.shape} do not match its "
                              f"{len(labels)} labels {labels}")
    return [labels[i] for i in np.argmax(logits, axis=-1)]


def write_task_file(out_dir: str, task: str, ids: Sequence[str], predictions: Sequence[str],
                    *, check_rows: bool = True) -> str:
    """out_dir/<File>.tsv for one task, checked against the server's rules before it is written
    (atomically: a failed check leaves no half file)."""
    entry = submission_entry(task)
    if len(ids) != len(predictions):
        raise SubmissionError(f"{task}: {len(ids)} ids for {len(predictions)} predictions")
    lines = ["\t".join(HEADER)] + [f"{i}\t{p}" for i, p in zip(ids, predictions)]
    path = os.path.join(out_dir, entry.file_name)
    check_lines(task, lines, path, check_rows=check_rows)
    os.makedirs(out_dir, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")
    return path


def check_lines(task: str, lines: Sequence[str], path: str, *, check_rows: bool = True) -> None:
    """Raises SubmissionError naming path:line when the file breaks a rule of the server's."""
    entry = submission_entry(task)
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise SubmissionError(f"{path}:1: header must be {'<TAB>'.join(HEADER)!r}, got "
                              f"{(lines[0] if lines else '')!r}")
    if check_rows and len(lines) - 1 != entry.rows:
        raise SubmissionError(f"{path}: {len(lines) - 1} prediction rows; the {task} test set "
                              f"has {entry.rows}")
    labels = allowed_labels(task)
    seen = set()
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2:
            raise SubmissionError(f"{path}:{number}: {len(fields)} columns, expected 2")
        index, prediction = fields
        if index in seen:
            raise SubmissionError(f"{path}:{number}: index {index!r} repeats")
        seen.add(index)
        if labels is None:
            try:
                value = float(prediction)
            except ValueError:
                raise SubmissionError(f"{path}:{number}: {prediction!r} is not a number "
                                      "(STS-B takes a similarity score)") from None
            if not (STSB_RANGE[0] <= value <= STSB_RANGE[1]):
                raise SubmissionError(f"{path}:{number}: score {value} outside {STSB_RANGE}")
        elif prediction not in labels:
            raise SubmissionError(f"{path}:{number}: label {prediction!r} is not one of {labels}")


def check_submission(out_dir: str, *, tasks: Sequence[str] | None = None,
                     check_rows: bool = True) -> list[str]:
    """Checks every present submission file of out_dir (or exactly `tasks`); returns the files."""
    checked = []
    for entry in SUBMISSION_FILES:
        path = os.path.join(out_dir, entry.file_name)
        if tasks is not None and entry.task not in tasks:
            continue
        if not os.path.exists(path):
            if tasks is not None:
                raise SubmissionError(f"{path}: missing ({entry.task})")
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        check_lines(entry.task, lines, path, check_rows=check_rows)
        checked.append(path)
    return checked


def zip_submission(out_dir: str, zip_path: str | None = None) -> str:
    """submission.zip of the task files in out_dir, flat (the server reads names at the root)."""
    files = check_submission(out_dir)
    if not files:
        raise SubmissionError(f"{out_dir}: no GLUE submission files to zip")
    zip_path = zip_path or os.path.join(out_dir, "submission.zip")
    tmp = zip_path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, os.path.basename(path))
    os.replace(tmp, zip_path)
    return zip_path
