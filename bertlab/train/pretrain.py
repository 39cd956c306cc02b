"""The masked-LM pretraining loop: `train_and_evaluate(config, workdir) -> final metrics`, a
driver over bertlab.train.loop (the skeleton fine-tuning shares).

Read top to bottom, a run is:

1. prepare inputs (bertlab.train.pretrain_inputs): the vocabulary (given, or learned into
   workdir/vocab.txt) and the shards (given as data.prepared, or created into workdir/data); both
   are reused on resume and checked against the config;
2. build the model, optimizer, mesh and compiled steps (build_run); restore the latest checkpoint
   in workdir/checkpoints (after checking that it was made by a compatible config) or initialise
   (restore_or_init);
3. loop: batch -> jitted train_step; every log_every steps check the losses are finite and write
   metrics; every eval_every steps evaluate on the held-out split (and redraw loss.png); every
   checkpoint_every steps save. SIGTERM / SIGINT finish the current step, save and return.

With data.tokenize_on_device the shards' raw segment texts are read instead of their ids, and
the first stage of every step, on the device, tokenises them
(bertlab.data.pretraining.on_device): the batches, and so the losses, are those of the host
path, and a run may switch between the two on resume. No tokenizer runs on the host in the loop.

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

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bertlab.checkpoints import training_state as checkpoints
from bertlab.data.pretraining.iterator import BatchIterator
from bertlab.files import write_json
from bertlab.models import BertForPreTraining
from bertlab.models.config import BertConfig, config_to_dict, count_params, flops_per_token
from bertlab.train import loop
from bertlab.train import mesh as mesh_lib
from bertlab.train import optimizer as optimizer_lib
from bertlab.train import steps
from bertlab.train import state as train_state
from bertlab.train.loop import TrainConfigError
from bertlab.train.metric_writer import METRICS_FILE, MetricWriter
from bertlab.train.model_config import model_config_from
from bertlab.train.plots import LOSS_PLOT, plot_loss_curve
from bertlab.train.pretrain_inputs import Inputs, device_tokenizer, prepare_inputs

FINAL_METRICS_FILE = "final_metrics.json"
# Model keys that may change on resume: they shape no parameter.
RESUMABLE_MODEL_KEYS = ("hidden_dropout", "attention_dropout", "dtype", "attention_kernel")
DIVERGED_ADVICE = ("Lower optimizer.lr, raise optimizer.warmup_steps or check "
                   "optimizer.clip_norm.")


# --------------------------------------------------------------------------------------------
# The checks that must pass before any work starts.
# --------------------------------------------------------------------------------------------

def check_config(config) -> None:
    """Value checks that name the key; run before anything is read or written."""
    data, opt, train = config.data, config.optimizer, config.train
    if not data.prepared and not [p for p in data.corpus.split(",") if p.strip()]:
        raise TrainConfigError("data.corpus is empty and no data.prepared directory is given")
    if data.eval_corpus and data.tokenize_on_device:
        raise TrainConfigError("data.eval_corpus works with host tokenisation only: the device "
                                  "tokeniser is compiled for the training shards' text widths; "
                                  "set data.tokenize_on_device=False or data.eval_corpus=''")
    if not 0.0 < data.mask_rate < 1.0:
        raise TrainConfigError(f"data.mask_rate={data.mask_rate} must be in (0, 1)")
    if not 1 <= data.max_predictions <= data.max_seq_length:
        raise TrainConfigError(f"data.max_predictions={data.max_predictions} must be in "
                                  f"[1, data.max_seq_length={data.max_seq_length}]")
    if (config.model.position_embedding == "learned"
            and data.max_seq_length > config.model.max_position_embeddings):
        raise TrainConfigError(f"data.max_seq_length={data.max_seq_length} exceeds "
                                  f"model.max_position_embeddings="
                                  f"{config.model.max_position_embeddings}")
    if opt.name not in optimizer_lib.OPTIMIZERS:
        raise TrainConfigError(f"optimizer.name={opt.name!r} is not one of "
                                  f"{', '.join(optimizer_lib.OPTIMIZERS)}")
    if opt.grad_accum_steps < 1 or data.batch_size % opt.grad_accum_steps:
        raise TrainConfigError(f"data.batch_size={data.batch_size} must be a multiple of "
                                  f"optimizer.grad_accum_steps={opt.grad_accum_steps} (>= 1)")
    if train.num_steps < 1:
        raise TrainConfigError(f"train.num_steps={train.num_steps} must be >= 1")
    if not 0 <= opt.warmup_steps <= train.num_steps:
        raise TrainConfigError(f"optimizer.warmup_steps={opt.warmup_steps} must be in "
                                  f"[0, train.num_steps={train.num_steps}]")
    for key in ("log_every", "keep_checkpoints"):
        if train[key] < 1:
            raise TrainConfigError(f"train.{key}={train[key]} must be >= 1")
    for key in ("eval_every", "eval_batches", "checkpoint_every", "stop_after"):
        if train[key] < 0:
            raise TrainConfigError(f"train.{key}={train[key]} must be >= 0")
    if train.peak_flops < 0:
        raise TrainConfigError(f"train.peak_flops={train.peak_flops} must be >= 0 (0: measure)")


# --------------------------------------------------------------------------------------------
# What a run builds before its first step.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """The model, mesh, compiled steps and cost figures of one (re)start, built by build_run."""

    model_config: BertConfig
    model: BertForPreTraining
    tx: Any
    mesh: Any
    seq_len: int
    num_predictions: int
    micro_batch: int
    compat: dict          # what a checkpoint must agree with to be resumed
    train_step: Callable
    eval_step: Callable
    tokenize: Callable | None  # data.tokenize_on_device: raw batch -> (ids batch, mismatches)
    tokens_per_step: int
    flops_per_step: float
    peak_flops: float     # of one device
    mismatches: list = dataclasses.field(default_factory=list)  # per device-tokenised batch
    mismatch_total: int = 0


def build_run(config, inputs: Inputs) -> Run:
    data_config, opt_config = config.data, config.optimizer
    seq_len, num_predictions = inputs.train.max_seq_length, data_config.max_predictions
    model_config = model_config_from(config.model, len(inputs.vocab))
    with_nsp = bool(data_config.next_sentence)
    tx, schedule = optimizer_lib.optimizer_from_config(opt_config, config.train.num_steps)
    mesh = mesh_lib.data_mesh()
    micro_batch = data_config.batch_size // opt_config.grad_accum_steps
    try:
        mesh_lib.check_batch_divides(micro_batch, mesh,
                                     what="data.batch_size / optimizer.grad_accum_steps")
    except ValueError as e:
        raise TrainConfigError(str(e)) from None
    from bertlab.data.pretraining.create import vocab_sha256

    compat = {f"model.{key}": value for key, value in config_to_dict(model_config).items()
              if key not in RESUMABLE_MODEL_KEYS}
    compat.update({"vocab_sha256": vocab_sha256(inputs.vocab), "optimizer.name": opt_config.name,
                   "data.next_sentence": with_nsp})
    mask_fn = steps.make_mask_fn(inputs.vocab, rate=data_config.mask_rate,
                                 max_predictions=num_predictions, whole_word=data_config.whole_word)
    peak = config.train.peak_flops
    if not peak:
        from bertlab.train.peak_flops import measure_matmul_flops
        peak = measure_matmul_flops(dtype=model_config.dtype)
    tokens_per_step = data_config.batch_size * seq_len
    return Run(
        model_config=model_config, model=BertForPreTraining(model_config, with_nsp=with_nsp),
        tx=tx, mesh=mesh, seq_len=seq_len, num_predictions=num_predictions,
        micro_batch=micro_batch, compat=compat,
        train_step=steps.jit_train_step(mask_fn=mask_fn, schedule=schedule,
                                        grad_accum_steps=opt_config.grad_accum_steps,
                                        with_nsp=with_nsp, mesh=mesh),
        eval_step=steps.jit_eval_step(mask_fn=mask_fn, with_nsp=with_nsp, mesh=mesh),
        tokenize=(device_tokenizer(inputs.vocab, data_config.lower_case, inputs.train, mesh)
                  if data_config.tokenize_on_device else None),
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_token(model_config, seq_len, num_predictions) * tokens_per_step,
        peak_flops=peak)


def restore_or_init(run: Run, manager, workdir: str, seed: int, *, log=print):
    """(train state, base train rng, eval rng, data-iterator state, restored step or None). A
    checkpoint is checked against run.compat before anything is restored or written."""
    latest = checkpoints.latest_step(manager)
    init_rng, base_train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    shapes = dict(seq_len=run.seq_len, num_predictions=run.num_predictions, mesh=run.mesh)
    if latest is None:
        params = train_state.init_params(run.model, init_rng, **shapes)
        state = train_state.create_train_state(run.model, run.tx, params, mesh=run.mesh)
        return state, base_train_rng, eval_rng, {"epoch": 0, "position": 0}, None
    where = checkpoints.checkpoint_dir(workdir)
    difference = compat_difference(checkpoints.read_meta(manager, latest).get("compat", {}),
                                   run.compat)
    if difference is not None:
        key, before, now = difference
        raise checkpoints.CheckpointError(
            f"{where} holds a checkpoint of an incompatible run: {key} was {before!r}, now "
            f"{now!r}. Use a new --workdir, or set {key} back to {before!r} to resume.")
    params_like, opt_like = train_state.abstract_train_state(run.model, run.tx, **shapes)
    params, opt_state, saved = checkpoints.restore(manager, latest, params_like=params_like,
                                                   opt_state_like=opt_like)
    state = train_state.create_train_state(run.model, run.tx, params, step=latest,
                                           opt_state=opt_state, mesh=run.mesh)
    log(f"resuming from step {latest} ({where}/{latest})")
    return state, jnp.asarray(saved["rng"], jnp.uint32), eval_rng, saved["data"], latest


def compat_difference(saved: dict, current: dict) -> tuple | None:
    """The first setting a checkpoint's compat record and this run disagree on (see
    loop.first_difference). A model knob the record lacks was added to BertConfig after the
    checkpoint was written, so the checkpoint was made with the knob's default."""
    defaults = {f"model.{key}": value for key, value in config_to_dict(BertConfig()).items()}
    known = {key: value for key, value in defaults.items() if key in current}
    return loop.first_difference({**known, **saved}, current)


def describe(run: Run, state, inputs: Inputs) -> str:
    config = run.model_config
    return (f"model: {config.num_layers} layers, hidden {config.hidden_size}, vocab "
            f"{config.vocab_size}, {count_params(state.params):,} parameters; data: "
            f"{len(inputs.train):,} train / {len(inputs.eval):,} eval examples of {run.seq_len} "
            f"tokens; {run.mesh.size} device(s) ({jax.devices()[0].platform}), peak "
            f"{run.peak_flops / 1e9:,.0f} GFLOP/s each")


# --------------------------------------------------------------------------------------------
# The pieces of one step of the loop.
# --------------------------------------------------------------------------------------------

def device_batch(run: Run, local: dict) -> dict:
    """A host batch laid out over the mesh; with data.tokenize_on_device, tokenised there (the
    count of segments whose ids differ from the host tokenizer's is kept for the next log)."""
    batch = mesh_lib.global_batch(local, run.mesh)
    if run.tokenize is not None:
        batch, wrong = run.tokenize(batch)
        run.mismatches.append(wrong)
    return batch


class Throughput:
    """Tokens per second and MFU over the timed steps since the last log: compilation,
    evaluations and checkpoint saves are left out (restart() after each)."""

    def __init__(self, run: Run):
        self.run, self.start, self.step = run, None, 0

    def restart(self, step: int) -> None:
        self.start, self.step = time.perf_counter(), step

    def rates(self, step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        if step <= self.step or elapsed <= 0:
            return {}
        per_second = (step - self.step) / elapsed
        return {"tokens_per_second": per_second * self.run.tokens_per_step,
                "mfu": per_second * self.run.flops_per_step / (
                    self.run.peak_flops * self.run.mesh.size)}


def train_record(run: Run, means: dict, throughput: Throughput, writer, step: int) -> dict:
    """The "train" line of metrics.jsonl: window means, device-tokeniser mismatches, speed."""
    record = dict(means)
    if run.tokenize is not None:
        found = int(sum(jax.device_get(run.mismatches)))
        run.mismatches.clear()
        if found and not run.mismatch_total:
            writer.message(f"step {step}: {found} segment(s) tokenised on the device differ from "
                           "the host tokenizer's ids (see tokenizer_jax.DIVERGENCES)")
        run.mismatch_total += found
        record["tokenize_mismatches"] = run.mismatch_total
    record.update(throughput.rates(step))
    writer.write(step, "train", record)
    writer.progress(step, loss=f"{record['loss']:.3f}",
                    tok_s=f"{record.get('tokens_per_second', 0):,.0f}",
                    mfu=f"{100 * record.get('mfu', 0):.1f}%")
    return record


def due(step: int, train_config, *, signalled: bool, can_evaluate: bool) -> tuple[bool, ...]:
    """What step `step` ends with: (finished, stopping, log, evaluate, save). A stop (a signal or
    train.stop_after) and the last step always save; the last step always logs and evaluates."""
    finished = step == train_config.num_steps
    stopping = signalled or step == train_config.stop_after
    every = lambda interval: bool(interval and step % interval == 0)
    return (finished, stopping, finished or every(train_config.log_every),
            can_evaluate and (finished or every(train_config.eval_every)),
            finished or stopping or every(train_config.checkpoint_every))


def kept_checkpoint(last_checkpoint: int | None) -> str:
    return (f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None else "no checkpoint was written")


def evaluate(run: Run, state, examples, step: int, *, max_batches: int, rng, writer,
             workdir: str, is_main: bool) -> dict[str, float]:
    """MLM (and NSP) metrics summed over the first max_batches held-out batches; redraws
    loss.png."""
    count = loop.eval_batch_count(len(examples), run.micro_batch, max_batches)
    batches = loop.eval_batches(examples.take, len(examples), run.micro_batch, max_batches,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    sums = None
    for index, local in enumerate(loop.with_progress(batches, count, f"evaluating step {step}",
                                                     enabled=is_main)):
        batch_sums = run.eval_step(state, device_batch(run, local), jax.random.fold_in(rng, index))
        sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
    if sums is None:
        return {}
    result = steps.eval_metrics(jax.device_get(sums))
    writer.write(step, "eval", result)
    writer.message(f"step {step}: eval MLM loss {result['mlm_loss']:.4f}, perplexity "
                   f"{result['perplexity']:.2f}, masked accuracy {result['mlm_accuracy']:.3f}")
    if is_main:
        plot_loss_curve(os.path.join(workdir, METRICS_FILE), os.path.join(workdir, LOSS_PLOT))
    return result


def save(manager, run: Run, state, step: int, *, base_rng, iterator, config) -> None:
    checkpoints.save(manager, step, params=state.params, opt_state=state.opt_state, meta={
        "rng": np.asarray(jax.device_get(base_rng)).tolist(), "data": iterator.state(),
        "compat": run.compat, "model": config_to_dict(run.model_config),
        "with_nsp": bool(config.data.next_sentence), "lower_case": bool(config.data.lower_case),
        "max_seq_length": run.seq_len})


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
    workdir = loop.open_workdir(workdir)
    train_config = config.train
    inputs = prepare_inputs(config.data, workdir, log=log)
    run = build_run(config, inputs)
    manager = checkpoints.open_manager(workdir, keep=train_config.keep_checkpoints,
                                       async_save=False)
    state, base_rng, eval_rng, data_state, last_checkpoint = restore_or_init(
        run, manager, workdir, train_config.seed, log=log)
    if is_main:
        loop.write_config(workdir, config.to_dict())
    iterator = BatchIterator.from_state(inputs.train, config.data.batch_size, config.data.seed,
                                        data_state, process_index=jax.process_index(),
                                        process_count=jax.process_count())
    train_rng = mesh_lib.replicate(base_rng, run.mesh)
    log(describe(run, state, inputs))

    num_steps = train_config.num_steps
    step = start_step = int(jax.device_get(state.step))
    final_path = os.path.join(workdir, FINAL_METRICS_FILE)
    if is_main and start_step < num_steps and os.path.exists(final_path):
        os.remove(final_path)  # it described an earlier stop; this start trains further
    writer = MetricWriter(workdir, total_steps=num_steps, initial_step=start_step, enabled=is_main)
    stop = loop.StopRequest().install()
    window = loop.MetricWindow(start_step, advice=DIVERGED_ADVICE)
    throughput = Throughput(run)
    last_train, last_eval, stopped_by = {}, {}, None
    evaluation = dict(max_batches=train_config.eval_batches, rng=eval_rng, writer=writer,
                      workdir=workdir, is_main=is_main)
    try:
        if not len(inputs.eval):
            log("the held-out split is empty: no evaluation (raise data.eval_fraction)")
        can_evaluate = len(inputs.eval) > 0 and train_config.eval_batches > 0
        while step < num_steps:
            state, metrics = run.train_step(state, device_batch(run, next(iterator)), train_rng)
            step += 1
            window.add(step, metrics)
            if throughput.start is None:  # exclude compilation from the throughput
                jax.block_until_ready(metrics)
                throughput.restart(step)
            writer.progress(step)

            finished, stopping, want_log, want_eval, want_save = due(
                step, train_config, signalled=stop.signal_name is not None,
                can_evaluate=can_evaluate)
            if want_log or stopping or want_save or want_eval:
                means = window.close(kept_checkpoint(last_checkpoint))
                if want_log:
                    last_train = train_record(run, means, throughput, writer, step)
                    throughput.restart(step)
            if want_eval:
                last_eval = evaluate(run, state, inputs.eval, step, **evaluation)
            if want_save:
                save(manager, run, state, step, base_rng=base_rng, iterator=iterator,
                     config=config)
                last_checkpoint = step
            if want_eval or want_save:
                throughput.restart(step)  # time steps only
            if stopping and not finished:
                stopped_by = stop.signal_name or f"train.stop_after={train_config.stop_after}"
                writer.message(f"stopped by {stopped_by} at step {step}; checkpoint saved, "
                               "rerun the same command to resume")
                break
        if start_step >= num_steps:
            log(f"{workdir} is already trained to step {start_step} (train.num_steps={num_steps})")
            if can_evaluate:
                last_eval = evaluate(run, state, inputs.eval, start_step, **evaluation)
    finally:
        stop.uninstall()
        checkpoints.wait(manager)
        manager.close()
        writer.close()
    if is_main:
        plot_loss_curve(os.path.join(workdir, METRICS_FILE), os.path.join(workdir, LOSS_PLOT))
    final = {"step": step, "stopped_by": stopped_by, "num_params": count_params(state.params),
             **last_train, **{f"eval_{name}": value for name, value in last_eval.items()}}
    if is_main and not stop.signal_name:  # the sweep's done file: written whole or not at all
        write_json(final_path, final)
    return final
