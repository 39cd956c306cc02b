"""Pretrained weights in and out: HuggingFace directories, original Google TF checkpoints, and
our own export directory. `load_pretrained` tells them apart by their files.

Every loader returns numpy float32 params shaped like our linen tree (see bertlab/models/bert.py);
model="auto" (the default here) gives {"bert": backbone, plus each head the checkpoint has},
so `BertModel(config).apply({"params": params["bert"]}, ...)` always works.
Importing this package does not import tensorflow (only reading a Google checkpoint does).
"""

from __future__ import annotations

import os
import pathlib

from bertlab.checkpoints.bertlab_format import is_bertlab_dir, load_bertlab, save_bertlab
from bertlab.checkpoints.names import MODEL_KINDS, CheckpointError
from bertlab.models.config import BertConfig

LAYOUTS = ("bertlab", "hf", "google")


def detect_layout(path: str | os.PathLike) -> str:
    """'bertlab' (params.safetensors), 'hf' (config.json + weights), or 'google' (TF checkpoint)."""
    from bertlab.checkpoints import google, hf

    path = pathlib.Path(path)
    if path.suffix == ".zip":
        raise CheckpointError(f"{path}: unzip the download first (unzip {path.name}), then pass "
                              f"the directory it creates")
    if path.is_dir():
        if is_bertlab_dir(path):
            return "bertlab"
        if (path / "config.json").is_file() and any((path / f).is_file() for f in hf.WEIGHT_FILES):
            return "hf"
        if (path / google.CONFIG_FILE).is_file() or any(path.glob("*.index")):
            return "google"
        raise CheckpointError(
            f"{path}: not a checkpoint directory; expected params.safetensors (bertlab), config.json "
            f"+ one of {', '.join(hf.WEIGHT_FILES)} (HuggingFace), or bert_config.json + "
            f"bert_model.ckpt.* (Google)")
    if pathlib.Path(f"{path}.index").is_file():
        return "google"
    raise CheckpointError(f"{path}: no such checkpoint directory or TF checkpoint prefix")


def load_pretrained(path: str | os.PathLike, model: str = "auto", *, layout: str | None = None,
                    strict: bool = True, init_missing: bool = False, seed: int = 0,
                    ) -> tuple[BertConfig, dict, pathlib.Path | None]:
    """Any supported checkpoint -> (config, params, vocab.txt path or None).

    `model` picks the returned tree (names.MODEL_KINDS); a bertlab directory is returned as
    saved, whatever `model` says. Missing tensors raise CheckpointError unless init_missing.
    """
    from bertlab.checkpoints import google, hf, modernbert

    layout = layout or detect_layout(path)
    if layout == "bertlab":
        return load_bertlab(path)
    if layout == "hf" and modernbert.is_modernbert_dir(path):
        return modernbert.load_modernbert(path, model, strict=strict, seed=seed)
    if layout == "hf":
        config, params = hf.load_hf(path, model, strict=strict, init_missing=init_missing, seed=seed)
        directory = pathlib.Path(path)
    elif layout == "google":
        config, params = google.load_google(path, model, strict=strict, init_missing=init_missing, seed=seed)
        directory = pathlib.Path(google.find_checkpoint(path)[1]).parent
    else:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    vocab = directory / "vocab.txt"
    return config, params, (vocab if vocab.is_file() else None)


__all__ = ["CheckpointError", "LAYOUTS", "MODEL_KINDS", "detect_layout", "load_pretrained",
           "save_bertlab", "load_bertlab"]
