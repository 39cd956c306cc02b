"""The peer's MLM train step (transformers' FlaxBertForMaskedLM + optax AdamW with clipping), as
startup.py and compile_time.py build it: one definition, so both time the same program.

Imports stay inside the function: callers time their own imports first."""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def flax_mlm_step(variant: str, batch: int, seq: int, vocab_size: int, *, dropout: float = 0.1):
    """(step, params, opt_state): step(params, opt_state, dropout_rng) -> (params, opt_state,
    loss) un-jitted, on a fixed synthetic batch with 15 % of positions labelled; the optimizer
    state is initialised and ready."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from transformers import BertConfig, FlaxBertForMaskedLM

    sys.path.insert(0, REPO)
    from bertlab.models.config import VARIANTS  # no jax inside: sizes only

    size = VARIANTS[variant]
    hf_config = BertConfig(vocab_size=vocab_size, hidden_size=size["hidden_size"],
                           num_hidden_layers=size["num_layers"],
                           num_attention_heads=size["num_heads"],
                           intermediate_size=size["intermediate_size"],
                           hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = FlaxBertForMaskedLM(hf_config, seed=0, input_shape=(1, seq))
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-4, eps=1e-6, weight_decay=0.01))
    params = model.params
    opt_state = tx.init(params)
    jax.block_until_ready(opt_state)

    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, vocab_size, (batch, seq), dtype=np.int32))
    labels = jnp.where(jnp.asarray(rng.random((batch, seq)) < 0.15), ids, -100)  # (B, T)
    mask = jnp.ones((batch, seq), jnp.int32)

    def step(params, opt_state, dropout_rng):
        def loss_fn(p):
            logits = model(ids, mask, jnp.zeros_like(ids), params=p, dropout_rng=dropout_rng,
                           train=True).logits  # (B, T, V)
            weight = labels >= 0
            logp = jax.nn.log_softmax(logits)
            nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
            return jnp.sum(nll * weight) / jnp.maximum(weight.sum(), 1)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, params, opt_state


def add_shape_arguments(parser) -> None:
    """The step shape both sides are built with (the issue's: batch 32, seq 128, 20 masked)."""
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
