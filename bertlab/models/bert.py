"""BERT and its task models. Every task model holds the backbone under the scope "bert", so
params["bert"] moves unchanged between pretraining, fine-tuning and checkpoint files.

Every model also takes packed rows (bertlab.data.packing): keyword arrays `example_ids` and
`positions` (B, T) and `cls_index` (K,). Examples then attend only within themselves, positions
restart at each example, and per-example outputs (pooled, NSP and classifier logits) come out
(K, ...) in slot order, which is the input order. Without them nothing changes.

Parameter tree of BertForPreTraining (leaf shapes; linen leaf names kernel/bias/embedding/scale):

    bert/embeddings/word_embeddings/embedding             (V, H)   V: padded_vocab_size
    bert/embeddings/position_embeddings/embedding         (P, H)   learned positions only
    bert/embeddings/position_scale                        (1,)     scaled_sinusoidal only
    bert/embeddings/token_type_embeddings/embedding       (S, H)   type_vocab_size > 0 only
    bert/embeddings/LayerNorm/{scale,bias}                (H,)     embedding_norm only
    bert/encoder/layer_N/attention/self/{query,key,value}/{kernel (H, H), bias (H,)}
    bert/encoder/layer_N/attention/output/dense/{kernel (H, H), bias}
    bert/encoder/layer_N/attention/output/LayerNorm       post-LN only
    bert/encoder/layer_N/attention/LayerNorm              pre-LN only (before self-attention;
                                                          not layer_0 if first_layer_attention_norm=False)
    bert/encoder/layer_N/intermediate/dense/{kernel (H, I) or (H, 2I) gated, bias}
    bert/encoder/layer_N/intermediate/LayerNorm           pre-LN only (before the feed-forward)
    bert/encoder/layer_N/output/dense/{kernel (I, H), bias}
    bert/encoder/layer_N/output/LayerNorm                 post-LN only
    bert/encoder/LayerNorm                                pre-LN only (after the last layer)
    bert/pooler/dense/{kernel (H, H), bias}
    bert/pooler/LayerNorm/{scale,bias}                    pooler='transform' only
    cls/predictions/transform/dense/{kernel (H, H), bias}    head_transform only
    cls/predictions/transform/LayerNorm/{scale,bias}
    cls/predictions/decoder/kernel                        (H, V)  tie_embeddings=False only
    cls/predictions/output_bias                           (V,)
    cls/seq_relationship/output_weights                   (2, H)  with_nsp only, TF layout
    cls/seq_relationship/output_bias                      (2,)

Knobs that remove leaves: attention_bias / mlp_bias / head_bias=False drop the `bias` of the
attention (query, key, value, attention/output/dense), feed-forward (intermediate/dense,
output/dense), and pooler / MLM transform dense layers; decoder_bias=False drops
cls/predictions/output_bias; norm_bias=False or norm='rmsnorm' drop every LayerNorm/bias (an
RMSNorm keeps the scope name LayerNorm, holding `scale` only).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertlab.models.attention import attention_bias, selected_queries_bias
from bertlab.models.config import BertConfig
from bertlab.models.dropout import dropout_layer
from bertlab.models.embedding import Embeddings, bert_initializer, compute_dtype
from bertlab.models.encoder import Encoder
from bertlab.models.heads import Pooler, PreTrainingHeads, gather_positions, masked_mean


class BertModel(nn.Module):
    """The backbone: embeddings -> encoder -> pooler. Returns (sequence (B,T,H), pooled (B,H)).

    Outputs are in the compute dtype (bfloat16 when config.dtype says so).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, token_ids: jax.Array, segment_ids: jax.Array, attention_mask: jax.Array,
                 *, deterministic: bool = True, num_queries: int | None = None,
                 example_ids: jax.Array | None = None, positions: jax.Array | None = None,
                 cls_index: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """num_queries=n: the sequence output is the first n rows alone (B, n, H), and the last
        layer skips the other rows; n=1 is [CLS] alone, what a classifier reading the pooled
        output needs (same values).

        Packed rows: example_ids (B, T) (0 = padding) make attention block-diagonal, positions
        (B, T) replace 0..T-1 (required with example_ids), cls_index (K,) picks each example's
        [CLS] for the pooler, which is then (K, H); with num_queries=1 the last layer runs for
        those K tokens alone and the sequence output is (K, 1, H)."""
        config = self.config
        packed = example_ids is not None
        if packed and positions is None:
            raise ValueError("BertModel: packed rows (example_ids given) need their per-example "
                             "positions too; bertlab.data.packing.pack_batch writes both")
        if num_queries is not None and config.classifier_pooling == "mean":
            raise ValueError("BertModel: classifier_pooling='mean' reads every token, so the "
                             f"last layer cannot skip rows (num_queries={num_queries})")
        if packed and num_queries is not None and (num_queries != 1 or cls_index is None):
            raise ValueError("BertModel: packed rows take num_queries=1 (each example's [CLS]) "
                             f"with cls_index, got num_queries={num_queries}")
        x = Embeddings(config, name="embeddings")(token_ids, segment_ids, positions=positions,
                                                  deterministic=deterministic)  # (B, T, H)
        # (B, 1, 1, T), or (B, 1, T, T) block-diagonal when packed; shared by every layer
        bias = attention_bias(attention_mask, example_ids)
        encoder = Encoder(config, name="encoder")
        if packed and num_queries == 1:
            sequence_output = encoder(
                x, bias, deterministic=deterministic, positions=positions,
                last_query_index=cls_index,
                last_bias=selected_queries_bias(attention_mask, example_ids, cls_index))  # (1, K, H)
            sequence_output = sequence_output.reshape(-1, 1, config.hidden_size)  # (K, 1, H)
            pooled_output = Pooler(config, name="pooler")(sequence_output)  # (K, H)
        else:
            sequence_output = encoder(x, bias, deterministic=deterministic, positions=positions,
                                      num_queries=num_queries)
            pooled_output = Pooler(config, name="pooler")(sequence_output, cls_index,
                                                          attention_mask, example_ids)
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
                 masked_positions: jax.Array | None = None, *, deterministic: bool = True,
                 example_ids: jax.Array | None = None, positions: jax.Array | None = None,
                 cls_index: jax.Array | None = None) -> dict:
        """Packed rows (see BertModel): masked_positions still index within each row; the
        NSP logits are per example (K, 2) when cls_index is given."""
        bert = BertModel(self.config, name="bert")
        sequence_output, pooled_output = bert(token_ids, segment_ids, attention_mask,
                                              deterministic=deterministic, example_ids=example_ids,
                                              positions=positions, cls_index=cls_index)
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
                 *, deterministic: bool = True, example_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, cls_index: jax.Array | None = None
                 ) -> jax.Array:
        """Packed rows (see BertModel; cls_index required): logits (K, num_labels), one row
        per example slot, in input order."""
        config = self.config
        if example_ids is not None and cls_index is None:
            raise ValueError("BertForSequenceClassification: packed rows need cls_index, the "
                             "flat position of each example's [CLS]")
        # Without extra layers only the pooled [CLS] is read: the last layer skips other rows
        # (not with mean pooling, which reads them all).
        cls_only = not self.extra_layers and config.classifier_pooling == "cls"
        sequence_output, pooled_output = BertModel(config, name="bert")(
            token_ids, segment_ids, attention_mask, deterministic=deterministic,
            num_queries=1 if cls_only else None, example_ids=example_ids,
            positions=positions,
            cls_index=cls_index)
        if self.extra_layers:
            hidden = Encoder(config, num_layers=self.extra_layers, name="head_encoder")(
                sequence_output, attention_bias(attention_mask, example_ids),
                deterministic=deterministic, positions=positions)
            pooled_output = Pooler(config, name="head_pooler")(hidden, cls_index, attention_mask,
                                                               example_ids)
        pooled_output = dropout_layer(config.hidden_dropout, config.dropout_impl)(
            pooled_output, deterministic=deterministic)
        classifier = nn.Dense(self.num_labels, kernel_init=bert_initializer(config.initializer_range),
                              dtype=compute_dtype(config), name="classifier")
        return classifier(pooled_output).astype(jnp.float32)  # (B, num_labels)


def mean_pool(sequence_output: jax.Array, attention_mask: jax.Array,
              example_ids: jax.Array | None = None, num_examples: int | None = None) -> jax.Array:
    """Average of the real tokens' vectors (sentence-transformers' pooling), float32 (B, H).

    An all-padding row gives zeros rather than NaN. Packed rows: example_ids (B, T) and the
    static slot count K give one average per example slot, (K, H), in input order; an unused
    slot gives zeros.
    """
    if example_ids is not None and num_examples is None:
        raise ValueError("mean_pool: packed rows need num_examples (the K of the batch)")
    return masked_mean(sequence_output, attention_mask, example_ids, num_examples)
