"""HuggingFace BERT directories: import (safetensors, Flax msgpack, pytorch_model.bin) and export.

Imports go through one name table (names.hf_name, PyTorch state-dict names); the Flax msgpack
is first renamed to those names. pytorch_model.bin is read by a restricted unpickler that
rebuilds tensors into numpy and refuses every other global, so a checkpoint file can never run
code and torch is not needed. Export writes config.json + model.safetensors (+ vocab.txt) that
transformers' BertModel / BertForPreTraining / FlaxBertModel(from_pt=True) load as is.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import pickle
import shutil
import zipfile
import zlib
from typing import Any, Mapping

import numpy as np

from bertlab.checkpoints.names import (CheckpointError, TensorSource, assemble, flatten_params,
                                       hf_name)
from bertlab.models.config import BertConfig, ConfigError, changed_recipe_knobs

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "flax_model.msgpack",
                "pytorch_model.bin")

# hidden_act <-> activation. transformers' "gelu" is the exact erf form; "gelu_new" and
# "gelu_pytorch_tanh" are the tanh approximation google-research/bert calls "gelu".
FROM_HF_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                      "relu": "relu"}
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}

# Tensors transformers writes that are not weights of their own.
HF_IGNORABLE = frozenset({"bert.embeddings.position_ids", "cls.predictions.decoder.bias"})


# ------------------------------------------------------------------------------------ config


def config_from_hf(values: Mapping[str, Any], source: str = "config.json") -> BertConfig:
    """transformers BertConfig fields -> ours; refuses what our BERT cannot represent."""
    if values.get("model_type", "bert") != "bert":
        raise ConfigError(f"{source}: model_type={values['model_type']!r} is not a BERT")
    act = values.get("hidden_act", "gelu")
    if act not in FROM_HF_ACTIVATION:
        raise ConfigError(f"{source}: hidden_act={act!r} has no bertlab equivalent; "
                          f"supported: {', '.join(FROM_HF_ACTIVATION)}")
    position = values.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ConfigError(f"{source}: position_embedding_type={position!r} is not supported "
                          f"(only the original 'absolute')")
    if values.get("is_decoder") or values.get("add_cross_attention"):
        raise ConfigError(f"{source}: decoder / cross-attention BERTs are not supported")
    return BertConfig(
        vocab_size=values["vocab_size"], hidden_size=values["hidden_size"],
        num_layers=values["num_hidden_layers"], num_heads=values["num_attention_heads"],
        intermediate_size=values["intermediate_size"],
        max_position_embeddings=values.get("max_position_embeddings", 512),
        type_vocab_size=values.get("type_vocab_size", 2),
        hidden_dropout=values.get("hidden_dropout_prob", 0.1),
        attention_dropout=values.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=values.get("layer_norm_eps", 1e-12),
        initializer_range=values.get("initializer_range", 0.02),
        activation=FROM_HF_ACTIVATION[act],
        tie_embeddings=values.get("tie_word_embeddings", True),
    )


def config_to_hf(config: BertConfig) -> dict[str, Any]:
    """Ours -> transformers' config.json fields; refuses knobs transformers' BERT lacks."""
    refusals = []
    if config.activation not in TO_HF_ACTIVATION:
        refusals.append(f"activation={config.activation!r}")
    if config.position_embedding != "learned":
        refusals.append(f"position_embedding={config.position_embedding!r}")
    if config.pre_ln:
        refusals.append("pre_ln=True")
    refusals += changed_recipe_knobs(config) + (["type_vocab_size=0"] if not config.type_vocab_size else [])
    if refusals:
        raise ConfigError(f"cannot export to HuggingFace BERT: {', '.join(refusals)} has no "
                          f"transformers equivalent; use save_bertlab / --to bertlab instead")
    return {
        "model_type": "bert", "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": TO_HF_ACTIVATION[config.activation],
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size, "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps, "position_embedding_type": "absolute",
        "tie_word_embeddings": config.tie_embeddings, "pad_token_id": 0, "torch_dtype": "float32",
    }


# ------------------------------------------------------------------------------ tensor files


def _normalised_name(name: str) -> str:
    """Old / base-model spellings -> the names hf_name produces."""
    parts = name.split(".")
    if parts[0] in ("embeddings", "encoder", "pooler"):  # saved from BertModel: no "bert." prefix
        parts = ["bert"] + parts
    if len(parts) > 1 and parts[-2] == "LayerNorm":  # checkpoints from before transformers 2.x
        parts[-1] = {"gamma": "weight", "beta": "bias"}.get(parts[-1], parts[-1])
    return ".".join(parts)


def _renamed(shapes: Mapping[str, tuple], read, description: str) -> TensorSource:
    originals = {}
    for name in shapes:
        normal = _normalised_name(name)
        if normal in originals:
            raise CheckpointError(f"{description}: both {originals[normal]!r} and {name!r} "
                                  f"map to {normal!r}")
        originals[normal] = name
    return TensorSource(shapes={n: tuple(shapes[o]) for n, o in originals.items()},
                        read=lambda n: read(originals[n]), description=description,
                        ignorable=HF_IGNORABLE)


DAMAGED = "the file is damaged or incomplete (an interrupted download or copy?): fetch or " \
          "convert it again"


def open_safetensors(file: str | os.PathLike):
    """safe_open, with a truncated or damaged file as a CheckpointError naming it (safetensors'
    own SafetensorError says 'incomplete metadata, file not fully covered' and no file)."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: no such file")
    try:
        return safe_open(str(file), framework="numpy")
    except SafetensorError as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e}); {DAMAGED}") \
            from None


def read_safetensor(handle, name: str, file: str | os.PathLike) -> np.ndarray:
    from safetensors import SafetensorError

    try:
        return handle.get_tensor(name)
    except SafetensorError as e:
        raise CheckpointError(f"{file}: tensor {name!r} cannot be read ({e}); {DAMAGED}") \
            from None


def _safetensors_source(files: list[pathlib.Path], description: str) -> TensorSource:
    handles, shapes, where = {}, {}, {}
    for file in files:
        handle = open_safetensors(file)
        for name in handle.keys():
            handles[name], where[name] = handle, file
            shapes[name] = tuple(handle.get_slice(name).get_shape())
    return _renamed(shapes, lambda n: read_safetensor(handles[n], n, where[n]), description)


def _flax_msgpack_source(file: pathlib.Path) -> TensorSource:
    """transformers' Flax tree -> PyTorch names (kernel (in, out) -> weight (out, in))."""
    from flax.serialization import msgpack_restore
    from flax.traverse_util import flatten_dict

    try:
        tree = msgpack_restore(file.read_bytes())
    except ValueError as e:  # msgpack's ExtraData / OutOfData / FormatError are ValueErrors
        raise CheckpointError(f"{file}: not a readable msgpack file ({type(e).__name__}: {e}); "
                              f"{DAMAGED}") from None
    tensors = {}
    for path, value in flatten_dict(tree).items():
        *scope, leaf = path
        array = np.asarray(value)
        if leaf == "kernel":
            array = array.T
        if leaf in ("kernel", "embedding", "scale"):
            leaf = "weight"
        tensors[".".join(list(scope) + [leaf])] = array
    return _renamed({n: a.shape for n, a in tensors.items()}, tensors.__getitem__, str(file))


def hf_tensor_source(directory: str | os.PathLike) -> TensorSource:
    """The weights of a HuggingFace directory, whichever file format it holds (first found)."""
    directory = pathlib.Path(directory)
    if (directory / "model.safetensors").exists():
        return _safetensors_source([directory / "model.safetensors"], str(directory / "model.safetensors"))
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return _safetensors_source([directory / s for s in shards], str(index))
    if (directory / "flax_model.msgpack").exists():
        return _flax_msgpack_source(directory / "flax_model.msgpack")
    if (directory / "pytorch_model.bin").exists():
        tensors = read_torch_bin(directory / "pytorch_model.bin")
        return _renamed({n: a.shape for n, a in tensors.items()}, tensors.__getitem__,
                        str(directory / "pytorch_model.bin"))
    raise CheckpointError(f"{directory}: no weights file; looked for {', '.join(WEIGHT_FILES)}")


# ------------------------------------------------------------------ pytorch_model.bin (no torch)

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


def _storage_dtype(name: str) -> np.dtype:
    dtype = _TORCH_STORAGE_DTYPES[name]
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2, into numpy: a strided view of the flat storage, copied."""
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; anything else is refused before it runs."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder, self.source = archive, prefix, byteorder, source
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load {module}.{name} (only tensors are read from "
            f"pytorch_model.bin, so the file cannot run code). Convert it to model.safetensors "
            f"with transformers, or use a directory that has model.safetensors")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"{self.source}: unknown persistent id kind {kind!r}")
        if key not in self.storages:
            dtype = _storage_dtype(storage_type)
            if self.byteorder == "big":
                dtype = dtype.newbyteorder(">")
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=dtype, count=numel)
        return self.storages[key]


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a torch.save'd state dict (zip format, torch >= 1.6) as float/int numpy arrays."""
    path = pathlib.Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: legacy (pre-zip) torch format is not read; convert it "
                              f"to model.safetensors with transformers first")
    try:
        return _read_torch_zip(path)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path}: not a readable torch archive ({type(e).__name__}: {e}); "
                              f"{DAMAGED}") from None


def _read_torch_zip(path: pathlib.Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one */data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("/data.pkl")]
        names = set(archive.namelist())
        byteorder = (archive.read(f"{prefix}/byteorder").decode().strip()
                     if f"{prefix}/byteorder" in names else "little")
        with archive.open(pickles[0]) as file:
            state = _TensorOnlyUnpickler(file, archive, prefix, byteorder, str(path)).load()
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {name: value for name, value in state.items() if isinstance(value, np.ndarray)}


# ------------------------------------------------------------------------------ load / save


def read_hf_config(directory: pathlib.Path) -> tuple[dict, str]:
    """(config.json's values, its path) of a HuggingFace model directory, for every HF layout
    (BERT here, ModernBERT in bertlab.checkpoints.modernbert)."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{directory}: no config.json (not a HuggingFace model directory)")
    return json.loads(config_file.read_text()), str(config_file)


def load_hf(path: str | os.PathLike, model: str = "auto", *, strict: bool = True,
            init_missing: bool = False, seed: int = 0) -> tuple[BertConfig, dict]:
    """A HuggingFace BERT directory -> (BertConfig, params tree of `model`).

    model: "bert" -> BertModel params; "pretraining" -> BertForPreTraining(with_nsp=True);
    "mlm" -> BertForPreTraining(with_nsp=False); "classification" ->
    BertForSequenceClassification(num_labels from the file); "auto" -> {"bert": ..., plus each
    head the file holds}. Missing tensors raise CheckpointError naming them (init_missing=True
    initialises them instead and logs each name); unknown tensors raise unless strict=False.
    Works with or without the "bert." prefix and with old LayerNorm.gamma/beta names.
    """
    directory = pathlib.Path(path)
    values, config_file = read_hf_config(directory)
    config = config_from_hf(values, config_file)
    source = hf_tensor_source(directory)
    num_labels = None
    if model == "classification":
        if "classifier.weight" in source.shapes:
            num_labels = source.shapes["classifier.weight"][0]
        else:
            num_labels = len(values.get("id2label", {})) or None
    params = assemble(config, source, hf_name, model, num_labels, strict=strict,
                      init_missing=init_missing, seed=seed)
    return config, params


def architecture(params: Mapping) -> str:
    """The transformers class a params tree corresponds to."""
    tree = flatten_params(params)
    has = lambda *prefix: any(path[:len(prefix)] == prefix for path in tree)
    if has("classifier"):
        return "BertForSequenceClassification"
    if has("cls", "seq_relationship"):
        return "BertForPreTraining"
    if has("cls", "predictions"):
        return "BertForMaskedLM"
    return "BertModel"


def save_hf(directory: str | os.PathLike, config: BertConfig, params: Mapping,
            vocab_path: str | os.PathLike | None = None) -> pathlib.Path:
    """Writes config.json + model.safetensors (+ vocab.txt) in transformers' layout.

    `params` is any tree load_* returns (a bare BertModel tree is written without the "bert."
    prefix, as transformers saves BertModel). The tied decoder is not written (transformers
    re-ties it on load).
    """
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    hf_config = config_to_hf(config)
    arch = architecture(params)
    hf_config["architectures"] = [arch]
    tensors = {}
    for path, value in flatten_params(params).items():
        name, transpose = hf_name(path)
        tensors[name] = np.ascontiguousarray(value.T if transpose else value).astype(np.float32)
    if arch == "BertForSequenceClassification":
        hf_config["num_labels"] = int(tensors["classifier.weight"].shape[0])
    if "embeddings" in params:  # bare backbone
        tensors = {name.removeprefix("bert."): value for name, value in tensors.items()}
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    from bertlab.files import chmod_like_new_file
    chmod_like_new_file(directory / "model.safetensors")  # save_file leaves it 0600
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if vocab_path is not None:
        shutil.copyfile(vocab_path, directory / "vocab.txt")
    return directory
