"""SNLI and MultiNLI in their official jsonl release (`snli_1.0_*.jsonl`, `multinli_1.0_*.jsonl`).

Each line is one JSON object with `sentence1` (premise), `sentence2` (hypothesis) and
`gold_label`. Pairs whose annotators reached no majority carry the gold label "-" and are not
used for training or evaluation by anyone (Bowman et al. 2015): they are dropped and counted in
`Split.dropped`, as are pairs with gold label -1 (the HuggingFace export of the same pairs) or
none at all. The label order is entailment=0, neutral=1, contradiction=2; integer labels 0-2 are
read in that order too.
"""

from __future__ import annotations

import os

import numpy as np

from bertlab.data.tasks.table import jsonl_objects
from bertlab.data.tasks.registry import NLI_LABELS, Split

NO_GOLD_LABEL = ("-", "-1", "")  # plus a missing or null field, and the integer -1

SPLIT_FILES = {
    "snli": {"train": "snli_1.0_train.jsonl", "dev": "snli_1.0_dev.jsonl",
             "test": "snli_1.0_test.jsonl"},
    "multinli": {"train": "multinli_1.0_train.jsonl", "dev": "multinli_1.0_dev_matched.jsonl",
                 "dev_matched": "multinli_1.0_dev_matched.jsonl",
                 "dev_mismatched": "multinli_1.0_dev_mismatched.jsonl"},
}
# The folders the official zip files unpack into.
RELEASE_FOLDERS = {"snli": "snli_1.0", "multinli": "multinli_1.0"}


class NLIFormatError(ValueError):
    """A jsonl line that is not an NLI example; the message names file and line."""


def nli_file(task: str, data_dir: str, split: str) -> str:
    """The path of `split`, in data_dir or in the release folder inside it."""
    if task not in SPLIT_FILES:
        raise KeyError(f"unknown NLI jsonl task {task!r}; known: {', '.join(SPLIT_FILES)}")
    files = SPLIT_FILES[task]
    if split not in files:
        raise ValueError(f"{task} has no split {split!r}; its splits: {', '.join(files)}")
    candidates = [os.path.join(data_dir, files[split]),
                  os.path.join(data_dir, RELEASE_FOLDERS[task], files[split])]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{task} {split}: none of {', '.join(candidates)} exists")


def load_nli(task: str, data_dir: str, split: str, *, limit: int | None = None) -> Split:
    return read_nli_jsonl(nli_file(task, data_dir, split), limit=limit)


def read_nli_jsonl(path: str, *, limit: int | None = None, premise_field: str = "sentence1",
                   hypothesis_field: str = "sentence2", label_field: str = "gold_label",
                   id_field: str = "pairID") -> Split:
    """Labelled pairs of one jsonl file; `limit` counts kept pairs. Ids come from `pairID` when
    every kept line has one."""
    premises: list[str] = []
    hypotheses: list[str] = []
    labels: list[int] = []
    ids: list[str | None] = []
    dropped = 0
    with open(path, encoding="utf-8-sig") as f:
        for line_number, record in jsonl_objects(f, path, NLIFormatError):
            if limit is not None and len(labels) >= limit:
                break
            label = _label_id(record.get(label_field), path, line_number, label_field)
            if label is None:
                dropped += 1
                continue
            premises.append(_text(record, premise_field, path, line_number))
            hypotheses.append(_text(record, hypothesis_field, path, line_number))
            labels.append(label)
            ids.append(None if record.get(id_field) is None else str(record[id_field]))
    return Split(texts=premises, text_pairs=hypotheses, labels=np.asarray(labels, np.int32),
                 ids=None if None in ids else ids, dropped=dropped, source=path)


def _label_id(value, path: str, line: int, field: str) -> int | None:
    """Class id, or None for a pair without a gold label."""
    if value is None or (isinstance(value, str) and value.strip() in NO_GOLD_LABEL):
        return None
    if isinstance(value, str) and value.strip() in NLI_LABELS:
        return NLI_LABELS.index(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return None
        if 0 <= value < len(NLI_LABELS):
            return value
    raise NLIFormatError(f"{path}:{line}: {field} {value!r} is not one of {NLI_LABELS}, "
                         f"0-2, or a no-gold marker ('-', -1)")


def _text(record: dict, field: str, path: str, line: int) -> str:
    if field not in record:
        raise NLIFormatError(f"{path}:{line}: no field {field!r}; fields: {', '.join(record)}")
    value = record[field]
    if not isinstance(value, str):
        raise NLIFormatError(f"{path}:{line}: {field} is {type(value).__name__}, not a string")
    return value
