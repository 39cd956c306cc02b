"""The name table between our parameter tree and the Google TF / HuggingFace checkpoints, and
the one routine that fills a tree from any named-tensor source through it.

Our paths already mirror the original TF variable names, so the table is a handful of rules:
  ours                                        Google TF                           HuggingFace (PyTorch)
  bert/encoder/layer_3/.../query/kernel (in,out)  bert/encoder/layer_3/.../query/kernel  bert.encoder.layer.3....query.weight (out,in)
  .../LayerNorm/scale, bias                   .../LayerNorm/gamma, beta           ....LayerNorm.weight, bias
  .../word_embeddings/embedding               .../word_embeddings                 ....word_embeddings.weight
  cls/predictions/output_bias                 cls/predictions/output_bias         cls.predictions.bias
  cls/seq_relationship/output_weights (2,H)   cls/seq_relationship/output_weights cls.seq_relationship.weight (2,H)
  classifier/kernel (H,L)                     output_weights (L,H)  [run_classifier.py]  classifier.weight (L,H)

The recipe knobs (bertlab.models.config) only remove leaves or change shapes, never rename: a
bias-less layer has no .../bias, an RMSNorm keeps the scope LayerNorm with `scale` alone, a
padded vocabulary makes the word table (V_pad, H). The expected trees come from the model
itself, so the rules above hold for every combination; the exporters refuse the knobs their
format cannot hold (hf.config_to_hf), and ModernBERT has its own table (modernbert.py).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Mapping

import numpy as np

from bertlab.checkpoints.errors import CheckpointError  # re-exported: one error type
from bertlab.models.config import BertConfig

log = logging.getLogger(__name__)

Path = tuple[str, ...]

# What each `model=` argument of the loaders returns: the params tree of this module class.
MODEL_KINDS = {
    "bert": "BertModel(config): {embeddings, encoder, pooler}",
    "pretraining": "BertForPreTraining(config, with_nsp=True): {bert, cls}",
    "mlm": "BertForPreTraining(config, with_nsp=False): {bert, cls: {predictions}}",
    "classification": "BertForSequenceClassification(config, num_labels): {bert, classifier}",
    "auto": "{bert, and whichever of cls/predictions, cls/seq_relationship, classifier the file has}",
}

# Head groups: a checkpoint has all of a group's tensors or none (partial heads are an error).
HEAD_GROUPS: dict[str, Path] = {
    "mlm": ("cls", "predictions"),
    "nsp": ("cls", "seq_relationship"),
    "classifier": ("classifier",),
}


@dataclasses.dataclass(frozen=True)
class TensorSource:
    """Named tensors of one checkpoint, read lazily (TF and safetensors files can be large)."""

    shapes: Mapping[str, tuple[int, ...]]
    read: Callable[[str], np.ndarray]
    description: str  # file or directory, for error messages
    ignorable: frozenset[str] = frozenset()  # known non-weights: optimizer slots, tied copies, buffers


# ---------------------------------------------------------------------------------- name rules


def _leaf(path: Path) -> tuple[str, str]:
    return path[-2] if len(path) > 1 else "", path[-1]


def tf_name(path: Path) -> tuple[str, bool]:
    """Our full path (starting with bert/cls/classifier) -> (TF variable name, transpose?)."""
    if path[0] == "classifier":  # run_classifier.py: top-level output_weights (L, H), output_bias
        return ("output_weights", True) if path[-1] == "kernel" else ("output_bias", False)
    parent, leaf = _leaf(path)
    if leaf == "embedding":
        return "/".join(path[:-1]), False
    if parent == "LayerNorm":
        leaf = {"scale": "gamma", "bias": "beta"}[leaf]
    return "/".join(path[:-1] + (leaf,)), False


def hf_name(path: Path) -> tuple[str, bool]:
    """Our full path -> (HuggingFace PyTorch state-dict name, transpose?)."""
    if path[0] in ("head_encoder", "head_pooler"):
        raise CheckpointError(f"{'/'.join(path)}: the classifier's extra_layers have no "
                              f"HuggingFace equivalent; save with save_bertlab instead")
    parts = [p.replace("layer_", "layer.") if p.startswith("layer_") else p for p in path]
    parent, leaf = _leaf(path)
    if path[:2] == ("cls", "predictions") and leaf == "output_bias":
        return "cls.predictions.bias", False
    if path[:2] == ("cls", "seq_relationship"):
        return "cls.seq_relationship." + {"output_weights": "weight", "output_bias": "bias"}[leaf], False
    if leaf == "embedding":
        return ".".join(parts[:-1] + ["weight"]), False
    if parent == "LayerNorm":
        return ".".join(parts[:-1] + [{"scale": "weight", "bias": "bias"}[leaf]]), False
    if leaf == "kernel":  # torch.nn.Linear stores (out, in)
        return ".".join(parts[:-1] + ["weight"]), True
    return ".".join(parts), False


# ---------------------------------------------------------------------------- expected trees


def model_for(config: BertConfig, model: str, num_labels: int | None = None):
    """The module class whose params tree `model=` names (see MODEL_KINDS)."""
    from bertlab.models.bert import BertForPreTraining, BertForSequenceClassification, BertModel

    if model == "bert":
        return BertModel(config)
    if model in ("pretraining", "auto"):
        return BertForPreTraining(config, with_nsp=True)
    if model == "mlm":
        return BertForPreTraining(config, with_nsp=False)
    if model == "classification":
        if not num_labels:
            raise CheckpointError("model='classification' needs num_labels (none found in the checkpoint)")
        return BertForSequenceClassification(config, num_labels=num_labels)
    raise CheckpointError(f"unknown model kind {model!r}; valid: {', '.join(MODEL_KINDS)}")


def _init_inputs():
    """Dummy inputs of two tokens: only the parameter shapes matter here."""
    from bertlab.train.state import init_inputs

    return init_inputs(seq_len=2)


def expected_shapes(config: BertConfig, model: str, num_labels: int | None = None) -> dict[Path, tuple]:
    return dict(_expected_shapes(config, model, num_labels))


@functools.lru_cache(maxsize=32)
def _expected_shapes(config: BertConfig, model: str, num_labels: int | None) -> dict[Path, tuple]:
    """Flat {full path: shape} of the tree `model=` returns; paths always start at bert/cls/...

    For model='bert' the returned tree has no "bert" level, but paths here keep it so one name
    table serves every kind; `assemble` strips it.
    """
    import jax
    from flax.traverse_util import flatten_dict

    module = model_for(config, model, num_labels)
    tree = jax.eval_shape(module.init, jax.random.PRNGKey(0), *_init_inputs())["params"]
    if model == "bert":
        tree = {"bert": tree}
    if model == "auto":  # every head may be present; the classifier's shape comes from the file
        tree = dict(tree)
        tree["classifier"] = {"kernel": None, "bias": None}
    return {path: (None if leaf is None else tuple(leaf.shape)) for path, leaf in flatten_dict(tree).items()}


def _fresh_values(config: BertConfig, model: str, num_labels: int | None, seed: int) -> dict[Path, np.ndarray]:
    import jax
    from flax.traverse_util import flatten_dict

    module = model_for(config, model, num_labels)
    tree = jax.jit(module.init)(jax.random.PRNGKey(seed), *_init_inputs())["params"]
    if model == "bert":
        tree = {"bert": tree}
    return {path: np.asarray(leaf) for path, leaf in flatten_dict(tree).items()}


# ------------------------------------------------------------------------------- assembling


def assemble(config: BertConfig, source: TensorSource, name_of: Callable[[Path], tuple[str, bool]],
             model: str = "auto", num_labels: int | None = None, strict: bool = True,
             init_missing: bool = False, seed: int = 0) -> dict:
    """Fills the params tree of `model` from `source` through `name_of`; checks every shape.

    Missing tensors raise CheckpointError listing them, unless init_missing=True: then they are
    freshly initialised (seed) and each one is named in a logged warning, never silently.
    Tensors in the file that no part of any BERT model uses raise when strict (listed), and are
    logged and skipped otherwise. model='auto' takes the backbone plus every head group the file
    holds completely.
    """
    from flax.traverse_util import unflatten_dict

    expected = expected_shapes(config, model, num_labels)
    known = known_names(config, name_of) | source.ignorable
    if model == "auto":
        expected = _present_heads(expected, source, name_of)

    values: dict[Path, np.ndarray] = {}
    missing: list[str] = []
    for path, shape in expected.items():
        name, transpose = name_of(path)
        if name not in source.shapes:
            missing.append(name)
            continue
        file_shape = tuple(source.shapes[name])
        want = None if shape is None else (shape[::-1] if transpose else shape)
        if want is not None and file_shape != want:
            raise CheckpointError(
                f"{source.description}: tensor {name!r} has shape {file_shape} but the model "
                f"({'/'.join(path)}) needs {want}; does the config match the weights?")
        array = np.asarray(source.read(name))
        values[path] = np.ascontiguousarray(array.T if transpose else array).astype(np.float32)

    unknown = sorted(set(source.shapes) - known)
    if unknown:
        message = (f"{source.description}: {len(unknown)} tensor(s) that no BERT model uses: "
                   f"{', '.join(unknown[:20])}{' ...' if len(unknown) > 20 else ''}")
        if strict:
            raise CheckpointError(message + " (pass strict=False to skip them)")
        log.warning("%s; skipped", message)

    if missing:
        if not init_missing:
            raise CheckpointError(
                f"{source.description}: missing {len(missing)} tensor(s) for model={model!r}: "
                f"{', '.join(missing)}. Load a smaller model kind (e.g. model='bert'), or pass "
                f"init_missing=True to initialise them freshly (they are then listed in a warning)")
        labels = num_labels or _classifier_labels(values)
        fresh = _fresh_values(config, model, labels, seed)
        for path in expected:
            if path not in values:
                values[path] = fresh[path]
        log.warning("%s: initialised %d missing tensor(s) randomly (seed %d): %s",
                    source.description, len(missing), seed, ", ".join(missing))

    tree = unflatten_dict(values)
    return tree["bert"] if model == "bert" else tree


def known_names(config: BertConfig, name_of: Callable[[Path], tuple[str, bool]]) -> set[str]:
    """Every name some BERT of this shape reads: the pretraining tree tied and untied, the classifier."""
    names = {name_of(("classifier", leaf))[0] for leaf in ("kernel", "bias")}
    for tie in (True, False):
        variant = dataclasses.replace(config, tie_embeddings=tie)
        names.update(name_of(path)[0] for path in expected_shapes(variant, "pretraining"))
    return names


def _classifier_labels(values: Mapping[Path, np.ndarray]) -> int | None:
    kernel = values.get(("classifier", "kernel"))
    return None if kernel is None else int(kernel.shape[-1])


def _present_heads(expected: dict[Path, tuple], source: TensorSource,
                   name_of: Callable[[Path], tuple[str, bool]]) -> dict[Path, tuple]:
    """model='auto': keep the backbone and every head group found in full; partial groups raise."""
    kept = {path: shape for path, shape in expected.items() if path[0] == "bert"}
    for group, prefix in HEAD_GROUPS.items():
        paths = [path for path in expected if path[:len(prefix)] == prefix]
        present = [path for path in paths if name_of(path)[0] in source.shapes]
        if present and len(present) < len(paths):
            absent = [name_of(path)[0] for path in paths if path not in present]
            raise CheckpointError(f"{source.description}: the {group} head is incomplete; "
                                  f"missing {', '.join(absent)}")
        if present:
            kept.update({path: expected[path] for path in paths})
    return kept


def flatten_params(params: Mapping) -> dict[Path, np.ndarray]:
    """A params tree in any layout `assemble` returns -> {full path: array}, backbone under bert."""
    from flax.traverse_util import flatten_dict

    tree = dict(params)
    if "embeddings" in tree:  # a bare BertModel tree
        tree = {"bert": tree}
    return {path: np.asarray(leaf) for path, leaf in flatten_dict(tree).items()}
