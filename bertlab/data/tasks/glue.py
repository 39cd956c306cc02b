"""GLUE's nine tasks (and the AX diagnostic) from the `glue_data/<TASK>/*.tsv` layout.

The files are the ones written by the standard GLUE download script. They are read the way GLUE's
own tools read them: tab-separated with no quoting at all (quotes are ordinary characters; MNLI
and MRPC sentences contain unbalanced ones), UTF-8 with an optional BOM (MRPC has one).

Columns are found by their header names, so a file from a different release with extra or
reordered columns still loads, and a file of the wrong task fails on its header. CoLA's train and
dev files are the exception: they have no header, and `LAYOUTS` names their four columns.

Every row must have as many columns as the header; a row that does not, or a label outside the
task's label set, stops loading with the file and line. The one known exception is QQP, whose
official train.tsv holds a few questions broken over two lines by an embedded newline (e.g. line
97,931): for QQP such short or long rows are skipped and counted in `Split.dropped`, as the
HuggingFace `glue` script does.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from bertlab.data.tasks.registry import UNLABELLED, Split


class GlueFormatError(ValueError):
    """A GLUE file that does not have its task's layout; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class GlueLayout:
    directory: str  # the folder under glue_data/
    text_columns: tuple[str, ...]  # header names of the one or two text columns
    label_column: str  # header name; test files lack it
    label_values: tuple[str, ...] | None  # raw label strings in class-id order; None: a score
    split_files: dict[str, str]  # split name -> file name
    id_column: str | None = "index"  # header name of the row id, where files have one
    headerless_columns: tuple[str, ...] | None = None  # names for train/dev files with no header
    skip_malformed_rows: bool = False  # the official data has broken rows (QQP only)


_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_MNLI_MATCHED = {"train": "train.tsv", "dev": "dev_matched.tsv", "test": "test_matched.tsv",
                 "dev_matched": "dev_matched.tsv", "test_matched": "test_matched.tsv",
                 "dev_mismatched": "dev_mismatched.tsv", "test_mismatched": "test_mismatched.tsv"}
_MNLI_MISMATCHED = {"train": "train.tsv", "dev": "dev_mismatched.tsv",
                    "test": "test_mismatched.tsv", "dev_mismatched": "dev_mismatched.tsv",
                    "test_mismatched": "test_mismatched.tsv"}
_NLI_VALUES = ("entailment", "neutral", "contradiction")  # same order as tasks.NLI_LABELS

LAYOUTS: dict[str, GlueLayout] = {
    # CoLA train/dev: source code, label, the original author's mark ('*' or blank), sentence.
    "cola": GlueLayout("CoLA", ("sentence",), "label", ("0", "1"), _SPLITS,
                       headerless_columns=("source", "label", "original_mark", "sentence")),
    "sst2": GlueLayout("SST-2", ("sentence",), "label", ("0", "1"), _SPLITS),
    "mrpc": GlueLayout("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), _SPLITS),
    # STS-B: index genre filename year old_index source1 source2 sentence1 sentence2 score.
    # sts-*: the STS Benchmark's own files under original/, whose test file has its gold scores.
    "stsb": GlueLayout("STS-B", ("sentence1", "sentence2"), "score", None,
                       {**_SPLITS, "sts-train": "original/sts-train.tsv",
                        "sts-dev": "original/sts-dev.tsv", "sts-test": "original/sts-test.tsv"}),
    "qqp": GlueLayout("QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), _SPLITS,
                      id_column="id", skip_malformed_rows=True),
    # MNLI: train has label1 + gold_label, dev label1..label5 + gold_label; gold_label is last.
    "mnli": GlueLayout("MNLI", ("sentence1", "sentence2"), "gold_label", _NLI_VALUES,
                       _MNLI_MATCHED),
    "mnli-mm": GlueLayout("MNLI", ("sentence1", "sentence2"), "gold_label", _NLI_VALUES,
                          _MNLI_MISMATCHED),
    "qnli": GlueLayout("QNLI", ("question", "sentence"), "label",
                       ("entailment", "not_entailment"), _SPLITS),
    "rte": GlueLayout("RTE", ("sentence1", "sentence2"), "label",
                      ("entailment", "not_entailment"), _SPLITS),
    "wnli": GlueLayout("WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), _SPLITS),
    "ax": GlueLayout("diagnostic", ("sentence1", "sentence2"), "label", _NLI_VALUES,
                     {"test": "diagnostic.tsv"}),
}

STSB_SCORE_RANGE = (0.0, 5.0)


def glue_file(task: str, data_dir: str, split: str) -> str:
    """The path of `split` of `task`, given glue_data/ or the task's own folder."""
    layout = _layout(task)
    if split not in layout.split_files:
        raise ValueError(f"GLUE task {task!r} has no split {split!r}; "
                         f"its splits: {', '.join(layout.split_files)}")
    name = layout.split_files[split]
    candidates = [os.path.join(data_dir, layout.directory, name), os.path.join(data_dir, name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"GLUE {task} {split}: none of {', '.join(candidates)} exists "
                            f"(data_dir should be glue_data/ or glue_data/{layout.directory}/)")


def load_glue(task: str, data_dir: str, split: str, *, limit: int | None = None) -> Split:
    """One split of a GLUE task; test files give -1 labels and their `index` ids."""
    layout = _layout(task)
    path = glue_file(task, data_dir, split)
    if task == "stsb" and split.startswith("sts-"):
        return read_sts_benchmark(path, limit=limit)
    headerless = layout.headerless_columns is not None and split in ("train", "dev")
    return read_glue_tsv(path, layout, headerless=headerless, limit=limit)


def read_glue_tsv(path: str, layout: GlueLayout, *, headerless: bool = False,
                  limit: int | None = None) -> Split:
    """Rows of one GLUE TSV file. The label column is optional: test files have none."""
    texts: list[list[str]] = [[] for _ in layout.text_columns]
    labels: list[float] = []
    ids: list[str] = []
    dropped = 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quotechar=None)
        try:
            if headerless:
                header = list(layout.headerless_columns)
            else:
                header = next(rows, None)
                if header is None:
                    raise GlueFormatError(f"{path}: file is empty (expected a header line)")
            columns = _locate_columns(path, header, layout, headerless)
            text_at, label_at, id_at = columns
            for row in rows:
                if limit is not None and len(labels) >= limit:
                    break
                if len(row) != len(header):
                    if layout.skip_malformed_rows:
                        dropped += 1
                        continue
                    raise GlueFormatError(
                        f"{path}:{rows.line_num}: expected {len(header)} tab-separated columns "
                        f"({' | '.join(header)}), found {len(row)}")
                for column, index in zip(texts, text_at):
                    column.append(row[index])
                labels.append(UNLABELLED if label_at is None else
                              _parse_label(row[label_at], layout, path, rows.line_num))
                if id_at is not None:
                    ids.append(row[id_at])
        except UnicodeDecodeError as err:
            raise GlueFormatError(
                f"{path}: after line {rows.line_num}: not UTF-8 ({err})") from None
    dtype = np.float32 if layout.label_values is None else np.int32
    return Split(texts=texts[0], text_pairs=texts[1] if len(texts) == 2 else None,
                 labels=np.asarray(labels, dtype=dtype), ids=ids if id_at is not None else None,
                 dropped=dropped, source=path)


# The STS Benchmark's files (ixa2.si.ehu.eus/stswiki): no header; genre, file, year, id, score,
# sentence 1, sentence 2, and on some rows two more columns naming the sentences' sources.
_STS_COLUMNS = ("genre", "filename", "year", "id", "score", "sentence1", "sentence2")


def read_sts_benchmark(path: str, *, limit: int | None = None) -> Split:
    """Rows of sts-{train,dev,test}.tsv. The test file is the one with gold scores (GLUE's
    test.tsv has none): the split MTEB and sentence-transformers report STS-B figures on."""
    layout = LAYOUTS["stsb"]  # its score column's name and range, for the error messages
    texts, pairs, labels, ids = [], [], [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quotechar=None)
        for row in rows:
            if limit is not None and len(labels) >= limit:
                break
            if len(row) not in (7, 9):
                raise GlueFormatError(
                    f"{path}:{rows.line_num}: expected 7 tab-separated columns "
                    f"({' | '.join(_STS_COLUMNS)}) or 9 (+ two source columns), found {len(row)}")
            texts.append(row[5])
            pairs.append(row[6])
            labels.append(_parse_label(row[4], layout, path, rows.line_num))
            ids.append(row[3])
    return Split(texts=texts, text_pairs=pairs, labels=np.asarray(labels, np.float32), ids=ids,
                 source=path)


def _layout(task: str) -> GlueLayout:
    if task not in LAYOUTS:
        raise KeyError(f"unknown GLUE task {task!r}; GLUE tasks: {', '.join(LAYOUTS)}")
    return LAYOUTS[task]


def _locate_columns(path, header, layout, headerless):
    where = "the built-in column names" if headerless else "header (line 1)"

    def position(name):
        if name not in header:
            raise GlueFormatError(f"{path}: {where} has no column {name!r}; "
                                  f"columns: {' | '.join(header)}")
        return header.index(name)

    text_at = [position(name) for name in layout.text_columns]
    # The label is the last column that carries the name (MNLI puts gold_label last).
    label_at = (len(header) - 1 - header[::-1].index(layout.label_column)
                if layout.label_column in header else None)
    id_at = header.index(layout.id_column) if layout.id_column in header else None
    return text_at, label_at, id_at


def _parse_label(raw: str, layout: GlueLayout, path: str, line: int) -> float:
    if layout.label_values is not None:
        if raw not in layout.label_values:
            raise GlueFormatError(f"{path}:{line}: label {raw!r} in column "
                                  f"{layout.label_column!r} is not one of {layout.label_values}")
        return layout.label_values.index(raw)
    try:
        score = float(raw)
    except ValueError:
        raise GlueFormatError(f"{path}:{line}: score {raw!r} in column "
                              f"{layout.label_column!r} is not a number") from None
    low, high = STSB_SCORE_RANGE
    if not low <= score <= high:
        raise GlueFormatError(f"{path}:{line}: score {score} in column {layout.label_column!r} "
                              f"is outside [{low}, {high}]")
    return score
