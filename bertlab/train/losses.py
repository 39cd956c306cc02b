"""Pretraining losses as weighted SUMS plus their denominators, and the per-example weights of
the fine-tuning loss (class weighting).

Returning sums (not means) lets gradient accumulation and multi-batch evaluation divide once by
the total over all micro-batches, so k micro-batches give exactly the loss of one big batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """-log softmax(logits)[label] per position: logits (..., V) float32, labels (...) int."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def masked_lm_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict:
    """Over the gathered masked positions only: logits (B, P, V), labels / weights (B, P).

    Padding slots carry weight 0 and count for nothing (as in the original's label_weights)."""
    weights = weights.astype(jnp.float32)
    nll = token_cross_entropy(logits, labels)  # (B, P)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)  # (B, P)
    return {"mlm_loss_sum": jnp.sum(nll * weights), "mlm_weight": jnp.sum(weights),
            "mlm_correct": jnp.sum(correct * weights)}


def next_sentence_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict:
    """logits (B, 2), labels (B,) with 1 = B is a random sentence, weights (B,) per example."""
    weights = weights.astype(jnp.float32)
    nll = token_cross_entropy(logits, labels)  # (B,)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return {"nsp_loss_sum": jnp.sum(nll * weights), "nsp_weight": jnp.sum(weights),
            "nsp_correct": jnp.sum(correct * weights)}


# The original divides the MLM sum by (sum of weights + 1e-5); we keep its constant.
MLM_DENOMINATOR_EPS = 1e-5


def mean_losses(sums: dict) -> dict:
    """mlm_loss, nsp_loss (0 without NSP) and their total from summed statistics."""
    mlm = sums["mlm_loss_sum"] / (sums["mlm_weight"] + MLM_DENOMINATOR_EPS)
    nsp = (sums["nsp_loss_sum"] / jnp.maximum(sums["nsp_weight"], 1.0)
           if "nsp_loss_sum" in sums else jnp.zeros((), jnp.float32))
    return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp}


def classification_weights(labels: jax.Array, example_weights: jax.Array,
                           class_weights: tuple[float, ...] | None) -> jax.Array:
    """The weight of each example in the fine-tuning loss (B,): its example weight (0 on rows
    that pad a batch or fill a packed slot) times the weight of its gold class, when class
    weights are given (train.class_weights; regression has none)."""
    weights = example_weights.astype(jnp.float32)  # (B,)
    if class_weights is None:
        return weights
    table = jnp.asarray(class_weights, jnp.float32)  # (num_labels,)
    return weights * table[labels.astype(jnp.int32)]


def weighted_mean_denominator(weights: jax.Array) -> jax.Array:
    """sum(weights), or 1 for a batch without a real example (its loss sum is 0 too).

    The loss is sum(w_i * loss_i) / sum(w_i) over the batch's real examples, what torch's
    CrossEntropyLoss(weight=w) computes with reduction="mean": with class weights a batch of
    only rare-class examples is not louder than any other batch, only the rare class counts more
    within a batch. Without class weights this is the plain mean over real examples."""
    total = jnp.sum(weights)
    return jnp.where(total > 0, total, 1.0)
