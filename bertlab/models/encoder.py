"""The transformer encoder: layers of attention + feed-forward, post-LN (BERT) or pre-LN.

One module per scope of the original checkpoint (layer_N/attention/self, attention/output,
intermediate, output), so every parameter path reads like its TF variable name and checkpoint
conversion is a name table. The activation knob is a function picked by name from ACTIVATIONS.

Post-LN (original):  x = LN(x + Drop(W_o Attn(x)));  x = LN(x + Drop(W_2 act(W_1 x)))
Pre-LN (knob):       x = x + Drop(W_o Attn(LN(x)));  x = x + Drop(W_2 act(W_1 LN(x))); final LN
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertlab.models.attention import SelfAttention
from bertlab.models.config import BertConfig
from bertlab.models.dropout import dropout_layer
from bertlab.models.embedding import bert_initializer, compute_dtype, layer_norm


def geglu(x: jax.Array) -> jax.Array:
    """GELU-gated linear unit (Shazeer 2020): x holds [value | gate] -> gelu(value) * gate."""
    value, gate = jnp.split(x, 2, axis=-1)  # (..., I) each
    return jax.nn.gelu(value, approximate=False) * gate


def swiglu(x: jax.Array) -> jax.Array:
    """Swish-gated linear unit (Shazeer 2020): x holds [value | gate] -> silu(value) * gate,
    i.e. silu(xW) * xV with W, V the two halves of the input projection."""
    value, gate = jnp.split(x, 2, axis=-1)  # (..., I) each
    return jax.nn.silu(value) * gate


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # erf form, as transformers' "gelu"
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # google-research/bert's gelu
    "relu": jax.nn.relu,
    "geglu": geglu,
    "swiglu": swiglu,
}

# The MLM head transform is H -> H, where a gate has nothing to gate: gated knobs use their
# ungated activation there (unless config.head_activation names one).
HEAD_ACTIVATIONS: dict[str, str] = {"geglu": "gelu", "swiglu": "gelu"}


def head_activation(config: BertConfig) -> Callable[[jax.Array], jax.Array]:
    """The activation of the MLM transform and of the transform pooler."""
    name = config.head_activation or HEAD_ACTIVATIONS.get(config.activation, config.activation)
    return ACTIVATIONS[name]


def dense(config: BertConfig, features: int, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias,
                    kernel_init=bert_initializer(config.initializer_range),
                    dtype=compute_dtype(config), name=name)


class ResidualOutput(nn.Module):
    """Output projection, dropout, residual add (and the post-LN LayerNorm). Scope: .../output.

    use_bias: the projection's bias (config.attention_bias or mlp_bias, by sub-layer)."""

    config: BertConfig
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array, *, deterministic: bool = True):
        config = self.config
        x = dense(config, config.hidden_size, "dense", self.use_bias)(x)
        x = dropout_layer(config.hidden_dropout, config.dropout_impl)(
            x, deterministic=deterministic)
        x = x + residual
        return x if config.pre_ln else layer_norm(config, "LayerNorm")(x)


class Attention(nn.Module):
    """The attention sub-layer with its residual. Scope: layer_N/attention."""

    config: BertConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, *, deterministic: bool = True,
                 num_queries: int | None = None, positions: jax.Array | None = None,
                 query_index: jax.Array | None = None):
        """num_queries=n: only the first n positions come out; query_index (K,): only those
        flat token indices, as (1, K, H) (see SelfAttention)."""
        config = self.config
        norm_here = config.pre_ln and (self.layer_index > 0 or config.first_layer_attention_norm)
        normed = layer_norm(config, "LayerNorm")(x) if norm_here else x
        context = SelfAttention(config, self.layer_index, name="self")(
            normed, bias, deterministic=deterministic, num_queries=num_queries,
            positions=positions, query_index=query_index)  # (B, n, H) or (1, K, H)
        if query_index is not None:
            residual = x.reshape(1, -1, x.shape[-1])[:, query_index]  # (1, K, H)
        else:
            residual = x if num_queries is None else x[:, :num_queries]  # (B, n, H)
        return ResidualOutput(config, config.attention_bias, name="output")(
            context, residual, deterministic=deterministic)


class Intermediate(nn.Module):
    """Feed-forward input projection + activation. Scope: layer_N/intermediate."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        if config.pre_ln:
            x = layer_norm(config, "LayerNorm")(x)
        x = dense(config, config.intermediate_width, "dense", config.mlp_bias)(x)  # (B,T,I|2I)
        return ACTIVATIONS[config.activation](x)  # (B, T, I)


class EncoderLayer(nn.Module):
    """One transformer block. Scope: encoder/layer_N.

    Arguments may come positionally (unlike the other modules) because nn.remat marks static
    arguments by position: deterministic and num_queries pick Python branches."""

    config: BertConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool = True,
                 num_queries: int | None = None, positions: jax.Array | None = None,
                 query_index: jax.Array | None = None):
        x = Attention(self.config, self.layer_index, name="attention")(
            x, bias, deterministic=deterministic, num_queries=num_queries, positions=positions,
            query_index=query_index)
        hidden = Intermediate(self.config, name="intermediate")(x)
        return ResidualOutput(self.config, self.config.mlp_bias, name="output")(
            hidden, x, deterministic=deterministic)


# remat knob: what the backward pass keeps of each layer's forward (see BertConfig.remat).
# static_argnums count `self` as 0: x 1, bias 2, deterministic 3, num_queries 4.
REMAT_POLICIES: dict[str, Callable | None] = {
    "layer": None,  # only the layer's inputs: the whole layer runs again in the backward pass
    # matmul outputs without batch dimensions (the projections and the feed-forward) are kept;
    # the attention einsums (batched over B, N), softmax, norms and activations run again
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def layer_module(remat: str) -> type[nn.Module]:
    """EncoderLayer, or it wrapped in nn.remat; the wrapper keeps the scope name it is given,
    so parameter paths (encoder/layer_N/...) and checkpoints are the same with or without."""
    if remat == "none":
        return EncoderLayer
    return nn.remat(EncoderLayer, static_argnums=(3, 4), policy=REMAT_POLICIES[remat])


class Encoder(nn.Module):
    """`num_layers` blocks named layer_0 ... (plus the final LayerNorm when pre_ln). Scope: encoder.

    `num_layers` defaults to the config's; the classifier's fresh extra blocks reuse this with
    their own count. `num_queries`=n returns only the first n positions (B, n, H): the last
    layer then computes queries, attention, feed-forward and LayerNorms for those rows alone
    (keys and values still see every token), which is exact, and saves most of a layer when a
    classifier reads only [CLS].

    Packed rows: `positions` (B, T) restart at each example (rotary reads them), `bias` is
    block-diagonal, and `last_query_index` (K,) with `last_bias` (1, 1, K, B*T) makes the last
    layer compute only the K examples' [CLS] tokens, returned as (1, K, H): the packed
    counterpart of num_queries=1.
    """

    config: BertConfig
    num_layers: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, *, deterministic: bool = True,
                 num_queries: int | None = None, positions: jax.Array | None = None,
                 last_query_index: jax.Array | None = None, last_bias: jax.Array | None = None):
        count = self.config.num_layers if self.num_layers is None else self.num_layers
        layer_class = layer_module(self.config.remat)
        for index in range(count):
            last = index == count - 1
            select = last and last_query_index is not None
            # Positional: remat's static arguments (deterministic, num_queries) are positions.
            x = layer_class(self.config, index, name=f"layer_{index}")(
                x, last_bias if select else bias, deterministic,
                num_queries if last else None, positions,
                last_query_index if select else None)
        if self.config.pre_ln:
            x = layer_norm(self.config, "LayerNorm")(x)
        return x
