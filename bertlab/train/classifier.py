"""The fine-tuned model: a backbone (pretrained via model.init_from, or random with
model.from_scratch) with a fresh classifier head on top, its initialiser and its optimizer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from bertlab.checkpoints import init_from as init_from_lib
from bertlab.data.tasks.registry import Split
from bertlab.models import BertForSequenceClassification
from bertlab.models.config import BertConfig, ConfigError
from bertlab.train import mesh as mesh_lib
from bertlab.train import optimizer as optimizer_lib
from bertlab.train.loop import TrainConfigError
from bertlab.train.model_config import MODEL_SIZE_KEYS, copy_or_learn_vocab, model_config_from
from bertlab.train.state import init_fn

FROZEN_GROUPS = ("bert",)  # what train.freeze_backbone keeps fixed: the whole backbone


def prepare_backbone(config, workdir: str, train: Split | None, *, log=print
                     ) -> init_from_lib.Backbone:
    """The backbone to start from. model.from_scratch: params=None (random init per seed) and
    data.vocab, or a vocabulary learned on the training texts (so a no-pretraining control can
    tokenise exactly as the pretrained arms), kept in workdir/vocab.txt for every seed."""
    if not config.model.from_scratch:
        try:
            return init_from_lib.resolve_backbone(config.model.init_from)
        except init_from_lib.InitFromError as e:
            raise TrainConfigError(f"model.init_from: {e}") from None
    data = config.data
    path, vocab = copy_or_learn_vocab(workdir, data.vocab,
                                      functools.partial(learn_task_vocab, data, train, log=log))
    return init_from_lib.Backbone(scratch_model_config(config, len(vocab)), None, path,
                                  bool(data.lower_case), "scratch", "from_scratch")


def scratch_model_config(config, vocab_size: int) -> BertConfig:
    """The model group's config for random weights; position rows default to
    max(512, data.max_seq_length)."""
    return model_config_from(config.model, vocab_size,
                             max_position_embeddings=max(512, config.data.max_seq_length))


def learn_task_vocab(data_config, train: Split, *, log=print):
    """A data.vocab_size WordPiece vocabulary learned on the training split's texts."""
    from bertlab.text.learn import VocabLearnError, learn_vocab

    lines = list(train.texts) + list(train.text_pairs or [])
    log(f"learning a {data_config.vocab_size}-entry WordPiece vocabulary from the "
        f"{len(train)} training examples")
    try:
        return learn_vocab(lines, data_config.vocab_size, lower_case=data_config.lower_case)
    except VocabLearnError as e:
        raise TrainConfigError(f"data.vocab_size={data_config.vocab_size}: {e}") from None


def finetune_model_config(config, backbone: init_from_lib.Backbone) -> BertConfig:
    """The backbone's config with the run's dropout/dtype/remat overrides (none of them changes a
    weight); size overrides are refused (they cannot change a pretrained checkpoint's shapes)."""
    model, max_seq_length = config.model, config.data.max_seq_length
    if backbone.kind == "scratch":
        model_config = backbone.config
    else:
        for key in MODEL_SIZE_KEYS + ("max_position_embeddings",):
            wanted = model[key]
            if wanted is not None and wanted != getattr(backbone.config, key):
                raise TrainConfigError(
                    f"model.{key}={wanted} but model.init_from={model.init_from!r} has "
                    f"{key}={getattr(backbone.config, key)}; size keys apply only with "
                    f"model.from_scratch")
        overrides = {key: model[key] for key in ("hidden_dropout", "attention_dropout",
                                                 "dropout_impl") if model[key] is not None}
        try:
            model_config = dataclasses.replace(backbone.config, dtype=model.dtype,
                                               remat=model.remat, **overrides)
        except ConfigError as e:
            raise TrainConfigError(str(e).replace("BertConfig.", "model.")) from None
    if (model_config.position_embedding == "learned"
            and max_seq_length > model_config.max_position_embeddings):
        raise TrainConfigError(f"data.max_seq_length={max_seq_length} exceeds the model's "
                               f"max_position_embeddings={model_config.max_position_embeddings}")
    return model_config


def make_init_fn(model: BertForSequenceClassification, backbone_params, seq_len: int, mesh
                 ) -> Callable[[jax.Array], Any]:
    """rng -> the whole classifier's parameters, replicated: fresh head (and extra layers), the
    backbone's weights from `backbone_params` (None: a random backbone, from_scratch). Shapes are
    checked leaf by leaf first. Built once per run, so every seed reuses one compilation."""
    init_all = init_fn(model, seq_len=seq_len)
    if backbone_params is None:
        init = jax.jit(init_all)
        return lambda rng: mesh_lib.replicate(init(rng), mesh)
    expected = jax.eval_shape(lambda key: init_all(key)["bert"], jax.random.PRNGKey(0))
    check_same_shapes(expected, backbone_params)
    backbone = mesh_lib.replicate(jax.tree_util.tree_map(jnp.asarray, backbone_params), mesh)

    def init_with_backbone(key, bert):
        # Only the new parts are drawn (XLA skips the random backbone it would discard); the
        # backbone is COPIED into fresh buffers: the train step donates its state, so a seed
        # that trained on `backbone` itself would leave the next seed deleted arrays.
        new = {k: v for k, v in init_all(key).items() if k != "bert"}
        return {"bert": jax.tree_util.tree_map(jnp.copy, bert), **new}

    init = jax.jit(init_with_backbone, out_shardings=mesh_lib.replicated(mesh))
    return lambda rng: init(rng, backbone)


def abstract_train_state(model: BertForSequenceClassification, tx: optax.GradientTransformation,
                         backbone_params, seq_len: int, mesh):
    """The TrainState that make_init_fn + create_train_state build for every seed, as
    ShapeDtypeStructs with their shardings (replicated): what the train and eval programs are
    compiled for ahead of time (bertlab.train.programs), before any weight exists. The
    backbone's leaves keep their stored dtypes, as make_init_fn's jnp.asarray does."""
    rep = mesh_lib.replicated(mesh)
    params = jax.eval_shape(init_fn(model, seq_len=seq_len), jax.random.PRNGKey(0))
    if backbone_params is not None:
        params = {**params, "bert": jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(
                x.dtype if hasattr(x, "dtype") else np.result_type(x))), backbone_params)}
    opt_state = jax.eval_shape(tx.init, params)
    shard = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree)
    return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
                      apply_fn=model.apply, params=shard(params), tx=tx,
                      opt_state=shard(opt_state))


def check_same_shapes(expected, given) -> None:
    from flax.traverse_util import flatten_dict

    want, have = flatten_dict(dict(expected), sep="/"), flatten_dict(dict(given), sep="/")
    missing, unknown = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unknown:
        raise TrainConfigError(f"model.init_from backbone does not fit the model: missing "
                               f"{missing[:5]}, unexpected {unknown[:5]}")
    for name in want:
        if tuple(want[name].shape) != tuple(np.shape(have[name])):
            raise TrainConfigError(f"model.init_from backbone: bert/{name} has shape "
                                   f"{np.shape(have[name])}, the model needs {want[name].shape}")


def make_finetune_optimizer(opt, *, num_steps: int, warmup_steps: int,
                            frozen: Sequence[str] = (), num_layers: int = 0
                            ) -> tuple[optax.GradientTransformation, Callable]:
    """bertlab.train.optimizer's recipe by name (`adam` is the tutorials' constant-rate Adam).
    optimizer.layer_decay < 1 scales each parameter's step by its depth among the backbone's
    `num_layers` encoder layers (optimizer.layer_decay_scale). Groups in `frozen` get no
    optimizer state and zero updates (the train step also keeps them bit for bit)."""
    tx, schedule = optimizer_lib.make_optimizer(
        opt.name, lr=opt.lr, warmup_steps=warmup_steps, num_steps=num_steps,
        weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2, eps=opt.eps,
        clip_norm=opt.clip_norm)
    if opt.layer_decay != 1.0:
        tx = optax.chain(tx, optimizer_lib.scale_by_layer_decay(num_layers, opt.layer_decay))
    if frozen:
        frozen = tuple(frozen)
        labels = lambda params: {name: jax.tree_util.tree_map(
            lambda _: "frozen" if name in frozen else "train", value)
            for name, value in params.items()}
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule


# --------------------------------------------------------------------------------------------
# Class weights (train.class_weights): the per-class factor of the classification loss.
# --------------------------------------------------------------------------------------------

def parse_class_weights(value: str) -> str | tuple[float, ...]:
    """train.class_weights as written: "" (none), "balanced", or explicit "1.0,3.0" (one
    positive number per class, in label-id order)."""
    value = str(value).strip()
    if value in ("", "balanced"):
        return value
    try:
        weights = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise TrainConfigError(f"train.class_weights={value!r} is not '', 'balanced' nor "
                               "comma-separated numbers (one per class, e.g. 1.0,3.0)") from None
    if not all(np.isfinite(w) and w > 0 for w in weights):
        raise TrainConfigError(f"train.class_weights={value!r}: every weight must be a positive "
                               "finite number")
    return weights


def check_class_weights(value: str, *, regression: bool, num_labels: int | None) -> None:
    """Refuses class weights a task cannot take; num_labels None = not known before the data
    is read (a table without table.label_names): the count is checked after loading."""
    weights = parse_class_weights(value)
    if weights and regression:
        raise TrainConfigError(f"train.class_weights={value!r} applies only to classification; "
                               "this task is a regression (one output, MSE loss)")
    if isinstance(weights, tuple) and num_labels is not None and len(weights) != num_labels:
        raise TrainConfigError(f"train.class_weights={value!r} has {len(weights)} weight(s) for "
                               f"{num_labels} classes (give one per class, in label-id order)")


def balanced_class_weights(labels: np.ndarray, num_labels: int) -> tuple[float, ...]:
    """n_samples / (n_classes * count_c) per class c, scikit-learn's "balanced"
    (compute_class_weight): every class then carries the same total weight, n / n_classes."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_labels)
    if np.any(counts == 0):
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise TrainConfigError(f"train.class_weights='balanced': class(es) {missing} have no "
                               "training example; give explicit weights instead")
    return tuple(float(len(labels) / (num_labels * count)) for count in counts)


def class_weights_for(value: str, spec, train_labels: np.ndarray) -> tuple[float, ...] | None:
    """The class weights of a run from train.class_weights and its (subsampled) training
    labels; None when the loss is unweighted."""
    check_class_weights(value, regression=spec.is_regression, num_labels=spec.num_labels)
    weights = parse_class_weights(value)
    if weights == "":
        return None
    if weights == "balanced":
        return balanced_class_weights(train_labels, spec.num_labels)
    return weights
