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
from bertlab.models.encoder import ACTIVATIONS, HEAD_ACTIVATIONS, dense


def gather_positions(sequence: jax.Array, positions: jax.Array) -> jax.Array:
    """sequence (B, T, H), positions (B, P) int -> (B, P, H), before any vocabulary-sized work."""
    return jnp.take_along_axis(sequence, positions[:, :, None].astype(jnp.int32), axis=1)


class Pooler(nn.Module):
    """tanh(dense([CLS])): the sentence vector NSP and classification read. Scope: bert/pooler."""

    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output: jax.Array, cls_index: jax.Array | None = None) -> jax.Array:
        """cls_index (K,): flat indices of each packed example's [CLS] among the B*T tokens
        (bertlab.data.packing); None: token 0 of every row. -> (B, H) or (K, H)."""
        if cls_index is None:
            first_token = sequence_output[:, 0]  # (B, H)
        else:
            first_token = sequence_output.reshape(-1, sequence_output.shape[-1])[cls_index]  # (K, H)
        return jnp.tanh(dense(self.config, self.config.hidden_size, "dense")(first_token))


class HeadTransform(nn.Module):
    """dense -> activation -> LayerNorm before the decoder. Scope: cls/predictions/transform."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        activation = ACTIVATIONS[HEAD_ACTIVATIONS.get(config.activation, config.activation)]
        x = activation(dense(config, config.hidden_size, "dense")(x))
        return layer_norm(config, "LayerNorm")(x)


class MaskedLMHead(nn.Module):
    """Transform, then scores against the vocabulary plus a bias. Scope: cls/predictions.

    Tied (the original): the decoder is the word-embedding table, passed in by the caller.
    Untied: its own (H, V) kernel at cls/predictions/decoder/kernel.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, word_embeddings: jax.Array | None) -> jax.Array:
        config = self.config
        x = HeadTransform(config, name="transform")(x)  # (B, P, H)
        if config.tie_embeddings:
            table = word_embeddings.astype(x.dtype)  # (V, H)
            logits = jnp.einsum("bph,vh->bpv", x, table, preferred_element_type=jnp.float32)
        else:
            decoder = nn.Dense(config.vocab_size, use_bias=False, dtype=compute_dtype(config),
                               kernel_init=bert_initializer(config.initializer_range), name="decoder")
            logits = decoder(x).astype(jnp.float32)  # (B, P, V)
        bias = self.param("output_bias", nn.initializers.zeros, (config.vocab_size,), jnp.float32)
        return logits + bias  # (B, P, V) float32


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
