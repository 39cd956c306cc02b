"""A fine-tuning task's data: its train / eval (/ test) splits read per the `task`, `table` and
`data` config groups, fixed random subsets of them, their token arrays, and batches of rows.

`load_split` and `encode_split` also serve inference (bertlab.inference reloads a split the way
training read it, from the record an export keeps).

Packed batches (data.packing, on by default): the same batches of the same examples in the same
order, laid out by bertlab.data.packing.pack_batch into fewer rows so no step computes on
[PAD]. `plan_packing` fixes R for every batch of a run before its first step (a bounded set of
compiled shapes); `packed_batch_of` is `batch_of` packed to that plan.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from bertlab.data import packing
from bertlab.data.tasks.registry import TABLE_TASKS, Split, TaskSpec, load_task, select
from bertlab.text.tokenizer import Tokenizer
from bertlab.train.loop import TrainConfigError, pad_rows


@dataclasses.dataclass
class TaskData:
    spec: TaskSpec
    train: Split
    eval: Split
    test: Split | None
    record: dict  # how to load these splits again (stored in the export for `evaluate`)


def is_pair_config(config) -> bool:
    return config.task in TABLE_TASKS and bool(config.table.text_pair)


def task_options(config) -> dict:
    """The load_task options of the config's task: the column mapping for tables, else none."""
    if config.task not in TABLE_TASKS:
        return {}
    table = config.table
    names = tuple(n.strip() for n in table.label_names.split(",") if n.strip())
    return {"text": table.text, "text_pair": table.text_pair or None, "label": table.label,
            "id_column": table.id_column or None, "label_names": names or None,
            "regression": bool(table.regression), "dev_fraction": float(table.dev_fraction),
            "skip_unlabelled": bool(table.skip_unlabelled)}


def load_split(task: str, data_dir: str, split: str, options: dict,
               key: str = "data.data_dir") -> tuple[TaskSpec, Split]:
    """load_task with its errors turned into one line naming the config key and split."""
    if not data_dir and task != "rotten_tomatoes":
        raise TrainConfigError(f"{key} is empty: set --config.{key}=PATH to where the {task} "
                               f"files are")
    try:
        return load_task(task, data_dir, split, **options)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise TrainConfigError(f"task {task}, split {split!r}, {key}={data_dir!r}: "
                               f"{message}") from None


def subsample(split: Split, limit: int, seed: int) -> Split:
    """A fixed random subset of `limit` rows, in their original order (all rows if limit is 0
    or not smaller): the first rows of a file are often one class (IMDB, sorted tables)."""
    if not limit or limit >= len(split):
        return split
    rows = np.random.default_rng(seed).choice(len(split), size=limit, replace=False)
    subset = select(split, np.sort(rows))
    if subset.ids is None:  # per-example outputs name rows by their index in the whole split
        subset.ids = [str(i) for i in np.sort(rows)]
    return subset


def load_data(config) -> TaskData:
    data, task = config.data, config.task
    options = task_options(config)
    data_dir = os.path.abspath(data.data_dir) if data.data_dir else ""
    spec, train = load_split(task, data_dir, data.train_split, options)
    eval_spec, evaluation = load_split(task, data_dir, data.eval_split, options)
    test = None
    if data.test_split:
        _, test = load_split(task, data_dir, data.test_split, options)
        if not test.is_labelled:
            raise TrainConfigError(f"data.test_split={data.test_split!r} of {task} has no "
                                   f"labels; set data.test_split='' and use `bertlab predict` "
                                   f"on it")
    if eval_spec != spec:
        raise TrainConfigError(f"data.eval_split={data.eval_split!r} has another label space "
                               f"({eval_spec.label_names}) than train ({spec.label_names})")
    for name, split in (("train_split", train), ("eval_split", evaluation)):
        if not len(split):
            raise TrainConfigError(f"data.{name}={data[name]!r} of {task} is empty "
                                   f"({split.source})")
        if not split.is_labelled:
            raise TrainConfigError(f"data.{name}={data[name]!r} of {task} has no labels "
                                   f"(an unlabelled test split?); use a labelled split")
    train = subsample(train, data.max_train_examples, data.seed)
    evaluation = subsample(evaluation, data.max_eval_examples, data.seed)
    if test is not None:
        test = subsample(test, data.max_eval_examples, data.seed)
    # the export's record keeps its own (flat) key names: exports of every version read alike
    record = {"task": task, "data_dir": data_dir, "options": options,
              "train_split": data.train_split, "eval_split": data.eval_split,
              "test_split": data.test_split, "max_eval_examples": data.max_eval_examples,
              "data_seed": data.seed}
    return TaskData(spec, train, evaluation, test, record)


def encode_split(tokenizer: Tokenizer, spec: TaskSpec, split: Split, max_seq_length: int) -> dict:
    """Token arrays (N, T) plus `labels` (N,) for a split; pairs packed as [CLS] a [SEP] b [SEP]."""
    pairs = split.text_pairs if spec.is_pair else None
    if spec.is_pair and pairs is None:
        raise TrainConfigError(f"{spec.name} is a pair task but {split.source} has no second text")
    arrays = tokenizer.pack(split.texts, pairs, max_length=max_seq_length)
    arrays["labels"] = np.asarray(split.labels, np.float32 if spec.is_regression else np.int32)
    return arrays


def batch_of(encoded: dict, rows: np.ndarray, batch_size: int) -> dict:
    """The rows as one batch of exactly batch_size (B): short batches are padded with copies of
    row 0 whose `example_weights` are 0, so every batch has one shape and compiles once."""
    padded, weights = pad_rows(rows, batch_size)
    batch = {name: value[padded] for name, value in encoded.items()}
    batch["example_weights"] = weights  # (B,)
    return batch


def training_steps(num_examples: int, batch_size: int, epochs: int,
                   warmup_fraction: float) -> tuple[int, int, int]:
    """(steps per epoch, total updates, warm-up updates). The last batch of an epoch may be
    short, so an epoch is ceil(N / B) updates; warm-up is int(fraction * total), as the KerasNLP
    tutorial computes it from the dataset's cardinality."""
    steps_per_epoch = math.ceil(num_examples / batch_size)
    num_steps = steps_per_epoch * epochs
    return steps_per_epoch, num_steps, int(warmup_fraction * num_steps)


# What compiling one more packed program costs, in row-steps (one row of T tokens through one
# step). Measured for MiniLM (L6/H384) on the 2-core CPU: 23 s per packed train program vs
# 0.09 s per row of a train step (experiments/bench/packing_efficiency.md, issue 14), so a
# short run takes fewer, larger buckets (packing.plan_row_buckets' program_cost).
PROGRAM_COST_ROWS = 250.0


@dataclasses.dataclass(frozen=True)
class PackPlan:
    """R per batch (rows), the distinct R values (buckets: one compiled program each), K slots
    per batch (examples) and T tokens per row (row_length)."""

    rows: tuple[int, ...]
    buckets: tuple[int, ...]
    examples: int
    row_length: int


def plan_packing(lengths: np.ndarray, batches: list, *, examples: int, row_length: int,
                 max_programs: int, multiple: int = 1,
                 program_cost: float = PROGRAM_COST_ROWS) -> PackPlan:
    """The plan of every batch a pass (or a whole run) will take; `batches` lists each batch's
    example indices in the order they will run. K (`examples`) and every R are multiples of
    `multiple` (the data mesh's size)."""
    rows, buckets = packing.plan_batches(lengths, batches, row_length, max_programs,
                                         multiple=multiple, program_cost=program_cost)
    examples = packing.round_up(examples, multiple)
    return PackPlan(tuple(rows), buckets, examples, int(row_length))


def packed_batch_of(encoded: dict, rows: np.ndarray, batch_size: int, plan: PackPlan,
                    index: int) -> dict:
    """batch_of(...) packed into plan.rows[index] rows of plan.row_length: slot s is batch row
    s (the filler rows of a short last batch are empty slots of weight 0)."""
    return packing.pack_batch(batch_of(encoded, rows, batch_size), rows=plan.rows[index],
                              row_length=plan.row_length, max_examples=plan.examples)
