"""Multi-head self-attention: projections, the padding bias, the position knobs (rotary, ALiBi),
the sliding window, the kernel.

Packed rows (bertlab.data.packing) hold several examples; `attention_bias` given per-token
example ids makes the bias block-diagonal, so each token sees only its own example's tokens and
the numbers equal the unpacked ones. The same additive bias feeds both kernels.

ALiBi and the sliding window depend on the distance |p_q - p_k| between per-token positions
(0..T-1, or each packed example's own positions), so within one example they are the same
padded or packed; pairs across examples are already masked by the block-diagonal bias.

Scores and softmax run in float32 whatever the compute dtype: bfloat16 softmax over 512 keys
loses the small weights that fine-tuning depends on, and it costs nothing at these sizes.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertlab.models.attention_select import (AttentionCase, choose, device_facts,
                                             dot_product_attention)
from bertlab.models.config import BertConfig
from bertlab.models.dropout import dropout_layer
from bertlab.models.embedding import bert_initializer, compute_dtype

# Added to the score of every padded key. Large enough that exp() underflows to exactly 0 in
# float32, finite so that a row with no real key (an all-padding example filling a batch)
# becomes a uniform average instead of NaN.
MASKED_SCORE = -1e9


def attention_bias(attention_mask: jax.Array, example_ids: jax.Array | None = None) -> jax.Array:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) float32 additive bias; built once per forward.

    With example_ids (B, T) (packed rows: 0 on padding, one id per example) the bias is
    (B, 1, T, T): query i may see key j when both belong to the same example and j is real.
    A padding query then sees no key at all and gets MASKED_SCORE everywhere: a uniform
    average, finite, as an all-padding row is unpacked."""
    if example_ids is None:
        keep = attention_mask.astype(bool)[:, None, None, :]  # (B, 1, 1, T): broadcast over heads, queries
        return jnp.where(keep, 0.0, MASKED_SCORE).astype(jnp.float32)
    same = example_ids[:, :, None] == example_ids[:, None, :]  # (B, T, T): query, key
    keep = same & attention_mask.astype(bool)[:, None, :]  # (B, T, T)
    return jnp.where(keep, 0.0, MASKED_SCORE).astype(jnp.float32)[:, None]  # (B, 1, T, T)


def selected_queries_bias(attention_mask: jax.Array, example_ids: jax.Array,
                          query_index: jax.Array) -> jax.Array:
    """Bias for the packed last layer that attends from a few tokens only (the [CLS] of each
    example, SelfAttention's query_index): the K queries and all B*T keys form one sequence, and
    a query sees the real keys of its own example. -> (1, 1, K, B*T) float32."""
    key_ids = example_ids.reshape(-1)  # (B*T,)
    query_ids = key_ids[query_index]  # (K,)
    keep = (query_ids[:, None] == key_ids[None, :]) & attention_mask.reshape(-1).astype(bool)[None]
    return jnp.where(keep, 0.0, MASKED_SCORE).astype(jnp.float32)[None, None]  # (1, 1, K, B*T)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head ALiBi slopes (Press et al. 2022, "Train Short, Test Long", Section 3).

    For n a power of two: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8). Otherwise
    the paper's recipe: the slopes of the largest power of two m < n, then every other slope
    of 2m for the n - m heads left. float32 (N,)."""
    def powers_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    m = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = powers_of_two(m) + powers_of_two(2 * m)[0::2][:num_heads - m]
    return np.asarray(slopes, np.float32)


def position_distance(q_positions: jax.Array, k_positions: jax.Array) -> jax.Array:
    """|p_q - p_k| (B or 1, n, T) float32 from positions (B or 1, n) and (B or 1, T)."""
    return jnp.abs(q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)


def alibi_bias(distance: jax.Array, num_heads: int) -> jax.Array:
    """-slope_h * |p_q - p_k|: the symmetric (bidirectional) ALiBi of MosaicBERT. -> (B|1, N, n, T)."""
    return -jnp.asarray(alibi_slopes(num_heads))[None, :, None, None] * distance[:, None]


def window_bias(distance: jax.Array, half_window: int) -> jax.Array:
    """0 within half_window positions, MASKED_SCORE beyond. -> (B|1, 1, n, T) float32."""
    return jnp.where(distance <= half_window, 0.0, MASKED_SCORE).astype(jnp.float32)[:, None]


def rotary_angles(seq_len: int, head_dim: int, base: float = 10000.0,
                  positions: jax.Array | None = None) -> jax.Array:
    """(T, D/2) rotation angles p * base^(-2i/D) of RoFormer (Su et al. 2021) for p = 0..T-1,
    or (B, T, D/2) for given per-token positions (B, T) (packed rows restart at 0)."""
    inv_freq = 1.0 / base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)  # (D/2,)
    if positions is not None:
        return positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, D/2)
    return jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # (T, D/2)


def rotate(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotates feature pairs (i, i + D/2) of x (B, T, N, D) by angles (T, D/2) or (B, T, D/2).

    Pairs are the two halves of the head ("rotate half", as GPT-NeoX and cramming), not
    interleaved neighbours; both are rotations, so norms and relative-position dot products
    behave the same.
    """
    half = x.shape[-1] // 2
    angles = angles[None] if angles.ndim == 2 else angles  # (1 or B, T, D/2)
    cos = jnp.cos(angles)[:, :, None, :]  # (1 or B, T, 1, D/2)
    sin = jnp.sin(angles)[:, :, None, :]  # (1 or B, T, 1, D/2)
    x32 = x.astype(jnp.float32)
    first, second = x32[..., :half], x32[..., half:]  # (B, T, N, D/2) each
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)  # (B, T, N, D)


def rotary_qk(q: jax.Array, k: jax.Array, q_positions: jax.Array | None = None,
              k_positions: jax.Array | None = None, base: float = 10000.0
              ) -> tuple[jax.Array, jax.Array]:
    """Queries may be the first n < T positions only (SelfAttention's num_queries). Given
    positions (B, n) and (B, T) (packed rows), each token turns by its own position. `base` is
    the layer's rotary theta (ModernBERT: one for global layers, one for local ones)."""
    if k_positions is None:
        angles = rotary_angles(k.shape[1], k.shape[-1], base)  # (T, D/2)
        return rotate(q, angles[:q.shape[1]]), rotate(k, angles)
    head_dim = k.shape[-1]
    return (rotate(q, rotary_angles(q.shape[1], head_dim, base, positions=q_positions)),
            rotate(k, rotary_angles(k.shape[1], head_dim, base, positions=k_positions)))


def unchanged_qk(q: jax.Array, k: jax.Array, q_positions: jax.Array | None = None,
                 k_positions: jax.Array | None = None, base: float = 10000.0
                 ) -> tuple[jax.Array, jax.Array]:
    return q, k


# position_embedding knob, attention side: only rotary touches queries and keys (ALiBi biases
# the scores instead: SelfAttention adds alibi_bias).
QK_POSITION_TRANSFORMS: dict[str, Callable] = {
    "learned": unchanged_qk,
    "sinusoidal": unchanged_qk,
    "scaled_sinusoidal": unchanged_qk,
    "rotary": rotary_qk,
    "alibi": unchanged_qk,
    "none": unchanged_qk,
}


def attention_probs(q: jax.Array, k: jax.Array, bias: jax.Array) -> jax.Array:
    """Softmax(q k^T / sqrt(D) + bias) in float32. q, k: (B, T, N, D); bias (B, 1 or N, 1 or T, T)."""
    q = q / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)  # (B, N, T, T)
    return jax.nn.softmax(scores + bias, axis=-1)


def weighted_values(probs: jax.Array, v: jax.Array) -> jax.Array:
    """probs (B, N, T, T) x v (B, T, N, D) -> (B, T, N, D)."""
    return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v)


def explicit_attention(q, k, v, bias, dropout: Callable[[jax.Array], jax.Array],
                       half_window: int | None = None) -> jax.Array:
    """Einsum scores, float32 softmax, dropout on the weights: (B, T, N, D) -> (B, T, N, D).
    A sliding window is already in `bias` (half_window is for the fused kernel only)."""
    probs = dropout(attention_probs(q, k, bias))  # (B, N, T, T)
    return weighted_values(probs, v)


def fused_attention(q, k, v, bias, dropout: Callable[[jax.Array], jax.Array],
                    half_window: int | None = None) -> jax.Array:
    """jax.nn.dot_product_attention, which has no dropout: only used when dropout is inactive.
    cuDNN's fused kernel where attention_select.choose allows it (bf16/fp16 on a CUDA GPU, head
    size a multiple of 8, ...), else XLA's; a cuDNN refusal at trace time falls back to XLA.
    half_window: its local_window_size (row indices; equal to per-example positions because a
    packed example's tokens are contiguous and cross-example pairs are masked by `bias`). cuDNN
    windows only the left side, so there the two-sided window is folded into the bias."""
    case = AttentionCase(dtype=jnp.dtype(q.dtype).name, head_dim=q.shape[-1], has_dropout=False,
                         mask=bias_kind(bias), query_len=q.shape[1], key_len=k.shape[1],
                         two_sided_window=half_window is not None, **device_facts())
    choice = choose(case)
    if choice.window_in_bias:
        rows = jnp.arange(q.shape[1])[None]  # (1, T): queries and keys are the same rows here
        bias = bias + window_bias(position_distance(rows, rows), half_window)  # (B, 1|N, T, T)
    return dot_product_attention(q, k, v, bias, choice, half_window)


def bias_kind(bias: jax.Array) -> str:
    """attention_select's mask kind of an additive bias (B|1, 1|N, 1|n, T): per-key padding,
    a packed block-diagonal one, or anything per head (ALiBi)."""
    if bias.shape[1] != 1:
        return "bias"
    return "padding" if bias.shape[2] == 1 else "packed"


# attention_kernel: how the same attention is computed (see BertConfig.attention_kernel).
# "auto" and "fused" both take the fused kernel unless attention dropout is active (SelfAttention
# routes that case to "explicit", the only kernel with dropout).
ATTENTION_KERNELS: dict[str, Callable] = {
    "explicit": explicit_attention, "fused": fused_attention, "auto": fused_attention}


# One (H, 3H) matmul for query, key and value instead of three (H, H) ones (see SelfAttention).
# A module constant, not a config knob: it changes how, never what, is computed; the benchmark
# in experiments/bench/profile_step.py flips it to measure both.
FUSED_QKV = True


class ProjectionParams(nn.Module):
    """The kernel (H, H) and bias (H,) of one projection, declared exactly as nn.Dense declares
    them (same names, order, initialiser and dtype, so checkpoints and seeded initialisations are
    unchanged), but returned rather than applied: SelfAttention multiplies by all three at once."""

    config: BertConfig

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        """(kernel, bias); the bias is zeros (not a param) when config.attention_bias is off."""
        size = self.config.hidden_size
        kernel = self.param("kernel", bert_initializer(self.config.initializer_range),
                            (size, size), jnp.float32)
        if not self.config.attention_bias:
            return kernel, jnp.zeros((size,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (size,), jnp.float32)
        return kernel, bias


class SelfAttention(nn.Module):
    """query/key/value projections and attention over them. Scope: .../attention/self.

    Returns the per-token context (B, T, H) before the output projection, which belongs to
    the residual sub-layer (`attention/output/dense`) as in the original checkpoint.

    layer_index picks the layer's attention pattern (config.is_global_layer) and rotary theta.
    """

    config: BertConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array, *, deterministic: bool = True,
                 num_queries: int | None = None, positions: jax.Array | None = None,
                 query_index: jax.Array | None = None) -> jax.Array:
        """num_queries=n attends from the first n positions only (keys and values still cover
        all T): a classifier's last layer needs [CLS] alone. Output (B, n, H).

        positions (B, T): per-token positions for rotary (packed rows); None: 0..T-1.
        query_index (K,): flat indices into the B*T tokens to attend from (each packed
        example's [CLS]); the B rows then act as ONE sequence of B*T keys and `bias` must be
        selected_queries_bias's (1, 1, K, B*T). Output (1, K, H)."""
        config = self.config
        q_positions = None
        if query_index is not None:
            x = x.reshape(1, -1, x.shape[-1])  # (1, B*T, H): the rows as one sequence
            positions = positions.reshape(1, -1)  # (1, B*T)
            q_positions = positions[:, query_index]  # (1, K)
            num_queries = query_index.shape[0]
        elif positions is not None:
            q_positions = positions if num_queries is None else positions[:, :num_queries]
        batch, seq_len, _ = x.shape
        heads = lambda length: (batch, length, config.num_heads, config.head_dim)
        n = seq_len if num_queries is None else num_queries
        # The tokens queries come from: the first n, or the selected ones.
        select = lambda rows: rows[:, query_index] if query_index is not None else rows[:, :n]

        if FUSED_QKV:
            params = [ProjectionParams(config, name=name)() for name in ("query", "key", "value")]
            dtype = compute_dtype(config)
            kernels = [p[0].astype(dtype) for p in params]  # (H, H) each
            offsets = [p[1].astype(dtype) for p in params]  # (H,) each
            x = x.astype(dtype)
            if n == seq_len and query_index is None:
                qkv = jnp.dot(x, jnp.concatenate(kernels, axis=1)) + jnp.concatenate(offsets)
                q, k, v = (y.reshape(heads(n)) for y in jnp.split(qkv, 3, axis=-1))  # (B,T,N,D)
            else:
                q = (jnp.dot(select(x), kernels[0]) + offsets[0]).reshape(heads(n))  # (B, n, N, D)
                kv = jnp.dot(x, jnp.concatenate(kernels[1:], axis=1)) + jnp.concatenate(offsets[1:])
                k, v = (y.reshape(heads(seq_len)) for y in jnp.split(kv, 2, axis=-1))  # (B,T,N,D)
        else:
            def project(name: str, rows: jax.Array) -> jax.Array:
                y = nn.Dense(config.hidden_size, use_bias=config.attention_bias,
                             kernel_init=bert_initializer(config.initializer_range),
                             dtype=compute_dtype(config), name=name)(rows)  # (B, T, H)
                return y.reshape(heads(rows.shape[1]))  # (B, T, N, D)

            q, k, v = project("query", select(x)), project("key", x), project("value", x)
        is_global = config.is_global_layer(self.layer_index)
        theta = (config.rotary_theta if is_global or config.local_rotary_theta is None
                 else config.local_rotary_theta)
        q, k = QK_POSITION_TRANSFORMS[config.position_embedding](q, k, q_positions, positions,
                                                                 base=theta)
        dropout_active = not deterministic and config.attention_dropout > 0.0
        kernel_name = "explicit" if dropout_active else config.attention_kernel
        half_window = None if is_global else config.local_window // 2
        # The fused kernel windows by row index: right when queries and keys are the same rows.
        fused_window = (half_window if kernel_name != "explicit" and query_index is None
                        and n == seq_len else None)
        alibi = config.position_embedding == "alibi"
        if alibi or (half_window is not None and fused_window is None):
            k_pos = positions if positions is not None else jnp.arange(seq_len)[None]  # (B|1, T)
            q_pos = q_positions if q_positions is not None else jnp.arange(n)[None]  # (B|1, n)
            distance = position_distance(q_pos, k_pos)  # (B|1, n, T)
            if alibi:
                bias = bias + alibi_bias(distance, config.num_heads)  # (B, N, n, T)
            if half_window is not None and fused_window is None:
                bias = bias + window_bias(distance, half_window)  # (B, 1|N, n, T)
        dropout = dropout_layer(config.attention_dropout, config.dropout_impl,
                                deterministic=deterministic)
        context = ATTENTION_KERNELS[kernel_name](q, k, v, bias, dropout, fused_window)  # (B,n,N,D)
        return context.reshape(batch, n, config.hidden_size)  # (B, n, H)
