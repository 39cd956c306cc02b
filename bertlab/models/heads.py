"""Output heads: pooler, masked-LM, next-sentence, and the gather of masked positions.

Scopes and shapes follow the original checkpoint: bert/pooler/dense, cls/predictions/transform,
cls/predictions/output_bias, cls/seq_relationship/output_weights (2, H) — stored transposed
as in TF, so Google and PyTorch checkpoints load it without a transpose.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertlab.models.config import BertConfig
from bertlab.models.embedding import bert_initializer, compute_dtype, layer_norm
from bertlab.models.encoder import dense, head_activation


def gather_positions(sequence: jax.Array, positions: jax.Array) -> jax.Array:
    """sequence (B, T, H), positions (B, P) int -> (B, P, H), before any vocabulary-sized work."""
    return jnp.take_along_axis(sequence, positions[:, :, None].astype(jnp.int32), axis=1)


class Pooler(nn.Module):
    """The sentence vector NSP and classification read. Scope: bert/pooler.

    config.pooler: "tanh" is BERT's tanh(dense(v)); "transform" is ModernBERT's classification
    head, norm(act(dense(v))) with the head activation (its dense bias per head_bias).
    config.classifier_pooling: v is [CLS]'s vector, or the mean of the real tokens' vectors
    (then `attention_mask`, and for packed rows `example_ids`, are needed)."""

    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output: jax.Array, cls_index: jax.Array | None = None,
                 attention_mask: jax.Array | None = None, example_ids: jax.Array | None = None
                 ) -> jax.Array:
        """cls_index (K,): flat indices of each packed example's [CLS] among the B*T tokens
        (bertlab.data.packing); None: token 0 of every row. -> (B, H) or (K, H)."""
        config = self.config
        if config.classifier_pooling == "mean":
            if attention_mask is None:
                raise ValueError("Pooler: classifier_pooling='mean' needs the attention mask")
            vector = masked_mean(sequence_output, attention_mask, example_ids,
                                 None if cls_index is None else cls_index.shape[0])
            vector = vector.astype(sequence_output.dtype)  # (B, H) or (K, H)
        elif cls_index is None:
            vector = sequence_output[:, 0]  # (B, H)
        else:
            vector = sequence_output.reshape(-1, sequence_output.shape[-1])[cls_index]  # (K, H)
        if config.pooler == "transform":
            x = dense(config, config.hidden_size, "dense", config.head_bias)(vector)
            return layer_norm(config, "LayerNorm")(head_activation(config)(x))
        return jnp.tanh(dense(config, config.hidden_size, "dense", config.head_bias)(vector))


def masked_mean(sequence_output: jax.Array, attention_mask: jax.Array,
                example_ids: jax.Array | None = None, num_examples: int | None = None) -> jax.Array:
    """Average of the real tokens' vectors, float32: (B, H), or (K, H) per packed example slot
    (example_ids (B, T), K = num_examples); an all-padding row or unused slot gives zeros."""
    if example_ids is not None:
        hidden = sequence_output.shape[-1]
        real = attention_mask.reshape(-1).astype(bool)  # (B*T,)
        ids = jnp.where(real, example_ids.reshape(-1), 0)  # (B*T,): padding -> segment 0
        tokens = sequence_output.reshape(-1, hidden).astype(jnp.float32)  # (B*T, H)
        total = jax.ops.segment_sum(tokens, ids, num_segments=num_examples + 1)[1:]  # (K, H)
        count = jax.ops.segment_sum(real.astype(jnp.float32), ids,
                                    num_segments=num_examples + 1)[1:, None]  # (K, 1)
        return total / jnp.maximum(count, 1e-9)
    mask = attention_mask.astype(jnp.float32)[:, :, None]  # (B, T, 1)
    total = jnp.sum(sequence_output.astype(jnp.float32) * mask, axis=1)  # (B, H)
    return total / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


class HeadTransform(nn.Module):
    """dense -> activation -> LayerNorm before the decoder. Scope: cls/predictions/transform."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        x = head_activation(config)(dense(config, config.hidden_size, "dense", config.head_bias)(x))
        return layer_norm(config, "LayerNorm")(x)


class MaskedLMHead(nn.Module):
    """Transform, then scores against the vocabulary plus a bias. Scope: cls/predictions.

    Tied (the original): the decoder is the word-embedding table, passed in by the caller.
    Untied: its own (H, V) kernel at cls/predictions/decoder/kernel.

    With vocab_pad_multiple the tables have padded_vocab_size rows, and the logits are sliced
    back to vocab_size: padded rows are never predicted, so losses and accuracies are those of
    the unpadded vocabulary. decoder_bias=False has no output_bias; head_transform=False
    scores the encoder output directly (no cls/predictions/transform).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, word_embeddings: jax.Array | None) -> jax.Array:
        config = self.config
        if config.head_transform:
            x = HeadTransform(config, name="transform")(x)  # (B, P, H)
        if config.tie_embeddings:
            table = word_embeddings.astype(x.dtype)  # (V, H)
            logits = jnp.einsum("bph,vh->bpv", x, table, preferred_element_type=jnp.float32)
        else:
            decoder = nn.Dense(config.padded_vocab_size, use_bias=False,
                               dtype=compute_dtype(config),
                               kernel_init=bert_initializer(config.initializer_range), name="decoder")
            logits = decoder(x).astype(jnp.float32)  # (B, P, V)
        if config.decoder_bias:
            logits = logits + self.param("output_bias", nn.initializers.zeros,
                                         (config.padded_vocab_size,), jnp.float32)
        if config.padded_vocab_size != config.vocab_size:
            logits = logits[..., :config.vocab_size]  # the padded rows are never predicted
        return logits  # (B, P, V) float32


class NextSentenceHead(nn.Module):
    """Is-next / random-next logits from the pooled output. Scope: cls/seq_relationship."""

    config: BertConfig

    @nn.compact
    def __call__(self, pooled_output: jax.Array) -> jax.Array:
        config = self.config
        weights = self.param("output_weights", bert_initializer(config.initializer_range),
                             (2, config.hidden_size), jnp.float32)  # (2, H), as in TF
        bias = self.param("output_bias", nn.initializers.zeros, (2,), jnp.float32)
        logits = jnp.einsum("bh,ch->bc", pooled_output, weights.astype(pooled_output.dtype),
                            preferred_element_type=jnp.float32)  # (B, 2)
        return logits + bias


class PreTrainingHeads(nn.Module):
    """MLM head, and the NSP head when with_nsp. Scope: cls."""

    config: BertConfig
    with_nsp: bool = True

    @nn.compact
    def __call__(self, predicted: jax.Array, pooled_output: jax.Array,
                 word_embeddings: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        mlm_logits = MaskedLMHead(self.config, name="predictions")(predicted, word_embeddings)
        nsp_logits = (NextSentenceHead(self.config, name="seq_relationship")(pooled_output)
                      if self.with_nsp else None)
        return mlm_logits, nsp_logits
