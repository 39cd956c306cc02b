"""Three named optimisers: `adamw` (optax's, bias-corrected), `bert_adam` (the original BERT's),
`adam` (bias-corrected Adam at a constant rate after the warm-up: Keras' fixed-rate Adam/AdamW).

Both decay weights decoupled from the gradient (`update += wd * param`, then scaled by the rate),
never LayerNorm parameters or biases, and clip gradients by their global norm first.
`bert_adam` is google-research/bert's AdamWeightDecayOptimizer exactly: Adam moments WITHOUT bias
correction, its eps, and the `bert` schedule (warm-up replacing a decay over all steps). `adamw`
pairs optax's Adam with the `triangular` schedule, the recipe HF's Flax examples use.
Gradient accumulation is not here: the train step sums micro-batch gradients itself, so one
optimizer update is one step of the schedule whatever the accumulation.

Layer-wise learning-rate decay (fine-tuning's optimizer.layer_decay) is a per-parameter scale of
the final update, `scale_by_layer_decay`: see layer_decay_scale for the rule and its sources.
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
# The schedule shape of each optimizer (bertlab.train.schedules), also over a time budget.
SCHEDULE_SHAPES = {"adamw": "triangular", "bert_adam": "bert", "adam": "constant"}


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


# bert/encoder/layer_<l>/...: the backbone's encoder layers (the classifier's fresh head_encoder
# layers are not matched: they belong to the head).
ENCODER_LAYER_PATTERN = re.compile(r"^bert/encoder/layer_(\d+)/")
EMBEDDINGS_PREFIX = "bert/embeddings/"


def layer_decay_scale(name: str, num_layers: int, decay: float) -> float:
    """The factor on the learning rate of the parameter at path `name` under layer-wise decay.

    With L encoder layers, encoder layer l (0 = nearest the embeddings) gets decay^(L - l) (the
    top layer decay^1), the embeddings decay^(L + 1), and everything above the encoder (the
    pooler, a pre-LN final LayerNorm, the classifier and its fresh extra layers) the full rate:
    the rule of BEiT (Bao et al. 2022, `layer_id` = l + 1, scale = decay^(L + 1 - layer_id)).
    ELECTRA (Clark et al. 2020, `_get_layer_lrs`) uses the same geometric rule with one more
    step between the task head and the top layer. Lower layers hold more general features, so
    they move less (Howard & Ruder 2018's discriminative fine-tuning)."""
    match = ENCODER_LAYER_PATTERN.match(name)
    if match:
        layer = int(match.group(1))
        if layer >= num_layers:
            raise ValueError(f"optimizer.layer_decay: parameter {name} is encoder layer {layer} "
                             f"but the model has {num_layers} layer(s)")
        return float(decay ** (num_layers - layer))
    if name.startswith(EMBEDDINGS_PREFIX):
        return float(decay ** (num_layers + 1))
    return 1.0


def scale_by_layer_decay(num_layers: int, decay: float) -> optax.GradientTransformation:
    """Multiplies each parameter's update by layer_decay_scale of its path (no state). Placed
    after the learning rate, it scales the whole step of a parameter (its decoupled weight decay
    included), as a per-layer learning rate would."""

    def scales(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: layer_decay_scale(param_path_name(path), num_layers, decay), tree)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        updates = jax.tree_util.tree_map(lambda u, s: u * jnp.asarray(s, u.dtype), updates,
                                         scales(updates))
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


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
                   weight_decay: float, b1: float, b2: float, eps: float, clip_norm: float,
                   rate_in_step: bool = False
                   ) -> tuple[optax.GradientTransformation, schedules.Schedule]:
    """(transformation, schedule) for the named recipe; clip_norm <= 0 disables clipping.

    rate_in_step: the transformation's own rate is 1 and the train step multiplies its update by
    the rate (a time budget's rate follows the clock, measured on the host: see
    bertlab.train.steps.train_step's `progress`); the schedule returned is still the step one."""
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
    parts.append(optax.scale_by_learning_rate(1.0 if rate_in_step else schedule))
    return optax.chain(*parts), schedule


def optimizer_from_config(opt_config, num_steps: int, *, rate_in_step: bool = False
                          ) -> tuple[optax.GradientTransformation, schedules.Schedule]:
    """make_optimizer from the config's `optimizer` group."""
    return make_optimizer(opt_config.name, lr=opt_config.lr, warmup_steps=opt_config.warmup_steps,
                          num_steps=num_steps, weight_decay=opt_config.weight_decay,
                          b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
                          clip_norm=opt_config.clip_norm, rate_in_step=rate_in_step)
