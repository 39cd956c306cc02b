"""The masked-LM pretraining loop: `train_and_evaluate(config, workdir) -> final metrics`.

Read top to bottom, a run is:

1. prepare inputs: the vocabulary (given, or learned into workdir/vocab.txt) and the shards
   (given as data.prepared, or created into workdir/data); both are reused on resume and checked
   against the config;
2. build the model, optimizer and mesh; restore the latest checkpoint in workdir/checkpoints
   (after checking that it was made by a compatible config) or initialise;
3. loop: batch -> jitted train_step; every log_every steps check the losses are finite and write
   metrics; every eval_every steps evaluate on the held-out split (and redraw loss.png); every
   checkpoint_every steps save. SIGTERM / SIGINT finish the current step, save and return.

With data.tokenize_on_device the shards' raw segment texts are read instead of their ids, and
the first stage of every step, on the device, tokenises them (bertlab.data.pretraining.on_device): the
batches, and so the losses, are those of the host path, and a run may switch between the two on
resume. No tokenizer runs on the host in the loop.

Resume order (what makes a resumed run bit-identical to an uninterrupted one): params, optimizer
state and step come from the checkpoint; the base rng too (the step is folded into it, so
masking and dropout continue the same stream); the data iterator restarts at the saved
(epoch, position), and its epoch permutations depend only on data.seed.

Workdir layout:

    config.json         the full config of the latest (re)start
    vocab.txt           the vocabulary (learned here, or a copy of data.vocab)
    data/               shards + meta.json, unless data.prepared points elsewhere
    checkpoints/<step>/ params, opt_state, meta (see bertlab.checkpoints.training_state)
    metrics.jsonl       one JSON object per log / eval step
    tensorboard/        the same scalars as TensorBoard events
    loss.png            train and eval loss against step
    final_metrics.json  what train_and_evaluate returned, once the run reached train.num_steps
                        or train.stop_after; a signal (preemption) leaves none behind, so a
                        sweep or scheduler sees the stage as unfinished and reruns it to resume
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bertlab.train import mesh as mesh_lib
from bertlab.train import optimizer as optimizer_lib
from bertlab.train import steps
from bertlab.train import state as train_state
from bertlab.checkpoints import training_state as checkpoints
from bertlab.data.pretraining.iterator import BatchIterator
from bertlab.data.pretraining.shards import ShardedExamples
from bertlab.files import write_json
from bertlab.train.metric_writer import METRICS_FILE, MetricWriter
from bertlab.models import BertForPreTraining
from bertlab.models.config import (VARIANTS, BertConfig, ConfigError, config_from_dict,
                                   config_to_dict)
from bertlab.train.plots import LOSS_PLOT, plot_loss_curve
from bertlab.text.tokenizer import Tokenizer, load_vocab, save_vocab

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
DATA_DIR = "data"
EVAL_DATA_DIR = "eval_data"          # data.eval_corpus's shards
FINAL_METRICS_FILE = "final_metrics.json"
MODEL_SIZE_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
# Model keys that may change on resume: they shape no parameter.
RESUMABLE_MODEL_KEYS = ("hidden_dropout", "attention_dropout", "dtype", "attention_kernel")


class PretrainConfigError(ValueError):
    """A config value this run cannot use; the message names the key."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message gives the step range and the last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Config -> model config, and the checks that must pass before any work starts.
# --------------------------------------------------------------------------------------------

def model_config_from(config, vocab_size: int) -> BertConfig:
    """BertConfig from the `model` group: the variant's sizes unless a size key is set."""
    model = config.model
    if model.variant not in VARIANTS:
        raise PretrainConfigError(f"model.variant={model.variant!r} is not one of "
                                  f"{', '.join(VARIANTS)}")
    values = {key: value for key, value in model.items() if key != "variant"}
    for key in MODEL_SIZE_KEYS:
        if values[key] is None:
            values[key] = VARIANTS[model.variant][key]
    try:
        return config_from_dict({**values, "vocab_size": vocab_size}, source="config.model")
    except ConfigError as e:
        raise PretrainConfigError(f"config.model: {e}".replace("BertConfig.", "model.")) from None


def check_config(config) -> None:
    """Value checks that name the key; run before anything is read or written."""
    data, opt, train = config.data, config.optimizer, config.train
    if not data.prepared and not [p for p in data.corpus.split(",") if p.strip()]:
        raise PretrainConfigError("data.corpus is empty and no data.prepared directory is given")
    if data.eval_corpus and data.tokenize_on_device:
        raise PretrainConfigError("data.eval_corpus works with host tokenisation only: the device "
                                  "tokeniser is compiled for the training shards' text widths; "
                                  "set data.tokenize_on_device=False or data.eval_corpus=''")
    if not 0.0 < data.mask_rate < 1.0:
        raise PretrainConfigError(f"data.mask_rate={data.mask_rate} must be in (0, 1)")
    if not 1 <= data.max_predictions <= data.max_seq_length:
        raise PretrainConfigError(f"data.max_predictions={data.max_predictions} must be in "
                                  f"[1, data.max_seq_length={data.max_seq_length}]")
    if (config.model.position_embedding == "learned"
            and data.max_seq_length > config.model.max_position_embeddings):
        raise PretrainConfigError(f"data.max_seq_length={data.max_seq_length} exceeds "
                                  f"model.max_position_embeddings="
                                  f"{config.model.max_position_embeddings}")
    if opt.name not in optimizer_lib.OPTIMIZERS:
        raise PretrainConfigError(f"optimizer.name={opt.name!r} is not one of "
                                  f"{', '.join(optimizer_lib.OPTIMIZERS)}")
    if opt.grad_accum_steps < 1 or data.batch_size % opt.grad_accum_steps:
        raise PretrainConfigError(f"data.batch_size={data.batch_size} must be a multiple of "
                                  f"optimizer.grad_accum_steps={opt.grad_accum_steps} (>= 1)")
    if train.num_steps < 1:
        raise PretrainConfigError(f"train.num_steps={train.num_steps} must be >= 1")
    if not 0 <= opt.warmup_steps <= train.num_steps:
        raise PretrainConfigError(f"optimizer.warmup_steps={opt.warmup_steps} must be in "
                                  f"[0, train.num_steps={train.num_steps}]")
    for key in ("log_every", "keep_checkpoints"):
        if train[key] < 1:
            raise PretrainConfigError(f"train.{key}={train[key]} must be >= 1")
    for key in ("eval_every", "eval_batches", "checkpoint_every", "stop_after"):
        if train[key] < 0:
            raise PretrainConfigError(f"train.{key}={train[key]} must be >= 0")
    if train.peak_flops < 0:
        raise PretrainConfigError(f"train.peak_flops={train.peak_flops} must be >= 0 (0: measure)")


# --------------------------------------------------------------------------------------------
# Inputs: vocabulary and shards, made once per workdir and checked on every start.
# --------------------------------------------------------------------------------------------

def corpus_files(data_config, key: str = "corpus") -> list[str]:
    """data.<key> (corpus or eval_corpus) resolved to files; a missing or empty path is an error
    naming the key."""
    from bertlab.data.pretraining.corpus import CorpusError, resolve_corpus

    paths = [p.strip() for p in data_config[key].split(",") if p.strip()]
    try:
        return resolve_corpus(paths)
    except CorpusError as e:
        raise PretrainConfigError(f"data.{key}={data_config[key]!r}: {e}") from None


def prepare_vocab(data_config, workdir: str, *, log=print):
    """workdir/vocab.txt: a copy of data.vocab, or learned from the corpus; (path, Vocab)."""
    from bertlab.data.pretraining.corpus import iter_lines

    path = os.path.join(workdir, VOCAB_FILE)
    if data_config.vocab:
        if not os.path.isfile(data_config.vocab):
            raise PretrainConfigError(f"data.vocab={data_config.vocab!r}: file not found")
        vocab = load_vocab(data_config.vocab)
        if os.path.exists(path):
            if load_vocab(path).tokens != vocab.tokens:
                raise PretrainConfigError(
                    f"data.vocab={data_config.vocab!r} differs from {path}, the vocabulary this "
                    f"workdir was made with; use a new --workdir")
        else:
            save_vocab(vocab, path)
        return path, vocab
    if os.path.exists(path):
        return path, load_vocab(path)
    if data_config.prepared:
        raise PretrainConfigError(f"data.prepared={data_config.prepared!r} needs data.vocab, the "
                                  "vocab.txt the shards were made with")
    from bertlab.text.learn import VocabLearnError, learn_vocab

    files = corpus_files(data_config)
    log(f"learning a {data_config.vocab_size}-entry WordPiece vocabulary from {len(files)} file(s)")
    try:
        vocab = learn_vocab(iter_lines(files), data_config.vocab_size,
                            lower_case=data_config.lower_case, progress=True)
    except VocabLearnError as e:
        raise PretrainConfigError(f"data.corpus={data_config.corpus!r} "
                                  f"({len(files)} file(s)): {e}") from None
    save_vocab(vocab, path)
    return path, load_vocab(path)


# Data settings that shape the shards: a cached dataset must have been made with the same ones.
_DATA_ARGS = ("max_seq_length", "short_seq_prob", "next_sentence", "eval_fraction", "seed",
              "doc_boundary")


def data_args(data_config) -> dict:
    """create_pretraining_data's arguments for data.corpus. With data.eval_corpus the corpus holds
    nothing out: evaluation reads the eval corpus instead, so every corpus document is trained on."""
    args = {key: data_config[key] for key in _DATA_ARGS}
    if data_config.eval_corpus:
        args["eval_fraction"] = 0.0
    return args


def prepare_data(data_config, workdir: str, vocab, *, log=print) -> str:
    """The dataset directory: data.prepared, or workdir/data (created on the first start)."""
    dataset = data_config.prepared or os.path.join(workdir, DATA_DIR)
    if data_config.prepared:
        if not os.path.exists(os.path.join(dataset, "meta.json")):
            raise PretrainConfigError(f"data.prepared={dataset!r}: no meta.json there; make it "
                                      "with `bertlab create-data`")
        return _checked_dataset(dataset, data_config, vocab, data_args(data_config),
                                keys=("max_seq_length", "next_sentence"), files=None,
                                remake="set it back")
    files = corpus_files(data_config)
    return _made_dataset(dataset, files, data_config, vocab, data_args(data_config), log=log,
                         corpus_key="data.corpus")


def prepare_eval_data(data_config, workdir: str, vocab, *, log=print) -> str:
    """workdir/eval_data: all of data.eval_corpus as a held-out split, made like the training
    shards (same length, pairing, seed, document boundaries), so its MLM loss compares."""
    args = {**data_args(data_config), "eval_fraction": 1.0}
    files = corpus_files(data_config, "eval_corpus")
    return _made_dataset(os.path.join(workdir, EVAL_DATA_DIR), files, data_config, vocab, args,
                         log=log, corpus_key="data.eval_corpus")


def _made_dataset(dataset, files, data_config, vocab, args, *, log, corpus_key) -> str:
    """`dataset`, created from `files` on the first start and checked against them afterwards."""
    from bertlab.data.pretraining.create import create_pretraining_data

    if not os.path.exists(os.path.join(dataset, "meta.json")):
        if jax.process_count() > 1:
            raise PretrainConfigError("multi-host runs need data made beforehand on a shared "
                                      "filesystem: set data.prepared and data.vocab")
        log(f"creating pretraining shards in {dataset} from {len(files)} file(s) of {corpus_key}")
        tokenizer = Tokenizer(vocab, data_config.lower_case)
        create_pretraining_data(files, tokenizer, dataset, overwrite=True,
                                raw_text=bool(data_config.tokenize_on_device), **args)
    return _checked_dataset(dataset, data_config, vocab, args, keys=_DATA_ARGS, files=files,
                            remake=f"delete {dataset} to remake the data", corpus_key=corpus_key)


def _checked_dataset(dataset, data_config, vocab, args, *, keys, files, remake,
                     corpus_key="data.corpus") -> str:
    """Refuses a dataset made with another vocabulary, casing, shard settings or corpus files."""
    from bertlab.data.pretraining.create import read_meta, vocab_sha256

    meta_path = os.path.join(dataset, "meta.json")
    meta = read_meta(dataset)
    where = f"{meta_path} (made by an earlier start or by create-data)"
    if data_config.tokenize_on_device and not meta.get("raw_text"):
        how = ("make it again with `bertlab create-data ... --raw-text`"
               if data_config.prepared else f"delete {dataset} to remake it with raw text")
        raise PretrainConfigError(
            f"data.tokenize_on_device=True needs the raw segment texts, but the dataset "
            f"{dataset} was made without them (no raw_text in {meta_path}); {how}")
    if meta.get("vocab_sha256") != vocab_sha256(vocab):
        raise PretrainConfigError(f"{where} was made with another vocabulary than {vocab.source}")
    if meta.get("lower_case") is not None and meta["lower_case"] != data_config.lower_case:
        raise PretrainConfigError(f"data.lower_case={data_config.lower_case} but {where} has "
                                  f"lower_case={meta['lower_case']}")
    made_with = meta.get("args", meta)
    for key in keys:
        if key in made_with and made_with[key] != args[key]:
            shown = (f"data.{key}={data_config[key]!r}" if args[key] == data_config[key] else
                     f"{key}={args[key]!r} (data.{key} under data.eval_corpus="
                     f"{data_config.eval_corpus!r})")
            raise PretrainConfigError(f"{shown} but {where} has {key}={made_with[key]!r}; "
                                      f"{remake}")
    if files is not None and made_with.get("files") not in (None, files):
        raise PretrainConfigError(f"{corpus_key} names other files than {where}; "
                                  f"delete {dataset} to remake the data")
    return dataset


def open_raw_text(dataset_dir: str):
    """The train and eval TextExamples of data.tokenize_on_device. Both pad to the dataset-wide
    widths in meta.json, so train and eval batches share one compiled tokeniser."""
    from bertlab.data.pretraining.create import read_meta
    from bertlab.data.pretraining.shards import ShardError
    from bertlab.data.pretraining.text_shards import TextExamples

    limits = read_meta(dataset_dir)["raw_text"]
    try:
        return tuple(TextExamples.open(os.path.join(dataset_dir, split), **limits)
                     for split in ("train", "eval"))
    except ShardError as e:
        raise PretrainConfigError(f"data.tokenize_on_device=True: {e}") from None


def device_tokenizer(vocab, lower_case: bool, examples, mesh):
    """raw batch -> (token batch, segments whose ids differ from the host's), jitted; the
    WordPiece tables are built once here and replicated over the mesh."""
    from bertlab.data.pretraining.on_device import make_tokenize_fn
    from bertlab.text.device.tables import tables_for

    fn = make_tokenize_fn(vocab, max_seq_length=examples.max_seq_length,
                          max_encoded=examples.max_encoded)
    tables = mesh_lib.replicate(tables_for(Tokenizer(vocab, lower_case)), mesh)
    return lambda raw: fn(tables, raw)


def eval_batch_count(examples, batch_size: int, max_batches: int) -> int:
    """min(max_batches, ceil(N / batch_size)): how many batches eval_batches yields."""
    return min(max_batches, math.ceil(len(examples) / batch_size))


def eval_batches(examples: ShardedExamples, batch_size: int, max_batches: int, *,
                 process_index: int = 0, process_count: int = 1):
    """The first eval_batch_count(...) batches of the held-out split, in order, with
    `example_weights` 0 on the rows that pad the last one; this process's rows only."""
    count = eval_batch_count(examples, batch_size, max_batches)
    per_process = batch_size // process_count
    for b in range(count):
        rows = np.arange(b * batch_size, (b + 1) * batch_size)  # (B,) global rows
        rows = rows[process_index * per_process:(process_index + 1) * per_process]
        present = rows < len(examples)
        batch = examples.take(np.where(present, rows, 0))
        batch["example_weights"] = present.astype(np.float32)
        yield batch


# --------------------------------------------------------------------------------------------
# Stopping: signals, stop_after, non-finite losses.
# --------------------------------------------------------------------------------------------

class StopRequest:
    """Set by SIGTERM / SIGINT; the loop finishes its step, saves and returns. A second signal
    while stopping falls back to the default behaviour (so Ctrl-C twice always quits)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.signal_name is not None:
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def check_finite(pending: list[tuple[int, dict]], last_good_step: int, last_checkpoint) -> None:
    """Raises NonFiniteLossError if any step since the last check had a non-finite loss."""
    for step, metrics in pending:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            kept = (f"the last good checkpoint (step {last_checkpoint}) is kept"
                    if last_checkpoint is not None else "no checkpoint was written")
            raise NonFiniteLossError(
                f"loss became {loss} within steps [{last_good_step + 1}, {pending[-1][0]}] "
                f"(first seen at step {step}); {kept}. Lower optimizer.lr, raise "
                f"optimizer.warmup_steps or check optimizer.clip_norm.")


def window_means(pending: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of each train metric over the steps since the last log; the last learning rate."""
    names = pending[-1][1].keys()
    out = {name: float(np.mean([float(m[name]) for _, m in pending])) for name in names}
    out["learning_rate"] = float(pending[-1][1]["learning_rate"])
    return out


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

def train_and_evaluate(config, workdir: str) -> dict:
    """Pretrains per `config` in `workdir`, resuming from its latest checkpoint; returns the final
    metrics (also written to workdir/final_metrics.json)."""
    check_config(config)
    mesh_lib.initialize_distributed(config.train.distributed)
    is_main = jax.process_index() == 0
    log = print if is_main else (lambda *a, **k: None)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)

    data_config, opt_config, train_config = config.data, config.optimizer, config.train
    vocab_path, vocab = prepare_vocab(data_config, workdir, log=log)
    dataset_dir = prepare_data(data_config, workdir, vocab, log=log)
    if data_config.tokenize_on_device:
        train_examples, eval_examples = open_raw_text(dataset_dir)
    else:
        train_examples = ShardedExamples.open(os.path.join(dataset_dir, "train"))
        eval_dir = (prepare_eval_data(data_config, workdir, vocab, log=log)
                    if data_config.eval_corpus else dataset_dir)
        eval_examples = ShardedExamples.open(os.path.join(eval_dir, "eval"))
    seq_len, num_predictions = train_examples.max_seq_length, data_config.max_predictions
    if len(train_examples) < data_config.batch_size:
        raise PretrainConfigError(
            f"{train_examples.split_dir} holds {len(train_examples)} training examples, fewer "
            f"than one batch (data.batch_size={data_config.batch_size}); add text to data.corpus "
            f"or lower data.batch_size")

    model_config = model_config_from(config, len(vocab))
    with_nsp = bool(data_config.next_sentence)
    model = BertForPreTraining(model_config, with_nsp=with_nsp)
    tx, schedule = optimizer_lib.optimizer_from_config(opt_config, train_config.num_steps)
    mesh = mesh_lib.data_mesh()
    micro_batch = data_config.batch_size // opt_config.grad_accum_steps
    try:
        mesh_lib.check_batch_divides(micro_batch, mesh,
                                     what="data.batch_size / optimizer.grad_accum_steps")
    except ValueError as e:
        raise PretrainConfigError(str(e)) from None
    from bertlab.data.pretraining.create import vocab_sha256

    compat = {f"model.{key}": value for key, value in config_to_dict(model_config).items()
              if key not in RESUMABLE_MODEL_KEYS}
    compat.update({"vocab_sha256": vocab_sha256(vocab), "optimizer.name": opt_config.name,
                   "data.next_sentence": with_nsp})

    # ---- restore or initialise (the compatibility check comes before anything is written)
    manager = checkpoints.open_manager(workdir, keep=train_config.keep_checkpoints,
                                       async_save=False)
    latest = checkpoints.latest_step(manager)
    init_rng, base_train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(train_config.seed), 3)
    if latest is not None:
        saved = checkpoints.read_meta(manager, latest)
        checkpoints.check_compatible(saved.get("compat", {}), compat,
                                     where=checkpoints.checkpoint_dir(workdir))
        params_like, opt_like = train_state.abstract_train_state(
            model, tx, seq_len=seq_len, num_predictions=num_predictions, mesh=mesh)
        params, opt_state, saved = checkpoints.restore(manager, latest, params_like=params_like,
                                                       opt_state_like=opt_like)
        state = train_state.create_train_state(model, tx, params, step=latest,
                                               opt_state=opt_state, mesh=mesh)
        base_train_rng = jnp.asarray(saved["rng"], jnp.uint32)
        data_state = saved["data"]
        log(f"resuming from step {latest} ({checkpoints.checkpoint_dir(workdir)}/{latest})")
    else:
        params = train_state.init_params(model, init_rng, seq_len=seq_len,
                                         num_predictions=num_predictions, mesh=mesh)
        state = train_state.create_train_state(model, tx, params, mesh=mesh)
        data_state = {"epoch": 0, "position": 0}
    if is_main:
        write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())

    iterator = BatchIterator.from_state(train_examples, data_config.batch_size, data_config.seed,
                                        data_state, process_index=jax.process_index(),
                                        process_count=jax.process_count())
    train_rng = mesh_lib.replicate(base_train_rng, mesh)
    tokenize = (device_tokenizer(vocab, data_config.lower_case, train_examples, mesh)
                if data_config.tokenize_on_device else None)
    mask_fn = steps.make_mask_fn(vocab, rate=data_config.mask_rate,
                                 max_predictions=num_predictions, whole_word=data_config.whole_word)
    train_step = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule,
                                      grad_accum_steps=opt_config.grad_accum_steps,
                                      with_nsp=with_nsp, mesh=mesh)
    eval_step = steps.jit_eval_step(mask_fn=mask_fn, with_nsp=with_nsp, mesh=mesh)

    from bertlab.models.config import count_params, flops_per_token

    peak = train_config.peak_flops
    if not peak:
        from bertlab.train.peak_flops import measure_matmul_flops
        peak = measure_matmul_flops(dtype=model_config.dtype)
    flops_per_step = flops_per_token(model_config, seq_len, num_predictions) * \
        data_config.batch_size * seq_len
    tokens_per_step = data_config.batch_size * seq_len
    log(f"model: {model_config.num_layers} layers, hidden {model_config.hidden_size}, vocab "
        f"{model_config.vocab_size}, {count_params(state.params):,} parameters; data: "
        f"{len(train_examples):,} train / {len(eval_examples):,} eval examples of {seq_len} "
        f"tokens; {mesh.size} device(s) ({jax.devices()[0].platform}), peak "
        f"{peak / 1e9:,.0f} GFLOP/s each")

    start_step = int(jax.device_get(state.step))
    final_path = os.path.join(workdir, FINAL_METRICS_FILE)
    if is_main and start_step < train_config.num_steps and os.path.exists(final_path):
        os.remove(final_path)  # it described an earlier stop; this start trains further
    num_steps = train_config.num_steps
    writer = MetricWriter(workdir, total_steps=num_steps, initial_step=start_step, enabled=is_main)
    stop = StopRequest().install()
    metrics_path = os.path.join(workdir, METRICS_FILE)
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    last_checkpoint = latest
    stopped_by = None

    def evaluate(step: int) -> dict[str, float]:
        from tqdm import tqdm

        sums = None
        count = eval_batch_count(eval_examples, micro_batch, train_config.eval_batches)
        batches = eval_batches(eval_examples, micro_batch, train_config.eval_batches,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
        # a long held-out set (a whole test split) takes minutes: show it moving, then vanish
        batches = tqdm(batches, total=count, desc=f"evaluating step {step}", unit="batch",
                       leave=False, file=sys.stderr, disable=not is_main or count < 20)
        for index, local in enumerate(batches):
            batch = mesh_lib.global_batch(local, mesh)
            if tokenize is not None:
                batch, wrong = tokenize(batch)
                mismatches.append(wrong)
            batch_sums = eval_step(state, batch, jax.random.fold_in(eval_rng, index))
            sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
        if sums is None:
            return {}
        result = steps.eval_metrics(jax.device_get(sums))
        writer.write(step, "eval", result)
        writer.message(f"step {step}: eval MLM loss {result['mlm_loss']:.4f}, perplexity "
                       f"{result['perplexity']:.2f}, masked accuracy {result['mlm_accuracy']:.3f}")
        if is_main:
            plot_loss_curve(metrics_path, os.path.join(workdir, LOSS_PLOT))
        return result

    def save(step: int) -> None:
        checkpoints.save(manager, step, params=state.params, opt_state=state.opt_state, meta={
            "rng": np.asarray(jax.device_get(base_train_rng)).tolist(),
            "data": iterator.state(), "compat": compat, "model": config_to_dict(model_config),
            "with_nsp": with_nsp, "lower_case": bool(data_config.lower_case),
            "max_seq_length": seq_len})

    pending: list[tuple[int, dict]] = []
    mismatches: list = []  # per batch: segments whose device ids differ from the host's
    mismatch_total = 0
    last_good_step = start_step
    step = start_step
    window_start, window_step = None, step
    try:
        if not len(eval_examples):
            log("the held-out split is empty: no evaluation (raise data.eval_fraction)")
        can_evaluate = len(eval_examples) > 0 and train_config.eval_batches > 0
        while step < num_steps:
            batch = mesh_lib.global_batch(next(iterator), mesh)
            if tokenize is not None:
                batch, wrong = tokenize(batch)
                mismatches.append(wrong)
            state, metrics = train_step(state, batch, train_rng)
            step += 1
            pending.append((step, metrics))
            if window_start is None:  # exclude compilation from the throughput
                jax.block_until_ready(metrics)
                window_start, window_step = time.perf_counter(), step
            writer.progress(step)

            finished = step == num_steps
            stopping = stop.signal_name is not None or step == train_config.stop_after
            want_eval = can_evaluate and (
                finished or (train_config.eval_every and step % train_config.eval_every == 0))
            want_save = finished or stopping or (train_config.checkpoint_every and
                                                 step % train_config.checkpoint_every == 0)
            if step % train_config.log_every == 0 or finished or stopping or want_save or want_eval:
                pending = jax.device_get(pending)
                check_finite(pending, last_good_step, last_checkpoint)
                last_good_step = step
                if step % train_config.log_every == 0 or finished:
                    last_train = window_means(pending)
                    if tokenize is not None:
                        found = int(sum(jax.device_get(mismatches)))
                        mismatches.clear()
                        if found and not mismatch_total:
                            writer.message(f"step {step}: {found} segment(s) tokenised on the "
                                           "device differ from the host tokenizer's ids (see "
                                           "tokenizer_jax.DIVERGENCES)")
                        mismatch_total += found
                        last_train["tokenize_mismatches"] = mismatch_total
                    elapsed = time.perf_counter() - window_start
                    if step > window_step and elapsed > 0:
                        rate = (step - window_step) * tokens_per_step / elapsed
                        last_train["tokens_per_second"] = rate
                        last_train["mfu"] = (step - window_step) * flops_per_step / elapsed / (
                            peak * mesh.size)
                    writer.write(step, "train", last_train)
                    writer.progress(step, loss=f"{last_train['loss']:.3f}",
                                    tok_s=f"{last_train.get('tokens_per_second', 0):,.0f}",
                                    mfu=f"{100 * last_train.get('mfu', 0):.1f}%")
                    window_start, window_step = time.perf_counter(), step
                pending = []
            if want_eval:
                last_eval = evaluate(step)
            if want_save:
                save(step)
                last_checkpoint = step
            if want_eval or want_save:
                window_start, window_step = time.perf_counter(), step  # time steps only
            if stopping and not finished:
                stopped_by = stop.signal_name or f"train.stop_after={train_config.stop_after}"
                writer.message(f"stopped by {stopped_by} at step {step}; checkpoint saved, "
                               "rerun the same command to resume")
                break
        if start_step >= num_steps:
            log(f"{workdir} is already trained to step {start_step} (train.num_steps={num_steps})")
            if can_evaluate:
                last_eval = evaluate(start_step)
    finally:
        stop.uninstall()
        checkpoints.wait(manager)
        manager.close()
        writer.close()
    if is_main:
        plot_loss_curve(metrics_path, os.path.join(workdir, LOSS_PLOT))
    final = {"step": step, "stopped_by": stopped_by, "num_params": count_params(state.params)}
    final.update({name: value for name, value in last_train.items()})
    final.update({f"eval_{name}": value for name, value in last_eval.items()})
    if is_main and not stop.signal_name:  # the sweep's done file: written whole or not at all
        write_json(final_path, final)
    return final


def load_pretrained_workdir(workdir: str) -> tuple[BertConfig, Any, str]:
    """(model config, params, vocab path) of a pretraining workdir's latest checkpoint, for
    fine-tuning: params is the whole BertForPreTraining tree as numpy arrays (the backbone is
    params["bert"]); the casing it was trained with is in the checkpoint meta ("lower_case")."""
    params, meta = checkpoints.restore_params(workdir)
    if "model" not in meta:
        raise checkpoints.CheckpointError(f"{workdir}: the checkpoint meta holds no model config; "
                                          "was it written by bertlab pretrain?")
    config = config_from_dict(meta["model"], source=f"{workdir} checkpoint meta")
    vocab_path = os.path.join(os.path.abspath(workdir), VOCAB_FILE)
    if not os.path.exists(vocab_path):
        raise checkpoints.CheckpointError(f"{vocab_path}: missing; the workdir is incomplete")
    return config, params, vocab_path
