"""Fine-tuning: `train_and_evaluate(config, workdir) -> summary` (also `finetune`), the driver
over bertlab.train.loop that configs/finetune.py configures.

Read top to bottom, a run is:

1. load the task's train / eval (/ test) splits (bertlab.train.task_data), optionally a fixed
   random subset of each;
2. get a backbone (bertlab.train.classifier): `model.init_from` (any path
   bertlab.checkpoints.init_from resolves, with its vocabulary) or, with `model.from_scratch`,
   data.vocab or a vocabulary learned on the training texts into workdir/vocab.txt and random
   weights of the configured size; tokenise every split once;
3. for each seed (bertlab.train.seeds; finished seeds are kept): put a fresh classifier head
   (and `model.extra_layers` fresh encoder layers) on the backbone, train `train.epochs` passes
   with the jitted bertlab.train.steps.classify_train_step (packed batches unless
   data.packing=False: the same examples per update in the same order, without [PAD]
   compute; the rows of every batch of every epoch are planned before the first step, and
   every planned program compiles in background threads from then on: bertlab.train
   .programs), score the eval split after every epoch with the task's metrics
   (bertlab.inference.run_eval, what predict uses too), export the best epoch's model to
   seed_<n>/model/ (what predict reloads), stop early after `train.early_stopping_patience`
   epochs without improvement, score the test split once with the best weights;
4. write summary.json: every seed's best metrics with their median, mean, min, max and std.

Workdir layout:

    .bertlab.lock        held while a run writes here: a second run on the workdir is refused
    config.json          the full config (a rerun with another config is refused, seeds aside;
                         seeds added to a finished run: config.pending.json until they finish,
                         bertlab.run_files)
    init_from.json       the backbone's provenance: path, checkpoint step, sha256 of its weights
                         (seeds added later must use the same weights)
    vocab.txt            from_scratch only: the vocabulary learned on the training texts
    summary.json         per-seed metrics, median / mean / min / max / std, the best seed
    curves.png           every seed's loss and selection metric (train.select_metric) per epoch,
                         train and validation
    seed_<n>/result.json this seed's best epoch and metrics (present = the seed is finished)
    seed_<n>/eval_logits.npy  the best epoch's logits on the eval split (error analysis, ensembles)
    seed_<n>/eval_predictions.csv  the same per example: id, text(s), gold, prediction,
                         probabilities (bertlab.data.tasks.prediction_table)
    seed_<n>/model/      the best epoch's export: config.json, params.safetensors, vocab.txt,
                         task.json (bertlab.checkpoints.init_from); `bertlab convert` reads it too
    seed_<n>/metrics.jsonl  "train" lines every train.log_every steps; "train_epoch" and "eval"
                         per epoch
    seed_<n>/tensorboard/   the same scalars for TensorBoard
    seed_<n>/curves.png  loss and the selection metric per epoch, train and validation

Fine-tuning runs are short, so there is no mid-run resume: an unfinished seed restarts from
scratch, finished seeds are kept.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertlab import run_files
from bertlab.checkpoints import init_from as init_from_lib
from bertlab.data import packing
from bertlab.data.tasks.metrics import task_metrics
from bertlab.data.tasks.registry import TABLE_TASKS, TASKS, TaskSpec
from bertlab.data.tasks.table import table_spec
from bertlab.files import write_json
from bertlab.inference import eval_plan, run_eval, score, write_predictions
from bertlab.models import BertForSequenceClassification
from bertlab.models.config import VARIANTS, BertConfig
from bertlab.text.tokenizer import Tokenizer
from bertlab.train import loop
from bertlab.train import mesh as mesh_lib
from bertlab.train import optimizer as optimizer_lib
from bertlab.train import programs
from bertlab.train import seeds as seeds_lib
from bertlab.train import selection
from bertlab.train import startup_profile
from bertlab.train import steps
from bertlab.train.classifier import (FROZEN_GROUPS, abstract_train_state, check_class_weights,
                                      class_weights_for, finetune_model_config,
                                      make_finetune_optimizer, make_init_fn, prepare_backbone)
from bertlab.train.loop import TrainConfigError
from bertlab.train.model_config import model_config_from
from bertlab.train.metric_writer import METRICS_FILE, MetricWriter
from bertlab.train.plots_finetune import CURVES_PLOT, plot_epoch_curves, plot_seed_curves
from bertlab.train.state import create_train_state
from bertlab.train.task_data import (PackPlan, TaskData, batch_of, encode_split, is_pair_config,
                                     load_data, packed_batch_of, plan_packing, training_steps)

RESULT_FILE = seeds_lib.RESULT_FILE
EVAL_LOGITS_FILE = "eval_logits.npy"  # the best epoch's logits on the eval split, row order kept
EVAL_PREDICTIONS_FILE = "eval_predictions.csv"  # the same, per example with ids and texts
SUMMARY_FILE = init_from_lib.SUMMARY_FILE
MODEL_DIR = init_from_lib.MODEL_DIR
OPTIMIZERS = optimizer_lib.OPTIMIZERS
# Keys a rerun in the same workdir may change: they decide which seeds run, not what a seed does.
RERUN_FREE_KEYS = ("train.seed", "train.seeds", "train.log_every")
# Keys added after fine-tuning workdirs were first written, with what a config.json without them
# did: adding seeds to such a workdir is accepted when this run does the same, and a refusal
# names a value the user can set (e.g. data.packing=False), not "<absent>".
ADDED_KEYS = {"data.packing": False, "data.packing_programs": 4, "model.remat": "none",
              "model.dropout_impl": "threefry"}
# curves.png is redrawn after an epoch when this long has passed since the last drawing (real
# epochs take minutes: every epoch), and always when a seed ends; a PNG costs ~0.5 s.
PLOT_INTERVAL_SECONDS = 30.0
DIVERGED_ADVICE = ("Lower optimizer.lr, raise optimizer.warmup_fraction or set "
                   "optimizer.clip_norm.")
PROVENANCE_FILE = "init_from.json"
# Where each numeric key may lie (loop.check_numbers); a key not named here: finite and >= 0.
NUMERIC_RANGES = {
    **{f"model.{key}": loop.AT_LEAST_ONE for key in (
        "hidden_size", "num_layers", "num_heads", "intermediate_size",
        "max_position_embeddings")},
    "model.hidden_dropout": loop.PROBABILITY_BELOW_ONE,
    "model.attention_dropout": loop.PROBABILITY_BELOW_ONE,
    "data.max_seq_length": loop.Range(2), "data.batch_size": loop.AT_LEAST_ONE,
    "data.eval_batch_size": loop.AT_LEAST_ONE, "data.vocab_size": loop.Range(10),
    "data.packing_programs": loop.AT_LEAST_ONE,
    "table.dev_fraction": loop.Range(0, 1, True, True),
    "optimizer.warmup_fraction": loop.FRACTION,
    "optimizer.b1": loop.PROBABILITY_BELOW_ONE, "optimizer.b2": loop.PROBABILITY_BELOW_ONE,
    "train.epochs": loop.AT_LEAST_ONE, "train.log_every": loop.AT_LEAST_ONE,
}


# --------------------------------------------------------------------------------------------
# Config checks, before anything is read or written.
# --------------------------------------------------------------------------------------------

def check_config(config) -> None:
    """Value checks that name the key, before anything is read or written: every numeric key in
    its range, model.variant and (from scratch) the model's shapes, then how keys go together."""
    loop.check_numbers(config, NUMERIC_RANGES)
    model, data, opt, train = config.model, config.data, config.optimizer, config.train
    if bool(model.init_from) == bool(model.from_scratch):
        raise TrainConfigError(
            "set exactly one of model.init_from=PATH (a pretrained backbone) and "
            f"model.from_scratch=True (got model.init_from={model.init_from!r}, "
            f"model.from_scratch={model.from_scratch})")
    if opt.name not in OPTIMIZERS:
        raise TrainConfigError(f"optimizer.name={opt.name!r} is not one of {', '.join(OPTIMIZERS)}")
    if not 0.0 <= opt.warmup_fraction <= 1.0:
        raise TrainConfigError(f"optimizer.warmup_fraction={opt.warmup_fraction} must be in [0, 1]")
    if opt.lr < 0:
        raise TrainConfigError(f"optimizer.lr={opt.lr} must be >= 0")
    for key, low in (("data.batch_size", 1), ("data.eval_batch_size", 1), ("train.epochs", 1),
                     ("train.log_every", 1), ("data.max_train_examples", 0),
                     ("data.max_eval_examples", 0), ("train.early_stopping_patience", 0),
                     ("model.extra_layers", 0), ("data.packing_programs", 1)):
        group, name = key.split(".")
        if config[group][name] < low:
            raise TrainConfigError(f"{key}={config[group][name]} must be >= {low}")
    if data.max_seq_length < 2 + (1 if is_pair_config(config) else 0):
        raise TrainConfigError(f"data.max_seq_length={data.max_seq_length} leaves no room for "
                               "text")
    if train.seeds and train.seed != 0:
        raise TrainConfigError(f"train.seed={train.seed} and train.seeds={tuple(train.seeds)}: "
                               "set train.seed (one run) or train.seeds (several), not both")
    seeds = seeds_lib.seeds_of(train)
    if len(set(seeds)) != len(seeds):
        raise TrainConfigError(f"train.seeds={tuple(seeds)} repeats a seed")
    if model.from_scratch and model.variant not in VARIANTS:
        raise TrainConfigError(f"model.variant={model.variant!r} is not one of "
                               f"{', '.join(VARIANTS)}")
    if model.from_scratch and data.vocab_size < 10:
        raise TrainConfigError(f"data.vocab_size={data.vocab_size} is too small")
    if model.from_scratch:  # the shapes (heads dividing the width, ...) before any data is read
        model_config_from(model, data.vocab_size,
                          max_position_embeddings=max(512, data.max_seq_length))
    if data.vocab and not model.from_scratch:
        raise TrainConfigError(f"data.vocab={data.vocab!r} applies only with from_scratch "
                               "(model.from_scratch=True; a pretrained backbone brings its own "
                               "vocab.txt)")
    if data.vocab and not os.path.isfile(data.vocab):
        raise TrainConfigError(f"data.vocab={data.vocab!r}: file not found")
    if opt.grad_accum_steps < 1 or data.batch_size % opt.grad_accum_steps:
        raise TrainConfigError(f"data.batch_size={data.batch_size} must be a multiple of "
                               f"optimizer.grad_accum_steps={opt.grad_accum_steps} (>= 1)")
    if not 0.0 < opt.layer_decay <= 1.0:
        raise TrainConfigError(f"optimizer.layer_decay={opt.layer_decay} must be in (0, 1] "
                               "(1.0 = off)")
    check_task_controls(config, known_spec(config))


def known_spec(config) -> TaskSpec | None:
    """The task's spec as far as the config tells it before any data is read: a registry
    task's, a table's when its classes are named (or it is a regression), else None."""
    if config.task not in TABLE_TASKS:
        return TASKS[config.task]
    table = config.table
    names = tuple(n.strip() for n in table.label_names.split(",") if n.strip())
    if table.regression or len(names) >= 2:
        return table_spec(config.task, table.text, table.text_pair or None, names,
                          bool(table.regression))
    return None


def check_task_controls(config, spec: TaskSpec | None) -> None:
    """train.select_metric and train.class_weights against the task: from known_spec before
    anything is read, again with the loaded spec (a table's classes come from its data)."""
    train = config.train
    if spec is None:  # a classification table of unknown classes: the names, not the count
        selection.select_metric(train.select_metric, table_spec(config.task, "text", None,
                                                                ("0", "1"), False))
        check_class_weights(train.class_weights, regression=False, num_labels=None)
        return
    selection.select_metric(train.select_metric, spec)
    check_class_weights(train.class_weights, regression=spec.is_regression,
                        num_labels=spec.num_labels)


# --------------------------------------------------------------------------------------------
# What every seed shares: data, backbone, tokens; the model, optimizer and compiled steps.
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
    plans: dict = dataclasses.field(default_factory=dict)  # seed -> its PackPlan, made once


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
    # The run's programs compiling in the background (start_compiles); None: on first use.
    ahead: programs.AheadOfTime | None = None


def prepare(config, workdir: str, *, log=print) -> Prepared:
    """Steps 1-2 of a run (data, backbone, tokens), shared by every seed."""
    check_config(config)
    # A pretrained backbone is resolved first: a wrong init_from fails before any data is read.
    backbone = None if config.model.from_scratch else prepare_backbone(config, workdir, None,
                                                                       log=log)
    startup_profile.mark("checkpoint")
    data = load_data(config)
    check_task_controls(config, data.spec)
    startup_profile.mark("data")
    backbone = backbone or prepare_backbone(config, workdir, data.train, log=log)
    model_config = finetune_model_config(config, backbone)
    tokenizer = Tokenizer.from_file(backbone.vocab_path, lower_case=backbone.lower_case)
    encode = functools.partial(encode_split, tokenizer, data.spec,
                               max_seq_length=config.data.max_seq_length)
    prepared = Prepared(config=config, data=data, backbone=backbone, model_config=model_config,
                        train=encode(data.train), eval=encode(data.eval),
                        test=None if data.test is None else encode(data.test),
                        mesh=mesh_lib.data_mesh())
    startup_profile.mark("tokenise")
    return prepared


def build_training(prepared: Prepared) -> Training:
    config, spec, mesh = prepared.config, prepared.data.spec, prepared.mesh
    mesh_lib.check_batch_divides(config.data.batch_size, mesh, what="data.batch_size")
    accum = config.optimizer.grad_accum_steps
    if accum > 1 and not config.data.packing:
        mesh_lib.check_batch_divides(config.data.batch_size // accum, mesh,
                                     what="data.batch_size / optimizer.grad_accum_steps")
    steps_per_epoch, num_steps, warmup_steps = training_steps(
        len(prepared.train["token_ids"]), config.data.batch_size, config.train.epochs,
        config.optimizer.warmup_fraction)
    frozen = FROZEN_GROUPS if config.train.freeze_backbone else ()
    model = BertForSequenceClassification(prepared.model_config, num_labels=spec.num_labels,
                                          extra_layers=config.model.extra_layers)
    tx, schedule = make_finetune_optimizer(config.optimizer, num_steps=num_steps,
                                           warmup_steps=warmup_steps, frozen=frozen,
                                           num_layers=prepared.model_config.num_layers)
    class_weights = class_weights_for(config.train.class_weights, spec,
                                      prepared.train["labels"])
    return Training(
        model=model,
        init=make_init_fn(model, prepared.backbone.params, config.data.max_seq_length, mesh),
        tx=tx,
        train_step=steps.jit_classify_train_step(schedule=schedule, regression=spec.is_regression,
                                                 frozen=frozen, mesh=mesh,
                                                 class_weights=class_weights,
                                                 grad_accum_steps=accum),
        eval_step=steps.jit_classify_eval_step(mesh=mesh),
        steps_per_epoch=steps_per_epoch, num_steps=num_steps, warmup_steps=warmup_steps,
        eval_batch=packing.round_up(config.data.eval_batch_size, mesh.size))


# --------------------------------------------------------------------------------------------
# One seed.
# --------------------------------------------------------------------------------------------

def epoch_batches(seed: int, epoch: int, num_examples: int, batch_size: int) -> list[np.ndarray]:
    """The example indices of each batch of `epoch` (1-based) in this seed's order."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [order[start:start + batch_size] for start in range(0, num_examples, batch_size)]


def plan_seed_packing(prepared: Prepared, seed: int) -> PackPlan | None:
    """The packed rows of every batch of every epoch of this seed, before its first step (so
    the compiled shapes are known and a rerun plans the same); None when data.packing is off."""
    config = prepared.config
    if not config.data.packing:
        return None
    if seed not in prepared.plans:
        num_examples, batch_size = len(prepared.train["token_ids"]), config.data.batch_size
        prepared.plans[seed] = plan_packing(
            packing.example_lengths(prepared.train["attention_mask"]),
            seed_batches(prepared, seed), examples=batch_size,
            row_length=prepared.train["token_ids"].shape[1],
            max_programs=config.data.packing_programs,
            multiple=prepared.mesh.size * config.optimizer.grad_accum_steps)
    return prepared.plans[seed]


def seed_batches(prepared: Prepared, seed: int) -> list[np.ndarray]:
    """Every batch of every epoch of this seed, in the order they run (plan.rows' order)."""
    config = prepared.config
    num_examples, batch_size = len(prepared.train["token_ids"]), config.data.batch_size
    return [rows for epoch in range(1, config.train.epochs + 1)
            for rows in epoch_batches(seed, epoch, num_examples, batch_size)]


def train_program_key(plan: PackPlan | None, index: int) -> tuple:
    """The AheadOfTime key of the train program batch `index` of a seed runs."""
    return ("train", "padded") if plan is None else ("train", f"R={plan.rows[index]}")


def eval_program_keys(prepared: Prepared, training: Training, encoded: dict) -> list[tuple]:
    """The AheadOfTime keys of the eval programs one pass over `encoded` runs."""
    if not prepared.config.data.packing:
        return [("eval", "padded")]
    plan = eval_plan(encoded, training.eval_batch, prepared.mesh)
    return [("eval", f"R={rows}") for rows in plan.buckets]


def start_compiles(prepared: Prepared, training: Training, seed: int
                   ) -> programs.AheadOfTime | None:
    """Starts compiling every program `seed` will run (its planned train row buckets, the eval
    programs of the eval and test splits) in background threads, from their shapes, while the
    main thread goes on (backbone probe, parameter init); train_epoch and evaluate_split wait
    for a program before its first call. None when BERTLAB_PRECOMPILE=off."""
    if not programs.enabled():
        return None
    config, mesh = prepared.config, prepared.mesh
    ahead = programs.AheadOfTime()
    state = abstract_train_state(training.model, training.tx, prepared.backbone.params,
                                 config.data.max_seq_length, mesh)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=mesh_lib.replicated(mesh))
    plan, batches = plan_seed_packing(prepared, seed), seed_batches(prepared, seed)
    for index in (range(len(batches)) if plan is not None else [0]):  # first batch of each R
        key = train_program_key(plan, index)
        if key not in ahead.keys():
            ahead.submit(key, training.train_step, state,
                         mesh_lib.global_batch(train_batch(prepared, batches[index], plan, index),
                                               mesh), rng)
    for encoded in (prepared.eval, prepared.test):
        if encoded is None or not len(encoded["token_ids"]):
            continue
        for key, batch in zip(eval_program_keys(prepared, training, encoded),
                              eval_batches_by_bucket(prepared, training, encoded)):
            ahead.submit(key, training.eval_step, state, mesh_lib.global_batch(batch, mesh))
    return ahead


def eval_batches_by_bucket(prepared: Prepared, training: Training, encoded: dict) -> list[dict]:
    """One batch per eval program (the first batch of each planned row count) as run_eval
    builds it, in eval_program_keys' order."""
    count, batch_size = len(encoded["token_ids"]), training.eval_batch
    if not prepared.config.data.packing:
        take = lambda rows: {name: value[rows] for name, value in encoded.items()}
        return [next(loop.eval_batches(take, count, batch_size))]
    plan = eval_plan(encoded, batch_size, prepared.mesh)
    out = []
    for rows in plan.buckets:
        index = plan.rows.index(rows)
        slots = np.arange(index * plan.examples, min((index + 1) * plan.examples, count))
        out.append(packed_batch_of(encoded, slots, plan.examples, plan, index))
    return out


def train_batch(prepared: Prepared, rows: np.ndarray, plan: PackPlan | None, index: int) -> dict:
    """The local batch of the seed's `index`-th step: `rows` of the training split, packed to
    the plan (slot s of the packed batch is row s of the padded one: logits line up)."""
    batch_size = prepared.config.data.batch_size
    if plan is None:
        return batch_of(prepared.train, rows, batch_size)
    return packed_batch_of(prepared.train, rows, batch_size, plan, index)


def train_epoch(prepared: Prepared, training: Training, state, rng, window: loop.MetricWindow,
                writer: MetricWriter, *, seed: int, epoch: int, step: int,
                plan: PackPlan | None = None):
    """One pass over the training split in this seed's order for `epoch`: (state, step, the
    epoch's loss and task metrics from the logits the train steps returned). With a plan the
    batches are packed (plan.rows[i] for the i-th batch of the seed)."""
    config, mesh = prepared.config, prepared.mesh
    batch_size, steps_per_epoch = config.data.batch_size, training.steps_per_epoch
    batches = epoch_batches(seed, epoch, len(prepared.train["token_ids"]), batch_size)
    parts = []
    for index, rows in enumerate(batches):
        run_index = (epoch - 1) * steps_per_epoch + index  # this step's index in the seed's plan
        local = train_batch(prepared, rows, plan, run_index)
        if training.ahead is not None:
            training.ahead.wait(train_program_key(plan, run_index))
        state, metrics = training.train_step(state, mesh_lib.global_batch(local, mesh), rng)
        step += 1
        if step == 1 and startup_profile.enabled():  # the first step's compile, measured
            jax.block_until_ready(metrics)
            startup_profile.mark("first step", seed=seed,
                                 rows=None if plan is None else plan.rows[0])
        if plan is not None:  # real tokens / token slots of this step, logged as a mean
            metrics = {**metrics, "packing_efficiency": packing.packing_efficiency(local)}
        window.add(step, {name: value for name, value in metrics.items() if name != "logits"})
        parts.append((metrics["logits"], metrics["loss"], rows))
        writer.progress(step)
        if step % config.train.log_every == 0 or index == steps_per_epoch - 1:
            means = window.close(kept_model(os.path.dirname(writer.path)))
            means["epoch"] = epoch - 1 + (index + 1) / steps_per_epoch
            writer.write(step, "train", means)
            writer.progress(step, loss=f"{means['loss']:.4f}")
    return state, step, epoch_train_metrics(prepared.data.spec, parts, prepared.train["labels"])


def epoch_train_metrics(spec: TaskSpec, parts: list, labels: np.ndarray) -> dict:
    """Loss and task metrics of the training epoch, from the logits the train steps returned
    (with dropout on, as Keras reports training accuracy)."""
    parts = jax.device_get(parts)
    logits = np.concatenate([np.asarray(l)[:len(rows)] for l, _, rows in parts])
    rows = np.concatenate([rows for _, _, rows in parts])
    loss = float(np.sum([float(x) * len(r) for _, x, r in parts]) / max(len(rows), 1))
    return {"loss": loss, **task_metrics(spec, logits, labels[rows])}


def evaluate_split(prepared, training, state, encoded: dict, metric: str
                   ) -> tuple[np.ndarray, dict]:
    """(logits, metrics) of `state` on an encoded split: the task's metrics plus the selection
    metric, as every epoch's eval and the final test score them."""
    spec = prepared.data.spec
    if training.ahead is not None:
        for key in eval_program_keys(prepared, training, encoded):
            training.ahead.wait(key)
    logits, losses = run_eval(training.eval_step, state, encoded, training.eval_batch,
                              prepared.mesh, packed=prepared.config.data.packing)
    result = score(spec, logits, losses, encoded["labels"])
    return logits, selection.with_selected(result, metric, spec, logits, encoded["labels"])


def train_seed(prepared: Prepared, training: Training, seed: int, seed_dir: str) -> dict:
    """Trains one seed in seed_dir and returns (and writes) its result.json."""
    config, spec, mesh = prepared.config, prepared.data.spec, prepared.mesh
    metric = selection.select_metric(config.train.select_metric, spec)  # picks the best epoch
    os.makedirs(seed_dir, exist_ok=True)
    started = time.time()
    num_examples = len(prepared.train["token_ids"])
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    state = create_train_state(training.model, training.tx, training.init(init_rng), mesh=mesh)
    dropout_rng = mesh_lib.replicate(dropout_rng, mesh)
    if startup_profile.enabled():
        jax.block_until_ready(state)
        startup_profile.mark("params init", seed=seed)
    writer = MetricWriter(seed_dir, total_steps=training.num_steps)
    writer.message(f"seed {seed}: {num_examples} train / {len(prepared.eval['token_ids'])} eval "
                   f"examples, {config.train.epochs} epoch(s) x {training.steps_per_epoch} steps "
                   f"of {config.data.batch_size}, warm-up {training.warmup_steps} of "
                   f"{training.num_steps} updates")
    window = loop.MetricWindow(0, what=f"seed {seed}: ", advice=DIVERGED_ADVICE)
    plan = plan_seed_packing(prepared, seed)
    if plan is not None:
        writer.message(f"seed {seed}: packed batches, rows of {plan.row_length} tokens, "
                       f"{len(plan.buckets)} row count(s) {list(plan.buckets)} (padded: "
                       f"{config.data.batch_size} rows)")
    last_plot = time.time()
    best: dict | None = None
    best_epoch, best_params, epochs_without_gain, stopped_early = 0, None, 0, False
    step = epochs_run = 0
    patience = config.train.early_stopping_patience
    try:
        for epoch in range(1, config.train.epochs + 1):
            state, step, train_result = train_epoch(prepared, training, state, dropout_rng,
                                                    window, writer, seed=seed, epoch=epoch,
                                                    step=step, plan=plan)
            epochs_run = epoch
            writer.write(step, "train_epoch", {"epoch": epoch, **train_result})
            startup_profile.mark("training", seed=seed, epoch=epoch)
            logits, eval_result = evaluate_split(prepared, training, state, prepared.eval,
                                                 metric)
            startup_profile.mark("eval", seed=seed, epoch=epoch)
            writer.write(step, "eval", {"epoch": epoch, **eval_result})
            # strictly better only: a tie keeps the earlier epoch (bertlab.train.selection)
            improved = selection.improves(eval_result, best, metric)
            writer.message(f"seed {seed} epoch {epoch}: train loss {train_result['loss']:.4f}, "
                           f"eval loss {eval_result['loss']:.4f}, {_format(eval_result, spec)}"
                           + (" (best)" if improved else ""))
            if improved:
                best, best_epoch, epochs_without_gain = eval_result, epoch, 0
                best_params = jax.device_get(state.params)
                np.save(os.path.join(seed_dir, EVAL_LOGITS_FILE), logits)
                write_predictions(os.path.join(seed_dir, EVAL_PREDICTIONS_FILE), spec,
                                  prepared.data.eval, logits)
                save_model(os.path.join(seed_dir, MODEL_DIR), prepared, best_params,
                           meta={"seed": seed, "epoch": epoch, "step": step, "eval": eval_result})
                startup_profile.mark("writing the best epoch", seed=seed, epoch=epoch)
            else:
                epochs_without_gain += 1
            if time.time() - last_plot >= PLOT_INTERVAL_SECONDS:
                plot_seed(seed_dir, spec, seed, metric, eval_name=config.data.eval_split)
                last_plot = time.time()
            if patience and epochs_without_gain >= patience and epoch < config.train.epochs:
                stopped_early = True
                writer.message(f"seed {seed}: no better {metric} for {epochs_without_gain} "
                               f"epoch(s); stopping early after epoch {epoch}")
                break
        plot_seed(seed_dir, spec, seed, metric, eval_name=config.data.eval_split)
        startup_profile.mark("plots", seed=seed)
        test_result = None
        if prepared.test is not None:
            best_state = state.replace(params=mesh_lib.replicate(best_params, mesh))
            _, test_result = evaluate_split(prepared, training, best_state, prepared.test,
                                            metric)
            writer.write(step, "test", {"epoch": best_epoch, **test_result})
            writer.message(f"seed {seed} test (epoch {best_epoch} weights): "
                           f"{_format(test_result, spec)}")
    finally:
        writer.close()
    result = {"seed": seed, "best_epoch": best_epoch, "epochs_run": epochs_run,
              "stopped_early": stopped_early, "eval": best, "test": test_result,
              "num_train_examples": num_examples, "steps": step, "num_steps": training.num_steps,
              "warmup_steps": training.warmup_steps,
              "seconds": round(time.time() - started, 2)}
    _write_json(os.path.join(seed_dir, RESULT_FILE), result)
    return result


def kept_model(seed_dir: str) -> str:
    """What survives a stop for a non-finite loss: the best epoch's export, if one was written."""
    if os.path.isdir(os.path.join(seed_dir, MODEL_DIR)):
        return "the best epoch's model/ so far is kept"
    return "no model/ was written (no epoch finished)"


def plot_seed(seed_dir: str, spec: TaskSpec, seed: int, metric: str, *,
              eval_name: str = "validation") -> None:
    """curves.png of one seed, its metric panel showing `metric` (the one that picks the epoch)."""
    plot_epoch_curves(os.path.join(seed_dir, METRICS_FILE), os.path.join(seed_dir, CURVES_PLOT),
                      metric=metric, title=f"{spec.name} seed {seed}", eval_name=eval_name)


def save_model(directory: str, prepared: Prepared, params, meta: dict) -> str:
    config = prepared.config
    return init_from_lib.save_export(
        directory, config=prepared.model_config, params=params,
        vocab_path=prepared.backbone.vocab_path, lower_case=prepared.backbone.lower_case,
        spec=prepared.data.spec, extra_layers=config.model.extra_layers,
        max_seq_length=config.data.max_seq_length, data=prepared.data.record,
        meta={**meta, "init_from": config.model.init_from or "from_scratch",
              "backbone": prepared.backbone.provenance})


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------

def check_provenance(workdir: str, backbone: init_from_lib.Backbone, *,
                     is_main: bool = True) -> None:
    """init_from.json: the backbone the workdir's seeds were fine-tuned from. Written by the
    first run; a later run (seeds added) whose model.init_from now gives other weights (the
    pretraining went on, the path was replaced) is refused, naming both."""
    if not backbone.provenance:
        return
    path = os.path.join(workdir, PROVENANCE_FILE)
    recorded = run_files.read_json(path)
    if recorded and recorded.get("sha256") != backbone.provenance.get("sha256"):
        raise TrainConfigError(
            f"{path}: the seeds in {workdir} were fine-tuned from "
            f"{init_from_lib.describe_provenance(recorded)}, but model.init_from now gives "
            f"{init_from_lib.describe_provenance(backbone.provenance)}; use a new --workdir "
            f"for the other backbone")
    if not recorded and is_main:
        _write_json(path, backbone.provenance)


def train_and_evaluate(config, workdir: str, *, log=print) -> dict:
    """Fine-tunes per `config` for every seed of train.seeds (or train.seed); returns (and
    writes) summary.json.

    The config (and, for an existing workdir, its agreement with the config there) is checked
    before anything is touched; the workdir is then locked until summary.json is written."""
    startup_profile.mark("imports and config")
    check_config(config)
    config_dict = config.to_dict()
    loop.check_rerun(os.path.abspath(os.path.expanduser(workdir)), config_dict,
                     free=RERUN_FREE_KEYS, added=ADDED_KEYS)
    is_main = jax.process_index() == 0
    with loop.workdir_session(workdir, is_main=is_main) as workdir:
        return _train_and_evaluate(config, config_dict, workdir, is_main=is_main, log=log)


def _train_and_evaluate(config, config_dict: dict, workdir: str, *, is_main: bool,
                        log=print) -> dict:
    prepared = prepare(config, workdir, log=log)
    check_provenance(workdir, prepared.backbone, is_main=is_main)
    run_files.record_start(workdir, config_dict, is_main=is_main, default=loop.json_default,
                           final_name=SUMMARY_FILE)
    spec, model_config = prepared.data.spec, prepared.model_config
    log(f"{spec.name}: {len(prepared.data.train)} train, {len(prepared.data.eval)} "
        f"{config.data.eval_split} examples; backbone {prepared.backbone.kind} "
        f"({model_config.num_layers} layer(s), hidden {model_config.hidden_size}, vocab "
        f"{model_config.vocab_size})")
    training = build_training(prepared)
    startup_profile.mark("model and optimizer")
    seeds = seeds_lib.seeds_of(config.train)
    pending = [seed for seed in seeds if not os.path.exists(
        os.path.join(seeds_lib.seed_dir(workdir, seed), RESULT_FILE))]
    if pending:
        # The first seed's programs compile in the background from here on (bertlab.train
        # .programs), while the main thread probes the backbone and initialises parameters.
        training.ahead = start_compiles(prepared, training, pending[0])
        startup_profile.mark("compiles started", programs=None if training.ahead is None
                             else len(training.ahead.keys()))
        seeds_lib.warn_if_collapsed(prepared.backbone, prepared.data.train.texts,
                                    config.model.init_from, log=log)
        startup_profile.mark("collapse probe")
    failed = True
    try:
        results = seeds_lib.run_seeds(seeds, workdir,
                                      functools.partial(train_seed, prepared, training), log=log)
        failed = False
    finally:
        if training.ahead is not None:
            training.ahead.close(failed=failed)
    metric = selection.select_metric(config.train.select_metric, spec)
    summary = seeds_lib.summarize(spec, results, metric=metric)
    run_files.record_finish(workdir, summary, is_main=is_main, default=init_from_lib.json_default,
                            final_name=SUMMARY_FILE)
    plot_seed_curves([os.path.join(workdir, f"seed_{r['seed']}", METRICS_FILE) for r in results],
                     os.path.join(workdir, CURVES_PLOT), metric=metric,
                     title=f"{spec.name}: {len(results)} seed(s)",
                     eval_name=config.data.eval_split)
    startup_profile.mark("summary and plots")
    return summary


finetune = train_and_evaluate  # the name commands, sweeps and tests have always called


def _format(metrics: dict, spec: TaskSpec) -> str:
    names = list(spec.metrics) + [n for n in metrics if n not in spec.metrics and n != "loss"]
    return ", ".join(f"{name} {metrics[name]:.4f}" for name in names if name in metrics)


def _write_json(path: str, value) -> None:
    write_json(path, value, default=init_from_lib.json_default)
