"""WordPiece tokenisation exactly as the original BERT (google-research/bert tokenization.py).

The functions here and in bertlab.text.normalize are a readable transcription of the original:
normalise and split text the way BasicTokenizer does (normalize.py), then greedy
longest-match-first WordPiece with `##` continuations (here), over a vocabulary from
bertlab.text.vocab. They are the reference every faster path is tested against
(tests/test_tokenizer_parity.py compares them with transformers' `BertTokenizer` on real text;
bertlab.text.fast and bertlab.text.device must match them). This module also packs ids for the
model ([CLS] A [SEP] B [SEP], truncated as the original) and dispatches batches to the fast path.

Speed comes from one observation: after the text-level steps (drop control characters, map
whitespace, pad CJK ideographs) the text splits on whitespace into *chunks*, and every later step
(lower-casing, accent stripping, punctuation splitting, WordPiece) looks at one chunk alone. So a
chunk's ids depend on nothing else and can be memoised; real text repeats its chunks constantly.

Deliberate choices (see the README's tokenizer section for the full list of peer divergences):
- Special tokens typed in the text ("[MASK]", also glued as in "is [MASK].") stay whole, as in
  transformers; `split_special_tokens=True` splits them like any text, as the original does.
- No NFC step (transformers' BertTokenizer added one; the original, tf-text and the Rust tokenizer
  have none), and lower-casing is Python's str.lower() on the whole chunk, as the original runs on
  Python 3 (so a word-final capital sigma becomes "ς"; transformers lower-cases one char at a time).
- Words over 100 characters become [UNK] (transformers' limit; Google's code uses 200, settable).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
from typing import Iterable, Sequence

import numpy as np

from bertlab.text import fast as fast_path
# The vocabulary and normalisation names are re-exported: they lived in this module before
# bertlab.text.vocab and bertlab.text.normalize split off, and `from bertlab.text.tokenizer
# import load_vocab` (or clean_text, ...) keeps working for callers.
from bertlab.text.normalize import (CJK_RANGES, basic_tokenize, clean_text, is_cjk, is_control,
                                    is_punctuation, is_whitespace, pad_cjk, pre_tokenize,
                                    split_chunk, split_punctuation, strip_accents)
from bertlab.text.vocab import (CLS, CONTINUATION, MASK, PAD, SEP, SPECIAL_TOKENS, UNK, Vocab,
                                VocabError, infer_lower_case, load_vocab, save_vocab,
                                vocab_from_tokens)

__all__ = [
    # defined here
    "MAX_CHARS_PER_WORD", "CHUNK_CACHE_ENTRIES", "FAST_BATCH_THRESHOLD", "wordpiece",
    "decode_tokens", "special_token_pattern", "truncate_pair_lengths", "pack_ids", "ChunkCache",
    "Tokenizer",
    # re-exported from bertlab.text.normalize
    "CJK_RANGES", "basic_tokenize", "clean_text", "is_cjk", "is_control", "is_punctuation",
    "is_whitespace", "pad_cjk", "pre_tokenize", "split_chunk", "split_punctuation",
    "strip_accents",
    # re-exported from bertlab.text.vocab
    "CLS", "CONTINUATION", "MASK", "PAD", "SEP", "SPECIAL_TOKENS", "UNK", "Vocab", "VocabError",
    "infer_lower_case", "load_vocab", "save_vocab", "vocab_from_tokens",
]

MAX_CHARS_PER_WORD = 100  # transformers' and the Rust tokenizer's limit (Google's code: 200)
CHUNK_CACHE_ENTRIES = 1 << 20  # ~100 MB at most; cleared (not evicted one by one) when full


def wordpiece(word: str, vocab: Vocab, max_chars: int = MAX_CHARS_PER_WORD) -> list[str]:
    """Greedy longest-match-first split of one word; no match anywhere -> [UNK] for the word."""
    if len(word) > max_chars:
        return [UNK]
    pieces: list[str] = []
    start, n = 0, len(word)
    ids, longest = vocab.ids, vocab.longest
    while start < n:
        end = min(n, start + longest)  # longer candidates cannot be in the vocabulary
        piece = None
        while start < end:
            candidate = word[start:end]
            if start > 0:
                candidate = CONTINUATION + candidate
            if candidate in ids:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return [UNK]
        pieces.append(piece)
        start = end
    return pieces


def decode_tokens(tokens: Iterable[str]) -> str:
    """Joins `##` continuations onto the previous piece and words with single spaces."""
    return " ".join(tokens).replace(" " + CONTINUATION, "").strip()


@functools.lru_cache(maxsize=64)
def special_token_pattern(specials: tuple[str, ...]) -> re.Pattern | None:
    """Matches any of `specials` typed anywhere in raw text (longest first, like a trie)."""
    if not specials:
        return None
    alternatives = sorted(specials, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")


# --------------------------------------------------------------------------------------------
# Packing ids for the model: [CLS] A [SEP] (B [SEP]), truncated as the original does.
# --------------------------------------------------------------------------------------------

def truncate_pair_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after the original's _truncate_seq_pair: drop the last token of the longer side
    (of B on ties) until both fit in `budget`. Closed form, so a 10^6-token document is O(1)."""
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    gap = min(excess, abs(len_a - len_b))
    if len_a > len_b:
        len_a -= gap
    else:
        len_b -= gap
    excess -= gap
    # Equal lengths now: B loses first, then they alternate.
    return len_a - excess // 2, len_b - (excess + 1) // 2


def pack_ids(ids_a: Sequence[Sequence[int]], ids_b: Sequence[Sequence[int]] | None = None, *,
             max_length: int, vocab: Vocab) -> dict[str, np.ndarray]:
    """Token-id lists -> model inputs: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, padded with
    [PAD] to `max_length`. Singles keep their first max_length - 2 ids; pairs are truncated
    longest-first, one token at a time, as the original run_classifier does.

    Returns int32 arrays of shape (B, max_length): `token_ids`, `segment_ids` (0 for [CLS] A
    [SEP], 1 for B [SEP]) and `attention_mask` (1 on real tokens, 0 on padding)."""
    specials = 2 if ids_b is None else 3
    if max_length < specials:
        kind = "a single text" if ids_b is None else "a text pair"
        raise ValueError(f"max_length={max_length} cannot hold the {specials} special tokens "
                         f"of {kind}")
    if ids_b is not None and len(ids_b) != len(ids_a):
        raise ValueError(f"pack_ids: {len(ids_a)} first segments but {len(ids_b)} second segments")
    batch = len(ids_a)
    token_ids = np.full((batch, max_length), vocab.pad_id, dtype=np.int32)  # (B, L)
    segment_ids = np.zeros((batch, max_length), dtype=np.int32)
    attention_mask = np.zeros((batch, max_length), dtype=np.int32)
    cls_id, sep_id = vocab.cls_id, vocab.sep_id
    budget = max_length - specials
    for row, a in enumerate(ids_a):
        if ids_b is None:
            len_a, len_b, b = min(len(a), budget), 0, ()
        else:
            b = ids_b[row]
            len_a, len_b = truncate_pair_lengths(len(a), len(b), budget)
        sequence = [cls_id, *a[:len_a], sep_id]
        if ids_b is not None:
            sequence += [*b[:len_b], sep_id]
        n = len(sequence)
        token_ids[row, :n] = sequence
        attention_mask[row, :n] = 1
        if ids_b is not None:
            segment_ids[row, len_a + 2:n] = 1
    return {"token_ids": token_ids, "segment_ids": segment_ids, "attention_mask": attention_mask}


# --------------------------------------------------------------------------------------------
# The tokenizer: one vocabulary + casing, with a chunk memo.
# --------------------------------------------------------------------------------------------

class ChunkCache(dict):
    """chunk -> tuple of ids, filled on a miss. A dict subclass so the hot loop can stay in C:
    `map(cache.__getitem__, text.split())`. Cleared when full (bounded memory on huge corpora).
    The tokenizer keeps two: whitespace chunks, and the words punctuation splits them into
    ("nation," "nation." and "nation" share the WordPiece work for "nation")."""

    def __init__(self, encode_chunk, max_entries: int = CHUNK_CACHE_ENTRIES):
        super().__init__()
        self._encode_chunk = encode_chunk
        self._max_entries = max_entries

    def __missing__(self, chunk: str) -> tuple[int, ...]:
        if len(self) >= self._max_entries:
            self.clear()
        ids = self._encode_chunk(chunk)
        self[chunk] = ids
        return ids


# encode_batch hands batches of at least this many texts to bertlab.text.fast. Measured with
# `experiments/bench/tokenizer.py --threshold`: the fast path has no set-up cost and takes about a
# quarter of the pure path's time per text at every batch size, a batch of one included.
FAST_BATCH_THRESHOLD = 1


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """BasicTokenizer + WordPiece over one vocabulary. Immutable: the only state is two memos
    (chunk -> ids, word -> ids) that never change an answer. Pickles with its memos, so worker
    processes start warm."""

    vocab: Vocab
    lower_case: bool = True
    max_chars_per_word: int = MAX_CHARS_PER_WORD
    split_special_tokens: bool = False
    chunk_cache: ChunkCache = dataclasses.field(init=False, repr=False, compare=False)
    word_cache: ChunkCache = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "chunk_cache", ChunkCache(self._encode_chunk_uncached))
        object.__setattr__(self, "word_cache", ChunkCache(self._encode_word_uncached))

    @classmethod
    def from_file(cls, path: str | os.PathLike, lower_case: bool | None = None,
                  **options) -> "Tokenizer":
        """Loads vocab.txt; casing inferred from the vocabulary unless given. A tokenizer.json
        (ModernBERT's BPE) gives a bertlab.text.bpe.BpeTokenizer with the same interface."""
        from bertlab.text import bpe

        if bpe.is_tokenizer_json(path):
            return bpe.BpeTokenizer.from_file(path, lower_case)
        vocab = load_vocab(path)
        if lower_case is None:
            lower_case = infer_lower_case(vocab)
        return cls(vocab, lower_case, **options)

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The special tokens this tokenizer keeps whole when typed in text (none if split)."""
        if self.split_special_tokens:
            return ()
        return tuple(t for t in SPECIAL_TOKENS if t in self.vocab)

    def _encode_chunk_uncached(self, chunk: str) -> tuple[int, ...]:
        words = split_chunk(chunk, self.lower_case)
        return tuple(itertools.chain.from_iterable(map(self.word_cache.__getitem__, words)))

    def _encode_word_uncached(self, word: str) -> tuple[int, ...]:
        ids = self.vocab.ids
        return tuple(ids[p] for p in wordpiece(word, self.vocab, self.max_chars_per_word))

    def encode_chunk(self, chunk: str) -> tuple[int, ...]:
        """Ids of one whitespace-free chunk of cleaned text (memoised)."""
        return self.chunk_cache[chunk]

    def segments(self, text: str) -> list[str]:
        """Raw text split around typed special tokens: [text, special, text, ...]; odd indices
        hold the special tokens. One element when there are none (or they are split)."""
        pattern = special_token_pattern(self.special_tokens)
        if pattern is None or "[" not in text:
            return [text]
        return pattern.split(text)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self.chunk_cache
        for index, segment in enumerate(self.segments(text)):
            if index % 2:
                ids.append(self.vocab.ids[segment])
                continue
            for chunk in pre_tokenize(segment):
                ids.extend(cache[chunk])
        return ids

    def tokenize(self, text: str) -> list[str]:
        tokens = self.vocab.tokens
        return [tokens[i] for i in self.encode(text)]

    def encode_batch(self, texts: Sequence[str], fast: bool | None = None) -> list[list[int]]:
        """Ids for each text. `fast=None` picks bertlab.text.fast for batches of at least
        FAST_BATCH_THRESHOLD texts; both paths give identical ids (tested)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of texts; use encode() for one string")
        if fast is None:
            fast = len(texts) >= FAST_BATCH_THRESHOLD
        if fast:
            return fast_path.encode_batch_fast(self, texts)
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids -> text, joining ## pieces. Lower-casing, accent stripping and the spaces put
        around punctuation are not undone (the original defines no decoder)."""
        tokens = self.vocab.tokens
        pieces = (tokens[int(i)] for i in ids)
        if skip_special_tokens:
            pieces = (t for t in pieces if t not in SPECIAL_TOKENS)
        return decode_tokens(pieces)

    def pack(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
             max_length: int = 128) -> dict[str, np.ndarray]:
        """Texts (and optional second texts) -> int32 `token_ids`, `segment_ids`,
        `attention_mask` of shape (B, max_length); see pack_ids for the truncation rule."""
        return pack_texts(self, texts, pairs, max_length)


def pack_texts(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None,
               max_length: int) -> dict[str, np.ndarray]:
    """pack() of any tokenizer with encode_batch and vocab (WordPiece here, BPE in text/bpe.py):
    one checking and layout rule for both."""
    for name, value in (("texts", texts), ("pairs", pairs)):
        if isinstance(value, str):
            raise TypeError(f"pack: {name} must be a sequence of strings, not one string "
                            f"(wrap it in a list)")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"pack: {len(texts)} texts but {len(pairs)} pairs")
    ids_a = tokenizer.encode_batch(texts)
    ids_b = None if pairs is None else tokenizer.encode_batch(pairs)
    return pack_ids(ids_a, ids_b, max_length=max_length, vocab=tokenizer.vocab)
