"""BERT and its task models. Every task model holds the backbone under the scope "bert", so
params["bert"] moves unchanged between pretraining, fine-tuning and checkpoint files.

Parameter tree of BertForPreTraining (leaf shapes; linen leaf names kernel/bias/embedding/scale):

    bert/embeddings/word_embeddings/embedding             (V, H)
    bert/embeddings/position_embeddings/embedding         (P, H)   learned positions only
    bert/embeddings/token_type_embeddings/embedding       (S, H)
    bert/embeddings/LayerNorm/{scale,bias}                (H,)
    bert/encoder/layer_N/attention/self/{query,key,value}/{kernel (H, H), bias (H,)}
    bert/encoder/layer_N/attention/output/dense/{kernel (H, H), bias}
    bert/encoder/layer_N/attention/output/LayerNorm       post-LN only
    bert/encoder/layer_N/attention/LayerNorm              pre-LN only (before self-attention)
    bert/encoder/layer_N/intermediate/dense/{kernel (H, I) or (H, 2I) gated, bias}
    bert/encoder/layer_N/intermediate/LayerNorm           pre-LN only (before the feed-forward)
    bert/encoder/layer_N/output/dense/{kernel (I, H), bias}
    bert/encoder/layer_N/output/LayerNorm                 post-LN only
    bert/encoder/LayerNorm                                pre-LN only (after the last layer)
    bert/pooler/dense/{kernel (H, H), bias}
    cls/predictions/transform/dense/{kernel (H, H), bias}
    cls/predictions/transform/LayerNorm/{scale,bias}
    cls/predictions/decoder/kernel                        (H, V)  tie_embeddings=False only
    cls/predictions/output_bias                           (V,)
    cls/seq_relationship/output_weights                   (2, H)  with_nsp only, TF layout
    cls/seq_relationship/output_bias                      (2,)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertlab.models.attention import attention_bias
from bertlab.models.config import BertConfig
from bertlab.models.embedding import Embeddings, bert_initializer, compute_dtype
from bertlab.models.encoder import Encoder
from bertlab.models.heads import Pooler, PreTrainingHeads, gather_positions


class BertModel(nn.Module):
    """The backbone: embeddings -> encoder -> pooler. Returns (sequence (B,T,H), pooled (B,H)).

    Outputs are in the compute dtype (bfloat16 when config.dtype says so).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, token_ids: jax.Array, segment_ids: jax.Array, attention_mask: jax.Array,
                 *, deterministic: bool = True, first_only: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
        """first_only: the sequence output is [CLS]'s row alone (B, 1, H), and the last layer
        skips the other rows (what a classifier reading the pooled output needs; same values)."""
        x = Embeddings(self.config, name="embeddings")(token_ids, segment_ids,
                                                       deterministic=deterministic)  # (B, T, H)
        bias = attention_bias(attention_mask)  # (B, 1, 1, T), shared by every layer
        sequence_output = Encoder(self.config, name="encoder")(
            x, bias, deterministic=deterministic, last_queries=1 if first_only else None)
        pooled_output = Pooler(self.config, name="pooler")(sequence_output)
        return sequence_output, pooled_output


class BertForPreTraining(nn.Module):
    """Backbone + MLM head (+ NSP head when with_nsp).

    MLM logits are computed only at `masked_positions` (B, P): the positions are gathered
    before the transform and the vocabulary projection, which is most of the cost of a small
    BERT's training step. masked_positions=None scores every position (P = T).
    """

    config: BertConfig
    with_nsp: bool = True

    @nn.compact
    def __call__(self, token_ids: jax.Array, segment_ids: jax.Array, attention_mask: jax.Array,
                 masked_positions: jax.Array | None = None, *, deterministic: bool = True) -> dict:
        bert = BertModel(self.config, name="bert")
        sequence_output, pooled_output = bert(token_ids, segment_ids, attention_mask,
                                              deterministic=deterministic)
        predicted = (sequence_output if masked_positions is None
                     else gather_positions(sequence_output, masked_positions))  # (B, P, H)
        word_embeddings = (bert.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
                           if self.config.tie_embeddings else None)  # (V, H)
        mlm_logits, nsp_logits = PreTrainingHeads(self.config, self.with_nsp, name="cls")(
            predicted, pooled_output, word_embeddings)
        return {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits,
                "sequence_output": sequence_output, "pooled_output": pooled_output}


class BertForSequenceClassification(nn.Module):
    """Pooled output -> dropout -> dense to num_labels (1 = regression), float32 logits.

    extra_layers > 0 puts that many freshly initialised encoder blocks (scope head_encoder)
    and a fresh pooler (head_pooler) on top of the backbone's sequence output: with the
    backbone frozen, these are what the frozen-backbone recipe trains.
    """

    config: BertConfig
    num_labels: int
    extra_layers: int = 0

    @nn.compact
    def __call__(self, token_ids: jax.Array, segment_ids: jax.Array, attention_mask: jax.Array,
                 *, deterministic: bool = True) -> jax.Array:
        config = self.config
        # Without extra layers only the pooled [CLS] is read: the last layer skips other rows.
        sequence_output, pooled_output = BertModel(config, name="bert")(
            token_ids, segment_ids, attention_mask, deterministic=deterministic,
            first_only=not self.extra_layers)
        if self.extra_layers:
            hidden = Encoder(config, num_layers=self.extra_layers, name="head_encoder")(
                sequence_output, attention_bias(attention_mask), deterministic=deterministic)
            pooled_output = Pooler(config, name="head_pooler")(hidden)
        pooled_output = nn.Dropout(config.hidden_dropout)(pooled_output, deterministic=deterministic)
        classifier = nn.Dense(self.num_labels, kernel_init=bert_initializer(config.initializer_range),
                              dtype=compute_dtype(config), name="classifier")
        return classifier(pooled_output).astype(jnp.float32)  # (B, num_labels)


def mean_pool(sequence_output: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Average of the real tokens' vectors (sentence-transformers' pooling), float32 (B, H).

    An all-padding row gives zeros rather than NaN.
    """
    mask = attention_mask.astype(jnp.float32)[:, :, None]  # (B, T, 1)
    total = jnp.sum(sequence_output.astype(jnp.float32) * mask, axis=1)  # (B, H)
    count = jnp.maximum(jnp.sum(mask, axis=1), 1e-9)  # (B, 1)
    return total / count
