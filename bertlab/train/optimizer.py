"""Three named optimisers: `adamw` (optax's, bias-corrected), `bert_adam` (the original BERT's),
`adam` (bias-corrected Adam at a constant rate after the warm-up: Keras' fixed-rate Adam/AdamW).

Both decay weights decoupled from the gradient (`update += wd * param`, then scaled by the rate),
never LayerNorm parameters or biases, and clip gradients by their global norm first.
`bert_adam` is google-research/bert's AdamWeightDecayOptimizer exactly: Adam moments WITHOUT bias
correction, its eps, and the `bert` schedule (warm-up replacing a decay over all steps). `adamw`
pairs optax's Adam with the `triangular` schedule, the recipe HF's Flax examples use.
Gradient accumulation is not here: the train step sums micro-batch gradients itself, so one
optimizer update is one step of the schedule whatever the accumulation.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bertlab.train import schedules

# The original's exclude_from_weight_decay patterns, plus "norm" for any other normalisation layer
# name a model variant may use; matched against the "/"-joined parameter path.
NO_DECAY_PATTERN = re.compile(r"LayerNorm|layer_norm|norm|bias", re.IGNORECASE)

OPTIMIZERS = ("adamw", "bert_adam", "adam")


def param_path_name(path: tuple) -> str:
    """'bert/encoder/layer_0/attention/query/kernel' from a jax key path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def weight_decay_mask(params: Any) -> Any:
    """A pytree of bools like `params`: True where weight decay applies."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: NO_DECAY_PATTERN.search(param_path_name(path)) is None, params)


class BertAdamState(NamedTuple):
    mu: Any
    nu: Any


def scale_by_adam_without_bias_correction(b1: float, b2: float, eps: float
                                          ) -> optax.GradientTransformation:
    """Adam's direction m / (sqrt(v) + eps) from raw moments (no bias correction): the original."""

    def init_fn(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return BertAdamState(mu=zeros, nu=jax.tree_util.tree_map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
        direction = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, BertAdamState(mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(name: str, *, lr: float, warmup_steps: int, num_steps: int,
                   weight_decay: float, b1: float, b2: float, eps: float, clip_norm: float
                   ) -> tuple[optax.GradientTransformation, schedules.Schedule]:
    """(transformation, schedule) for the named recipe; clip_norm <= 0 disables clipping."""
    if name == "adamw":
        schedule = schedules.triangular(lr, warmup_steps, num_steps)
        direction = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    elif name == "bert_adam":
        schedule = schedules.bert(lr, warmup_steps, num_steps)
        direction = scale_by_adam_without_bias_correction(b1, b2, eps)
    elif name == "adam":
        schedule = schedules.constant(lr, warmup_steps, num_steps)
        direction = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    else:
        raise ValueError(f"optimizer.name: unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    parts.append(direction)
    if name != "adam" or weight_decay > 0:  # plain `adam` has no decay unless one is asked for
        parts.append(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts), schedule


def optimizer_from_config(opt_config, num_steps: int
                          ) -> tuple[optax.GradientTransformation, schedules.Schedule]:
    """make_optimizer from the config's `optimizer` group."""
    return make_optimizer(opt_config.name, lr=opt_config.lr, warmup_steps=opt_config.warmup_steps,
                          num_steps=num_steps, weight_decay=opt_config.weight_decay,
                          b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
                          clip_norm=opt_config.clip_norm)
