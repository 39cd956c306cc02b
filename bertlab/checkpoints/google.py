"""Original Google BERT checkpoints (google-research/bert: bert_config.json + bert_model.ckpt.*).

Read through tf.train.load_checkpoint (tensorflow is imported only here, inside the loader).
tensorflow is an optional extra (`pip install 'bertlab[tf]'`): it costs hundreds of MB and
minutes of install for this one job, so without it reading a Google checkpoint is a one-line
CheckpointError that names the extra.
Variable names are the ones our tree mirrors, so the name table is names.tf_name; the
pretraining heads (cls/predictions, cls/seq_relationship) come along, and a run_classifier.py
checkpoint's top-level output_weights/output_bias become the classifier.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

from bertlab.checkpoints.names import CheckpointError, TensorSource, assemble, tf_name
from bertlab.models.config import BertConfig, ConfigError

CONFIG_FILE = "bert_config.json"
CHECKPOINT_PREFIX = "bert_model.ckpt"

# The original optimizer (AdamWeightDecayOptimizer) stores slots as <var>/adam_m and /adam_v;
# tf.train.AdamOptimizer as /Adam and /Adam_1. None of them are weights.
OPTIMIZER_SUFFIXES = ("/adam_m", "/adam_v", "/Adam", "/Adam_1")
NON_WEIGHTS = frozenset({"global_step", "good_steps", "loss_scale", "current_loss_scale",
                         "beta1_power", "beta2_power"})

# google-research/bert's modeling.gelu IS the tanh approximation (see its modeling.py), so a
# Google "gelu" checkpoint runs with our gelu_tanh for exact parity with the original.
FROM_GOOGLE_ACTIVATION = {"gelu": "gelu_tanh", "relu": "relu"}


def config_from_google(values: Mapping[str, Any], source: str = CONFIG_FILE) -> BertConfig:
    act = values.get("hidden_act", "gelu")
    if act not in FROM_GOOGLE_ACTIVATION:
        raise ConfigError(f"{source}: hidden_act={act!r} has no bertlab equivalent; "
                          f"supported: {', '.join(FROM_GOOGLE_ACTIVATION)}")
    try:
        return BertConfig(
            vocab_size=values["vocab_size"], hidden_size=values["hidden_size"],
            num_layers=values["num_hidden_layers"], num_heads=values["num_attention_heads"],
            intermediate_size=values["intermediate_size"],
            max_position_embeddings=values.get("max_position_embeddings", 512),
            type_vocab_size=values.get("type_vocab_size", 16),  # the original's default
            hidden_dropout=values.get("hidden_dropout_prob", 0.1),
            attention_dropout=values.get("attention_probs_dropout_prob", 0.1),
            initializer_range=values.get("initializer_range", 0.02),
            activation=FROM_GOOGLE_ACTIVATION[act],
        )
    except KeyError as missing:
        raise ConfigError(f"{source}: required key {missing} is missing") from None


def find_checkpoint(path: str | os.PathLike) -> tuple[str, pathlib.Path]:
    """A directory or a checkpoint prefix -> (checkpoint prefix, bert_config.json path)."""
    path = pathlib.Path(path)
    if path.suffix == ".zip":
        raise CheckpointError(f"{path}: unzip the download first (unzip {path.name}), then pass "
                              f"the directory it creates")
    if path.is_dir():
        directory = path
        indexes = sorted(directory.glob("*.index"))
        if (directory / f"{CHECKPOINT_PREFIX}.index").exists():
            prefix = directory / CHECKPOINT_PREFIX
        elif len(indexes) == 1:
            prefix = indexes[0].with_suffix("")
        elif indexes:
            raise CheckpointError(f"{directory}: several checkpoints ({', '.join(i.name for i in indexes)}); "
                                  f"pass the prefix of one, e.g. {indexes[-1].with_suffix('')}")
        else:
            raise CheckpointError(f"{directory}: no TF checkpoint (*.index file) found")
    else:
        prefix, directory = path, path.parent
        if not pathlib.Path(f"{path}.index").exists():
            raise CheckpointError(f"{path}.index not found: not a TF checkpoint prefix")
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        raise CheckpointError(f"{config_path} not found: the checkpoint needs its bert_config.json")
    return str(prefix), config_path


def _is_weight(name: str) -> bool:
    return name not in NON_WEIGHTS and not name.endswith(OPTIMIZER_SUFFIXES)


TF_EXTRA_HINT = "pip install 'bertlab[tf]'"


def import_tensorflow(prefix: str):
    """tensorflow, or a CheckpointError naming the checkpoint and the extra that provides it."""
    try:
        import tensorflow as tf  # heavy: only when a Google checkpoint is actually read
    except ImportError as e:
        raise CheckpointError(f"{prefix}: reading a Google TF checkpoint needs tensorflow, which "
                              f"is not installed ({e}); install it with: {TF_EXTRA_HINT}") from None
    return tf


def google_tensor_source(prefix: str) -> TensorSource:
    tf = import_tensorflow(prefix)
    reader = tf.train.load_checkpoint(prefix)
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()
              if _is_weight(name)}
    return TensorSource(shapes=shapes, read=reader.get_tensor, description=prefix)


def load_google(path: str | os.PathLike, model: str = "auto", *, strict: bool = True,
                init_missing: bool = False, seed: int = 0) -> tuple[BertConfig, dict]:
    """An original TF checkpoint (directory or prefix) -> (BertConfig, params tree of `model`).

    `model` and the missing/unknown-tensor rules are those of load_hf (see names.MODEL_KINDS):
    "auto" gives {"bert", "cls": {"predictions", "seq_relationship"}} for a pretraining
    checkpoint, plus "classifier" for a run_classifier.py one. hidden_act "gelu" becomes
    gelu_tanh, the original's formula.
    """
    prefix, config_path = find_checkpoint(path)
    config = config_from_google(json.loads(config_path.read_text()), str(config_path))
    source = google_tensor_source(prefix)
    num_labels = source.shapes["output_weights"][0] if "output_weights" in source.shapes else None
    params = assemble(config, source, tf_name, model, num_labels, strict=strict,
                      init_missing=init_missing, seed=seed)
    return config, params
