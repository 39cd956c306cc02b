"""Any labelled text table: CSV, TSV or JSONL, with a mapping from its columns to ours.

The mapping names the `text` column, an optional `text_pair` column, the `label` column and an
optional `id_column`; e.g. Kaggle's Quora Insincere Questions is `text="question_text",
label="target", id_column="qid"`. Files may be compressed (.gz, .bz2, .xz).

Labels, in order of precedence:
- `regression=True`: labels are numbers, num_labels = 1.
- `label_names=(...)`: each label is one of the names, or an integer index into them.
- all labels are integers: they are the class ids themselves and num_labels = max + 1, so the
  mapping cannot shift between files (-1 marks an unlabelled row). Integers with gaps (ratings
  1-5) leave unused classes: pass label_names to map them yourself.
- otherwise labels are strings and the class ids follow the sorted label names. When a folder of
  split files is loaded, the names come from every split file in it, so train, dev and test agree.

A row whose label cell is empty (or null in JSONL) is an error naming file:line and the column,
unless `skip_unlabelled=True` (config `table.skip_unlabelled`): then such rows are dropped, counted
in `Split.dropped` and reported in a warning. A test file whose label cells are all empty reads
as unlabelled. A column the mapping names but a CSV/TSV header lacks is reported at the header.

CSV is read with standard quoting (as spreadsheets and pandas write it); TSV without any quoting
(as GLUE and most research TSVs are written); `quoted=` overrides either.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import hashlib
import json
import logging
import lzma
import math
import os
import re
from typing import IO, Iterator, Sequence

import numpy as np

from bertlab.data.tasks.registry import UNLABELLED, Split, TaskSpec, select

FORMATS = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_COMPRESSION = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_SPLIT_FILE_STEMS = {"train": ("train",), "dev": ("dev", "validation", "val"), "test": ("test",)}
_INTEGER = re.compile(r"-?\d+")

log = logging.getLogger(__name__)


class TableFormatError(ValueError):
    """A table that does not match its column mapping; the message names file and line."""


@dataclasses.dataclass
class RawTable:
    """Rows as read, labels still strings; `lines` locates each row for later error messages."""

    texts: list[str]
    text_pairs: list[str] | None
    raw_labels: list[str] | None  # None when the file has no label column
    ids: list[str] | None
    lines: list[int]
    dropped: int
    source: str


def table_format(path: str, format: str | None = None) -> str:
    """csv, tsv or jsonl, from `format` or the file extension (compression suffix ignored)."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown table format {format!r}; formats: {', '.join(FORMATS)}")
        return format
    stem, extension = os.path.splitext(path)
    if extension in _COMPRESSION:
        extension = os.path.splitext(stem)[1]
    if extension not in _EXTENSIONS:
        raise ValueError(f"{path}: cannot tell the format from the extension {extension!r}; "
                         f"pass format= one of {', '.join(FORMATS)}")
    return _EXTENSIONS[extension]


def read_raw_table(path: str, *, text: str, text_pair: str | None = None,
                   label: str | None = "label", id_column: str | None = None,
                   format: str | None = None, quoted: bool | None = None,
                   drop_labels: Sequence[str] = (), limit: int | None = None,
                   require_label: bool = True, skip_unlabelled: bool = False) -> RawTable:
    """The mapped columns of one file. Rows whose label is in `drop_labels` are counted in
    `dropped`, and so are rows with an empty label cell under `skip_unlabelled` (else they are an
    error); without `require_label`, a file that lacks the label column, or whose label cells are
    all empty, reads as unlabelled."""
    fmt = table_format(path, format)
    required = [c for c in (text, text_pair, id_column) if c is not None]
    if require_label and label is not None:
        required.append(label)
    with _open_text(path) as f:
        records = _jsonl_records(f, path) if fmt == "jsonl" else _delimited_records(
            f, path, fmt, quoted, required)
        return _map_columns(records, path, text=text, text_pair=text_pair, label=label,
                            id_column=id_column, drop_labels=set(drop_labels), limit=limit,
                            require_label=require_label, skip_unlabelled=skip_unlabelled)


def label_space(raw_labels: Sequence[str]) -> tuple[str, ...]:
    """Label names for labels read as strings: '0'..'max' when all are integers, else sorted."""
    values = set(raw_labels)
    if values and all(_INTEGER.fullmatch(value) for value in values):
        top = max(int(value) for value in values)
        return tuple(str(i) for i in range(top + 1))
    return tuple(sorted(values))


def encode_labels(raw: RawTable, label_names: Sequence[str] | None,
                  regression: bool) -> np.ndarray:
    """Class ids (int32) or targets (float32); all -1 when the table has no label column."""
    if raw.raw_labels is None:
        return np.full(len(raw.texts), UNLABELLED, np.float32 if regression else np.int32)
    if regression:
        return np.asarray([_number(value, raw.source, line)
                           for value, line in zip(raw.raw_labels, raw.lines)], np.float32)
    names = tuple(label_names)
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for value, line in zip(raw.raw_labels, raw.lines):
        if value in index:
            ids.append(index[value])
        elif _INTEGER.fullmatch(value) and -1 <= int(value) < len(names):
            ids.append(int(value))
        else:
            raise TableFormatError(f"{raw.source}:{line}: label {value!r} is not one of "
                                   f"{names} nor an index into them")
    return np.asarray(ids, np.int32)


def table_spec(name: str, text: str, text_pair: str | None, label_names: Sequence[str],
               regression: bool) -> TaskSpec:
    fields = (text,) if text_pair is None else (text, text_pair)
    if regression:
        return TaskSpec(name, fields, 1, (), "pearson", ("pearson", "spearman"))
    names = tuple(label_names)
    if len(names) < 2:
        raise ValueError(f"a classification table needs at least two classes, found {names}: "
                         f"pass label_names= (or regression=True)")
    metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy", "macro_f1")
    return TaskSpec(name, fields, len(names), names, "accuracy", metrics)


def read_table(path: str, *, text: str = "text", text_pair: str | None = None,
               label: str | None = "label", id_column: str | None = None,
               label_names: Sequence[str] | None = None, regression: bool = False,
               format: str | None = None, quoted: bool | None = None,
               drop_labels: Sequence[str] = (), limit: int | None = None,
               skip_unlabelled: bool = False, name: str = "csv") -> tuple[TaskSpec, Split]:
    """One file as a task: its spec (label names from this file unless given) and all its rows.
    `label=None` reads an unlabelled file; it then needs `label_names` or `regression`."""
    raw = read_raw_table(path, text=text, text_pair=text_pair, label=label, id_column=id_column,
                         format=format, quoted=quoted, drop_labels=drop_labels, limit=limit,
                         skip_unlabelled=skip_unlabelled)
    if label_names is None and not regression:
        if raw.raw_labels is None:
            raise ValueError(f"{path}: an unlabelled table needs label_names= or regression=True")
        label_names = label_space(raw.raw_labels)
    return (table_spec(name, text, text_pair, label_names or (), regression),
            _split(raw, encode_labels(raw, label_names, regression)))


def stratified_split(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """(train, val) with `fraction` of every class in val, rounded half up per class.

    Which rows go to val depends only on (seed, row index) through a hash, not on a random
    generator whose stream could change between numpy versions, so a split is reproducible
    anywhere. Both parts keep the original row order. Regression targets are split at random
    as one group.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
    n = len(split)
    if np.issubdtype(split.labels.dtype, np.floating):
        groups = [np.arange(n)]
    else:
        groups = [np.flatnonzero(split.labels == value) for value in np.unique(split.labels)]
    val: list[int] = []
    for members in groups:
        shuffled = sorted(members.tolist(), key=lambda i: _row_hash(seed, i))
        val.extend(shuffled[:math.floor(fraction * len(members) + 0.5)])
    in_val = np.zeros(n, bool)
    in_val[val] = True
    return select(split, np.flatnonzero(~in_val)), select(split, np.flatnonzero(in_val))


def load_table_task(data_dir: str, split: str, *, text: str = "text",
                    text_pair: str | None = None, label: str | None = "label",
                    id_column: str | None = None, label_names: Sequence[str] | None = None,
                    regression: bool = False, format: str | None = None,
                    quoted: bool | None = None, drop_labels: Sequence[str] = (),
                    limit: int | None = None, dev_fraction: float = 0.1, seed: int = 0,
                    skip_unlabelled: bool = False, name: str = "csv") -> tuple[TaskSpec, Split]:
    """A split of a table task. `data_dir` is either

    - one file: split "all" is every row; "train" and "dev" are a stratified_split of it with
      `dev_fraction` of each class in dev (seeded by `seed`); or
    - a folder of `train`, `dev` (or `validation`, `val`) and `test` files (.csv/.tsv/.jsonl):
      split names one of them, a test file may lack the label column (labels -1), and string
      label names are collected from every split file so all splits share one mapping.

    `skip_unlabelled` drops rows whose label cell is empty (counted in `Split.dropped`) instead
    of refusing the file.
    """
    mapping = dict(text=text, text_pair=text_pair, label=label, id_column=id_column,
                   format=format, quoted=quoted, drop_labels=drop_labels,
                   skip_unlabelled=skip_unlabelled)
    if os.path.isdir(data_dir):
        files = _split_files(data_dir)
        if split not in files:
            raise FileNotFoundError(f"{data_dir}: no {split} file (found: "
                                    f"{', '.join(files.values()) or 'no table files'})")
        raw = read_raw_table(files[split], limit=limit, require_label=split != "test",
                             **mapping)
        if label_names is None and not regression:
            label_names = label_space(_all_raw_labels(files, mapping))
        return (table_spec(name, text, text_pair, label_names, regression),
                _split(raw, encode_labels(raw, label_names, regression)))
    if not os.path.isfile(data_dir):
        raise FileNotFoundError(f"{data_dir}: no such table file or folder")
    if split not in ("all", "train", "dev"):
        raise ValueError(f"{data_dir} is a single file: its splits are all, train and dev "
                         f"(a {dev_fraction:g} stratified part); got {split!r}")
    spec, whole = read_table(data_dir, label_names=label_names, regression=regression,
                             limit=limit, name=name, **mapping)
    if split == "all":
        return spec, whole
    train, dev = stratified_split(whole, dev_fraction, seed)
    return spec, train if split == "train" else dev


def _split(raw: RawTable, labels: np.ndarray) -> Split:
    return Split(texts=raw.texts, text_pairs=raw.text_pairs, labels=labels, ids=raw.ids,
                 dropped=raw.dropped, source=raw.source)


def _split_files(folder: str) -> dict[str, str]:
    names = sorted(os.listdir(folder))
    found = {}
    for split, stems in _SPLIT_FILE_STEMS.items():
        for stem in stems:
            matches = [n for n in names if _stem(n) == stem and _is_table(n)]
            if len(matches) > 1:
                raise ValueError(f"{folder}: several {split} files ({', '.join(matches)}): "
                                 f"keep one")
            if matches:
                found[split] = os.path.join(folder, matches[0])
                break
    return found


def _stem(file_name: str) -> str:
    stem, extension = os.path.splitext(file_name)
    if extension in _COMPRESSION:
        stem = os.path.splitext(stem)[0]
    return stem


def _is_table(file_name: str) -> bool:
    try:
        table_format(file_name)
    except ValueError:
        return False
    return True


def _all_raw_labels(files: dict[str, str], mapping: dict) -> list[str]:
    labels: list[str] = []
    for path in files.values():
        raw = read_raw_table(path, require_label=False, **mapping)
        labels.extend(raw.raw_labels or [])
    return labels


class _Utf8Lines:
    """The lines of a (possibly compressed) file, decoded one at a time, so that a byte that is
    not UTF-8 is reported at its line (a text-mode file decodes 8 KiB blocks ahead of the csv
    reader, which then cannot say where it was). Line endings are kept, as csv needs."""

    def __init__(self, path: str):
        opener = _COMPRESSION.get(os.path.splitext(path)[1], open)
        self.path = path
        self.name = path
        self._file = opener(path, "rb")
        self._line = 0

    def __iter__(self) -> "_Utf8Lines":
        return self

    def __next__(self) -> str:
        raw = next(self._file)
        self._line += 1
        if self._line == 1 and raw.startswith(b"\xef\xbb\xbf"):  # the BOM spreadsheets write
            raw = raw[3:]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise TableFormatError(
                f"{self.path}:{self._line}: not UTF-8 (byte 0x{raw[err.start]:02x} at column "
                f"{len(raw[:err.start].decode('utf-8', 'replace')) + 1}); convert the file to "
                f"UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None

    def __enter__(self) -> "_Utf8Lines":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def _open_text(path: str) -> _Utf8Lines:
    return _Utf8Lines(path)


def _delimited_records(f: IO[str], path: str, fmt: str, quoted: bool | None,
                       required: Sequence[str] = ()) -> Iterator[tuple[int, list[str], dict]]:
    """(line, header, record) for every non-blank row; the first row is the header, which must
    hold every `required` column (else the error points at the header, not at a data row)."""
    if quoted is None:
        quoted = fmt == "csv"
    delimiter = "," if fmt == "csv" else "\t"
    rows = csv.reader(f, delimiter=delimiter, quotechar='"' if quoted else None)
    try:
        header = next(rows, None)
        if header is None:
            raise TableFormatError(f"{path}: file is empty (expected a header line)")
        missing = [column for column in required if column not in header]
        if missing:
            raise TableFormatError(
                f"{path}:{rows.line_num}: the header has no column {missing[0]!r}; available "
                f"columns: {', '.join(header)}")
        for row in rows:
            if not row:
                continue
            if len(row) != len(header):
                raise TableFormatError(
                    f"{path}:{rows.line_num}: expected {len(header)} columns "
                    f"({', '.join(header)}), found {len(row)}")
            yield rows.line_num, header, dict(zip(header, row))
    except csv.Error as err:
        raise TableFormatError(f"{path}:{rows.line_num}: {err}") from None
    except UnicodeDecodeError as err:
        raise TableFormatError(f"{path}: after line {rows.line_num}: not UTF-8 ({err})") from None


def jsonl_objects(f: IO[str], path: str, error: type[Exception] = None
                  ) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line of a JSON-lines file; anything else raises
    `error` (TableFormatError by default) naming the file and line."""
    error = error or TableFormatError
    line_number = 0
    try:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{line_number}: invalid JSON ({err.msg} at "
                            f"column {err.colno})") from None
            if not isinstance(record, dict):
                raise error(f"{path}:{line_number}: expected a JSON object, found "
                            f"{type(record).__name__}")
            yield line_number, record
    except UnicodeDecodeError as err:
        raise error(f"{path}: after line {line_number}: not UTF-8 ({err})") from None


def _jsonl_records(f: IO[str], path: str) -> Iterator[tuple[int, list[str], dict]]:
    for line_number, record in jsonl_objects(f, path):
        yield line_number, list(record), {k: _json_cell(v) for k, v in record.items()}


def _json_cell(value) -> str | None:
    """JSON values as the strings a CSV cell would hold (True -> 'true', 3 -> '3')."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return None  # lists and objects are not text; _cell reports them


def _map_columns(records, path, *, text, text_pair, label, id_column, drop_labels, limit,
                 require_label, skip_unlabelled=False) -> RawTable:
    texts: list[str] = []
    pairs: list[str] = []
    labels: list[str] = []
    ids: list[str] = []
    lines: list[int] = []
    dropped = 0
    empty: list[int] = []  # row indices whose label cell is empty (or JSON null / absent)
    has_label = None
    for line, columns, record in records:
        if limit is not None and len(texts) >= limit:
            break
        if has_label is None:  # decided by the header, or the first JSON object
            has_label = label is not None and (label in columns or require_label)
        if has_label:
            value = _label_cell(record, label, columns, path, line, require_label)
            if not value:
                if require_label and not skip_unlabelled:
                    raise _empty_label_error(path, line, label)
                empty.append(len(texts))
            elif value in drop_labels:
                dropped += 1
                continue
            labels.append(value)
        texts.append(_cell(record, text, columns, path, line))
        if text_pair is not None:
            pairs.append(_cell(record, text_pair, columns, path, line))
        if id_column is not None:
            ids.append(_cell(record, id_column, columns, path, line))
        lines.append(line)
    if empty and len(empty) == len(labels) and not require_label and not skip_unlabelled:
        has_label = False  # every label cell empty in a file that may be unlabelled (test)
    elif empty and not skip_unlabelled:
        raise _empty_label_error(path, lines[empty[0]], label)
    elif empty:
        keep = np.ones(len(texts), bool)
        keep[empty] = False
        texts, labels, lines = (_kept(texts, keep), _kept(labels, keep), _kept(lines, keep))
        pairs, ids = _kept(pairs, keep), _kept(ids, keep)
        log.warning("%s: dropped %d row(s) with an empty label in column %r "
                    "(table.skip_unlabelled)", path, len(empty), label)
        dropped += len(empty)
    if not texts:
        raise TableFormatError(f"{path}: no rows" + (f" (all {dropped} had a dropped label)"
                                                      if dropped else ""))
    return RawTable(texts=texts, text_pairs=pairs if text_pair is not None else None,
                    raw_labels=labels if has_label else None,
                    ids=ids if id_column is not None else None, lines=lines, dropped=dropped,
                    source=path)


def _kept(values: list, keep: np.ndarray) -> list:
    return [value for value, kept in zip(values, keep) if kept] if values else values


def _label_cell(record: dict, label: str, columns: list[str], path: str, line: int,
                require_label: bool) -> str:
    """The stripped label; "" for an empty cell or JSON null. A JSON object without the key is
    a missing column when labels are required (a misnamed column shows at once), else empty."""
    if label not in record and not require_label:
        return ""
    if record.get(label, "") is None:
        return ""
    return _cell(record, label, columns, path, line).strip()


def _empty_label_error(path: str, line: int, label: str) -> TableFormatError:
    return TableFormatError(f"{path}:{line}: empty label in column {label!r}; fill it in, or "
                            f"drop such rows with table.skip_unlabelled=True")


def _cell(record: dict, column: str, columns: list[str], path: str, line: int) -> str:
    if column not in record:
        raise TableFormatError(f"{path}:{line}: no column {column!r}; available columns: "
                               f"{', '.join(columns)}")
    value = record[column]
    if value is None:
        raise TableFormatError(f"{path}:{line}: column {column!r} is null or not text")
    return value


def _number(value: str, path: str, line: int) -> float:
    try:
        number = float(value)
    except ValueError:
        raise TableFormatError(f"{path}:{line}: regression label {value!r} is not a number") \
            from None
    if not math.isfinite(number):
        raise TableFormatError(f"{path}:{line}: regression label {value!r} is not finite")
    return number


def _row_hash(seed: int, index: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
