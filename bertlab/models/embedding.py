"""Input embeddings (token + position + segment, norm, dropout), the norm knob, the initialiser.

Parameter names follow the original checkpoint (bert/embeddings/word_embeddings, ...) so that
checkpoint import is a name table. The position knob is a function picked by name from
POSITION_TABLES: each returns the (T, H) table to add to the token embeddings, or None.

The norm knob keeps the checkpoint's scope name "LayerNorm" whichever norm sits there (an
RMSNorm holds only LayerNorm/scale; a bias-less LayerNorm has no LayerNorm/bias), so one name
table serves every combination; the config says which norm it is.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertlab.models.config import BertConfig
from bertlab.models.dropout import dropout_layer


def bert_initializer(stddev: float) -> Callable:
    """The original BERT initialiser: tf.truncated_normal_initializer(stddev).

    Samples N(0, stddev) cut at two standard deviations WITHOUT rescaling, so the realised
    standard deviation is about 0.88 * stddev. jax's `truncated_normal` rescales to hit
    stddev exactly, which is a different init; we keep the original's.
    """

    def init(key, shape, dtype=jnp.float32):
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * jnp.asarray(stddev, dtype)

    return init


def compute_dtype(config: BertConfig) -> jnp.dtype:
    return jnp.dtype(config.dtype)


def layer_norm(config: BertConfig, name: str) -> nn.Module:
    """The config's norm; statistics in float32 whatever the dtype.

    layernorm: as in the original (two-pass variance), its shift per norm_bias.
    rmsnorm: x / sqrt(mean(x^2) + eps) * scale (Zhang & Sennrich 2019), no centring, no shift.
    """
    if config.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=config.layer_norm_eps, dtype=compute_dtype(config),
                          use_fast_variance=False, name=name)
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=compute_dtype(config),
                        use_bias=config.norm_bias, use_fast_variance=False, name=name)


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """Vaswani et al. 2017 position codes: even features sin(p / 10000^(2i/d)), odd ones cos.

    Returns a float32 (num_positions, dim) numpy array; fixed, so it is a constant, not a param.
    """
    positions = np.arange(num_positions, dtype=np.float64)[:, None]  # (P, 1)
    pair_index = np.arange(0, dim, 2, dtype=np.float64)[None, :]  # (1, ceil(D/2))
    angles = positions / np.power(10000.0, pair_index / dim)  # (P, ceil(D/2))
    table = np.zeros((num_positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : dim // 2])
    return table.astype(np.float32)


def learned_positions(config: BertConfig, seq_len: int, positions: jax.Array | None = None
                      ) -> jax.Array:
    """The original: a trained (max_position_embeddings, H) table, created in the calling module.

    positions (B, T) int: each token's index within its own example (packed rows restart at
    0); None: 0..T-1 for every row, returned once as (T, H)."""
    table = nn.Embed(config.max_position_embeddings, config.hidden_size,
                     embedding_init=bert_initializer(config.initializer_range),
                     dtype=compute_dtype(config), name="position_embeddings")
    return table(jnp.arange(seq_len) if positions is None else positions)  # (T, H) or (B, T, H)


def sinusoidal_positions(config: BertConfig, seq_len: int, positions: jax.Array | None = None
                         ) -> jax.Array:
    table = sinusoidal_table(config.max_position_embeddings, config.hidden_size)
    if positions is None:
        return jnp.asarray(table[:seq_len], compute_dtype(config))  # (T, H)
    return jnp.take(jnp.asarray(table, compute_dtype(config)), positions, axis=0)  # (B, T, H)


def no_positions(config: BertConfig, seq_len: int, positions: jax.Array | None = None) -> None:
    """`none`, `rotary` and `alibi` add nothing here (rotary turns queries and keys, ALiBi
    biases the attention scores)."""
    return None


POSITION_TABLES: dict[str, Callable[..., jax.Array | None]] = {
    "learned": learned_positions,
    "sinusoidal": sinusoidal_positions,
    "scaled_sinusoidal": sinusoidal_positions,  # times Embeddings' position_scale
    "rotary": no_positions,
    "alibi": no_positions,
    "none": no_positions,
}


class Embeddings(nn.Module):
    """word + segment (+ position) embeddings -> norm -> dropout. Scope: bert/embeddings.

    Knobs: type_vocab_size=0 has no segment table (ModernBERT); scaled_sinusoidal multiplies
    the sinusoidal table by a learned scalar `position_scale` (1,) initialised to 1/sqrt(H), as
    cramming's ScaledSinosoidal (Geiping & Goldstein 2022, JonasGeiping/cramming,
    cramming/architectures/embeddings.py, after Hua et al. 2022's FLASH); embedding_norm=False
    drops the norm; the word table has padded_vocab_size rows (vocab_pad_multiple).
    """

    config: BertConfig

    @nn.compact
    def __call__(self, token_ids: jax.Array, segment_ids: jax.Array, *, deterministic: bool = True,
                 positions: jax.Array | None = None):
        """positions (B, T): per-token position ids (packed rows); None: 0..T-1 in every row."""
        config = self.config
        seq_len = token_ids.shape[1]
        if (config.position_embedding in ("learned", "sinusoidal", "scaled_sinusoidal")
                and seq_len > config.max_position_embeddings):
            raise ValueError(f"input length {seq_len} exceeds max_position_embeddings="
                             f"{config.max_position_embeddings} of the {config.position_embedding} "
                             f"position table")
        init = bert_initializer(config.initializer_range)
        dtype = compute_dtype(config)
        words = nn.Embed(config.padded_vocab_size, config.hidden_size, embedding_init=init,
                         dtype=dtype, name="word_embeddings")
        x = words(token_ids)  # (B, T, H)
        if config.type_vocab_size:
            segments = nn.Embed(config.type_vocab_size, config.hidden_size, embedding_init=init,
                                dtype=dtype, name="token_type_embeddings")
            x = x + segments(segment_ids)
        table = POSITION_TABLES[config.position_embedding](config, seq_len, positions)
        if config.position_embedding == "scaled_sinusoidal":
            scale = self.param("position_scale", nn.initializers.constant(
                1.0 / config.hidden_size ** 0.5), (1,), jnp.float32)
            table = table * scale.astype(table.dtype)
        if table is not None:
            x = x + (table[None] if positions is None else table)  # (1 or B, T, H)
        if config.embedding_norm:
            x = layer_norm(config, "LayerNorm")(x)
        return dropout_layer(config.hidden_dropout, config.dropout_impl)(
            x, deterministic=deterministic)
