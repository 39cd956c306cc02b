"""THE train and eval steps of masked-LM pretraining: pure functions, jitted once.

`train_step(state, batch, rng) -> (state, metrics)` does everything that changes per step on the
device: fold the step into the rng, draw this step's masking (bertlab.data.pretraining.masking), run the model
on the masked batch with dropout, take the MLM (+ NSP) loss over the gathered masked positions
only, accumulate gradients over micro-batches, apply the optimizer. Static settings (masking
options, schedule, accumulation, NSP) are bound with functools.partial before a single jax.jit;
the model and optimizer travel in the state (`apply_fn`, `tx`), so nothing is retraced per step.

Sharding is not mentioned here: inputs arrive batch-sharded over the mesh and parameters
replicated (bertlab.train.mesh), and XLA inserts the gradient all-reduce.

Every step also takes packed batches (bertlab.data.packing.pack_batch): rows (R, T) holding
several examples, with `example_ids`, `positions` (R, T) and `cls_index` (K,), and the
per-example arrays (labels, example_weights, nsp_labels) of length K in input order. The MLM
train step also takes k packed micro-batches stacked on a leading axis ((k, R, T) rows, (k, K)
slots; bertlab.data.pretraining.packed), which is how packed pretraining accumulates gradients:
an example lies in one micro-batch's rows, so each micro-batch is packed on its own. A dict's
keys are part of its pytree structure, so the branch on them is taken once, at trace time, and
a packed and a padded batch are two compiled programs of the same function. A packed step
computes what the padded step computes (same per-example logits and weighting, tested in
tests/test_packing.py), without the padding.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from bertlab.train import losses
from bertlab.data.pretraining.masking import continuation_table, mask_tokens
from bertlab.train.mesh import replicated

MaskFn = Callable[[jax.Array, jax.Array, jax.Array], dict]

# The keyword arrays a packed batch hands to the model (see bertlab.models.bert).
PACKED_MODEL_KEYS = ("example_ids", "positions", "cls_index")


def packed_model_inputs(batch: dict) -> dict:
    """The packed-row keyword arrays of a batch for the model's apply, or {} when it is padded."""
    if "example_ids" not in batch:
        return {}
    return {key: batch[key] for key in PACKED_MODEL_KEYS}


def make_mask_fn(vocab, *, rate: float, max_predictions: int, whole_word: bool) -> MaskFn:
    """(rng, token_ids, attention_mask, **packed rows) -> mask_tokens(...) with this
    vocabulary's special ids."""
    table = jnp.asarray(continuation_table(vocab)) if whole_word else None
    return functools.partial(mask_tokens, mask_id=vocab.mask_id, vocab_size=len(vocab),
                             special_ids=tuple(vocab.special_ids), rate=float(rate),
                             max_predictions=int(max_predictions), whole_word=bool(whole_word),
                             continuation_table=table)


def is_stacked(batch: dict) -> bool:
    """k packed micro-batches stacked on a leading axis: (k, R, T) rows."""
    return "example_ids" in batch and batch["token_ids"].ndim == 3


def _token_weights(example_weights: jax.Array, example_ids: jax.Array) -> jax.Array:
    """(K,) per-slot weights, (R, T) slot ids (0 = padding) -> (R, T) each token's weight."""
    return jnp.where(example_ids > 0, jnp.asarray(example_weights, jnp.float32)[
        jnp.maximum(example_ids - 1, 0)], 0.0)


def _mask_packed(batch: dict, rng: jax.Array, mask_fn: MaskFn) -> dict:
    """mask_fn over packed rows, (R, T) or stacked (k, R, T). Every token draws its random
    numbers at (its example's row in the padded batch, its offset): slot s of micro-batch i is
    padded row s * k + i (the padded step's split), so the masking is the padded one."""
    stacked = is_stacked(batch)
    k = batch["token_ids"].shape[0] if stacked else 1
    slots = batch["cls_index"].shape[-1]
    micro = jnp.arange(k, dtype=jnp.int32)[:, None, None] if stacked else 0
    draw_rows = jnp.maximum(batch["example_ids"] - 1, 0) * k + micro  # (k, R, T) or (R, T)
    rows = lambda x: x.reshape((-1,) + x.shape[2:]) if stacked else x  # (k * R, T)
    masked = mask_fn(rng, rows(batch["token_ids"]), rows(batch["attention_mask"]),
                     example_ids=rows(batch["example_ids"]), positions=rows(batch["positions"]),
                     draw_rows=rows(draw_rows), num_draw_rows=k * slots)
    if stacked:
        masked = {key: value.reshape((k, -1) + value.shape[1:])  # (k, R, ...)
                  for key, value in masked.items()}
    return masked


def masked_inputs(batch: dict, rng: jax.Array, mask_fn: MaskFn) -> dict:
    """The model inputs and targets of one batch under this rng's masking.

    `example_weights` (B,), when the batch has it, zeroes padding rows (eval's last batch).
    Packed rows (R, T) or stacked micro-batches (k, R, T): each example is masked as in the
    padded batch (its own count and draws, bertlab.data.pretraining.masking); example_weights
    and nsp_labels are per example ((K,) or (k, K)), and a masked token takes the weight of the
    example it belongs to."""
    packed = packed_model_inputs(batch)
    if packed:
        masked = _mask_packed(batch, rng, mask_fn)
        example_weights = batch.get("example_weights",
                                    jnp.ones(batch["cls_index"].shape, jnp.float32))
        weigh = _token_weights
        if is_stacked(batch):
            weigh = jax.vmap(_token_weights)
        token_weights = weigh(example_weights, batch["example_ids"])  # (..., R, T)
        masked_weights = masked["masked_weights"] * jnp.take_along_axis(
            token_weights, masked["masked_positions"].astype(jnp.int32), axis=-1)  # (..., R, P)
    else:
        masked = mask_fn(rng, batch["token_ids"], batch["attention_mask"])
        batch_size = batch["token_ids"].shape[0]
        example_weights = batch.get("example_weights", jnp.ones((batch_size,), jnp.float32))
        masked_weights = masked["masked_weights"] * example_weights[:, None]  # (B, P)
    return {**packed,
        "input_ids": masked["input_ids"],                     # (B, T)
        "segment_ids": batch["segment_ids"],                  # (B, T)
        "attention_mask": batch["attention_mask"],            # (B, T)
        "masked_positions": masked["masked_positions"],       # (B, P)
        "masked_labels": masked["masked_labels"],             # (B, P)
        "masked_weights": masked_weights,                     # (B, P)
        "nsp_labels": batch["nsp_labels"],                    # (B,)
        "example_weights": example_weights.astype(jnp.float32),  # (B,)
    }


def forward_sums(params, apply_fn, inputs: dict, *, with_nsp: bool, deterministic: bool,
                 dropout_rng: jax.Array | None = None) -> dict:
    """Summed loss statistics of one (micro-)batch (see bertlab.train.losses)."""
    outputs = apply_fn({"params": params}, inputs["input_ids"], inputs["segment_ids"],
                       inputs["attention_mask"], inputs["masked_positions"],
                       deterministic=deterministic, **packed_model_inputs(inputs),
                       rngs=None if deterministic else {"dropout": dropout_rng})
    sums = losses.masked_lm_sums(outputs["mlm_logits"], inputs["masked_labels"],
                                 inputs["masked_weights"])
    if with_nsp:
        sums.update(losses.next_sentence_sums(outputs["nsp_logits"], inputs["nsp_labels"],
                                              inputs["example_weights"]))
    return sums


def _zeros_like_sums(with_nsp: bool) -> dict:
    names = ["mlm_loss_sum", "mlm_weight", "mlm_correct"]
    names += ["nsp_loss_sum", "nsp_weight", "nsp_correct"] if with_nsp else []
    return {name: jnp.zeros((), jnp.float32) for name in names}


def train_step(state: TrainState, batch: dict, rng: jax.Array, progress: jax.Array | None = None,
               *, mask_fn: MaskFn, schedule: Callable, grad_accum_steps: int, with_nsp: bool,
               skip_empty_micro_batches: bool = False) -> tuple[TrainState, dict]:
    """One optimizer update on `batch` (B sequences, split into grad_accum_steps micro-batches).

    `progress` (a float scalar from the host, or None): with a time budget the fraction of it
    spent; the rate is then schedule(progress) and multiplies the update of an optimizer built
    with rate_in_step (whose own rate is 1), so the step compiles once whatever the clock says.
    None: the optimizer's own step schedule. skip_empty_micro_batches (the batch-size ramp,
    bertlab.train.budget): a micro-batch whose example_weights are all 0 costs no forward or
    backward pass (lax.cond), so an update over k of the K micro-batches costs k."""
    rng = jax.random.fold_in(rng, state.step)
    mask_rng, dropout_rng = jax.random.split(rng)
    # Masking the whole batch first makes k micro-batches see exactly the big batch's targets.
    stacked = is_stacked(batch)
    if packed_model_inputs(batch) and not stacked:
        if grad_accum_steps > 1:
            # cls_index points into the whole batch's rows: splitting rows and slots apart
            # would send examples to the wrong micro-batch. Pack each micro-batch separately.
            raise ValueError("train_step: gradient accumulation over a packed batch is not "
                             "supported; pack each micro-batch and stack them (k, R, T) "
                             "(bertlab.data.pretraining.packed), or use unpacked batches")
        batch = jax.tree_util.tree_map(lambda x: x[None], batch)  # one micro-batch: (1, ...)
        stacked = True
    if stacked and batch["token_ids"].shape[0] != grad_accum_steps:
        raise ValueError(f"train_step: {batch['token_ids'].shape[0]} stacked packed "
                         f"micro-batches, but grad_accum_steps={grad_accum_steps}")
    inputs = masked_inputs(batch, mask_rng, mask_fn)
    mlm_denominator = jnp.sum(inputs["masked_weights"]) + losses.MLM_DENOMINATOR_EPS
    nsp_denominator = jnp.maximum(jnp.sum(inputs["example_weights"]), 1.0)

    k = grad_accum_steps
    # Row j*k + i goes to micro-batch i, so each device keeps a share of every micro-batch;
    # stacked packed micro-batches come split already.
    micro = inputs if stacked else jax.tree_util.tree_map(
        lambda x: x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1),
        inputs)  # (k, B/k, ...)

    def micro_loss(params, micro_inputs, micro_rng):
        sums = forward_sums(params, state.apply_fn, micro_inputs, with_nsp=with_nsp,
                            deterministic=False, dropout_rng=micro_rng)
        loss = sums["mlm_loss_sum"] / mlm_denominator  # normalised by the WHOLE batch's totals
        if with_nsp:
            loss = loss + sums["nsp_loss_sum"] / nsp_denominator
        return loss, sums

    def accumulate(carry, xs):
        grads_total, sums_total = carry
        index, micro_inputs = xs

        def run(_):
            grads, sums = jax.grad(micro_loss, has_aux=True)(
                state.params, micro_inputs, jax.random.fold_in(dropout_rng, index))
            add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
            return add(grads_total, grads), add(sums_total, sums)

        if not skip_empty_micro_batches:
            return run(None), None
        active = jnp.sum(micro_inputs["example_weights"]) > 0
        return jax.lax.cond(active, run, lambda _: (grads_total, sums_total), None), None

    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    (grads, sums), _ = jax.lax.scan(accumulate, (zero_grads, _zeros_like_sums(with_nsp)),
                                    (jnp.arange(k), micro), unroll=k == 1)
    metrics = losses.mean_losses(sums)
    metrics["mlm_accuracy"] = sums["mlm_correct"] / jnp.maximum(sums["mlm_weight"], 1.0)
    if with_nsp:
        metrics["nsp_accuracy"] = sums["nsp_correct"] / jnp.maximum(sums["nsp_weight"], 1.0)
    metrics["grad_norm"] = optax.global_norm(grads)
    if progress is None:
        metrics["learning_rate"] = schedule(state.step)
        return state.apply_gradients(grads=grads), metrics
    rate = schedule(progress)
    metrics["learning_rate"] = rate
    return apply_gradients_at_rate(state, grads, rate), metrics


def apply_gradients_at_rate(state: TrainState, grads, rate: jax.Array) -> TrainState:
    """state.apply_gradients with the optimizer's update (rate 1) multiplied by `rate`: the rate
    is the last linear stage of every optimizer here, so this is the same update."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: (rate * u).astype(u.dtype), updates)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)


def eval_step(state: TrainState, batch: dict, rng: jax.Array, *, mask_fn: MaskFn,
              with_nsp: bool) -> dict:
    """Summed statistics of one held-out batch; the caller passes a fixed rng per batch index, so
    every evaluation masks the same tokens and numbers are comparable across steps."""
    inputs = masked_inputs(batch, rng, mask_fn)
    return forward_sums(state.params, state.apply_fn, inputs, with_nsp=with_nsp,
                        deterministic=True)


def eval_metrics(sums: dict) -> dict:
    """Held-out MLM loss, perplexity and masked accuracy (+ NSP) from summed statistics."""
    sums = {name: jnp.asarray(value, jnp.float32) for name, value in sums.items()}
    metrics = losses.mean_losses(sums)
    out = {"mlm_loss": metrics["mlm_loss"], "perplexity": jnp.exp(metrics["mlm_loss"]),
           "mlm_accuracy": sums["mlm_correct"] / jnp.maximum(sums["mlm_weight"], 1.0),
           "masked_tokens": sums["mlm_weight"]}
    if "nsp_loss_sum" in sums:
        out["nsp_loss"] = metrics["nsp_loss"]
        out["nsp_accuracy"] = sums["nsp_correct"] / jnp.maximum(sums["nsp_weight"], 1.0)
        out["loss"] = metrics["loss"]
    return {name: float(value) for name, value in out.items()}


def jit_train_step(*, mask_fn: MaskFn, schedule: Callable, grad_accum_steps: int,
                   with_nsp: bool, mesh, skip_empty_micro_batches: bool = False) -> Callable:
    """train_step with its settings bound, compiled once; the state is donated (reused in place)."""
    step = functools.partial(train_step, mask_fn=mask_fn, schedule=schedule,
                             grad_accum_steps=grad_accum_steps, with_nsp=with_nsp,
                             skip_empty_micro_batches=skip_empty_micro_batches)
    return jax.jit(step, donate_argnums=0, out_shardings=(replicated(mesh), replicated(mesh)))


def jit_eval_step(*, mask_fn: MaskFn, with_nsp: bool, mesh) -> Callable:
    step = functools.partial(eval_step, mask_fn=mask_fn, with_nsp=with_nsp)
    return jax.jit(step, out_shardings=replicated(mesh))


# --------------------------------------------------------------------------------------------
# Fine-tuning: sequence classification and regression (bertlab.train.finetune's loop).
# --------------------------------------------------------------------------------------------

def classification_losses(logits: jax.Array, labels: jax.Array, *, regression: bool) -> jax.Array:
    """Per-example loss (B,): cross-entropy on class ids, or squared error on the single output
    (STS-B style regression, num_labels = 1)."""
    if regression:
        return jnp.square(logits[:, 0] - labels.astype(jnp.float32))  # (B,)
    return losses.token_cross_entropy(logits, labels)  # (B,)


def _frozen_apart(params: dict, frozen: tuple[str, ...]) -> dict:
    """params with the frozen top-level groups behind stop_gradient, so no gradient is computed
    for them (the backward pass stops at the first trainable layer)."""
    return {name: jax.lax.stop_gradient(value) if name in frozen else value
            for name, value in params.items()}


def classify_train_step(state: TrainState, batch: dict, rng: jax.Array, *, schedule: Callable,
                        regression: bool, frozen: tuple[str, ...] = (),
                        class_weights: tuple[float, ...] | None = None,
                        grad_accum_steps: int = 1) -> tuple[TrainState, dict]:
    """One update on a batch of `token_ids`, `segment_ids`, `attention_mask` (B, T), `labels` (B,)
    and `example_weights` (B,) (0 on the rows that pad an epoch's last batch). A packed batch
    (bertlab.data.packing.pack_batch) has rows (R, T) and labels / example_weights (K,); the
    loss and the logits (K, num_labels) are then per slot, in input order.

    The loss is the weighted mean over real rows, each row weighted by its gold class's entry of
    `class_weights` when given (bertlab.train.losses.classification_weights). With
    grad_accum_steps = k > 1 the batch is split into k micro-batches (row j*k + i goes to
    micro-batch i, as the MLM step does; a packed batch's R rows are split into k groups of R/k
    rows, each micro-batch the examples packed in its group) whose gradients are summed, each
    micro-batch's loss divided by the WHOLE batch's weight, so the update is the one-batch
    update (B stays the examples per update).

    `frozen` names top-level parameter groups (e.g. ("bert",)) that are returned exactly as they
    came in, bit for bit; the optimizer must also leave them out
    (bertlab.train.classifier.make_finetune_optimizer does). Metrics carry the logits so the
    loop can score the training epoch with the task's own metrics."""
    dropout_rng = jax.random.fold_in(rng, state.step)
    weights = losses.classification_weights(batch["labels"], batch["example_weights"],
                                            class_weights)  # (B,)
    denominator = losses.weighted_mean_denominator(weights)

    def loss_fn(params, inputs, micro_rng):
        params = _frozen_apart(params, frozen) if frozen else params
        logits = state.apply_fn({"params": params}, inputs["token_ids"], inputs["segment_ids"],
                                inputs["attention_mask"], deterministic=False,
                                rngs={"dropout": micro_rng},
                                **packed_model_inputs(inputs))  # (B or K, num_labels)
        per_example = classification_losses(logits, inputs["labels"], regression=regression)
        return jnp.sum(per_example * inputs["loss_weights"]) / denominator, logits

    inputs = {**batch, "loss_weights": weights}
    k = grad_accum_steps
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    if k == 1:
        (loss, logits), grads = grad_fn(state.params, inputs, dropout_rng)
    elif packed_model_inputs(batch):
        (grads, loss, logits), _ = jax.lax.scan(
            lambda carry, xs: _packed_micro_step(grad_fn, state.params, dropout_rng, inputs,
                                                 carry, xs),
            (zero_grads, jnp.zeros((), jnp.float32),
             jnp.zeros(batch["labels"].shape + state.params["classifier"]["kernel"].shape[-1:],
                       jnp.float32)),  # (K, num_labels)
            (jnp.arange(k), _packed_row_groups(inputs, k)))
    else:
        micro = jax.tree_util.tree_map(
            lambda x: x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1),
            inputs)  # (k, B/k, ...)

        def accumulate(carry, xs):
            grads_total, loss_total = carry
            index, micro_inputs = xs
            (loss, logits), grads = grad_fn(state.params, micro_inputs,
                                            jax.random.fold_in(dropout_rng, index))
            grads_total = jax.tree_util.tree_map(jnp.add, grads_total, grads)
            return (grads_total, loss_total + loss), logits

        (grads, loss), logits = jax.lax.scan(
            accumulate, (zero_grads, jnp.zeros((), jnp.float32)), (jnp.arange(k), micro))
        # (k, B/k, C) -> (B/k, k, C) -> (B, C): row j*k + i back in its place
        logits = logits.swapaxes(0, 1).reshape((-1,) + logits.shape[2:])
    new_state = state.apply_gradients(grads=grads)
    if frozen:
        new_state = new_state.replace(params={**new_state.params,
                                              **{name: state.params[name] for name in frozen}})
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step), "logits": logits}
    return new_state, metrics


# Packed rows (R, T) that a packed micro-batch takes a slice of; the other keys are per slot (K,).
PACKED_ROW_KEYS = ("token_ids", "segment_ids", "attention_mask", "example_ids", "positions")


def _packed_row_groups(inputs: dict, k: int) -> dict:
    """The packed rows as k groups of R/k consecutive rows: (k, R/k, T) per row key. An
    example lies within one row, so each group holds whole examples."""
    rows = inputs["token_ids"].shape[0]
    if rows % k:
        raise ValueError(f"classify_train_step: a packed batch of {rows} rows does not split "
                         f"into grad_accum_steps={k} micro-batches; plan R as a multiple of k")
    return {key: inputs[key].reshape((k, rows // k) + inputs[key].shape[1:])  # (k, R/k, T)
            for key in PACKED_ROW_KEYS}


def _packed_micro_step(grad_fn, params, dropout_rng, inputs: dict, carry, xs):
    """Micro-batch `index` of a packed batch: its group of rows with every slot (K,) kept; a
    slot packed in another group weighs 0 here and points its [CLS] at token 0 (finite, unused),
    so each example counts in exactly one micro-batch and its logits come from there."""
    grads_total, loss_total, logits_total = carry
    index, rows = xs
    group_tokens = rows["token_ids"].size  # (R/k) * T flat positions per group
    mine = inputs["cls_index"] // group_tokens == index  # (K,)
    micro = {**inputs, **rows,
             "cls_index": jnp.where(mine, inputs["cls_index"] - index * group_tokens, 0),
             "loss_weights": jnp.where(mine, inputs["loss_weights"], 0.0)}
    (loss, logits), grads = grad_fn(params, micro, jax.random.fold_in(dropout_rng, index))
    grads_total = jax.tree_util.tree_map(jnp.add, grads_total, grads)
    logits_total = logits_total + jnp.where(mine[:, None], logits.astype(jnp.float32), 0.0)
    return (grads_total, loss_total + loss, logits_total), None


def classify_eval_step(state: TrainState, batch: dict) -> dict:
    """Logits (B, num_labels) and per-example loss (B,) without dropout; the caller drops padding
    rows and scores the split with bertlab.data.tasks.metrics.task_metrics. Packed: (K, ...) per
    slot in input order; the caller drops slots whose example_weights is 0."""
    logits = state.apply_fn({"params": state.params}, batch["token_ids"], batch["segment_ids"],
                            batch["attention_mask"], deterministic=True,
                            **packed_model_inputs(batch))
    regression = logits.shape[-1] == 1
    return {"logits": logits,
            "loss": classification_losses(logits, batch["labels"], regression=regression)}


def jit_classify_train_step(*, schedule: Callable, regression: bool, frozen: tuple[str, ...],
                            mesh, class_weights: tuple[float, ...] | None = None,
                            grad_accum_steps: int = 1) -> Callable:
    """classify_train_step with its settings bound, compiled once; the state is donated."""
    step = functools.partial(
        classify_train_step, schedule=schedule, regression=regression, frozen=tuple(frozen),
        class_weights=None if class_weights is None else tuple(float(w) for w in class_weights),
        grad_accum_steps=int(grad_accum_steps))
    return jax.jit(step, donate_argnums=0, out_shardings=(replicated(mesh), replicated(mesh)))


def jit_classify_eval_step(*, mesh) -> Callable:
    return jax.jit(classify_eval_step, out_shardings=replicated(mesh))
