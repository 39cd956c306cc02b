"""Fine-tuning: `finetune(config, workdir) -> summary`, plus the evaluation and prediction helpers
that `bertlab evaluate / predict / embed / similarity` use.

Read top to bottom, a run is:

1. load the task's train / eval (/ test) splits (bertlab.data.tasks.registry), optionally a fixed random
   subset of each;
2. get a backbone: `init_from` (any path bertlab.checkpoints.init_from resolves, with its vocabulary) or, with
   `from_scratch`, a vocabulary learned on the training texts into workdir/vocab.txt and random
   weights of the configured size; tokenise every split once;
3. for each seed (skipping seeds whose result.json exists): put a fresh classifier head (and
   `extra_layers` fresh encoder layers) on the backbone, train `epochs` passes with the jitted
   bertlab.train.steps.classify_train_step, score the eval split after every epoch with the task's
   metrics, export the best epoch's model to seed_<n>/model/ (what predict reloads), stop early
   after `early_stopping_patience` epochs without improvement, score the test split once with
   the best weights;
4. write summary.json: every seed's best metrics with their median, mean, min, max and std.

Workdir layout:

    config.json          the full config (a rerun with another config is refused, seeds aside)
    vocab.txt            from_scratch only: the vocabulary learned on the training texts
    summary.json         per-seed metrics, median / mean / min / max / std, the best seed
    curves.png           every seed's loss and task metric per epoch, train and validation
    seed_<n>/result.json this seed's best epoch and metrics (present = the seed is finished)
    seed_<n>/eval_logits.npy  the best epoch's logits on the eval split (error analysis, ensembles)
    seed_<n>/model/      the best epoch's export: config.json, params.safetensors, vocab.txt,
                         task.json (bertlab.checkpoints.init_from); `bertlab convert` reads it too
    seed_<n>/metrics.jsonl  "train" lines every log_every steps; "train_epoch" and "eval" per epoch
    seed_<n>/tensorboard/   the same scalars for TensorBoard
    seed_<n>/curves.png  loss and the task metric per epoch, train and validation

Fine-tuning runs are short, so there is no mid-run resume: an unfinished seed restarts from
scratch, finished seeds are kept.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertlab.files import write_json
from bertlab.checkpoints import init_from as init_from_lib
from bertlab.train import mesh as mesh_lib
from bertlab.train import optimizer as optimizer_lib
from bertlab.train import steps
from bertlab.data.tasks.registry import TABLE_TASKS, Split, TaskSpec, load_task, select
from bertlab.train.metric_writer import METRICS_FILE, MetricWriter
from bertlab.data.tasks.metrics import task_metrics
from bertlab.models import BertForSequenceClassification, BertModel, mean_pool
from bertlab.models.config import VARIANTS, BertConfig, ConfigError, config_from_dict
from bertlab.train.plots_finetune import CURVES_PLOT, plot_epoch_curves, plot_seed_curves
from bertlab.train.pretrain import NonFiniteLossError
from bertlab.text.tokenizer import Tokenizer, pack_ids

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
RESULT_FILE = "result.json"
EVAL_LOGITS_FILE = "eval_logits.npy"  # the best epoch's logits on the eval split, row order kept
SUMMARY_FILE = init_from_lib.SUMMARY_FILE
MODEL_DIR = init_from_lib.MODEL_DIR
OPTIMIZERS = optimizer_lib.OPTIMIZERS
MODEL_SIZE_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
# Keys a rerun in the same workdir may change: they decide which seeds run, not what a seed does.
RERUN_FREE_KEYS = ("seeds", "log_every")
FROZEN_GROUPS = ("bert",)  # what freeze_backbone keeps fixed: the whole backbone
# curves.png is redrawn after an epoch when this long has passed since the last drawing (real
# epochs take minutes: every epoch), and always when a seed ends; a PNG costs ~0.5 s.
PLOT_INTERVAL_SECONDS = 30.0


class FinetuneConfigError(ValueError):
    """A config value (or the data it points to) this run cannot use; the message names the key."""


# --------------------------------------------------------------------------------------------
# Config checks, before anything is read or written.
# --------------------------------------------------------------------------------------------

def check_config(config) -> None:
    opt = config.optimizer
    if bool(config.init_from) == bool(config.from_scratch):
        raise FinetuneConfigError(
            "set exactly one of init_from=PATH (a pretrained backbone) and from_scratch=True "
            f"(got init_from={config.init_from!r}, from_scratch={config.from_scratch})")
    if opt.name not in OPTIMIZERS:
        raise FinetuneConfigError(f"optimizer.name={opt.name!r} is not one of {', '.join(OPTIMIZERS)}")
    if not 0.0 <= opt.warmup_fraction <= 1.0:
        raise FinetuneConfigError(f"optimizer.warmup_fraction={opt.warmup_fraction} must be in [0, 1]")
    if opt.lr < 0:
        raise FinetuneConfigError(f"optimizer.lr={opt.lr} must be >= 0")
    for key in ("batch_size", "eval_batch_size", "epochs", "log_every"):
        if config[key] < 1:
            raise FinetuneConfigError(f"{key}={config[key]} must be >= 1")
    for key in ("max_train_examples", "max_eval_examples", "early_stopping_patience",
                "extra_layers"):
        if config[key] < 0:
            raise FinetuneConfigError(f"{key}={config[key]} must be >= 0")
    if config.max_seq_length < 2 + (1 if _is_pair_config(config) else 0):
        raise FinetuneConfigError(f"max_seq_length={config.max_seq_length} leaves no room for text")
    if not config.seeds:
        raise FinetuneConfigError("seeds is empty: give at least one seed, e.g. --config.seeds=0")
    if len(set(config.seeds)) != len(config.seeds):
        raise FinetuneConfigError(f"seeds={tuple(config.seeds)} repeats a seed")
    if config.from_scratch and config.model.variant not in VARIANTS:
        raise FinetuneConfigError(f"model.variant={config.model.variant!r} is not one of "
                                  f"{', '.join(VARIANTS)}")
    if config.from_scratch and config.vocab_size < 10:
        raise FinetuneConfigError(f"vocab_size={config.vocab_size} is too small")
    if config.vocab and not config.from_scratch:
        raise FinetuneConfigError(f"vocab={config.vocab!r} applies only with from_scratch=True "
                                  "(a pretrained backbone brings its own vocab.txt)")
    if config.vocab and not os.path.isfile(config.vocab):
        raise FinetuneConfigError(f"vocab={config.vocab!r}: file not found")


def _is_pair_config(config) -> bool:
    return config.task in TABLE_TASKS and bool(config.table.text_pair)


def check_rerun(workdir: str, config_dict: dict) -> None:
    """Refuses a workdir whose config.json differs from this run's outside RERUN_FREE_KEYS:
    finished seeds would otherwise be summarised with seeds of another recipe."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = _flat(json.load(f))
    current = _flat(config_dict)
    for key in sorted(saved.keys() | current.keys()):
        if key.split(".")[0] in RERUN_FREE_KEYS:
            continue
        before, now = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if _jsonish(before) != _jsonish(now):
            raise FinetuneConfigError(
                f"{path} was written by a run with {key}={before!r}, now {now!r}; use a new "
                f"--workdir, or set {key} back to add seeds to that run")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _jsonish(value):
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------------------------
# Data: the task's splits, subsets of them, and their token arrays.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TaskData:
    spec: TaskSpec
    train: Split
    eval: Split
    test: Split | None
    record: dict  # how to load these splits again (stored in the export for `evaluate`)


def task_options(config) -> dict:
    """The load_task options of the config's task: the column mapping for tables, else none."""
    if config.task not in TABLE_TASKS:
        return {}
    table = config.table
    names = tuple(n.strip() for n in table.label_names.split(",") if n.strip())
    return {"text": table.text, "text_pair": table.text_pair or None, "label": table.label,
            "id_column": table.id_column or None, "label_names": names or None,
            "regression": bool(table.regression), "dev_fraction": float(table.dev_fraction)}


def load_split(task: str, data_dir: str, split: str, options: dict,
               key: str = "data_dir") -> tuple[TaskSpec, Split]:
    """load_task with its errors turned into one line naming the config key and split."""
    if not data_dir and task != "rotten_tomatoes":
        raise FinetuneConfigError(f"{key} is empty: set --config.{key}=PATH to where the {task} "
                                  f"files are")
    try:
        return load_task(task, data_dir, split, **options)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise FinetuneConfigError(f"task {task}, split {split!r}, {key}={data_dir!r}: "
                                  f"{message}") from None


def subsample(split: Split, limit: int, seed: int) -> Split:
    """A fixed random subset of `limit` rows, in their original order (all rows if limit is 0
    or not smaller): the first rows of a file are often one class (IMDB, sorted tables)."""
    if not limit or limit >= len(split):
        return split
    rows = np.random.default_rng(seed).choice(len(split), size=limit, replace=False)
    return select(split, np.sort(rows))


def load_data(config) -> TaskData:
    options = task_options(config)
    data_dir = os.path.abspath(config.data_dir) if config.data_dir else ""
    spec, train = load_split(config.task, data_dir, config.train_split, options)
    eval_spec, evaluation = load_split(config.task, data_dir, config.eval_split, options)
    test = None
    if config.test_split:
        _, test = load_split(config.task, data_dir, config.test_split, options)
        if not test.is_labelled:
            raise FinetuneConfigError(f"test_split={config.test_split!r} of {config.task} has no "
                                      f"labels; set test_split='' and use `bertlab predict` on it")
    if eval_spec != spec:
        raise FinetuneConfigError(f"eval_split={config.eval_split!r} has another label space "
                                  f"({eval_spec.label_names}) than train ({spec.label_names})")
    for name, split in (("train_split", train), ("eval_split", evaluation)):
        if not len(split):
            raise FinetuneConfigError(f"{name}={config[name]!r} of {config.task} is empty "
                                      f"({split.source})")
        if not split.is_labelled:
            raise FinetuneConfigError(f"{name}={config[name]!r} of {config.task} has no labels "
                                      f"(an unlabelled test split?); use a labelled split")
    train = subsample(train, config.max_train_examples, config.data_seed)
    evaluation = subsample(evaluation, config.max_eval_examples, config.data_seed)
    if test is not None:
        test = subsample(test, config.max_eval_examples, config.data_seed)
    record = {"task": config.task, "data_dir": data_dir, "options": options,
              "train_split": config.train_split, "eval_split": config.eval_split,
              "test_split": config.test_split, "max_eval_examples": config.max_eval_examples,
              "data_seed": config.data_seed}
    return TaskData(spec, train, evaluation, test, record)


def encode_split(tokenizer: Tokenizer, spec: TaskSpec, split: Split, max_seq_length: int) -> dict:
    """Token arrays (N, T) plus `labels` (N,) for a split; pairs packed as [CLS] a [SEP] b [SEP]."""
    pairs = split.text_pairs if spec.is_pair else None
    if spec.is_pair and pairs is None:
        raise FinetuneConfigError(f"{spec.name} is a pair task but {split.source} has no second text")
    arrays = tokenizer.pack(split.texts, pairs, max_length=max_seq_length)
    arrays["labels"] = np.asarray(split.labels, np.float32 if spec.is_regression else np.int32)
    return arrays


def batch_of(encoded: dict, rows: np.ndarray, batch_size: int) -> dict:
    """The rows as one batch of exactly batch_size (B): short batches are padded with copies of
    row 0 whose `example_weights` are 0, so every batch has one shape and compiles once."""
    count = len(rows)
    padded = np.concatenate([rows, np.zeros(batch_size - count, rows.dtype)]) if count < batch_size \
        else rows
    batch = {name: value[padded] for name, value in encoded.items()}
    batch["example_weights"] = (np.arange(batch_size) < count).astype(np.float32)  # (B,)
    return batch


def training_steps(num_examples: int, batch_size: int, epochs: int,
                   warmup_fraction: float) -> tuple[int, int, int]:
    """(steps per epoch, total updates, warm-up updates). The last batch of an epoch may be
    short, so an epoch is ceil(N / B) updates; warm-up is int(fraction * total), as the KerasNLP
    tutorial computes it from the dataset's cardinality."""
    steps_per_epoch = math.ceil(num_examples / batch_size)
    num_steps = steps_per_epoch * epochs
    return steps_per_epoch, num_steps, int(warmup_fraction * num_steps)


# --------------------------------------------------------------------------------------------
# The model: a backbone (imported or from scratch) and the classifier on top of it.
# --------------------------------------------------------------------------------------------

def prepare_backbone(config, workdir: str, train: Split | None, *, log=print
                     ) -> init_from_lib.Backbone:
    """The backbone to start from. from_scratch: params=None (random init per seed) and a
    vocabulary learned on the training texts (or config.vocab, so a no-pretraining control can
    tokenise exactly as the pretrained arms), kept in workdir/vocab.txt for every seed."""
    if not config.from_scratch:
        try:
            return init_from_lib.resolve_backbone(config.init_from)
        except init_from_lib.InitFromError as e:
            raise FinetuneConfigError(f"init_from: {e}") from None
    from bertlab.text.tokenizer import load_vocab, save_vocab
    from bertlab.text.learn import VocabLearnError, learn_vocab

    path = os.path.join(workdir, VOCAB_FILE)
    if config.vocab:  # a given vocabulary (copied, so the workdir and its export are complete)
        given = load_vocab(config.vocab)
        if os.path.exists(path) and load_vocab(path).tokens != given.tokens:
            raise FinetuneConfigError(f"vocab={config.vocab!r} differs from {path}, the "
                                      "vocabulary this workdir was made with; use a new --workdir")
        save_vocab(given, path)
    if not os.path.exists(path):
        lines = list(train.texts) + list(train.text_pairs or [])
        log(f"learning a {config.vocab_size}-entry WordPiece vocabulary from the "
            f"{len(train)} training examples")
        try:
            vocab = learn_vocab(lines, config.vocab_size, lower_case=config.lower_case)
        except VocabLearnError as e:
            raise FinetuneConfigError(f"vocab_size={config.vocab_size}: {e}") from None
        save_vocab(vocab, path)
    vocab = load_vocab(path)
    model_config = scratch_model_config(config, len(vocab))
    return init_from_lib.Backbone(model_config, None, path, bool(config.lower_case), "scratch",
                                  "from_scratch")


def scratch_model_config(config, vocab_size: int) -> BertConfig:
    model = config.model
    values = {key: (model[key] if model[key] is not None else VARIANTS[model.variant][key])
              for key in MODEL_SIZE_KEYS}
    values["max_position_embeddings"] = (model.max_position_embeddings or
                                         max(512, config.max_seq_length))
    for key in ("hidden_dropout", "attention_dropout"):
        if model[key] is not None:
            values[key] = model[key]
    try:
        return config_from_dict({**values, "vocab_size": vocab_size, "dtype": model.dtype},
                                source="config.model")
    except ConfigError as e:
        raise FinetuneConfigError(str(e).replace("BertConfig.", "model.")) from None


def finetune_model_config(config, backbone: init_from_lib.Backbone) -> BertConfig:
    """The backbone's config with the run's dropout/dtype overrides; size overrides are refused
    (they cannot change a pretrained checkpoint's shapes)."""
    if backbone.kind == "scratch":
        model_config = backbone.config
    else:
        for key in MODEL_SIZE_KEYS + ("max_position_embeddings",):
            wanted = config.model[key]
            if wanted is not None and wanted != getattr(backbone.config, key):
                raise FinetuneConfigError(
                    f"model.{key}={wanted} but init_from={config.init_from!r} has "
                    f"{key}={getattr(backbone.config, key)}; size keys apply only with from_scratch")
        overrides = {key: config.model[key] for key in ("hidden_dropout", "attention_dropout")
                     if config.model[key] is not None}
        try:
            model_config = dataclasses.replace(backbone.config, dtype=config.model.dtype,
                                               **overrides)
        except ConfigError as e:
            raise FinetuneConfigError(str(e).replace("BertConfig.", "model.")) from None
    if (model_config.position_embedding == "learned"
            and config.max_seq_length > model_config.max_position_embeddings):
        raise FinetuneConfigError(f"max_seq_length={config.max_seq_length} exceeds the model's "
                                  f"max_position_embeddings={model_config.max_position_embeddings}")
    return model_config


def make_init_fn(model: BertForSequenceClassification, backbone_params, seq_len: int, mesh
                 ) -> Callable[[jax.Array], Any]:
    """rng -> the whole classifier's parameters, replicated: fresh head (and extra layers), the
    backbone's weights from `backbone_params` (None: a random backbone, from_scratch). Shapes are
    checked leaf by leaf first. Built once per run, so every seed reuses one compilation."""
    ids = jnp.zeros((1, seq_len), jnp.int32)  # (1, T): shapes only matter for init
    keep_backbone = backbone_params is None

    def init(key):
        params = model.init({"params": key}, ids, ids, jnp.ones_like(ids),
                            deterministic=True)["params"]
        # Returning only the new parts lets XLA skip drawing a random backbone it would discard.
        return params if keep_backbone else {k: v for k, v in params.items() if k != "bert"}

    init = jax.jit(init)
    if keep_backbone:
        return lambda rng: mesh_lib.replicate(init(rng), mesh)
    expected = jax.eval_shape(lambda key: model.init({"params": key}, ids, ids, ids,
                                                     deterministic=True)["params"]["bert"],
                              jax.random.PRNGKey(0))
    check_same_shapes(expected, backbone_params)
    backbone = mesh_lib.replicate(jax.tree_util.tree_map(jnp.asarray, backbone_params), mesh)
    return lambda rng: {"bert": backbone, **mesh_lib.replicate(init(rng), mesh)}


def check_same_shapes(expected, given) -> None:
    from flax.traverse_util import flatten_dict

    want, have = flatten_dict(dict(expected), sep="/"), flatten_dict(dict(given), sep="/")
    missing, unknown = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unknown:
        raise FinetuneConfigError(f"init_from backbone does not fit the model: missing "
                                  f"{missing[:5]}, unexpected {unknown[:5]}")
    for name in want:
        if tuple(want[name].shape) != tuple(np.shape(have[name])):
            raise FinetuneConfigError(f"init_from backbone: bert/{name} has shape "
                                      f"{np.shape(have[name])}, the model needs {want[name].shape}")


def make_finetune_optimizer(opt, *, num_steps: int, warmup_steps: int,
                            frozen: Sequence[str] = ()) -> tuple[optax.GradientTransformation, Callable]:
    """bertlab.train.optimizer's recipe by name (`adam` is the tutorials' constant-rate Adam). Groups
    in `frozen` get no optimizer state and zero updates (the train step also keeps them bit for
    bit)."""
    tx, schedule = optimizer_lib.make_optimizer(
        opt.name, lr=opt.lr, warmup_steps=warmup_steps, num_steps=num_steps,
        weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2, eps=opt.eps,
        clip_norm=opt.clip_norm)
    if frozen:
        frozen = tuple(frozen)
        labels = lambda params: {name: jax.tree_util.tree_map(
            lambda _: "frozen" if name in frozen else "train", value)
            for name, value in params.items()}
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule


# --------------------------------------------------------------------------------------------
# Evaluation over a split (shared by the loop and by `evaluate` / `predict`).
# --------------------------------------------------------------------------------------------

def run_eval(eval_step: Callable, state, encoded: dict, batch_size: int, mesh
             ) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, L), per-example loss (N,)) of every row, in order."""
    from tqdm import tqdm

    count = len(encoded["token_ids"])
    if not count:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
    starts = range(0, count, batch_size)
    logits, losses = [], []
    # A bar only for long passes (IMDB's 25k reviews at 512 tokens take minutes on a CPU).
    for start in tqdm(starts, desc="evaluating", unit="batch", leave=False,
                      disable=len(starts) < 50):
        rows = np.arange(start, min(start + batch_size, count))
        batch = mesh_lib.global_batch(batch_of(encoded, rows, batch_size), mesh)
        out = eval_step(state, batch)
        logits.append((out["logits"], len(rows)))
        losses.append((out["loss"], len(rows)))
    fetch = lambda parts: np.concatenate([np.asarray(jax.device_get(x))[:n] for x, n in parts])
    return fetch(logits), fetch(losses)


def score(spec: TaskSpec, logits: np.ndarray, losses: np.ndarray, labels: np.ndarray) -> dict:
    """The task's metrics and the mean loss of one pass over a split."""
    result = {"loss": float(np.mean(losses))}
    result.update(task_metrics(spec, logits, labels))
    return result


def _primary(metrics: dict, spec: TaskSpec) -> float:
    value = metrics.get(spec.metric, float("nan"))
    return value if math.isfinite(value) else -math.inf


# --------------------------------------------------------------------------------------------
# One seed.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Prepared:
    """Everything the seeds share: data, backbone, tokens, model config, device mesh."""

    config: Any
    data: TaskData
    backbone: init_from_lib.Backbone
    model_config: BertConfig
    train: dict
    eval: dict
    test: dict | None
    mesh: Any


@dataclasses.dataclass
class Training:
    """The model, optimizer and compiled steps of a run: built once, shared by every seed (the
    seeds differ only in the rng), so a 5-seed run compiles once."""

    model: BertForSequenceClassification
    init: Callable[[jax.Array], Any]
    tx: optax.GradientTransformation
    train_step: Callable
    eval_step: Callable
    steps_per_epoch: int
    num_steps: int
    warmup_steps: int
    eval_batch: int


def build_training(prepared: Prepared) -> Training:
    config, spec, mesh = prepared.config, prepared.data.spec, prepared.mesh
    mesh_lib.check_batch_divides(config.batch_size, mesh, what="batch_size")
    steps_per_epoch, num_steps, warmup_steps = training_steps(
        len(prepared.train["token_ids"]), config.batch_size, config.epochs,
        config.optimizer.warmup_fraction)
    frozen = FROZEN_GROUPS if config.freeze_backbone else ()
    model = BertForSequenceClassification(prepared.model_config, num_labels=spec.num_labels,
                                          extra_layers=config.extra_layers)
    tx, schedule = make_finetune_optimizer(config.optimizer, num_steps=num_steps,
                                           warmup_steps=warmup_steps, frozen=frozen)
    return Training(
        model=model,
        init=make_init_fn(model, prepared.backbone.params, config.max_seq_length, mesh),
        tx=tx,
        train_step=steps.jit_classify_train_step(schedule=schedule, regression=spec.is_regression,
                                                 frozen=frozen, mesh=mesh),
        eval_step=steps.jit_classify_eval_step(mesh=mesh),
        steps_per_epoch=steps_per_epoch, num_steps=num_steps, warmup_steps=warmup_steps,
        eval_batch=_round_up(config.eval_batch_size, mesh.size))


def train_seed(prepared: Prepared, training: Training, seed: int, seed_dir: str) -> dict:
    """Trains one seed in seed_dir and returns (and writes) its result.json."""
    from bertlab.train.state import create_train_state

    config, spec, mesh = prepared.config, prepared.data.spec, prepared.mesh
    os.makedirs(seed_dir, exist_ok=True)
    started = time.time()
    num_examples = len(prepared.train["token_ids"])
    batch_size = config.batch_size
    steps_per_epoch, num_steps = training.steps_per_epoch, training.num_steps
    train_step, eval_step, eval_batch = training.train_step, training.eval_step, training.eval_batch
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    state = create_train_state(training.model, training.tx, training.init(init_rng), mesh=mesh)
    dropout_rng = mesh_lib.replicate(dropout_rng, mesh)
    writer = MetricWriter(seed_dir, total_steps=num_steps)
    writer.message(f"seed {seed}: {num_examples} train / {len(prepared.eval['token_ids'])} eval "
                   f"examples, {config.epochs} epoch(s) x {steps_per_epoch} steps of "
                   f"{batch_size}, warm-up {training.warmup_steps} of {num_steps} updates")

    plot = lambda: plot_epoch_curves(os.path.join(seed_dir, METRICS_FILE),
                                     os.path.join(seed_dir, CURVES_PLOT), metric=spec.metric,
                                     title=f"{spec.name} seed {seed}")
    last_plot = time.time()
    best: dict | None = None
    best_epoch, best_params, epochs_without_gain, stopped_early = 0, None, 0, False
    step, last_good_step = 0, 0
    epochs_run = 0
    try:
        for epoch in range(1, config.epochs + 1):
            order = np.random.default_rng([seed, epoch]).permutation(num_examples)
            pending, epoch_parts = [], []
            for index in range(steps_per_epoch):
                rows = order[index * batch_size:(index + 1) * batch_size]
                batch = mesh_lib.global_batch(batch_of(prepared.train, rows, batch_size), mesh)
                state, metrics = train_step(state, batch, dropout_rng)
                step += 1
                pending.append((step, metrics))
                epoch_parts.append((metrics["logits"], metrics["loss"], rows))
                writer.progress(step)
                if step % config.log_every == 0 or index == steps_per_epoch - 1:
                    window = jax.device_get([(s, {k: v for k, v in m.items() if k != "logits"})
                                             for s, m in pending])
                    check_finite_finetune(window, last_good_step, seed)
                    last_good_step = step
                    means = {name: float(np.mean([m[name] for _, m in window]))
                             for name in ("loss", "grad_norm")}
                    means["learning_rate"] = float(window[-1][1]["learning_rate"])
                    means["epoch"] = epoch - 1 + (index + 1) / steps_per_epoch
                    writer.write(step, "train", means)
                    writer.progress(step, loss=f"{means['loss']:.4f}")
                    pending = []
            epochs_run = epoch
            train_result = _epoch_train_metrics(spec, epoch_parts, prepared.train["labels"])
            writer.write(step, "train_epoch", {"epoch": epoch, **train_result})
            logits, losses = run_eval(eval_step, state, prepared.eval, eval_batch, mesh)
            eval_result = score(spec, logits, losses, prepared.eval["labels"])
            writer.write(step, "eval", {"epoch": epoch, **eval_result})
            improved = best is None or _primary(eval_result, spec) > _primary(best, spec)
            writer.message(f"seed {seed} epoch {epoch}: train loss {train_result['loss']:.4f}, "
                           f"eval loss {eval_result['loss']:.4f}, {_format(eval_result, spec)}"
                           + (" (best)" if improved else ""))
            if improved:
                best, best_epoch, epochs_without_gain = eval_result, epoch, 0
                best_params = jax.device_get(state.params)
                np.save(os.path.join(seed_dir, EVAL_LOGITS_FILE), logits)
                save_model(os.path.join(seed_dir, MODEL_DIR), prepared, best_params,
                           meta={"seed": seed, "epoch": epoch, "step": step, "eval": eval_result})
            else:
                epochs_without_gain += 1
            if time.time() - last_plot >= PLOT_INTERVAL_SECONDS:
                plot()
                last_plot = time.time()
            if (config.early_stopping_patience
                    and epochs_without_gain >= config.early_stopping_patience
                    and epoch < config.epochs):
                stopped_early = True
                writer.message(f"seed {seed}: no better {spec.metric} for {epochs_without_gain} "
                               f"epoch(s); stopping early after epoch {epoch}")
                break
        plot()
        test_result = None
        if prepared.test is not None:
            best_state = state.replace(params=mesh_lib.replicate(best_params, mesh))
            logits, losses = run_eval(eval_step, best_state, prepared.test, eval_batch, mesh)
            test_result = score(spec, logits, losses, prepared.test["labels"])
            writer.write(step, "test", {"epoch": best_epoch, **test_result})
            writer.message(f"seed {seed} test (epoch {best_epoch} weights): "
                           f"{_format(test_result, spec)}")
    finally:
        writer.close()
    result = {"seed": seed, "best_epoch": best_epoch, "epochs_run": epochs_run,
              "stopped_early": stopped_early, "eval": best, "test": test_result,
              "num_train_examples": num_examples, "steps": step, "num_steps": num_steps,
              "warmup_steps": training.warmup_steps,
              "seconds": round(time.time() - started, 2)}
    _write_json(os.path.join(seed_dir, RESULT_FILE), result)
    return result


def _epoch_train_metrics(spec: TaskSpec, parts: list, labels: np.ndarray) -> dict:
    """Loss and task metrics of the training epoch, from the logits the train steps returned
    (with dropout on, as Keras reports training accuracy)."""
    parts = jax.device_get(parts)
    logits = np.concatenate([np.asarray(l)[:len(rows)] for l, _, rows in parts])
    rows = np.concatenate([rows for _, _, rows in parts])
    loss = float(np.sum([float(x) * len(r) for _, x, r in parts]) / max(len(rows), 1))
    return {"loss": loss, **task_metrics(spec, logits, labels[rows])}


def check_finite_finetune(window: list, last_good_step: int, seed: int) -> None:
    for step, metrics in window:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"seed {seed}: loss became {loss} within steps [{last_good_step + 1}, "
                f"{window[-1][0]}] (first seen at step {step}); the best epoch's model/ so far is "
                f"kept. Lower optimizer.lr, raise optimizer.warmup_fraction or set "
                f"optimizer.clip_norm.")


def save_model(directory: str, prepared: Prepared, params, meta: dict) -> str:
    config = prepared.config
    return init_from_lib.save_export(
        directory, config=prepared.model_config, params=params,
        vocab_path=prepared.backbone.vocab_path, lower_case=prepared.backbone.lower_case,
        spec=prepared.data.spec, extra_layers=config.extra_layers,
        max_seq_length=config.max_seq_length, data=prepared.data.record,
        meta={**meta, "init_from": config.init_from or "from_scratch"})


# --------------------------------------------------------------------------------------------
# Several seeds and their summary.
# --------------------------------------------------------------------------------------------

def spread(values: Sequence[float]) -> dict:
    """median, mean, min, max and std (sample, n - 1; 0 for one value) of per-seed numbers."""
    array = np.asarray(values, np.float64)
    return {"median": float(np.median(array)), "mean": float(np.mean(array)),
            "min": float(np.min(array)), "max": float(np.max(array)),
            "std": float(np.std(array, ddof=1)) if len(array) > 1 else 0.0,
            "n": int(len(array)), "values": [float(v) for v in array]}


def summarize(spec: TaskSpec, results: Sequence[dict]) -> dict:
    """summary.json: each metric's spread over seeds (eval at each seed's best epoch, and test),
    and the seed with the best primary eval metric (what evaluate / predict load by default)."""
    summary = {"task": spec.name, "metric": spec.metric, "seeds": [r["seed"] for r in results],
               "per_seed": {str(r["seed"]): r for r in results}}
    for part in ("eval", "test"):
        rows = [r[part] for r in results if r.get(part)]
        if rows:
            summary[part] = {name: spread([row[name] for row in rows]) for name in rows[0]}
    best = max(results, key=lambda r: _primary(r["eval"] or {}, spec))
    summary["best_seed"] = best["seed"]
    return summary


def prepare(config, workdir: str, *, log=print) -> Prepared:
    """Steps 1-2 of a run (data, backbone, tokens), shared by every seed."""
    check_config(config)
    # A pretrained backbone is resolved first: a wrong init_from fails before any data is read.
    backbone = None if config.from_scratch else prepare_backbone(config, workdir, None, log=log)
    data = load_data(config)
    backbone = backbone or prepare_backbone(config, workdir, data.train, log=log)
    model_config = finetune_model_config(config, backbone)
    if backbone.params is not None:
        similarity = backbone_collapse(backbone, data.train.texts[:COLLAPSE_PROBE_EXAMPLES])
        if similarity > COLLAPSE_COSINE:
            log(f"warning: init_from={config.init_from!r} gives (nearly) the same vector for "
                f"every input (lowest cosine {similarity:.4f} between {COLLAPSE_PROBE_EXAMPLES} "
                f"training examples): an undertrained backbone, e.g. an MLM still at the "
                f"unigram stage. Fine-tuning may not leave the majority class; pretrain longer.")
    tokenizer = Tokenizer.from_file(backbone.vocab_path, lower_case=backbone.lower_case)
    encode = lambda split: encode_split(tokenizer, data.spec, split, config.max_seq_length)
    return Prepared(config=config, data=data, backbone=backbone, model_config=model_config,
                    train=encode(data.train), eval=encode(data.eval),
                    test=None if data.test is None else encode(data.test),
                    mesh=mesh_lib.data_mesh())


# A backbone whose mean-pooled outputs of different texts all have cosine above this is collapsed.
COLLAPSE_COSINE = 0.999
COLLAPSE_PROBE_EXAMPLES = 16


def backbone_collapse(backbone: init_from_lib.Backbone, texts: Sequence[str]) -> float:
    """The lowest cosine similarity between the mean-pooled outputs of `texts` (1.0 = the
    backbone ignores its input). Measured on a 400-step MLM demo pretraining, whose fine-tuning
    stayed at the majority class: 1.0000; all-MiniLM-L6-v2 on SST-2 sentences: -0.04."""
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return 0.0
    return float(np.min(cosine_matrix(sentence_embeddings(backbone, texts, max_seq_length=64))))


def finetune(config, workdir: str, *, log=print) -> dict:
    """Fine-tunes per `config` for every seed in config.seeds; returns (and writes) summary.json."""
    check_config(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    config_dict = config.to_dict()
    check_rerun(workdir, config_dict)
    prepared = prepare(config, workdir, log=log)
    _write_json(os.path.join(workdir, CONFIG_FILE), config_dict)
    log(f"{prepared.data.spec.name}: {len(prepared.data.train)} train, "
        f"{len(prepared.data.eval)} {config.eval_split} examples; backbone "
        f"{prepared.backbone.kind} ({prepared.model_config.num_layers} layer(s), hidden "
        f"{prepared.model_config.hidden_size}, vocab {prepared.model_config.vocab_size})")
    results, training = [], None
    for seed in config.seeds:
        seed_dir = os.path.join(workdir, f"seed_{seed}")
        result_path = os.path.join(seed_dir, RESULT_FILE)
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                results.append(json.load(f))
            log(f"seed {seed}: finished earlier ({result_path}), kept")
            continue
        if os.path.exists(seed_dir):
            log(f"seed {seed}: an unfinished run is in {seed_dir}; restarting it from scratch")
            shutil.rmtree(seed_dir)
        training = training or build_training(prepared)
        results.append(train_seed(prepared, training, seed, seed_dir))
    summary = summarize(prepared.data.spec, results)
    _write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    plot_seed_curves([os.path.join(workdir, f"seed_{r['seed']}", METRICS_FILE) for r in results],
                     os.path.join(workdir, CURVES_PLOT), metric=prepared.data.spec.metric,
                     title=f"{prepared.data.spec.name}: {len(results)} seed(s)")
    return summary


# --------------------------------------------------------------------------------------------
# Inference: reload an export, evaluate, predict, embed.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FineTuned:
    """A reloaded fine-tuned model, ready to score text."""

    export: init_from_lib.Export
    spec: TaskSpec
    tokenizer: Tokenizer
    state: Any  # a TrainState holding the params (no optimizer), for classify_eval_step
    mesh: Any
    eval_step: Callable  # the loop's jitted evaluation step, compiled once per loaded model

    @property
    def max_seq_length(self) -> int:
        return self.export.max_seq_length


def load_finetuned(path: str, seed: int | None = None) -> FineTuned:
    """An export dir, a seed dir or a fine-tuning workdir (best seed unless `seed`)."""
    from bertlab.train.state import create_train_state

    export = init_from_lib.load_export(init_from_lib.find_export(path, seed))
    spec = export.task_spec()
    model = BertForSequenceClassification(export.config, num_labels=spec.num_labels,
                                          extra_layers=export.extra_layers)
    mesh = mesh_lib.data_mesh()
    params = mesh_lib.replicate(jax.tree_util.tree_map(jnp.asarray, export.params), mesh)
    state = create_train_state(model, optax.identity(), params, mesh=mesh)
    tokenizer = Tokenizer.from_file(export.vocab_path, lower_case=export.lower_case)
    return FineTuned(export, spec, tokenizer, state, mesh, steps.jit_classify_eval_step(mesh=mesh))


def predict_logits(model: FineTuned, texts: Sequence[str], pairs: Sequence[str] | None = None,
                   batch_size: int = 64) -> np.ndarray:
    """Logits (N, num_labels) (the regression value in column 0), through the same jitted step
    as the training loop's evaluation."""
    if model.spec.is_pair and pairs is None:
        raise ValueError(f"{model.spec.name} is a pair task: give the second texts too")
    if not model.spec.is_pair and pairs is not None:
        raise ValueError(f"{model.spec.name} takes single texts, not pairs")
    encoded = model.tokenizer.pack(list(texts), None if pairs is None else list(pairs),
                                   max_length=model.max_seq_length)
    encoded["labels"] = np.zeros(len(texts), np.float32 if model.spec.is_regression else np.int32)
    logits, _ = run_eval(model.eval_step, model.state, encoded,
                         _round_up(batch_size, model.mesh.size), model.mesh)
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


def evaluate_split(model: FineTuned, split: Split, batch_size: int = 64) -> tuple[dict, np.ndarray]:
    """(metrics incl. loss, logits) of the model on a labelled split."""
    encoded = encode_split(model.tokenizer, model.spec, split, model.max_seq_length)
    logits, losses = run_eval(model.eval_step, model.state, encoded,
                              _round_up(batch_size, model.mesh.size), model.mesh)
    return score(model.spec, logits, losses, encoded["labels"]), logits


def load_eval_split(model: FineTuned, split: str, data_dir: str | None = None,
                    max_examples: int = 0) -> Split:
    """A split of the task the model was trained on, read the way training read it."""
    record = model.export.data
    if not record.get("task"):
        raise FinetuneConfigError(f"{model.export.directory}: the export records no task data")
    data_dir = record.get("data_dir", "") if data_dir is None else os.path.abspath(data_dir)
    _, loaded = load_split(record["task"], data_dir, split, dict(record.get("options", {})),
                           key="data-dir")
    if not loaded.is_labelled:
        raise FinetuneConfigError(f"split {split!r} of {record['task']} has no labels; use "
                                  f"`bertlab predict` for unlabelled text")
    return subsample(loaded, max_examples, record.get("data_seed", 0))


def _encode_sentences(params, token_ids, segment_ids, attention_mask, *, config: BertConfig):
    sequence_output, _ = BertModel(config).apply({"params": params}, token_ids, segment_ids,
                                                 attention_mask, deterministic=True)
    return mean_pool(sequence_output, attention_mask)  # (B, H)


@functools.lru_cache(maxsize=8)
def _sentence_encoder(config: BertConfig) -> Callable:
    """The jitted encoder of one model config, kept so repeated calls compile once."""
    return jax.jit(functools.partial(_encode_sentences, config=config))


def sentence_embeddings(backbone: init_from_lib.Backbone, texts: Sequence[str], *,
                        max_seq_length: int = 256, batch_size: int = 32,
                        normalize: bool = False) -> np.ndarray:
    """Mean-pooled last-layer vectors (N, H), sentence-transformers' recipe; optionally L2-
    normalised. Batches are padded only to their longest text (rounded up to 16), which mean
    pooling over real tokens makes irrelevant to the result."""
    if backbone.params is None:
        raise ValueError("sentence_embeddings needs pretrained weights")
    max_seq_length = min(max_seq_length, backbone.config.max_position_embeddings)
    tokenizer = Tokenizer.from_file(backbone.vocab_path, lower_case=backbone.lower_case)
    ids = tokenizer.encode_batch(list(texts))
    params = jax.tree_util.tree_map(jnp.asarray, backbone.params)
    encode = _sentence_encoder(backbone.config)
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        longest = max(len(x) for x in chunk) + 2
        length = min(max_seq_length, _round_up(longest, 16))
        packed = pack_ids(chunk, None, max_length=length, vocab=tokenizer.vocab)
        out.append(np.asarray(encode(params, packed["token_ids"], packed["segment_ids"],
                                     packed["attention_mask"])))
    vectors = np.concatenate(out) if out else np.zeros((0, backbone.config.hidden_size), np.float32)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return vectors


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return unit @ unit.T


# --------------------------------------------------------------------------------------------

def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _format(metrics: dict, spec: TaskSpec) -> str:
    return ", ".join(f"{name} {metrics[name]:.4f}" for name in spec.metrics if name in metrics)


def _write_json(path: str, value) -> None:
    write_json(path, value, default=init_from_lib.json_default)
