"""Where fine-tuning weights come from (`init_from`), and the export a fine-tuned model leaves.

`resolve_backbone(path)` turns any of these into one `Backbone` (config, BertModel params,
vocab.txt, casing), so the loop, `embed` and `similarity` never ask what kind of path they got:

  kind         recognised by                                   read with
  export       task.json holding "bertlab_format"              load_export (below)
  finetune     summary.json or seed_*/model/ (a finetune run)  its best seed's model/
  pretrain     checkpoints/ + vocab.txt (bertlab pretrain)     load_pretrained_workdir (below)
  bertlab      params.safetensors (bertlab convert / export)   bertlab.checkpoints.load_pretrained
  huggingface  config.json with a weights file                 bertlab.checkpoints.load_pretrained
  google       bert_config.json + *.ckpt.index, or the prefix  bertlab.checkpoints.load_pretrained

The vocabulary always travels with the weights: a path without its vocab.txt is an error that
says where it was looked for, never a silent fallback to some default vocabulary.

Every backbone carries its provenance (`Backbone.provenance`): the path, its kind, the
checkpoint step of a pretraining workdir (the newest that reads: a damaged latest checkpoint is
moved aside as in a resume, bertlab.checkpoints.training_state.restore_params) and `sha256`, a
hash of the weights themselves (params_sha256). A fine-tuning workdir records it, so seeds
added later are refused when the same path now holds other weights (more pretraining since).

The export (`model/` of a fine-tuning run) is the checkpoint package's own directory layout
(bertlab.checkpoints.bertlab_format: config.json = the BertConfig, params.safetensors = the whole
BertForSequenceClassification tree keyed by path, vocab.txt), so `bertlab convert` and
`load_pretrained` read it too, plus what only a classifier needs:

    task.json   {"bertlab_format": "classifier", "task": TaskSpec fields (label names, metrics),
                 "extra_layers", "lower_case", "max_seq_length", "data": how to reload the
                 task's splits, "meta": the seed / epoch / metrics it was saved at}

safetensors stores the float32 arrays as they are, so a reload is bitwise the saved weights.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
from typing import Any, Mapping

import numpy as np

from bertlab.models.config import BertConfig, ConfigError

EXPORT_FORMAT = "classifier"
EXPORT_TASK = "task.json"
VOCAB_FILE = "vocab.txt"
MODEL_DIR = "model"        # a seed's export, inside workdir/seed_<n>/
SUMMARY_FILE = "summary.json"


class InitFromError(ValueError):
    """A path that cannot provide a backbone (or an export); the message names the path and what
    is missing."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A pretrained BERT backbone: `params` is the BertModel tree (embeddings, encoder, pooler)."""

    config: BertConfig
    params: Any
    vocab_path: str
    lower_case: bool
    kind: str      # export | finetune | pretrain | huggingface | google
    source: str    # the path it was read from
    provenance: dict = dataclasses.field(default_factory=dict)  # source, kind, step, sha256


@dataclasses.dataclass(frozen=True)
class Export:
    """A fine-tuned classifier as saved by save_export."""

    config: BertConfig
    params: Any                # BertForSequenceClassification tree: bert, classifier, head_*
    vocab_path: str
    lower_case: bool
    task: dict                 # TaskSpec fields (see task_spec())
    extra_layers: int
    max_seq_length: int
    data: dict                 # task name, data_dir, load options: what evaluate re-reads
    meta: dict
    directory: str

    def task_spec(self):
        from bertlab.data.tasks.registry import TaskSpec

        fields = dict(self.task)
        for key in ("text_fields", "label_names", "metrics"):
            fields[key] = tuple(fields[key])
        return TaskSpec(**fields)


# ------------------------------------------------------------------------------------ export


def save_export(directory: str, *, config: BertConfig, params: Any, vocab_path: str,
                lower_case: bool, spec, extra_layers: int, max_seq_length: int,
                data: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """Writes the export atomically: a crash leaves the previous export (or none), never half."""
    from bertlab.checkpoints import save_bertlab

    directory = os.path.abspath(directory)
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_bertlab(tmp, config, _to_numpy(params), vocab_path)
    record = {"bertlab_format": EXPORT_FORMAT, "format_version": 1,
              "task": dataclasses.asdict(spec), "extra_layers": int(extra_layers),
              "lower_case": bool(lower_case), "max_seq_length": int(max_seq_length),
              "data": dict(data), "meta": dict(meta)}
    with open(os.path.join(tmp, EXPORT_TASK), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, default=json_default)
        f.write("\n")
    old = directory + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load_export(directory: str) -> Export:
    """Reads an export written by save_export; each missing piece is named."""
    from bertlab.checkpoints import CheckpointError, load_bertlab

    directory = os.path.abspath(directory)
    task_path = os.path.join(directory, EXPORT_TASK)
    if not os.path.isfile(task_path):
        raise InitFromError(f"{task_path}: missing; {directory} is not a bertlab fine-tuned "
                            f"export (see bertlab.checkpoints.init_from)")
    record = _read_json(task_path)
    if record.get("bertlab_format") != EXPORT_FORMAT:
        raise InitFromError(f"{task_path}: not a bertlab fine-tuned export (no "
                            f"\"bertlab_format\": \"{EXPORT_FORMAT}\")")
    for key in ("task", "extra_layers", "lower_case", "max_seq_length"):
        if key not in record:
            raise InitFromError(f"{task_path}: key {key!r} is missing")
    try:
        config, params, vocab_path = load_bertlab(directory)
    except (CheckpointError, ConfigError) as e:
        raise InitFromError(f"{directory}: {e}") from None
    if vocab_path is None:
        raise InitFromError(f"{os.path.join(directory, VOCAB_FILE)}: missing; the export in "
                            f"{directory} is incomplete")
    return Export(config=config, params=params, vocab_path=str(vocab_path),
                  lower_case=bool(record["lower_case"]), task=record["task"],
                  extra_layers=int(record["extra_layers"]),
                  max_seq_length=int(record["max_seq_length"]), data=record.get("data", {}),
                  meta=record.get("meta", {}), directory=directory)


def is_export(path: str) -> bool:
    task_path = os.path.join(path, EXPORT_TASK)
    if not os.path.isfile(task_path):
        return False
    try:
        return _read_json(task_path).get("bertlab_format") == EXPORT_FORMAT
    except InitFromError:
        return False


def is_finetune_workdir(path: str) -> bool:
    return os.path.isdir(path) and (os.path.isfile(os.path.join(path, SUMMARY_FILE)) or bool(
        glob.glob(os.path.join(path, "seed_*", MODEL_DIR, EXPORT_TASK))))


def find_export(path: str, seed: int | None = None) -> str:
    """The export directory of `path`: an export itself, a seed directory (its model/), or a
    fine-tuning workdir (the given seed's, else the best seed's by the eval metric)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise InitFromError(f"{path}: no such file or directory")
    if is_export(path):
        return path
    if is_export(os.path.join(path, MODEL_DIR)):
        return os.path.join(path, MODEL_DIR)
    if seed is not None:
        candidate = os.path.join(path, f"seed_{seed}", MODEL_DIR)
        if not is_export(candidate):
            found = sorted(glob.glob(os.path.join(path, "seed_*", MODEL_DIR, EXPORT_TASK)))
            raise InitFromError(f"{candidate}: no export for seed {seed}; found "
                                f"{', '.join(os.path.dirname(p) for p in found) or 'none'}")
        return candidate
    summary_path = os.path.join(path, SUMMARY_FILE)
    if os.path.isfile(summary_path):
        best = _read_json(summary_path).get("best_seed")
        candidate = os.path.join(path, f"seed_{best}", MODEL_DIR)
        if best is not None and is_export(candidate):
            return candidate
    found = sorted(glob.glob(os.path.join(path, "seed_*", MODEL_DIR, EXPORT_TASK)))
    if len(found) == 1:
        return os.path.dirname(found[0])
    if found:
        raise InitFromError(f"{path}: {len(found)} seeds and no summary.json naming the best; "
                            f"pick one with --seed")
    raise InitFromError(f"{path}: no fine-tuned model here (looked for {EXPORT_TASK} in it, in "
                        f"{MODEL_DIR}/ and in seed_*/{MODEL_DIR}/)")


# ---------------------------------------------------------------------------------- backbones


def detect_kind(path: str) -> str:
    """Which kind of init_from `path` is (see the module docstring); InitFromError if none."""
    from bertlab.checkpoints import CheckpointError, detect_layout

    if not os.path.exists(path) and not os.path.isfile(path + ".index"):
        raise InitFromError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if is_export(path):
            return "export"
        if is_finetune_workdir(path):
            return "finetune"
        if os.path.isdir(os.path.join(path, "checkpoints")):
            return "pretrain"
    try:
        layout = detect_layout(path)
    except CheckpointError as e:
        raise InitFromError(f"{e}; nor a bertlab pretraining workdir (checkpoints/ + vocab.txt) "
                            f"or fine-tuning workdir (seed_*/model/)") from None
    return {"hf": "huggingface"}.get(layout, layout)


def resolve_backbone(path: str) -> Backbone:
    """The backbone (BertModel params + config + vocabulary) behind any init_from path."""
    if not path:
        raise InitFromError("init_from is empty: give a checkpoint path, or set "
                            "model.from_scratch=True")
    path = os.path.abspath(os.path.expanduser(path))
    return with_provenance(_resolve_backbone(path))


def _resolve_backbone(path: str) -> Backbone:
    from bertlab.checkpoints import modernbert
    if modernbert.is_modernbert_dir(path):  # config.json model_type "modernbert"
        return modernbert.load_backbone(path)
    kind = detect_kind(path)
    if kind in ("export", "finetune"):
        export = load_export(find_export(path))
        return Backbone(export.config, export.params["bert"], export.vocab_path,
                        export.lower_case, kind, path)
    if kind == "pretrain":
        return _pretrain_backbone(path)
    return _imported_backbone(path, kind)


def params_sha256(params: Any) -> str:
    """sha256 over every array of a params tree: its path, dtype, shape and bytes, in sorted
    path order. Equal for equal weights however they were stored (safetensors, orbax, a TF
    checkpoint), different for any changed value."""
    from flax.traverse_util import flatten_dict

    digest = hashlib.sha256()
    for path, leaf in sorted(flatten_dict(dict(params)).items()):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update("/".join(map(str, path)).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def with_provenance(backbone: Backbone) -> Backbone:
    """The backbone with its provenance record filled in (the hash of its weights added)."""
    record = {"source": backbone.source, "kind": backbone.kind,
              "step": backbone.provenance.get("step"),
              "sha256": params_sha256(backbone.params)}
    return dataclasses.replace(backbone, provenance=record)


def describe_provenance(record: Mapping[str, Any]) -> str:
    """'PATH (step 400, weights sha256 1a2b3c4d5e6f)' for messages."""
    step = f"step {record['step']}, " if record.get("step") is not None else ""
    return f"{record.get('source')} ({step}weights sha256 {str(record.get('sha256'))[:12]})"


def load_pretrained_workdir(workdir: str) -> tuple[BertConfig, Any, str]:
    """(model config, params, vocab path) of a pretraining workdir's latest checkpoint: params is
    the whole BertForPreTraining tree as numpy arrays (the backbone is params["bert"]); the
    casing it was trained with is in the checkpoint meta ("lower_case")."""
    config, params, vocab_path, _ = _read_pretrained_workdir(workdir)
    return config, params, vocab_path


def _read_pretrained_workdir(workdir: str) -> tuple[BertConfig, Any, str, dict]:
    """load_pretrained_workdir's three and the meta of the checkpoint read (the newest that
    reads: restore_params falls back past a damaged one)."""
    from bertlab.checkpoints import training_state as state
    from bertlab.models.config import config_from_dict

    params, meta = state.restore_params(workdir)
    if "model" not in meta:
        raise state.CheckpointError(f"{workdir}: the checkpoint meta holds no model config; "
                                    "was it written by bertlab pretrain?")
    config = config_from_dict(meta["model"], source=f"{workdir} checkpoint meta")
    vocab_path = os.path.join(os.path.abspath(workdir), VOCAB_FILE)
    if not os.path.exists(vocab_path):
        raise state.CheckpointError(f"{vocab_path}: missing; the workdir is incomplete")
    return config, params, vocab_path, meta


def _pretrain_backbone(path: str) -> Backbone:
    """The latest checkpoint that reads; its meta (the same checkpoint's) gives the casing and
    the step recorded as provenance."""
    from bertlab.checkpoints import training_state as state

    try:
        config, params, vocab_path, meta = _read_pretrained_workdir(path)
    except state.CheckpointError as e:
        raise InitFromError(str(e)) from None
    lower_case = meta.get("lower_case")
    if lower_case is None:
        lower_case = _vocab_lower_case(vocab_path)
    step = meta.get("step")
    return Backbone(config, params["bert"], vocab_path, bool(lower_case), "pretrain", path,
                    provenance={"step": None if step is None else int(step)})


def _imported_backbone(path: str, kind: str) -> Backbone:
    """HuggingFace, Google TF or bertlab-layout weights through bertlab.checkpoints."""
    from bertlab.checkpoints import CheckpointError, load_pretrained

    try:
        config, params, vocab_path = load_pretrained(path)
    except (CheckpointError, ConfigError) as e:
        raise InitFromError(f"init_from={path}: {e}") from None
    params = params["bert"] if "bert" in params else params
    if "embeddings" not in params:
        raise InitFromError(f"{path}: the checkpoint holds no BERT backbone (no embeddings)")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if vocab_path is None or not os.path.isfile(vocab_path):
        raise InitFromError(f"{folder}: no {VOCAB_FILE} beside the weights; the vocabulary must "
                            f"come with the checkpoint (copy the model's {VOCAB_FILE} there)")
    return Backbone(config, params, str(vocab_path), _checkpoint_lower_case(folder, str(vocab_path)),
                    kind, path)


def _checkpoint_lower_case(folder: str, vocab_path: str) -> bool:
    """tokenizer_config.json's do_lower_case where a HuggingFace dir has one, else the vocabulary
    decides (an uncased vocabulary has no upper-case entries)."""
    tokenizer_config = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(tokenizer_config):
        value = _read_json(tokenizer_config).get("do_lower_case")
        if isinstance(value, bool):
            return value
    return _vocab_lower_case(vocab_path)


def _vocab_lower_case(vocab_path: str) -> bool:
    from bertlab.text.bpe import is_tokenizer_json
    from bertlab.text.tokenizer import infer_lower_case, load_vocab

    if is_tokenizer_json(vocab_path):  # a BPE tokenizer.json normalises (or not) by itself
        return False

    return infer_lower_case(load_vocab(vocab_path))


# ------------------------------------------------------------------------------------ helpers


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise InitFromError(f"{path}: missing")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except ValueError as e:
        raise InitFromError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise InitFromError(f"{path}: expected a JSON object")
    return value


def _to_numpy(tree: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)


def json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
