"""HuggingFace ModernBERT directories (Warner et al. 2024) in and out of bertlab.

ModernBERT is a pre-LN BERT with recipe knobs bertlab has (bertlab.models.config): GeGLU,
rotary positions with one theta on global and another on local layers, alternating attention
(global every k-th layer, a sliding window elsewhere), LayerNorm without bias, no linear
biases, a norm after the embeddings and none before layer 0's attention, no segment
embeddings, and a dense -> act -> norm "head" that serves as the MLM transform and, in the
classification model, as the pooler. So import is a config mapping plus a name table:

  ours                                               transformers (ModernBert*)
  bert/embeddings/word_embeddings/embedding          model.embeddings.tok_embeddings.weight
  bert/embeddings/LayerNorm                          model.embeddings.norm
  bert/encoder/layer_N/attention/self/{q,k,v}        model.layers.N.attn.Wqkv  (rows [q | k | v])
  bert/encoder/layer_N/attention/output/dense        model.layers.N.attn.Wo
  bert/encoder/layer_N/attention/LayerNorm           model.layers.N.attn_norm  (none on layer 0)
  bert/encoder/layer_N/intermediate/LayerNorm        model.layers.N.mlp_norm
  bert/encoder/layer_N/intermediate/dense            model.layers.N.mlp.Wi     (rows [value | gate])
  bert/encoder/layer_N/output/dense                  model.layers.N.mlp.Wo
  bert/encoder/LayerNorm                             model.final_norm
  cls/predictions/transform/{dense,LayerNorm}        head.{dense,norm}         ModernBertForMaskedLM
  cls/predictions/output_bias, decoder/kernel        decoder.bias, decoder.weight (tied: absent)
  bert/pooler/{dense,LayerNorm}                      head.{dense,norm}         ModernBertForSequenceClassification
  classifier/{kernel,bias}                           classifier.{weight,bias}

ModernBertModel saves without the "model." prefix. A directory without a classification head
has no pooler: it is initialised freshly and named in a warning (a fine-tuning run trains it).
Linear weights are (out, in) in torch and (in, out) here. The tokenizer is the directory's
tokenizer.json (bertlab.text.bpe).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from bertlab.checkpoints.hf import read_hf_config
from bertlab.checkpoints.names import (CheckpointError, Path, TensorSource, assemble,
                                       expected_shapes, flatten_params)
from bertlab.models.config import BertConfig, ConfigError

log = logging.getLogger(__name__)

MODEL_TYPE = "modernbert"
TOKENIZER_FILE = "tokenizer.json"
BACKBONE_PREFIXES = ("embeddings.", "layers.", "final_norm.")

# hidden_activation (the GLU's) -> our gated activation; classifier_activation -> head_activation.
FROM_HIDDEN_ACTIVATION = {"gelu": "geglu", "silu": "swiglu", "swish": "swiglu"}
TO_HIDDEN_ACTIVATION = {"geglu": "gelu", "swiglu": "silu"}
FROM_HEAD_ACTIVATION = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                        "relu": "relu"}
TO_HEAD_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


def is_modernbert_dir(path: str | os.PathLike) -> bool:
    """A directory whose config.json says model_type "modernbert"."""
    config_file = pathlib.Path(path) / "config.json"
    if not config_file.is_file():
        return False
    try:
        return json.loads(config_file.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------ config


def config_from_modernbert(values: Mapping[str, Any], source: str = "config.json") -> BertConfig:
    """transformers' ModernBertConfig fields -> a BertConfig with the matching knobs."""
    if values.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"{source}: model_type={values.get('model_type')!r} is not {MODEL_TYPE!r}")
    get = lambda key, default: values.get(key, default) if values.get(key) is not None else default
    hidden_act, head_act = get("hidden_activation", "gelu"), get("classifier_activation", "gelu")
    if hidden_act not in FROM_HIDDEN_ACTIVATION:
        raise ConfigError(f"{source}: hidden_activation={hidden_act!r} has no bertlab GLU; "
                          f"supported: {', '.join(FROM_HIDDEN_ACTIVATION)}")
    if head_act not in FROM_HEAD_ACTIVATION:
        raise ConfigError(f"{source}: classifier_activation={head_act!r} has no bertlab "
                          f"equivalent; supported: {', '.join(FROM_HEAD_ACTIVATION)}")
    scaling = values.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ConfigError(f"{source}: rope_scaling={scaling!r} is not supported (default rope only)")
    every = int(get("global_attn_every_n_layers", 3))
    window = int(get("local_attention", 128)) // 2 * 2  # transformers uses local_attention // 2
    local = every > 1 and window > 0
    global_theta = float(get("global_rope_theta", 160000.0))
    local_theta = values.get("local_rope_theta")
    mlp_dropout = float(get("mlp_dropout", 0.0))
    return BertConfig(
        vocab_size=int(values["vocab_size"]), hidden_size=int(values["hidden_size"]),
        num_layers=int(values["num_hidden_layers"]), num_heads=int(values["num_attention_heads"]),
        intermediate_size=int(values["intermediate_size"]),
        max_position_embeddings=int(get("max_position_embeddings", 8192)), type_vocab_size=0,
        hidden_dropout=max(mlp_dropout, float(get("embedding_dropout", 0.0))),
        attention_dropout=float(get("attention_dropout", 0.0)),
        layer_norm_eps=float(get("norm_eps", 1e-5)),
        initializer_range=float(get("initializer_range", 0.02)),
        activation=FROM_HIDDEN_ACTIVATION[hidden_act], position_embedding="rotary", pre_ln=True,
        tie_embeddings=bool(get("tie_word_embeddings", True)),
        norm="layernorm", norm_bias=bool(get("norm_bias", False)),
        attention_bias=bool(get("attention_bias", False)), mlp_bias=bool(get("mlp_bias", False)),
        head_bias=bool(get("classifier_bias", False)), decoder_bias=bool(get("decoder_bias", True)),
        embedding_norm=True, first_layer_attention_norm=False,
        local_window=window if local else 0, global_every=every if local else 1,
        rotary_theta=global_theta,
        local_rotary_theta=float(local_theta) if local and local_theta is not None else None,
        pooler="transform", classifier_pooling=get("classifier_pooling", "cls"),
        head_activation=FROM_HEAD_ACTIVATION[head_act],
    )


def config_to_modernbert(config: BertConfig) -> dict[str, Any]:
    """Ours -> ModernBertConfig fields; refuses a config ModernBERT cannot express."""
    expected = dict(pre_ln=True, position_embedding="rotary", type_vocab_size=0, norm="layernorm",
                    embedding_norm=True, first_layer_attention_norm=False, pooler="transform",
                    vocab_pad_multiple=1)
    refusals = [f"{k}={getattr(config, k)!r} (needs {v!r})" for k, v in expected.items()
                if getattr(config, k) != v]
    if config.activation not in TO_HIDDEN_ACTIVATION:
        refusals.append(f"activation={config.activation!r} (needs geglu or swiglu)")
    head = config.head_activation or "gelu"
    if head not in TO_HEAD_ACTIVATION:
        refusals.append(f"head_activation={head!r}")
    if refusals:
        raise ConfigError(f"cannot export to HuggingFace ModernBERT: {'; '.join(refusals)}; use "
                          f"save_bertlab / --to bertlab instead")
    local = config.local_window > 0
    return {
        "model_type": MODEL_TYPE, "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "intermediate_size": config.intermediate_size,
        "hidden_activation": TO_HIDDEN_ACTIVATION[config.activation],
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range, "norm_eps": config.layer_norm_eps,
        "norm_bias": config.norm_bias, "global_rope_theta": config.rotary_theta,
        "local_rope_theta": (config.local_rotary_theta if config.local_rotary_theta is not None
                             else config.rotary_theta),
        "attention_bias": config.attention_bias, "attention_dropout": config.attention_dropout,
        # All layers global: a window never reached (transformers cannot switch it off).
        "global_attn_every_n_layers": config.global_every if local else 1,
        "local_attention": config.local_window if local else 128,
        "embedding_dropout": 0.0, "mlp_bias": config.mlp_bias,
        "mlp_dropout": config.hidden_dropout, "decoder_bias": config.decoder_bias,
        "classifier_pooling": config.classifier_pooling, "classifier_bias": config.head_bias,
        "classifier_activation": TO_HEAD_ACTIVATION[head], "classifier_dropout": 0.0,
        "tie_word_embeddings": config.tie_embeddings, "torch_dtype": "float32",
    }


# -------------------------------------------------------------------------------- name table


# Our leaf names -> torch's; kernels are transposed ((in, out) here, (out, in) in torch).
TORCH_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def torch_tensor(module: str, leaf: str) -> tuple[str, bool]:
    return f"{module}.{TORCH_LEAVES[leaf]}", leaf == "kernel"


def modernbert_name(path: Path, head_is_pooler: bool = False) -> tuple[str, bool]:
    """Our full path -> (ModernBERT state-dict name, transpose?). The fused Wqkv is addressed
    per third as "....Wqkv.weight:q" (split by modernbert_source). `head_is_pooler`: the
    checkpoint's head.* is the classification model's (our pooler), else the MLM transform."""
    joined = "/".join(path)
    leaf = path[-1]
    tensor = lambda module: torch_tensor(module, leaf)
    if path[0] == "classifier":
        return tensor("classifier")
    if path[:2] == ("cls", "predictions"):
        if leaf == "output_bias":
            return "decoder.bias", False
        if path[2] == "decoder":
            return "decoder.weight", True
        if head_is_pooler:
            return f"(MLM head {joined}: the head here is the classifier's)", False
        return tensor({"dense": "head.dense", "LayerNorm": "head.norm"}[path[3]])
    if path[:2] == ("bert", "pooler"):
        if not head_is_pooler:
            return f"(pooler {joined}: no classification head in this checkpoint)", False
        return tensor({"dense": "head.dense", "LayerNorm": "head.norm"}[path[2]])
    if path[:2] == ("bert", "embeddings"):
        return tensor({"word_embeddings": "model.embeddings.tok_embeddings",
                       "LayerNorm": "model.embeddings.norm"}.get(path[2], path[2]))
    if path[:3] == ("bert", "encoder", "LayerNorm"):
        return tensor("model.final_norm")
    if path[:2] == ("bert", "encoder") and path[2].startswith("layer_"):
        layer = f"model.layers.{path[2].removeprefix('layer_')}"
        rest = path[3:-1]
        if rest[:2] == ("attention", "self"):
            name, _ = tensor(f"{layer}.attn.Wqkv")
            return f"{name}:{rest[2][0]}", leaf == "kernel"  # :q :k :v
        table = {("attention", "output", "dense"): "attn.Wo", ("attention", "LayerNorm"): "attn_norm",
                 ("intermediate", "LayerNorm"): "mlp_norm", ("intermediate", "dense"): "mlp.Wi",
                 ("output", "dense"): "mlp.Wo"}
        if rest in table:
            return tensor(f"{layer}.{table[rest]}")
    return f"(no ModernBERT tensor for {joined})", False


def modernbert_source(directory: str | os.PathLike) -> TensorSource:
    """The directory's tensors under canonical names ("model." prefix), each fused Wqkv seen as
    three (H, H) thirds (and its bias as three (H,) thirds)."""
    from bertlab.checkpoints.hf import hf_tensor_source

    raw = hf_tensor_source(directory)
    originals: dict[str, str] = {}
    for name in raw.shapes:
        plain = name.removeprefix("bert.")  # hf's reader prefixes bare "embeddings.*" names
        canonical = "model." + plain if plain.startswith(BACKBONE_PREFIXES) else plain
        originals[canonical] = name
    shapes: dict[str, tuple] = {}
    for name, original in originals.items():
        shape = tuple(raw.shapes[original])
        if ".attn.Wqkv." in name:
            third = (shape[0] // 3,) + shape[1:]
            shapes.update({f"{name}:{part}": third for part in "qkv"})
        else:
            shapes[name] = shape

    def read(name: str) -> np.ndarray:
        if ".attn.Wqkv." in name:
            whole, part = name.rsplit(":", 1)
            array = np.asarray(raw.read(originals[whole]))
            size = array.shape[0] // 3
            index = "qkv".index(part)
            return array[index * size:(index + 1) * size]  # (H, H) or (H,): rows of q, k or v
        return raw.read(originals[name])

    return TensorSource(shapes=shapes, read=read, description=raw.description)


# ------------------------------------------------------------------------------ load / save


def load_modernbert(path: str | os.PathLike, model: str = "auto", *, strict: bool = True,
                    seed: int = 0) -> tuple[BertConfig, dict, pathlib.Path | None]:
    """A ModernBERT directory -> (config, params tree, tokenizer.json path or None).

    model: "auto" (backbone + the heads the file has), "bert", "mlm" or "classification". The
    backbone's pooler, absent unless the file is a classifier, is initialised (seed) and named
    in a warning; any other missing tensor is a CheckpointError naming it.
    """
    directory = pathlib.Path(path)
    values, config_file = read_hf_config(directory)
    config = config_from_modernbert(values, config_file)
    source = modernbert_source(directory)
    head_is_pooler = "classifier.weight" in source.shapes
    auto_kind = ("classification" if head_is_pooler
                 else "mlm" if "head.dense.weight" in source.shapes else "bert")
    kind = auto_kind if model == "auto" else model
    if kind not in ("bert", "mlm", "classification"):
        raise CheckpointError(f"model={model!r}: a ModernBERT checkpoint loads as 'auto', "
                              f"'bert', 'mlm' or 'classification'")
    num_labels = (source.shapes["classifier.weight"][0] if "classifier.weight" in source.shapes
                  else len(values.get("id2label") or {}) or None)
    name_of = lambda p: modernbert_name(p, head_is_pooler)
    missing = [name for p in expected_shapes(config, kind, num_labels)
               if (name := name_of(p)[0]) not in source.shapes and p[:2] != ("bert", "pooler")]
    if missing:
        raise CheckpointError(f"{source.description}: missing {len(missing)} tensor(s) for "
                              f"model={model!r}: {', '.join(missing)}")
    params = assemble(config, source, name_of, kind, num_labels, strict=False,
                      init_missing=not head_is_pooler, seed=seed)
    if strict:
        used = {name_of(p)[0] for p in expected_shapes(config, kind, num_labels)}
        used |= {n for n in source.shapes if ".attn.Wqkv." in n} | {"decoder.weight"}
        unknown = sorted(set(source.shapes) - used)
        if kind == "bert":
            unknown = [n for n in unknown if not n.startswith(("head.", "decoder.", "classifier."))]
        if unknown:
            raise CheckpointError(f"{source.description}: {len(unknown)} tensor(s) no bertlab "
                                  f"ModernBERT uses: {', '.join(unknown[:20])}")
    if kind == "bert" and model == "auto":
        params = {"bert": params}  # as load_pretrained's "auto": the backbone under "bert"
    tokenizer = directory / TOKENIZER_FILE
    return config, params, (tokenizer if tokenizer.is_file() else None)


MODERNBERT_SPECIAL_IDS = {"pad_token_id": 50283, "cls_token_id": 50281, "sep_token_id": 50282,
                          "bos_token_id": 50281, "eos_token_id": 50282}


def special_ids(config: BertConfig, tokenizer_path: str | os.PathLike | None,
                given: Mapping[str, int] | None) -> dict[str, int | None]:
    """config.json's special-token ids: given ones, else the tokenizer's [PAD] [CLS] [SEP],
    else ModernBERT's released ids; an id outside the vocabulary becomes None (transformers
    then has no padding row, which changes no output)."""
    ids: dict[str, int | None] = dict(MODERNBERT_SPECIAL_IDS)
    if tokenizer_path is not None:
        from bertlab.text.bpe import BpeTokenizer

        vocab = BpeTokenizer.from_file(tokenizer_path).vocab
        ids = {"pad_token_id": vocab.pad_id, "cls_token_id": vocab.cls_id,
               "sep_token_id": vocab.sep_id, "bos_token_id": vocab.cls_id,
               "eos_token_id": vocab.sep_id}
    ids.update(given or {})
    return {k: (v if v is not None and v < config.vocab_size else None) for k, v in ids.items()}


def save_modernbert(directory: str | os.PathLike, config: BertConfig, params: Mapping,
                    tokenizer_path: str | os.PathLike | None = None,
                    special_token_ids: Mapping[str, int] | None = None) -> pathlib.Path:
    """Writes config.json + model.safetensors in transformers' ModernBERT layout.

    The class follows the tree: a classifier -> ModernBertForSequenceClassification (the
    pooler is its head), an MLM head -> ModernBertForMaskedLM, else ModernBertModel (no
    "model." prefix). special_token_ids: pad/cls/sep/bos/eos ids for config.json (else
    ModernBERT's). The tied decoder is not written (transformers re-ties it)."""
    import shutil

    from safetensors.numpy import save_file

    values = config_to_modernbert(config)
    tree = flatten_params(params)
    has = lambda *prefix: any(path[:len(prefix)] == prefix for path in tree)
    if has("head_encoder") or has("head_pooler"):
        raise CheckpointError("the classifier's extra_layers have no ModernBERT equivalent; "
                              "save with save_bertlab instead")
    head_is_pooler = has("classifier")
    arch = ("ModernBertForSequenceClassification" if head_is_pooler
            else "ModernBertForMaskedLM" if has("cls", "predictions") else "ModernBertModel")
    tensors: dict[str, np.ndarray] = {}
    qkv: dict[str, dict[str, np.ndarray]] = {}
    for path, value in tree.items():
        if path[:2] == ("cls", "seq_relationship"):
            raise CheckpointError("ModernBERT has no next-sentence head; load the tree without "
                                  "cls/seq_relationship (model='mlm')")
        if path[:2] == ("bert", "pooler") and not head_is_pooler:
            continue  # only the classification model has a head there
        name, transpose = modernbert_name(path, head_is_pooler)
        array = np.ascontiguousarray(value.T if transpose else value).astype(np.float32)
        if ":" in name:
            whole, part = name.rsplit(":", 1)
            qkv.setdefault(whole, {})[part] = array
        else:
            tensors[name] = array
    for whole, parts in qkv.items():
        tensors[whole] = np.concatenate([parts[p] for p in "qkv"], axis=0)  # (3H, H) or (3H,)
    if arch == "ModernBertModel":
        tensors = {n.removeprefix("model."): a for n, a in tensors.items()}
    values["architectures"] = [arch]
    if head_is_pooler:
        labels = int(tensors["classifier.weight"].shape[0])
        values["num_labels"] = labels
        values["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
        values["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
    values.update(special_ids(config, tokenizer_path, special_token_ids))
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    from bertlab.files import chmod_like_new_file
    chmod_like_new_file(directory / "model.safetensors")  # save_file leaves it 0600
    (directory / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    if tokenizer_path is not None and pathlib.Path(tokenizer_path).resolve() != \
            (directory / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_path, directory / TOKENIZER_FILE)
    return directory


def load_backbone(path: str | os.PathLike):
    """init_from for a ModernBERT directory: an init_from.Backbone whose vocabulary is the
    directory's tokenizer.json (read by bertlab.text.bpe; casing is the file's own)."""
    from bertlab.checkpoints.init_from import Backbone, InitFromError

    try:
        config, params, tokenizer = load_modernbert(path, "auto")
    except (CheckpointError, ConfigError) as e:
        raise InitFromError(f"init_from={path}: {e}") from None
    if tokenizer is None:
        raise InitFromError(f"{path}: no {TOKENIZER_FILE} beside the weights; a ModernBERT "
                            f"checkpoint needs its tokenizer (copy the model's {TOKENIZER_FILE} there)")
    return Backbone(config, params["bert"], str(tokenizer), False, "huggingface", str(path))
