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

    .bertlab.lock       held while a run writes here: a second run on the workdir is refused
                        (bertlab.workdir_lock)
    config.json         the full config of the latest (re)start; config.pending.json while a
                        finished run is trained further (config.json and final_metrics.json
                        are replaced only when it finishes, bertlab.run_files), the one
                        replaced kept as config.previous.json
    vocab.txt           the vocabulary (learned here, or a copy of data.vocab)
    data/               shards + meta.json, unless data.prepared points elsewhere
    checkpoints/<step>/ params, opt_state, meta (see bertlab.checkpoints.training_state)
    checkpoints_abandoned/  checkpoints that could not be read on restore, moved aside
    metrics.jsonl       one JSON object per log / eval step (records after the step a run
                        resumes from go to metrics.abandoned.jsonl: they are redone)
    tensorboard/        the same scalars as TensorBoard events
    loss.png            train and eval loss against step
    final_metrics.json  what train_and_evaluate returned, once the run reached train.num_steps
                        or train.stop_after; a signal (preemption) leaves none behind, so a
                        sweep or scheduler sees the stage as unfinished and reruns it to resume.
                        A rerun of a finished run returns it and writes nothing.

A resume keeps the learning-rate schedule: a train.num_steps other than the one the checkpoints
were trained for is refused unless train.extend=True.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bertlab import run_files
from bertlab.checkpoints import training_state as checkpoints
from bertlab.data.pretraining import packed
from bertlab.data.pretraining.iterator import BatchIterator
from bertlab.models import BertForPreTraining
from bertlab.models.config import BertConfig, config_to_dict, count_params, flops_per_token
from bertlab.train import loop
from bertlab.train import mesh as mesh_lib
from bertlab.train import budget
from bertlab.train import optimizer as optimizer_lib
from bertlab.train import peak_cache
from bertlab.train import schedules, steps
from bertlab.train import state as train_state
from bertlab.train.loop import TrainConfigError
from bertlab.train.metric_writer import METRICS_FILE, MetricWriter, read_metrics
from bertlab.train.model_config import model_config_from
from bertlab.train.plots import LOSS_PLOT, plot_loss_curve
from bertlab.train.pretrain_inputs import Inputs, device_tokenizer, prepare_inputs

FINAL_METRICS_FILE = run_files.FINAL_METRICS_FILE
# Model keys that may change on resume: they shape no parameter.
RESUMABLE_MODEL_KEYS = ("hidden_dropout", "attention_dropout", "dtype", "attention_kernel", "remat",
                        "dropout_impl")
DIVERGED_ADVICE = ("Lower optimizer.lr, raise optimizer.warmup_steps or check "
                   "optimizer.clip_norm.")
# Where each numeric key may lie (loop.check_numbers); a key not named here: finite and >= 0.
NUMERIC_RANGES = {
    **{f"model.{key}": loop.AT_LEAST_ONE for key in (
        "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
        "type_vocab_size", "global_every", "vocab_pad_multiple")},
    "model.hidden_dropout": loop.PROBABILITY_BELOW_ONE,
    "model.attention_dropout": loop.PROBABILITY_BELOW_ONE,
    "model.layer_norm_eps": loop.POSITIVE, "model.initializer_range": loop.POSITIVE,
    "model.rotary_theta": loop.Range(1, low_open=True),
    "model.local_rotary_theta": loop.Range(1, low_open=True),
    "data.vocab_size": loop.Range(10), "data.max_seq_length": loop.Range(3),
    "data.batch_size": loop.AT_LEAST_ONE, "data.mask_rate": loop.Range(0, 1, True, True),
    "data.max_predictions": loop.AT_LEAST_ONE, "data.short_seq_prob": loop.FRACTION,
    "data.eval_fraction": loop.PROBABILITY_BELOW_ONE,
    "optimizer.b1": loop.PROBABILITY_BELOW_ONE, "optimizer.b2": loop.PROBABILITY_BELOW_ONE,
    "optimizer.grad_accum_steps": loop.AT_LEAST_ONE,
    "data.packing_programs": loop.AT_LEAST_ONE,
    "train.num_steps": loop.AT_LEAST_ONE, "train.log_every": loop.AT_LEAST_ONE,
    "train.keep_checkpoints": loop.AT_LEAST_ONE,
}


# --------------------------------------------------------------------------------------------
# The checks that must pass before any work starts.
# --------------------------------------------------------------------------------------------

def check_config(config) -> None:
    """Value checks that name the key; run before anything is read or written: every numeric
    key in its range, model.variant and the model's shapes, then how keys go together."""
    loop.check_numbers(config, NUMERIC_RANGES)
    model_config_from(config.model, config.data.vocab_size)  # variant, shapes (a TrainConfigError)
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
    if not (opt.warmup_fraction or train.budget_minutes) and not (
            0 <= opt.warmup_steps <= train.num_steps):
        raise TrainConfigError(f"optimizer.warmup_steps={opt.warmup_steps} must be in "
                                  f"[0, train.num_steps={train.num_steps}]")
    check_pace(config)
    for key in ("log_every", "keep_checkpoints"):
        if train[key] < 1:
            raise TrainConfigError(f"train.{key}={train[key]} must be >= 1")
    for key in ("eval_every", "eval_batches", "checkpoint_every", "stop_after"):
        if train[key] < 0:
            raise TrainConfigError(f"train.{key}={train[key]} must be >= 0")
    if train.peak_flops < 0:
        raise TrainConfigError(f"train.peak_flops={train.peak_flops} must be >= 0 (0: measure)")


def check_pace(config) -> None:
    """The time budget, the batch-size ramp, the warm-up fraction and the evaluation masking."""
    data, opt, train = config.data, config.optimizer, config.train
    for key, value in (("optimizer.warmup_fraction", opt.warmup_fraction),
                       ("train.batch_ramp", train.batch_ramp),
                       ("data.eval_mask_rate", data.eval_mask_rate)):
        if not 0.0 <= value < 1.0:
            raise TrainConfigError(f"{key}={value} must be in [0, 1) (0: off)")
    if not 0.0 <= opt.warmup_from <= 1.0:
        raise TrainConfigError(f"optimizer.warmup_from={opt.warmup_from} must be in [0, 1]")
    if opt.warmup_from and not train.budget_minutes:
        raise TrainConfigError(f"optimizer.warmup_from={opt.warmup_from} shapes the time-budget "
                               "schedule only: set train.budget_minutes, or warmup_from=0")
    if train.budget_minutes > 0 and not budget_warmup(opt, train.num_steps) < 1.0:
        raise TrainConfigError(f"optimizer.warmup_steps={opt.warmup_steps} / train.num_steps="
                               f"{train.num_steps} is the warm-up's share of the time budget "
                               "and must be < 1; lower it or set optimizer.warmup_fraction")
    if train.get("budget_clock", "wall") not in budget.CLOCKS:
        raise TrainConfigError(f"train.budget_clock={train.budget_clock!r} must be one of "
                               f"{', '.join(budget.CLOCKS)}")
    if train.budget_minutes < 0:
        raise TrainConfigError(f"train.budget_minutes={train.budget_minutes} must be >= 0 (0: "
                               "train.num_steps alone ends the run)")
    if train.batch_ramp and opt.grad_accum_steps < 2:
        raise TrainConfigError(f"train.batch_ramp={train.batch_ramp} grows the update from one "
                               "micro-batch to optimizer.grad_accum_steps of them: set "
                               "optimizer.grad_accum_steps >= 2 (micro-batch = data.batch_size "
                               "/ grad_accum_steps)")
    if data.eval_mask_rate and data.eval_mask_rate * data.max_seq_length > data.max_predictions:
        raise TrainConfigError(f"data.eval_mask_rate={data.eval_mask_rate} x "
                               f"data.max_seq_length={data.max_seq_length} exceeds "
                               f"data.max_predictions={data.max_predictions}")


def warmup_steps(opt_config, num_steps: int) -> int:
    """optimizer.warmup_steps, or optimizer.warmup_fraction x train.num_steps when set."""
    if opt_config.warmup_fraction:
        return int(round(opt_config.warmup_fraction * num_steps))
    return int(opt_config.warmup_steps)


def make_optimizer(config):
    """(tx, schedule): the schedule takes the step, or with train.budget_minutes the progress
    through the budget (the step scales the update by it; bertlab.train.budget)."""
    opt, train = config.optimizer, config.train
    timed = train.budget_minutes > 0
    tx, schedule = optimizer_lib.make_optimizer(
        opt.name, lr=opt.lr, warmup_steps=0 if timed else warmup_steps(opt, train.num_steps),
        num_steps=train.num_steps, weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2,
        eps=opt.eps, clip_norm=opt.clip_norm, rate_in_step=timed)
    if timed:
        schedule = schedules.of_progress(optimizer_lib.SCHEDULE_SHAPES[opt.name], opt.lr,
                                         budget_warmup(opt, train.num_steps),
                                         warmup_from=opt.warmup_from)
    return tx, schedule


def budget_warmup(opt_config, num_steps: int) -> float:
    """The warm-up's fraction of a time budget: optimizer.warmup_fraction, else the recipe's
    warmup_steps / num_steps (the bert recipe's 10k of 1M: 1 %)."""
    return float(opt_config.warmup_fraction or opt_config.warmup_steps / num_steps)


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
    peak_source: str      # config | cache | measured (bertlab.train.peak_cache)
    mismatches: list = dataclasses.field(default_factory=list)  # per device-tokenised batch
    mismatch_total: int = 0
    peak_logged: bool = False  # the first train record of a (re)start carries peak_flops
    pack: packed.PackSpec | None = None  # data.packing: how micro-batches are packed
    eval_pack: packed.PackSpec | None = None  # the same at the evaluation's masking rate
    buckets: tuple[int, ...] = ()        # the planned rows per packed micro-batch
    programs: int = 1                    # data.packing_programs (evaluation's plan too)
    eval_rows: dict = dataclasses.field(default_factory=dict)  # (N, batches) -> R per batch


def build_run(config, inputs: Inputs) -> Run:
    data_config, opt_config = config.data, config.optimizer
    seq_len, num_predictions = inputs.train.max_seq_length, data_config.max_predictions
    model_config = model_config_from(config.model, len(inputs.vocab))
    with_nsp = bool(data_config.next_sentence)
    tx, schedule = make_optimizer(config)
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
    if config.train.budget_minutes:  # the optimizer state has another structure
        compat["train.time_budget"] = True
    pack = packing_spec(config, seq_len, mesh)
    mask_fn = steps.make_mask_fn(inputs.vocab, rate=data_config.mask_rate,
                                 max_predictions=num_predictions, whole_word=data_config.whole_word)
    # MosaicBERT evaluates at 15 % whatever the training rate, so runs of any rate compare
    eval_mask_fn = steps.make_mask_fn(inputs.vocab,
                                      rate=data_config.eval_mask_rate or data_config.mask_rate,
                                      max_predictions=num_predictions,
                                      whole_word=data_config.whole_word)
    peak, peak_source = peak_cache.peak_flops(config.train.peak_flops, model_config.dtype)
    tokens_per_step = data_config.batch_size * seq_len
    return Run(
        model_config=model_config, model=BertForPreTraining(model_config, with_nsp=with_nsp),
        tx=tx, mesh=mesh, seq_len=seq_len, num_predictions=num_predictions,
        micro_batch=micro_batch, compat=compat,
        train_step=steps.jit_train_step(mask_fn=mask_fn, schedule=schedule,
                                        grad_accum_steps=opt_config.grad_accum_steps,
                                        with_nsp=with_nsp, mesh=mesh,
                                        skip_empty_micro_batches=config.train.batch_ramp > 0),
        eval_step=steps.jit_eval_step(mask_fn=eval_mask_fn, with_nsp=with_nsp, mesh=mesh),
        tokenize=(device_tokenizer(inputs.vocab, data_config.lower_case, inputs.train, mesh)
                  if data_config.tokenize_on_device else None),
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_token(model_config, seq_len, num_predictions) * tokens_per_step,
        peak_flops=peak, peak_source=peak_source, pack=pack,
        eval_pack=pack and dataclasses.replace(
            pack, rate=float(data_config.eval_mask_rate or data_config.mask_rate)),
        programs=data_config.packing_programs,
        buckets=packed.plan_buckets(inputs.train, batch_size=data_config.batch_size,
                                    micro_batches=opt_config.grad_accum_steps,
                                    seed=data_config.seed, spec=pack,
                                    max_programs=data_config.packing_programs) if pack else ())


def packing_spec(config, seq_len: int, mesh) -> packed.PackSpec | None:
    """data.packing's PackSpec, or None: off, or with data.tokenize_on_device (the ids exist only
    on the device there, so the host cannot pack them; those batches stay padded)."""
    data = config.data
    if not data.packing or data.tokenize_on_device:
        return None
    return packed.PackSpec(row_length=seq_len, rate=float(data.mask_rate),
                           max_predictions=int(data.max_predictions), multiple=mesh.size,
                           process_index=jax.process_index(), process_count=jax.process_count())


def restore_or_init(run: Run, manager, workdir: str, seed: int, *, is_main: bool = True,
                    log=print):
    """(train state, base train rng, eval rng, data-iterator state, restored step or None, the
    restored checkpoint's meta or None). The newest checkpoint that reads is restored (a damaged
    one is moved aside, checkpoints.restore_latest), after checking it against run.compat."""
    init_rng, base_train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    shapes = dict(seq_len=run.seq_len, num_predictions=run.num_predictions, mesh=run.mesh)
    params_like, opt_like = train_state.abstract_train_state(run.model, run.tx, **shapes)
    restored = checkpoints.restore_latest(manager, params_like=params_like,
                                          opt_state_like=opt_like, compat=run.compat,
                                          difference=compat_difference, is_main=is_main)
    if restored is None:
        params = train_state.init_params(run.model, init_rng, **shapes)
        state = train_state.create_train_state(run.model, run.tx, params, mesh=run.mesh)
        return state, base_train_rng, eval_rng, {"epoch": 0, "position": 0}, None, None
    state = train_state.create_train_state(run.model, run.tx, restored.params,
                                           step=restored.step, opt_state=restored.opt_state,
                                           mesh=run.mesh)
    log(f"resuming from step {restored.step} ({checkpoints.step_dir(workdir, restored.step)})")
    return (state, jnp.asarray(restored.meta["rng"], jnp.uint32), eval_rng,
            restored.meta["data"], restored.step, restored.meta)


def check_num_steps(meta: dict | None, workdir: str, train_config) -> None:
    """A resume trains to the train.num_steps its checkpoints were made with: another value
    reshapes the learning-rate schedule mid-run (the rate would jump), so it is refused unless
    train.extend=True asks for it. Checkpoints that do not record it are compared with the
    config.json they were made under."""
    if meta is None or train_config.extend:
        return
    saved = meta.get("num_steps")
    if saved is None:
        previous = run_files.read_json(os.path.join(workdir, run_files.CONFIG_FILE)) or {}
        saved = previous.get("train", {}).get("num_steps")
    if saved is not None and int(saved) != train_config.num_steps:
        raise TrainConfigError(
            f"train.num_steps={train_config.num_steps}, but the checkpoints in {workdir} were "
            f"trained for train.num_steps={saved} (the learning-rate schedule would change "
            f"shape mid-run); set it back to {saved}, or add --config.train.extend=True to "
            f"train on with the new schedule")


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
            f"{run.peak_flops / 1e9:,.0f} GFLOP/s each ({run.peak_source})"
            + (f"; packed rows of {run.seq_len} tokens, {list(run.buckets)} rows per "
               f"micro-batch of {run.micro_batch}" if run.pack else ""))


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


def stacked_device_batch(run: Run, local: dict) -> dict:
    """Packed micro-batches stacked (k, ...) on the host -> global arrays split over the mesh
    along their second axis (rows, slots): every device holds a share of every micro-batch."""
    sharding = NamedSharding(run.mesh, PartitionSpec(None, mesh_lib.DATA_AXIS))
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in local.items()}


def next_update(run: Run, iterator, examples, pace: budget.Pace, step: int
                ) -> tuple[dict, int, dict]:
    """(device batch of update `step + 1`, its micro-batches, token counts: real tokens and the
    token slots computed, of the whole global update). Packed (data.packing): each micro-batch
    as the padded step splits it (packed.update_micro_batches; under a batch ramp, one iterator
    batch each) packed at one planned R and stacked; the iterator advances as padded."""
    if run.pack is None:
        local, micro_batches = next_batch(iterator, pace, step)
        slots = run.tokens_per_step * micro_batches // pace.accum_steps
        real = None
        if "attention_mask" in local:  # a ramp's skipped micro-batches weigh 0
            weights = local.get("example_weights", np.ones(len(local["attention_mask"])))
            real = int((np.asarray(local["attention_mask"]) * weights[:, None]).sum()
                       ) * jax.process_count()
        return device_batch(run, local), micro_batches, {"real_tokens": real,
                                                         "token_slots": slots}
    if pace.ramp:
        micro_batches = pace.micro_batches(step)
        micro = [iterator.next_global_indices() for _ in range(micro_batches)]
    else:
        micro_batches = pace.accum_steps
        micro = packed.update_micro_batches(iterator.next_global_indices(), micro_batches)
    local, stats = packed.pack_update(examples.take, micro, pace.accum_steps, run.buckets,
                                      run.pack)
    return stacked_device_batch(run, local), micro_batches, stats


class Throughput:
    """Tokens per second and MFU over the timed steps since the last log: compilation,
    evaluations and checkpoint saves are left out (restart() after each).

    tokens_per_second counts examples x max_seq_length (what a padded run computes; comparable
    across packed and padded runs), real_tokens_per_second the tokens that are not padding, and
    MFU the FLOPs of the token slots actually computed (packed rows, or padded rows)."""

    def __init__(self, run: Run):
        self.run, self.start, self.step = run, None, 0
        self.tokens = self.real = self.computed = 0

    def restart(self, step: int) -> None:
        self.start, self.step = time.perf_counter(), step
        self.tokens = self.real = self.computed = 0

    def add(self, tokens: int, real: int | None = None, computed: int | None = None) -> None:
        """Tokens of one update (fewer than run.tokens_per_step while the batch ramps up), its
        real tokens (None: unknown) and its computed token slots (None: = tokens)."""
        self.tokens += tokens
        self.real = None if real is None or self.real is None else self.real + real
        self.computed += tokens if computed is None else computed

    def rates(self, step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        if step <= self.step or elapsed <= 0:
            return {}
        flops_per_token = self.run.flops_per_step / self.run.tokens_per_step
        rates = {"tokens_per_second": self.tokens / elapsed,
                 "mfu": self.computed / elapsed * flops_per_token / (
                     self.run.peak_flops * self.run.mesh.size)}
        if self.real is not None:
            rates["real_tokens_per_second"] = self.real / elapsed
        return rates


def train_record(run: Run, means: dict, throughput: Throughput, writer, step: int,
                 pace: dict | None = None) -> dict:
    """The "train" line of metrics.jsonl: window means, device-tokeniser mismatches, speed, and
    the pace (budget.Pace.record: training seconds, budget progress, micro-batches)."""
    record = {**means, **(pace or {})}
    if run.tokenize is not None:
        found = int(sum(jax.device_get(run.mismatches)))
        run.mismatches.clear()
        if found and not run.mismatch_total:
            writer.message(f"step {step}: {found} segment(s) tokenised on the device differ from "
                           "the host tokenizer's ids (see tokenizer_jax.DIVERGENCES)")
        run.mismatch_total += found
        record["tokenize_mismatches"] = run.mismatch_total
    record.update(throughput.rates(step))
    if not run.peak_logged:  # once per (re)start: what this start's MFU divides by
        record.update(peak_flops=run.peak_flops)
        run.peak_logged = True
    writer.write(step, "train", record)
    writer.progress(step, loss=f"{record['loss']:.3f}",
                    tok_s=f"{record.get('tokens_per_second', 0):,.0f}",
                    mfu=f"{100 * record.get('mfu', 0):.1f}%")
    return record


def due(step: int, train_config, *, signalled: bool, can_evaluate: bool,
        out_of_time: bool = False) -> tuple[bool, ...]:
    """What step `step` ends with: (finished, stopping, log, evaluate, save). A stop (a signal or
    train.stop_after) and the last step always save; the last step always logs and evaluates.
    The last step is train.num_steps, or the one that spent the time budget (out_of_time)."""
    finished = step == train_config.num_steps or out_of_time
    stopping = signalled or step == train_config.stop_after
    every = lambda interval: bool(interval and step % interval == 0)
    return (finished, stopping, finished or every(train_config.log_every),
            can_evaluate and (finished or every(train_config.eval_every)),
            finished or stopping or every(train_config.checkpoint_every))


def next_batch(iterator, pace: budget.Pace, step: int) -> tuple[dict, int]:
    """(host batch of update `step + 1`, its micro-batches): the iterator's batch, or under a
    batch ramp k micro-batches laid out as the step's full batch (budget.ramp_batch)."""
    if not pace.ramp:
        return next(iterator), pace.accum_steps
    k = pace.micro_batches(step)
    return budget.ramp_batch([next(iterator) for _ in range(k)], pace.accum_steps), k


def kept_checkpoint(last_checkpoint: int | None) -> str:
    return (f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None else "no checkpoint was written")


def evaluate(run: Run, state, examples, step: int, *, max_batches: int, rng, writer,
             workdir: str, is_main: bool) -> dict[str, float]:
    """MLM (and NSP) metrics summed over the first max_batches held-out batches; redraws
    loss.png."""
    count = loop.eval_batch_count(len(examples), run.micro_batch, max_batches)
    if run.pack is None:
        batches = loop.eval_batches(examples.take, len(examples), run.micro_batch, max_batches,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
    else:
        batches = packed_eval_batches(run, examples, count)
    sums = None
    for index, local in enumerate(loop.with_progress(batches, count, f"evaluating step {step}",
                                                     enabled=is_main)):
        batch_sums = run.eval_step(state, device_batch(run, local), jax.random.fold_in(rng, index))
        sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
    if sums is None:
        return {}
    result = steps.eval_metrics(jax.device_get(sums))
    if run.pack is not None:
        rows = run.eval_rows[(len(examples), count)]
        evaluated = np.arange(min(len(examples), count * run.micro_batch))
        real = int(examples.lengths_of(evaluated).sum())
        result["packing_efficiency"] = real / (sum(rows) * run.seq_len)
    writer.write(step, "eval", result)
    writer.message(f"step {step}: eval MLM loss {result['mlm_loss']:.4f}, perplexity "
                   f"{result['perplexity']:.2f}, masked accuracy {result['mlm_accuracy']:.3f}")
    if is_main:
        plot_loss_curve(os.path.join(workdir, METRICS_FILE), os.path.join(workdir, LOSS_PLOT))
    return result


def packed_eval_batches(run: Run, examples, count: int):
    """The held-out batches of loop.eval_batches (rows 0..N-1 in order, same masking), each
    packed into its planned R (planned once per split over all `count` batches, exactly)."""
    key = (len(examples), count)
    if key not in run.eval_rows:
        lengths = examples.lengths_of(np.arange(min(len(examples), count * run.micro_batch)))
        run.eval_rows[key] = packed.plan_eval_rows(lengths, run.micro_batch, count,
                                                   run.eval_pack, run.programs)
    for index, rows in enumerate(run.eval_rows[key]):
        yield packed.pack_eval_batch(examples.take, len(examples), run.micro_batch, index, rows,
                                     run.eval_pack)


def save(manager, run: Run, state, step: int, *, base_rng, iterator, config,
         train_seconds: float = 0.0) -> None:
    checkpoints.save(manager, step, params=state.params, opt_state=state.opt_state, meta={
        budget.ELAPSED_KEY: float(train_seconds),
        "rng": np.asarray(jax.device_get(base_rng)).tolist(), "data": iterator.state(),
        "compat": run.compat, "model": config_to_dict(run.model_config),
        "with_nsp": bool(config.data.next_sentence), "lower_case": bool(config.data.lower_case),
        "max_seq_length": run.seq_len, "num_steps": int(config.train.num_steps)})


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

def train_and_evaluate(config, workdir: str) -> dict:
    """Pretrains per `config` in `workdir`, resuming from its latest checkpoint; returns the final
    metrics (also written to workdir/final_metrics.json).

    The config is checked before anything is touched; the workdir is then locked (one run per
    workdir; only process 0 of a multi-host run locks) until the final write."""
    check_config(config)
    mesh_lib.initialize_distributed(config.train.distributed)
    is_main = jax.process_index() == 0
    with loop.workdir_session(workdir, is_main=is_main) as workdir:
        return _train_and_evaluate(config, workdir, is_main=is_main)


def _train_and_evaluate(config, workdir: str, *, is_main: bool) -> dict:
    log = print if is_main else (lambda *a, **k: None)
    train_config = config.train
    inputs = prepare_inputs(config.data, workdir, log=log)
    run = build_run(config, inputs)
    manager = checkpoints.open_manager(workdir, keep=train_config.keep_checkpoints,
                                       async_save=False)
    try:
        state, base_rng, eval_rng, data_state, last_checkpoint, meta = restore_or_init(
            run, manager, workdir, train_config.seed, is_main=is_main, log=log)
        check_num_steps(meta, workdir, train_config)
    except BaseException:
        manager.close()
        raise
    final_path = os.path.join(workdir, FINAL_METRICS_FILE)
    start_step = int(jax.device_get(state.step))
    pace = budget.Pace(train_config, config.optimizer.grad_accum_steps,
                       elapsed=(meta or {}).get(budget.ELAPSED_KEY, 0.0))
    trained = start_step >= train_config.num_steps or pace.spent()
    finished = run_files.read_json(final_path) if trained else None
    if finished and finished.get("step") == start_step:
        manager.close()  # a rerun of a finished run: its results stand, nothing is written
        log(f"{workdir} is already trained to step {start_step} (train.num_steps="
            f"{train_config.num_steps}); its final metrics are in {final_path}")
        return finished
    if is_main:
        checkpoints.trim_metrics(workdir, last_checkpoint or 0)
        if start_step < train_config.num_steps and (run_files.read_json(final_path) or {}).get(
                "stopped_by"):
            run_files.set_aside_final(workdir)  # an earlier stop's; this start trains further
    run_files.record_start(workdir, config.to_dict(), is_main=is_main,
                           default=loop.json_default)
    # with a batch ramp the stream is of micro-batches, k of them per update (next_batch)
    iterator = BatchIterator.from_state(inputs.train, run.micro_batch if pace.ramp else
                                        config.data.batch_size, config.data.seed,
                                        data_state, process_index=jax.process_index(),
                                        process_count=jax.process_count())
    train_rng = mesh_lib.replicate(base_rng, run.mesh)
    log(describe(run, state, inputs))

    num_steps = train_config.num_steps
    step = start_step
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
        while step < num_steps and not pace.spent():
            batch, micro_batches, counts = next_update(run, iterator, inputs.train, pace, step)
            state, metrics = run.train_step(state, batch, train_rng, *pace.step_args(step))
            step += 1
            if run.pack is not None:  # real tokens / token slots of this update, logged as a mean
                metrics = {**metrics, "packing_efficiency": packed.efficiency(counts)}
            window.add(step, metrics)
            throughput.add(run.tokens_per_step * micro_batches // pace.accum_steps,
                           counts["real_tokens"], counts["token_slots"])
            if pace.timed:  # the budget clock counts finished work, not dispatches
                jax.block_until_ready(metrics)
                pace.clock.tick()
            if throughput.start is None:  # exclude compilation from the throughput
                jax.block_until_ready(metrics)
                throughput.restart(step)
            writer.progress(step)

            finished, stopping, want_log, want_eval, want_save = due(
                step, train_config, signalled=stop.signal_name is not None,
                can_evaluate=can_evaluate, out_of_time=pace.spent())
            if want_log or stopping or want_save or want_eval:
                means = window.close(kept_checkpoint(last_checkpoint))
                if want_log:
                    last_train = train_record(run, means, throughput, writer, step,
                                              pace.record(step - 1))
                    throughput.restart(step)
            if want_eval:
                last_eval = evaluate(run, state, inputs.eval, step, **evaluation)
            if want_save:
                save(manager, run, state, step, base_rng=base_rng, iterator=iterator,
                     config=config, train_seconds=pace.clock.elapsed)
                last_checkpoint = step
            if want_eval or want_save:
                throughput.restart(step)  # time steps only
                pace.clock.restart()
            if stopping and not finished:
                stopped_by = stop.signal_name or f"train.stop_after={train_config.stop_after}"
                writer.message(f"stopped by {stopped_by} at step {step}; checkpoint saved, "
                               "rerun the same command to resume")
                break
        if trained:  # trained, but its final metrics were never written
            log(f"{workdir} is already trained to step {start_step} (train.num_steps={num_steps})")
            logged = read_metrics(os.path.join(workdir, METRICS_FILE)).get("eval", {})
            if start_step in logged:  # evaluated before the final write was cut short
                last_eval = {key: value for key, value in logged[start_step].items()
                             if key not in ("step", "split", "time")}
            elif can_evaluate:
                last_eval = evaluate(run, state, inputs.eval, start_step, **evaluation)
    finally:
        stop.uninstall()
        checkpoints.wait(manager)
        manager.close()
        writer.close()
    if is_main:
        plot_loss_curve(os.path.join(workdir, METRICS_FILE), os.path.join(workdir, LOSS_PLOT))
    final = {"step": step, "stopped_by": stopped_by, "num_params": count_params(state.params),
             "peak_flops": run.peak_flops, "peak_flops_source": run.peak_source,
             **last_train, **{f"eval_{name}": value for name, value in last_eval.items()}}
    # the sweep's done file, written whole or not at all; a preemption leaves none
    run_files.record_finish(workdir, final, is_main=is_main and not stop.signal_name,
                            default=loop.json_default)
    return final
