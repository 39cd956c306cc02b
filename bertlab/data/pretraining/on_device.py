"""Raw-text batches -> the token batches of the host path, on the device (data.tokenize_on_device).

`tokenize_batch` is the first stage of every pretraining step when a run reads raw-text shards
(text_shards.py): it tokenises the A and B texts of the batch with the jitted LinMaxMatch encoder
(tokenizer_jax.encode, both segments of all rows in one call), keeps tokens skip..skip + keep of
each (the host decided the cut; see segment_text.py for why), and packs
`[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]` when B is empty) with the segment ids and attention
mask that ShardedExamples.take gives, padded to max_seq_length. The masking and the train step
that follow are the host path's, unchanged, so a run gives the same losses either way.

It also counts the segments whose kept ids do not hash to the checksum the host stored: zero
unless the text hits one of tokenizer_jax.DIVERGENCES.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bertlab.text.device import tokenizer as tokenizer_jax
from bertlab.data.pretraining.text_shards import CHECKSUM_MULTIPLIER
from bertlab.text.device.tables import WordPieceTables


def device_checksums(ids: jax.Array, keep: jax.Array) -> jax.Array:
    """text_shards.segment_checksum of ids[..., :keep] for every row, in uint32 arithmetic
    (wrap-around is the mod 2**32 of the host's definition). ids (..., E), keep (...,)."""
    position = jnp.arange(ids.shape[-1], dtype=jnp.uint32)
    weights = (position + jnp.uint32(1)) * jnp.uint32(CHECKSUM_MULTIPLIER)     # (E,)
    terms = (ids.astype(jnp.uint32) + jnp.uint32(1)) * weights
    return jnp.sum(jnp.where(position < keep[..., None], terms, jnp.uint32(0)), axis=-1,
                   dtype=jnp.uint32)


def tokenize_batch(tables: WordPieceTables, raw: dict, *, max_seq_length: int, max_encoded: int,
                   cls_id: int, sep_id: int, pad_id: int) -> tuple[dict, jax.Array]:
    """TextExamples.take's dict (on the device) -> (the ShardedExamples.take dict: token_ids,
    segment_ids, attention_mask (B, T) int32, nsp_labels (B,), plus example_weights if raw has
    them; the number of segments whose ids differ from the host's)."""
    text = raw["text_bytes"]                                             # (B, 2, N)
    batch, _, width = text.shape
    encoded = tokenizer_jax.encode(tables, text.reshape(2 * batch, width),
                                   raw["text_lengths"].reshape(2 * batch),
                                   max_tokens=max_encoded)
    ids = encoded.token_ids.reshape(batch, 2, max_encoded)               # (B, 2, E)
    skip, keep = raw["skip"].astype(jnp.int32), raw["keep"].astype(jnp.int32)  # (B, 2)
    # The kept tokens of each segment, moved to the front: kept[b, s, j] = ids[b, s, skip + j].
    j = jnp.arange(max_encoded, dtype=jnp.int32)
    kept = jnp.take_along_axis(ids, jnp.minimum(skip[..., None] + j, max_encoded - 1), axis=2)
    produced = encoded.num_tokens.reshape(batch, 2)
    wrong = (produced < skip + keep) | (device_checksums(kept, keep) != raw["checksums"])

    len_a, len_b = keep[:, :1], keep[:, 1:]                              # (B, 1) each
    p = jnp.arange(max_seq_length, dtype=jnp.int32)[None, :]             # (1, T)
    length = jnp.where(len_b > 0, len_a + len_b + 3, len_a + 2)          # (B, 1)
    a_index = jnp.clip(p - 1, 0, max_encoded - 1)                        # (1, T) -> A token
    b_index = jnp.clip(p - len_a - 2, 0, max_encoded - 1)                # (B, T) -> B token
    from_a = jnp.take_along_axis(kept[:, 0], jnp.broadcast_to(a_index, (batch, max_seq_length)),
                                 axis=1)
    from_b = jnp.take_along_axis(kept[:, 1], b_index, axis=1)
    in_a = (p >= 1) & (p <= len_a)
    in_b = (p >= len_a + 2) & (p < len_a + 2 + len_b)
    token_ids = jnp.where(p == 0, cls_id, jnp.where(in_a, from_a, jnp.where(
        in_b, from_b, jnp.where(p < length, sep_id, pad_id))))
    out = {"token_ids": token_ids.astype(jnp.int32),
           "segment_ids": ((p >= len_a + 2) & (p < length)).astype(jnp.int32),
           "attention_mask": (p < length).astype(jnp.int32),
           "nsp_labels": raw["nsp_labels"].astype(jnp.int32)}
    if "example_weights" in raw:
        out["example_weights"] = raw["example_weights"]
    return out, jnp.sum(wrong)


def make_tokenize_fn(vocab, *, max_seq_length: int, max_encoded: int):
    """tokenize_batch with this vocabulary's special ids bound, jitted: (tables, raw) -> ..."""
    return jax.jit(functools.partial(tokenize_batch, max_seq_length=int(max_seq_length),
                                     max_encoded=int(max_encoded), cls_id=vocab.cls_id,
                                     sep_id=vocab.sep_id, pad_id=vocab.pad_id))


def host_reference(raw: dict, tokenizer, max_seq_length: int) -> dict:
    """What tokenize_batch must return, computed with the host tokenizer (tests, debugging)."""
    rows = len(raw["nsp_labels"])
    out = {"token_ids": np.full((rows, max_seq_length), tokenizer.vocab.pad_id, np.int32),
           "segment_ids": np.zeros((rows, max_seq_length), np.int32),
           "attention_mask": np.zeros((rows, max_seq_length), np.int32),
           "nsp_labels": np.asarray(raw["nsp_labels"], np.int32)}
    vocab = tokenizer.vocab
    for r in range(rows):
        segments = []
        for s in range(2):
            data = bytes(np.asarray(raw["text_bytes"][r, s, :raw["text_lengths"][r, s]]))
            skip, keep = int(raw["skip"][r, s]), int(raw["keep"][r, s])
            segments.append(tokenizer.encode(data.decode("utf-8"))[skip:skip + keep])
        a, b = segments
        ids = [vocab.cls_id, *a, vocab.sep_id] + ([*b, vocab.sep_id] if b else [])
        out["token_ids"][r, :len(ids)] = ids
        out["segment_ids"][r, len(a) + 2:len(ids)] = 1
        out["attention_mask"][r, :len(ids)] = 1
    return out
