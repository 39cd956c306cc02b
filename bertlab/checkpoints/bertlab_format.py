"""Our own export directory: config.json (a BertConfig, every field) + params.safetensors + vocab.txt.

Unlike the HuggingFace layout it holds every knob (pre-LN, rotary, geglu, extra classifier
layers...), and it stores the params tree as is: safetensors keys are our tree paths joined
with "/", so loading is unflattening, with no name table. safetensors (not pickle or msgpack)
so that a downloaded directory can be read without trusting it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Mapping

import numpy as np

from bertlab.checkpoints.names import CheckpointError
from bertlab.models.config import BertConfig, config_from_dict, config_to_dict

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
VOCAB_FILE = "vocab.txt"
FORMAT = "bertlab"
FORMAT_VERSION = "1"


def is_bertlab_dir(path: str | os.PathLike) -> bool:
    return (pathlib.Path(path) / PARAMS_FILE).is_file()


def save_bertlab(directory: str | os.PathLike, config: BertConfig, params: Mapping,
                 vocab_path: str | os.PathLike | None = None) -> pathlib.Path:
    """Writes any params tree (a task model's or a bare BertModel's) with its config and vocab."""
    from flax.traverse_util import flatten_dict
    from safetensors.numpy import save_file

    from bertlab.files import chmod_like_new_file

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"/".join(path): np.ascontiguousarray(np.asarray(leaf))
               for path, leaf in flatten_dict(dict(params)).items()}
    save_file(tensors, str(directory / PARAMS_FILE),
              metadata={"format": FORMAT, "format_version": FORMAT_VERSION})
    chmod_like_new_file(directory / PARAMS_FILE)  # save_file leaves it 0600
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    if vocab_path is not None and pathlib.Path(vocab_path).resolve() != (directory / VOCAB_FILE).resolve():
        shutil.copyfile(vocab_path, directory / VOCAB_FILE)
    return directory


def load_bertlab(directory: str | os.PathLike) -> tuple[BertConfig, dict, pathlib.Path | None]:
    """(config, params tree exactly as saved, vocab.txt path or None)."""
    from flax.traverse_util import unflatten_dict
    from bertlab.checkpoints.hf import open_safetensors, read_safetensor

    directory = pathlib.Path(directory)
    for name in (CONFIG_FILE, PARAMS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} not found: not a bertlab export directory")
    config = config_from_dict(json.loads((directory / CONFIG_FILE).read_text()),
                              source=str(directory / CONFIG_FILE))
    with open_safetensors(directory / PARAMS_FILE) as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{directory / PARAMS_FILE}: metadata format is "
                                  f"{metadata.get('format')!r}, expected {FORMAT!r}")
        params = unflatten_dict({tuple(key.split("/")): read_safetensor(
            handle, key, directory / PARAMS_FILE) for key in handle.keys()})
    vocab = directory / VOCAB_FILE
    return config, params, (vocab if vocab.is_file() else None)
