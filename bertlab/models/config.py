"""The model's shape and ablation knobs: one frozen dataclass, one table of sizes, two counters.

Every knob's default is the original BERT (Devlin et al. 2019, google-research/bert), so an
ablation is one field away from the baseline and a config that prints only its overrides is
enough to reproduce a run. This module imports no jax: configs are read by the CLI, the
sweep runner and the checkpoint converters before any device work starts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

# The names each knob accepts. The functions behind them live beside the layer that uses them
# (encoder.ACTIVATIONS, embedding.POSITION_TABLES, attention.QK_POSITION_TRANSFORMS); the tests
# check that those dicts and these tuples agree, so a config is rejected before any jax work.
ACTIVATION_NAMES = ("gelu", "gelu_tanh", "relu", "geglu", "swiglu")
POSITION_EMBEDDING_NAMES = ("learned", "sinusoidal", "scaled_sinusoidal", "rotary", "alibi", "none")
DTYPE_NAMES = ("float32", "bfloat16")
ATTENTION_KERNEL_NAMES = ("explicit", "fused", "auto")
REMAT_NAMES = ("none", "layer", "dots")
NORM_NAMES = ("layernorm", "rmsnorm")
POOLER_NAMES = ("tanh", "transform")
CLASSIFIER_POOLING_NAMES = ("cls", "mean")
DROPOUT_IMPL_NAMES = ("hash", "threefry")  # models.dropout.DROPOUT_IMPL_NAMES

# Activations whose feed-forward input projection is twice as wide (a value half and a gate half).
GATED_ACTIVATIONS = ("geglu", "swiglu")
# The ungated activations, the only ones an H -> H head transform can use.
HEAD_ACTIVATION_NAMES = ("gelu", "gelu_tanh", "relu")


class ConfigError(ValueError):
    """A config that cannot describe a model; the message names the field and the valid values."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape and knobs of one BERT. Defaults are BERT-base as released by Google."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    activation: str = "gelu"  # gelu (exact erf) | gelu_tanh | relu | geglu
    position_embedding: str = "learned"  # learned | sinusoidal | rotary | none
    pre_ln: bool = False  # LayerNorm before each sub-layer, plus one after the last layer
    tie_embeddings: bool = True  # MLM decoder reuses the word-embedding table
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
    # How attention is computed, not what: "explicit" einsums + softmax, or "fused"/"auto"
    # jax.nn.dot_product_attention (cuDNN's flash kernel on a CUDA GPU in bf16 where
    # models.attention_select allows it, XLA's otherwise) whenever no attention dropout is
    # active (evaluation, or attention_dropout=0 as the modern recipes train); attention dropout
    # always runs the explicit kernel. "auto" and "fused" route the same; "auto" names the
    # intent. Same numbers either way (tested within 1e-5 in float32).
    # Default stays "explicit", auto not being shown "not slower" on the CPU: MiniLM (L12 H384
    # A12), batch 16 x 128, attention_dropout=0, MLM + adamw step, shared 2-core CPU, three runs
    # of 3 interleaved repetitions, fastest repetition explicit vs auto: train 12.6 vs 16.6 s,
    # 8.04 vs 8.09 s, 5.33 vs 5.55 s (auto 1-30 % slower); inference 3.07 vs 3.20 s, 2.12 vs
    # 1.81 s, 1.44 vs 1.26 s (even); logits within 1.6e-6. On a GPU set "auto" (cuDNN, bf16).
    attention_kernel: str = "explicit"
    # Rematerialisation (issue 18 item 3), memory for compute, same numbers: "none" keeps every
    # activation for the backward pass; "layer" keeps only each encoder layer's input and runs
    # the layer again (about one more forward); "dots" keeps the projections' and feed-forward's
    # matmul outputs and recomputes attention scores, softmax, norms and activations. For large
    # models or long sequences whose batch does not fit otherwise.
    remat: str = "none"
    # How dropout masks are drawn, not how many (issue 14 item 5): "hash" draws one seed per
    # dropout site from the `dropout` rng and hashes each element's position under it
    # (models/dropout.py; the CPU fine-tune step at MiniLM size 0.84x the time); "threefry" is
    # flax's nn.Dropout, jax's PRNG per element, exactly the masks of runs made before this key
    # existed. Training randomness only: no forward pass at inference changes, so a saved
    # config without the key loads as the default.
    dropout_impl: str = "hash"

    # ---- Recipe knobs (issue 17). Each default is the original BERT; the README's knob table
    # says which recipe sets what (cramming, MosaicBERT, ModernBERT).
    norm: str = "layernorm"  # layernorm | rmsnorm (Zhang & Sennrich 2019: no centring, no shift)
    norm_bias: bool = True  # LayerNorm's learned shift (rmsnorm has none)
    attention_bias: bool = True  # bias of the query/key/value and attention-output projections
    mlp_bias: bool = True  # bias of the feed-forward input and output projections
    head_bias: bool = True  # bias of the pooler's and the MLM transform's dense layer
    decoder_bias: bool = True  # the MLM output bias over the vocabulary (cls/predictions/output_bias)
    embedding_norm: bool = True  # the norm after the embedding sum (pre-LN keeps it, as ModernBERT)
    # Pre-LN only: False skips layer 0's attention norm, which would re-normalise the just-normed
    # embeddings (ModernBERT's layer 0 has an identity there).
    first_layer_attention_norm: bool = True
    # Alternating attention (ModernBERT): layer i is global when i % global_every == 0, local
    # otherwise; a local query sees keys within local_window // 2 positions of its own (window
    # 128 = +-64, W + 1 keys). Positions are per example, so padding and packing are unaffected.
    local_window: int = 0  # 0: every layer global
    global_every: int = 1
    rotary_theta: float = 10000.0  # rotary base (RoFormer); ModernBERT: 160000 on global layers
    local_rotary_theta: float | None = None  # rotary base on local layers; None: rotary_theta
    # Rows of the word-embedding / decoder tables rounded up to a multiple of this (MosaicBERT: 64)
    # for matmul-friendly shapes; the extra rows are never predicted (logits sliced to vocab_size).
    vocab_pad_multiple: int = 1
    pooler: str = "tanh"  # tanh: tanh(dense) (BERT) | transform: dense -> head act -> norm (ModernBERT)
    classifier_pooling: str = "cls"  # what the pooler reads: [CLS] | the mean of the real tokens
    head_activation: str = ""  # MLM transform / transform pooler; "": the ungated `activation`
    # False: the MLM decoder reads the encoder output directly, no dense -> act -> norm first
    # (cramming's skip_head_transform; its pre-LN final norm is still there).
    head_transform: bool = True

    def __post_init__(self):
        _check_choice("activation", self.activation, ACTIVATION_NAMES)
        _check_choice("position_embedding", self.position_embedding, POSITION_EMBEDDING_NAMES)
        _check_choice("dtype", self.dtype, DTYPE_NAMES)
        _check_choice("attention_kernel", self.attention_kernel, ATTENTION_KERNEL_NAMES)
        _check_choice("remat", self.remat, REMAT_NAMES)
        _check_choice("dropout_impl", self.dropout_impl, DROPOUT_IMPL_NAMES)
        _check_choice("norm", self.norm, NORM_NAMES)
        _check_choice("pooler", self.pooler, POOLER_NAMES)
        _check_choice("classifier_pooling", self.classifier_pooling, CLASSIFIER_POOLING_NAMES)
        if self.head_activation:
            _check_choice("head_activation", self.head_activation, HEAD_ACTIVATION_NAMES)
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "global_every", "vocab_pad_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        for name in ("type_vocab_size", "local_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"BertConfig.{name} must be a non-negative integer, got {value!r}")
        for name in ("norm_bias", "attention_bias", "mlp_bias", "head_bias", "decoder_bias",
                     "embedding_norm", "first_layer_attention_norm", "head_transform"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"BertConfig.{name} must be True or False, "
                                  f"got {getattr(self, name)!r}")
        if self.local_window % 2:
            raise ConfigError(f"BertConfig.local_window={self.local_window} must be even: a local "
                              f"query sees local_window // 2 keys on each side")
        if (self.local_window > 0) != (self.global_every > 1):
            raise ConfigError(f"BertConfig.local_window={self.local_window} with global_every="
                              f"{self.global_every}: a sliding window needs local layers "
                              f"(global_every >= 2) and local layers need a window (> 0); set "
                              f"both, or local_window=0 and global_every=1")
        if self.norm == "rmsnorm" and self.norm_bias:
            raise ConfigError("BertConfig.norm='rmsnorm' has no shift: set norm_bias=False")
        if not self.first_layer_attention_norm and not self.pre_ln:
            raise ConfigError("BertConfig.first_layer_attention_norm=False is a pre-LN knob "
                              "(post-LN has no norm before attention); set pre_ln=True")
        for name in ("rotary_theta", "local_rotary_theta"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 1.0):
                raise ConfigError(f"BertConfig.{name} must be a number > 1, got {value!r}")
        if self.local_rotary_theta is not None and self.position_embedding != "rotary":
            raise ConfigError(f"BertConfig.local_rotary_theta is a rotary knob, but "
                              f"position_embedding={self.position_embedding!r}")
        if self.local_rotary_theta is not None and not self.local_window:
            raise ConfigError("BertConfig.local_rotary_theta applies to local layers, but "
                              "local_window=0 makes every layer global")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"BertConfig.hidden_size={self.hidden_size} is not divisible by "
                              f"num_heads={self.num_heads}")
        if self.position_embedding == "rotary" and self.head_dim % 2:
            raise ConfigError(f"position_embedding='rotary' rotates pairs of features, so the head "
                              f"size hidden_size/num_heads={self.head_dim} must be even")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def intermediate_width(self) -> int:
        """Output width of the feed-forward input projection (doubled for gated activations)."""
        return self.intermediate_size * (2 if self.activation in GATED_ACTIVATIONS else 1)

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the word-embedding and decoder tables: vocab_size rounded up to the multiple."""
        return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple

    def is_global_layer(self, index: int) -> bool:
        """Layer `index` attends over the whole example (else within local_window)."""
        return self.local_window == 0 or index % self.global_every == 0

    def keys_per_query(self, index: int, seq_len: int) -> int:
        """Keys one query of layer `index` scores: the window's W + 1 on local layers, capped at T."""
        return seq_len if self.is_global_layer(index) else min(self.local_window + 1, seq_len)


def _check_choice(field: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"BertConfig.{field}={value!r} is not one of {', '.join(valid)}")


def _sizes(layers: int, hidden: int) -> dict[str, int]:
    """The recipe shared by every released BERT: 64-wide heads, a 4x feed-forward."""
    return dict(num_layers=layers, hidden_size=hidden, num_heads=hidden // 64,
                intermediate_size=4 * hidden)


# Released sizes. base/large: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
# Transformers for Language Understanding", Table/Section 3. tiny..medium: Turc et al. 2019,
# "Well-Read Students Learn Better: On the Importance of Pre-training Compact Models"
# (the 24 small BERTs in google-research/bert's README; names as in their release).
VARIANTS: dict[str, dict] = {
    "tiny": _sizes(2, 128),      # Turc et al. 2019, L-2_H-128_A-2
    "mini": _sizes(4, 256),      # Turc et al. 2019, L-4_H-256_A-4
    "small": _sizes(4, 512),     # Turc et al. 2019, L-4_H-512_A-8
    "medium": _sizes(8, 512),    # Turc et al. 2019, L-8_H-512_A-8
    "base": _sizes(12, 768),     # Devlin et al. 2019, BERT-base, 110 M parameters
    "large": _sizes(24, 1024),   # Devlin et al. 2019, BERT-large, 340 M parameters
}

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(BertConfig))

# The recipe knobs of issue 17, which an original-BERT checkpoint layout cannot express.
RECIPE_FIELDS = ("norm", "norm_bias", "attention_bias", "mlp_bias", "head_bias", "decoder_bias",
                 "embedding_norm", "first_layer_attention_norm", "local_window", "global_every",
                 "rotary_theta", "local_rotary_theta", "vocab_pad_multiple", "pooler",
                 "classifier_pooling", "head_activation", "head_transform")


def changed_recipe_knobs(config: BertConfig) -> list[str]:
    """"field=value" for each recipe knob away from its BERT default (for exporters' refusals)."""
    default = BertConfig()
    return [f"{name}={getattr(config, name)!r}" for name in RECIPE_FIELDS
            if getattr(config, name) != getattr(default, name)]


def config_from_dict(values: Mapping[str, Any], source: str = "<dict>") -> BertConfig:
    """Builds a config, refusing unknown keys (a typo must not silently fall back to a default)."""
    unknown = sorted(set(values) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown BertConfig field(s) {', '.join(unknown)}; "
                          f"valid fields: {', '.join(CONFIG_FIELDS)}")
    return BertConfig(**values)


def config_to_dict(config: BertConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def variant_config(name: str, **overrides) -> BertConfig:
    """A named size from VARIANTS with any field overridden, e.g. variant_config("tiny", pre_ln=True)."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown model variant {name!r}; valid variants: {', '.join(VARIANTS)}")
    return config_from_dict({**VARIANTS[name], **overrides}, source=f"variant {name!r} overrides")


def count_params(params) -> int:
    """Number of scalars in a parameter tree (arrays or jax.ShapeDtypeStruct leaves)."""
    import jax  # only the tree walk needs it; config stays importable without jax

    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def flops_per_token(config: BertConfig, seq_len: int, num_predictions: int | None = None,
                    training: bool = True) -> float:
    """Matmul FLOPs per input token, the numerator of MFU.

    Counts 2 FLOPs per multiply-add for every projection, the attention scores (QK^T) and the
    weighted sum over values, and the MLM head (transform + vocabulary decoder) at
    `num_predictions` positions per sequence (None: every position). Training costs three
    forwards (the backward pass is two matmuls per forward matmul). Left out, being under 0.1 %
    at any released size and not per token: embedding lookups, LayerNorm, softmax, and the
    per-sequence pooler / NSP / classifier.

    Knobs: a local layer's query scores W + 1 keys (capped at T) instead of T, as a kernel that
    skips the masked blocks would (the explicit kernel computes all T and masks; MFU counts the
    useful work); gated feed-forwards (geglu, swiglu) have a 2I-wide input projection; the
    decoder multiplies by the padded vocabulary (padded_vocab_size), which is the work done.
    Biases, ALiBi's bias and the norms are elementwise and left out like LayerNorm.
    """
    h, i, t = config.hidden_size, config.intermediate_size, seq_len
    forward = 0.0
    for index in range(config.num_layers):
        keys = config.keys_per_query(index, t)
        forward += (
            2 * h * 3 * h                      # query, key, value projections
            + 2 * keys * h                     # attention scores: one query against its keys
            + 2 * keys * h                     # weighted sum of their values
            + 2 * h * h                        # attention output projection
            + 2 * h * config.intermediate_width  # feed-forward in (2x wide when gated)
            + 2 * i * h                        # feed-forward out
        )
    predicted_fraction = 1.0 if num_predictions is None else num_predictions / seq_len
    transform = 2 * h * h if config.head_transform else 0
    mlm_head = predicted_fraction * (transform + 2 * h * config.padded_vocab_size)
    forward = forward + mlm_head
    return float(3 * forward if training else forward)
