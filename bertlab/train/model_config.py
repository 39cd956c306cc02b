"""What a run's model is made of: the `model` config group -> BertConfig, and the vocabulary
(a given vocab.txt copied into the workdir, or one learned there), for both loops.

Both configs (configs/pretrain.py, configs/finetune.py) share the `model` group's keys: `variant`
picks a row of bertlab.models.VARIANTS, and a size key left at None keeps that row's value; every
other key that is a BertConfig field is passed through (None = BertConfig's default).
"""

from __future__ import annotations

import os
from typing import Callable

from bertlab.models.config import (CONFIG_FIELDS, VARIANTS, BertConfig, ConfigError,
                                   config_from_dict)
from bertlab.text.tokenizer import Vocab, load_vocab, save_vocab
from bertlab.train.loop import TrainConfigError

VOCAB_FILE = "vocab.txt"
# The keys a variant fills in; a pretrained checkpoint fixes them too (fine-tuning refuses them).
MODEL_SIZE_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size")


def model_config_from(model, vocab_size: int, *, max_position_embeddings: int | None = None
                      ) -> BertConfig:
    """BertConfig from a `model` config group: the variant's sizes unless a size key is set;
    `max_position_embeddings` stands in when the group leaves it at None."""
    if model.variant not in VARIANTS:
        raise TrainConfigError(f"model.variant={model.variant!r} is not one of "
                               f"{', '.join(VARIANTS)}")
    values = {key: value for key, value in model.items()
              if key in CONFIG_FIELDS and value is not None}
    for key in MODEL_SIZE_KEYS:
        values.setdefault(key, VARIANTS[model.variant][key])
    if max_position_embeddings is not None:
        values.setdefault("max_position_embeddings", max_position_embeddings)
    try:
        return config_from_dict({**values, "vocab_size": vocab_size}, source="config.model")
    except ConfigError as e:
        raise TrainConfigError(f"config.model: {e}".replace("BertConfig.", "model.")) from None


def copy_or_learn_vocab(workdir: str, given: str, learn: Callable[[], Vocab], *,
                        key: str = "data.vocab") -> tuple[str, Vocab]:
    """(workdir/vocab.txt, its Vocab): a copy of the `given` file (so the workdir and what is
    exported from it are complete), else the one an earlier start left there, else `learn()`'s.
    A given vocabulary that differs from the workdir's is refused: the data and weights there
    were made with the other one."""
    path = os.path.join(workdir, VOCAB_FILE)
    if given:
        if not os.path.isfile(given):
            raise TrainConfigError(f"{key}={given!r}: file not found")
        vocab = load_vocab(given)
        if os.path.exists(path):
            if load_vocab(path).tokens != vocab.tokens:
                raise TrainConfigError(f"{key}={given!r} differs from {path}, the vocabulary this "
                                       f"workdir was made with; use a new --workdir")
        else:
            save_vocab(vocab, path)
        return path, vocab
    if not os.path.exists(path):
        save_vocab(learn(), path)
    return path, load_vocab(path)
