"""WordPiece inside XLA: UTF-8 bytes in, token ids out, the same ids as `bertlab.text.tokenizer`.

`encode(tables, byte_array, lengths, max_tokens=T)` is a pure, jit-compatible function with
static shapes over the tables of `bertlab.text.device.tables`. Four stages:

1. Decode (parallel over bytes). Every byte that starts a well-formed UTF-8 sequence yields its
   code point; everything else (continuation bytes, invalid or truncated sequences, padding)
   yields nothing, which is what Python's errors="replace" decoding followed by the original's
   removal of U+FFFD amounts to. Typed special tokens are found on the raw bytes.
2. Normalise (parallel). A two-level table maps each code point to a result: how it splits the
   text and which 0..3 normalised characters it becomes. These go into the character's own byte
   slots, so (B, N) bytes become (B, N + 1) slots (a space after each text closes its last
   word). Uncased, a capital sigma takes the final form where Python's str.lower() would (two
   cumulative scans, run only when the batch holds a capital sigma).
3. LinMaxMatch (one loop over the slots, vectorised over the batch, stopping after the longest
   text). The carry holds each row's trie state and output position; a character follows failure
   links while the trie has
   no edge for it (a `while_loop` that runs while any row still needs a hop, usually 0 or 1
   times). A step writes no ids: it records (output position, state), because what LinMaxMatch
   pops in a step is always a prefix of that state's precomputed chain. A word that fails (no
   match, or longer than the limit) rewinds the position to its first token and records [UNK]
   there, so its earlier records are overwritten.
4. Compact (parallel). Each output position takes the last record that starts at or before it
   (a scatter-max of record numbers, then a cumulative max) and gathers its id from the pool.

The pretraining loop uses it through `bertlab.data.pretraining.on_device` (data.tokenize_on_device).

Bytes vs code points: see the `tokenizer_tables` docstring. Known differences from the host
tokenizer are in `DIVERGENCES` (and tested).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bertlab.text.device.tables import (BLOCK_BITS, BOUNDARY, CASED, CJK, DROP, INNER_SPACE,
                                      LETTER, MAX_EXPANSION, NO_LINK, PUNCT, ROOT, SPACE,
                                      TRANSPARENT, WORD, WordPieceTables, unpack_info)

SPECIAL = 4  # raw kind of the first byte of a typed special token (its other bytes are DROP)

DIVERGENCES = {
    "canonical-reordering": (
        "Uncased only. NFD sorts each run of combining marks by combining class; a per-character "
        "table cannot see neighbours, so when two marks that survive accent stripping (spacing "
        "marks of non-zero class, 25 code points in Unicode 14: U+1D165..U+1D172 musical stems "
        "and flags, U+302E/U+302F Hangul tone marks, a few Mc viramas) follow each other out of "
        "canonical order, they keep the typed order here and the pieces can differ."),
    "byte-truncation": (
        "encode_texts cuts a text longer than max_bytes at a character boundary and reports it as "
        "overflow; the last word may then be a prefix of the host's."),
    "unencodable-text": (
        "Strings holding lone surrogates have no UTF-8 form; encode_texts raises on them (the "
        "host tokenizes them as unknown characters)."),
}


class Encoded(NamedTuple):
    token_ids: jax.Array   # (B, T) int32, [PAD] after num_tokens
    num_tokens: jax.Array  # (B,) int32, at most T
    overflow: jax.Array    # (B,) bool: the text has more than T tokens (the first T are kept)


# --------------------------------------------------------------------------------------------
# Stages 1 + 2: bytes -> character slots.
# --------------------------------------------------------------------------------------------

def _shift_left(x: jax.Array, k: int, fill=0) -> jax.Array:
    """x[:, p + k] at p (fill past the end)."""
    return jnp.pad(x[:, k:], ((0, 0), (0, k)), constant_values=fill) if k else x


def _shift_right(x: jax.Array, k: int, fill=0) -> jax.Array:
    """x[:, p - k] at p (fill before the start)."""
    return jnp.pad(x[:, :x.shape[1] - k], ((0, 0), (k, 0)), constant_values=fill) if k else x


def decode_utf8(byte_array: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, N) bytes -> (code point, sequence length) at every byte that starts a well-formed
    UTF-8 sequence inside `lengths`, length 0 elsewhere. Python's rules: no overlong forms, no
    surrogates, nothing above U+10FFFF."""
    n = byte_array.shape[1]
    inside = jnp.arange(n)[None, :] < lengths[:, None]                    # (B, N)
    b0 = jnp.where(inside, byte_array.astype(jnp.int32), 0)
    b1, b2, b3 = (_shift_left(b0, k) for k in (1, 2, 3))
    cont1, cont2, cont3 = ((b & 0xC0) == 0x80 for b in (b1, b2, b3))
    one = b0 < 0x80
    two = (b0 >= 0xC2) & (b0 <= 0xDF) & cont1
    three = ((b0 >= 0xE0) & (b0 <= 0xEF) & cont1 & cont2
             & ~((b0 == 0xE0) & (b1 < 0xA0)) & ~((b0 == 0xED) & (b1 >= 0xA0)))
    four = ((b0 >= 0xF0) & (b0 <= 0xF4) & cont1 & cont2 & cont3
            & ~((b0 == 0xF0) & (b1 < 0x90)) & ~((b0 == 0xF4) & (b1 >= 0x90)))
    tail = lambda b, shift: (b & 0x3F) << shift
    cp = jnp.where(one, b0, 0)
    cp = jnp.where(two, ((b0 & 0x1F) << 6) | tail(b1, 0), cp)
    cp = jnp.where(three, ((b0 & 0x0F) << 12) | tail(b1, 6) | tail(b2, 0), cp)
    cp = jnp.where(four, ((b0 & 0x07) << 18) | tail(b1, 12) | tail(b2, 6) | tail(b3, 0), cp)
    seq_len = one * 1 + two * 2 + three * 3 + four * 4
    return cp, jnp.where(inside, seq_len, 0)


def _pack4(x: jax.Array, start: int) -> jax.Array:
    """Bytes p+start .. p+start+3 as one little-endian int32 at every p (zeros past the end)."""
    return functools.reduce(jnp.bitwise_or, [_shift_left(x, start + j) << (8 * j) for j in range(4)])


def _special_matches(tables: WordPieceTables, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(index + 1 of the special token starting at each byte, or 0; the bytes a match covers
    after its first). Compares 4 bytes at a time; matches cannot overlap (checked when the
    tables are built). `x`: (B, N) int32 bytes, zero past each row's length."""
    which = jnp.zeros(x.shape, jnp.int32)
    longest = max(map(len, tables.special_tokens), default=0)
    words = [_pack4(x, start) for start in range(0, longest, 4)]             # each (B, N)
    for k, token in enumerate(tables.special_tokens):
        data = token.encode("ascii")
        hit = None
        for w, start in enumerate(range(0, len(data), 4)):
            chunk = data[start:start + 4]
            mask = (1 << (8 * len(chunk))) - 1
            value = int.from_bytes(chunk, "little")
            same = ((words[w] & np.int32(np.uint32(mask).view(np.int32))) ==
                    np.uint32(value).view(np.int32))
            hit = same if hit is None else hit & same
        which = jnp.where(hit, k + 1, which)
    length = jnp.zeros(x.shape, jnp.int32)
    for k, token in enumerate(tables.special_tokens):
        length = jnp.where(which == k + 1, len(token), length)
    covered = functools.reduce(
        jnp.logical_or, [_shift_right(length > j, j, fill=False) for j in range(1, longest)],
        jnp.zeros(x.shape, bool))
    return which, covered


def _final_sigma(sigma_class: jax.Array, capital_sigma: jax.Array) -> jax.Array:
    """Where str.lower() writes 'ς': at a capital sigma whose previous non-case-ignorable
    character in the chunk is cased and whose next one is not (or the chunk ends). Runs only
    when the batch holds a capital sigma at all."""
    batch, n = sigma_class.shape
    significant = sigma_class >= CASED  # CASED, UNCASED or BOUNDARY
    # index * 2 + cased: the cumulative max / min finds the nearest significant character and
    # carries whether it is cased in its lowest bit.
    tagged = jnp.arange(n, dtype=jnp.int32) * 2 + (sigma_class == CASED)
    last = jax.lax.cummax(jnp.where(significant, tagged, -1), axis=1)
    first = jax.lax.cummin(jnp.where(significant, tagged, 2 * n), axis=1, reverse=True)
    prev = _shift_right(last, 1, fill=-1)                                  # strictly before
    prev_cased = (prev >= 0) & (prev % 2 == 1)
    next_cased = _shift_left(first, 1, fill=2 * n) % 2 == 1                 # strictly after
    return capital_sigma & prev_cased & ~next_cased


def character_slots(tables: WordPieceTables, byte_array: jax.Array,
                    lengths: jax.Array) -> jax.Array:
    """(B, N) bytes -> (B, N + 1) int32 slots for the scan: raw | payload << 3, where raw is
    DROP / SPACE / CJK / WORD / SPECIAL at the first byte of each raw character and payload is
    1 + (symbol * 4 + LETTER / PUNCT / INNER_SPACE) for a normalised character, 1 + k at the
    start of special token k, 0 for nothing."""
    cp, seq_len = decode_utf8(byte_array, lengths)
    inside = jnp.arange(byte_array.shape[1])[None, :] < lengths[:, None]
    which, covered = _special_matches(tables, jnp.where(inside, byte_array.astype(jnp.int32), 0))
    block = tables.cp_block[cp >> BLOCK_BITS]
    result = tables.cp_result[block, cp & ((1 << BLOCK_BITS) - 1)]             # (B, N)
    is_char = (seq_len > 0) & ~covered & (which == 0)
    result = jnp.where(is_char, result, 0)
    raw, sigma_class, capital_sigma, num_chars = unpack_info(tables.result_info[result])
    raw = jnp.where(which > 0, SPECIAL, jnp.where(is_char, raw, DROP))
    num_chars = jnp.where(is_char, num_chars, 0)
    chars = [tables.result_chars[:, j][result] for j in range(MAX_EXPANSION)]  # each (B, N)
    # XLA would otherwise fuse the lookups into every shifted use below and redo them.
    raw, num_chars, chars, which = jax.lax.optimization_barrier((raw, num_chars, chars, which))
    if tables.lower_case:
        sigma_class = jnp.where(is_char, sigma_class, jnp.where(which > 0, BOUNDARY, TRANSPARENT))
        capital_sigma = is_char & (capital_sigma == 1)
        final = jax.lax.cond(jnp.any(capital_sigma), _final_sigma,
                             lambda _, c: jnp.zeros_like(c), sigma_class, capital_sigma)
        chars[0] = jnp.where(final, tables.final_sigma_symbol * 4 + LETTER, chars[0])
    # Character j of the code point at byte p goes to slot p + j (j < its UTF-8 length).
    payload = which
    for j in range(MAX_EXPANSION):
        here = _shift_right(num_chars > j, j, fill=False)
        payload = jnp.where(here, _shift_right(chars[j], j) + 1, payload)
    slots = jnp.pad(raw | (payload << 3), ((0, 0), (0, 1)))                    # (B, N + 1)
    # A space right after each row's text closes its last word, so the scan may stop there.
    after = jnp.arange(slots.shape[1])[None, :] == lengths[:, None]
    return jnp.where(after, SPACE, slots)


# --------------------------------------------------------------------------------------------
# Stage 3: LinMaxMatch over the slots.
# --------------------------------------------------------------------------------------------

def _has_edge(tables: WordPieceTables, state: jax.Array, symbol: jax.Array) -> jax.Array:
    return tables.check[tables.base[state] + symbol] == state


def _advance(tables: WordPieceTables, state, symbol, active, failed):
    """One character of LinMaxMatch for every row: follow failure links (counting the pieces
    they pop) until the trie has an edge for `symbol`, then take it. A null link fails the word."""
    def hop(carry):
        s, popped, dead, need = carry
        link = tables.fail[s]
        dead = dead | (need & (link == NO_LINK))
        go = need & (link != NO_LINK)
        popped = popped + jnp.where(go, tables.fail_pops[s], 0)
        s = jnp.where(go, link, s)
        return s, popped, dead, go & ~_has_edge(tables, s, symbol)

    need = active & ~_has_edge(tables, state, symbol)
    start = (state, jnp.zeros_like(state), failed, need)
    state, popped, failed, _ = jax.lax.while_loop(lambda c: jnp.any(c[3]), hop, start)
    state = jnp.where(active & ~failed, tables.base[state] + symbol, state)
    return state, popped, failed


class _Carry(NamedTuple):
    state: jax.Array       # trie cell (ROOT between words)
    length: jax.Array      # characters in the current word
    failed: jax.Array      # the current word has no tokenisation: it becomes [UNK]
    in_word: jax.Array
    prev_punct: jax.Array  # the last character was punctuation (a word of its own)
    prev_cjk: jax.Array    # the last raw character was a CJK ideograph (a chunk of its own)
    position: jax.Array    # output position of the next token
    word_start: jax.Array  # output position of the current word's first token


def _scan_records(tables: WordPieceTables, slots: jax.Array, limit: jax.Array):
    """Runs LinMaxMatch along the slots. Per slot, two records in output order, each an
    (output position, state) pair whose tokens are a prefix of chain(state): the end of the
    word this slot closes, then this slot's own pops. Position -1 marks no record."""
    batch = slots.shape[0]
    unk = tables.unk_state

    def step(c: _Carry, slot):
        raw, payload = slot & 7, slot >> 3                                  # each (B,)
        has_char = (raw != SPECIAL) & (payload > 0)
        symbol = jnp.where(has_char, (payload - 1) >> 2, 0)
        kind = (payload - 1) & 3
        raw_start = raw != DROP
        chunk_ends = raw_start & ((raw != WORD) | c.prev_cjk)
        ends = c.in_word & (chunk_ends | (has_char & ((kind != LETTER) | c.prev_punct)))
        end_len = tables.end_len[c.state]
        bad = c.failed | (c.length > tables.max_chars_per_word) | (end_len == 0)
        end_at = jnp.where(ends, jnp.where(bad, c.word_start, c.position), -1)
        end_state = jnp.where(bad, unk, c.state)
        position = jnp.where(ends, jnp.where(bad, c.word_start + 1, c.position + end_len),
                             c.position)
        in_word = c.in_word & ~ends
        state = jnp.where(ends, ROOT, c.state)
        length = jnp.where(ends, 0, c.length)
        failed = c.failed & ~ends

        consume = has_char & (kind != INNER_SPACE)
        word_start = jnp.where(consume & ~in_word, position, c.word_start)
        in_word = in_word | consume
        active = consume & ~failed
        own_state, own_at = state, position
        state, popped, failed = _advance(tables, state, symbol, active, failed)
        is_special = raw == SPECIAL
        own_count = jnp.where(is_special, 1, popped)
        own_at = jnp.where(own_count > 0, own_at, -1)
        own_state = jnp.where(is_special, unk + payload, own_state)
        carry = _Carry(state=state, length=length + consume, failed=failed, in_word=in_word,
                       prev_punct=jnp.where(has_char, kind == PUNCT, c.prev_punct),
                       prev_cjk=jnp.where(raw_start, raw == CJK, c.prev_cjk),
                       position=position + own_count, word_start=word_start)
        return carry, (end_at, end_state, own_at, own_state)

    def body(i, loop):
        carry, records = loop
        carry, new = step(carry, jax.lax.dynamic_index_in_dim(slots_t, i, keepdims=False))
        return carry, tuple(r.at[i].set(n) for r, n in zip(records, new))

    slots_t = slots.T                                                       # (S, B)
    num_slots = slots_t.shape[0]
    zeros = jnp.zeros((batch,), jnp.int32)
    false = jnp.zeros((batch,), bool)
    init = _Carry(zeros + ROOT, zeros, false, false, false, false, zeros, zeros)
    none = jnp.full((num_slots, batch), -1, jnp.int32)                      # no record
    # Slots past the longest text hold nothing: stop after the one that closes its last word.
    last, records = jax.lax.fori_loop(0, jnp.minimum(limit + 1, num_slots), body,
                                      (init, (none, none + 1, none, none + 1)))
    end_at, end_state, own_at, own_state = (r.T for r in records)           # each (B, S)
    at = jnp.stack([end_at, own_at], axis=-1).reshape(batch, 2 * num_slots)  # (B, 2S)
    state = jnp.stack([end_state, own_state], axis=-1).reshape(batch, 2 * num_slots)
    return at, state, last.position


# --------------------------------------------------------------------------------------------
# Stage 4: records -> token ids.
# --------------------------------------------------------------------------------------------

def _compact(tables: WordPieceTables, at, state, total, max_tokens: int) -> Encoded:
    """Output t comes from the last record (in record order) starting at or before t."""
    batch, num_records = at.shape
    record = jnp.broadcast_to(jnp.arange(num_records, dtype=jnp.int32), (batch, num_records))
    target = jnp.where((at >= 0) & (at < max_tokens), at, max_tokens)       # T: dropped
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, num_records))
    owner = jnp.full((batch, max_tokens), -1, jnp.int32).at[rows, target].max(record, mode="drop")
    owner = jnp.maximum(jax.lax.cummax(owner, axis=1), 0)                   # (B, T)
    position = jnp.arange(max_tokens, dtype=jnp.int32)[None, :]
    offset = position - jnp.take_along_axis(at, owner, axis=1)
    ids = tables.pool[tables.chain_start[jnp.take_along_axis(state, owner, axis=1)] + offset]
    ids = jnp.where(position < total[:, None], ids, tables.pad_id)
    return Encoded(ids.astype(jnp.int32), jnp.minimum(total, max_tokens), total > max_tokens)


def encode(tables: WordPieceTables, byte_array: jax.Array, lengths: jax.Array, *,
           max_tokens: int) -> Encoded:
    """(B, N) uint8 UTF-8 text and (B,) int32 byte lengths -> (B, T) int32 token ids, (B,)
    token counts, (B,) overflow flags. Pure and jittable (`max_tokens` static); the ids are
    `Tokenizer.encode(text)[:T]` of the tokenizer the tables were built from."""
    lengths = jnp.clip(lengths, 0, byte_array.shape[1]).astype(jnp.int32)
    slots = character_slots(tables, byte_array, lengths)
    at, state, total = _scan_records(tables, slots, jnp.max(lengths))
    return _compact(tables, at, state, total, max_tokens)


encode_jit = jax.jit(encode, static_argnames=("max_tokens",))


# --------------------------------------------------------------------------------------------
# Host side.
# --------------------------------------------------------------------------------------------

def texts_to_bytes(texts: Sequence[str], max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strings -> ((B, max_bytes) uint8 zero-padded UTF-8, (B,) int32 lengths, (B,) bool cut).
    A longer text is cut at the last character boundary that fits."""
    byte_array = np.zeros((len(texts), max_bytes), dtype=np.uint8)
    lengths = np.zeros(len(texts), dtype=np.int32)
    cut = np.zeros(len(texts), dtype=bool)
    for row, text in enumerate(texts):
        data = text.encode("utf-8")
        if len(data) > max_bytes:
            end = max_bytes
            while end > 0 and (data[end] & 0xC0) == 0x80:  # do not split a character
                end -= 1
            data, cut[row] = data[:end], True
        byte_array[row, :len(data)] = np.frombuffer(data, dtype=np.uint8)
        lengths[row] = len(data)
    return byte_array, lengths, cut


def encode_texts(tables: WordPieceTables, texts: Sequence[str], max_bytes: int,
                 max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strings -> numpy (token_ids (B, T), num_tokens (B,), overflow (B,)) through the jitted
    encoder; overflow also marks texts cut to max_bytes. Each new (B, max_bytes, max_tokens)
    compiles once. Pass device-resident tables (`jax.device_put(tables)`) to avoid copying
    them on every call."""
    if isinstance(texts, str):
        raise TypeError("encode_texts takes a sequence of strings; wrap a single text in a list")
    byte_array, lengths, cut = texts_to_bytes(texts, max_bytes)
    if isinstance(tables.pool, jax.Array):  # same placement as the tables: one compilation
        byte_array, lengths = jax.device_put((byte_array, lengths), tables.pool.sharding)
    out = encode_jit(tables, byte_array, lengths, max_tokens=max_tokens)
    return np.asarray(out.token_ids), np.asarray(out.num_tokens), np.asarray(out.overflow) | cut
