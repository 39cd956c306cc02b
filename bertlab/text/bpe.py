"""BPE tokenizers shipped as tokenizer.json (ModernBERT's), read with the `tokenizers` library,
behind the interface the loops use from our WordPiece Tokenizer.

We do not write a BPE of our own: the merges, the byte-level pre-tokenizer and the added
tokens are all in tokenizer.json, and the Rust library that wrote it is the reference. What
is ours is the packing: `pack` is bertlab.text.tokenizer.pack_ids, so pairs are
[CLS] a [SEP] b [SEP] with the original's longest-first truncation, exactly as for WordPiece,
and `vocab` is a bertlab Vocab (tokens by id) whose pad/cls/sep/mask/unk ids are the
tokenizer's [PAD] [CLS] [SEP] [MASK] [UNK], as ModernBERT names them.

    from bertlab.text.bpe import BpeTokenizer, load_tokenizer
    tokenizer = load_tokenizer("modernbert_dir/tokenizer.json")  # or a vocab.txt: WordPiece
    batch = tokenizer.pack(["a sentence"], ["its pair"], max_length=128)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Sequence

import numpy as np

from bertlab.text.tokenizer import pack_texts
from bertlab.text.vocab import CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK, Vocab, VocabError

REQUIRED_SPECIALS = (CLS, SEP, PAD, MASK)


def is_tokenizer_json(path: str | os.PathLike) -> bool:
    """A tokenizer.json (a JSON object), as opposed to a vocab.txt (one token a line); decided
    by content, so a tokenizer.json copied under another name is still recognised."""
    try:
        with open(path, "rb") as handle:
            return handle.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def vocab_of(backend: Any, source: str) -> Vocab:
    """The tokenizer's tokens ordered by id (added tokens included), as a bertlab Vocab. An id
    with no token (a gap) gets a placeholder that no text can produce."""
    table = backend.get_vocab(with_added_tokens=True)  # token -> id
    size = max(table.values()) + 1 if table else 0
    tokens = [f"<bertlab:unused-id-{i}>" for i in range(size)]
    for token, index in table.items():
        tokens[index] = token
    vocab = Vocab(tuple(tokens), source=source)
    absent = [t for t in REQUIRED_SPECIALS if t not in vocab]
    if absent:
        raise VocabError(f"{source}: no {', '.join(absent)} token; bertlab packs BPE inputs as "
                         f"[CLS] a [SEP] b [SEP] with [PAD] (ModernBERT's special tokens)")
    return vocab


@dataclasses.dataclass(frozen=True)
class BpeTokenizer:
    """tokenizer.json through `tokenizers`, with Tokenizer's encode / encode_batch / pack /
    decode / vocab. Casing and normalisation are whatever tokenizer.json says (lower_case is
    reported False: nothing is lower-cased by us)."""

    backend: Any  # tokenizers.Tokenizer
    vocab: Vocab
    source: str = "<memory>"
    lower_case: bool = False

    @classmethod
    def from_file(cls, path: str | os.PathLike, lower_case: bool | None = None,
                  **unused) -> "BpeTokenizer":
        """Reads tokenizer.json. lower_case must be None or False: casing is the file's."""
        try:
            from tokenizers import Tokenizer as Backend
        except ImportError:
            raise VocabError(f"{path}: reading a tokenizer.json (BPE, e.g. ModernBERT) needs the "
                             "tokenizers library; install it with: pip install "
                             "'bertlab[modernbert]'") from None

        if lower_case:
            raise ValueError(f"{path}: a tokenizer.json carries its own normalisation; "
                             f"lower_case=True cannot be applied to it")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # the Rust library raises a bare Exception on a bad file
            raise VocabError(f"{path}: not a readable tokenizer.json ({e})") from None
        return cls(backend, vocab_of(backend, str(path)), str(path))

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return tuple(t for t in SPECIAL_TOKENS if t in self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without [CLS]/[SEP] (pack adds them)."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def tokenize(self, text: str) -> list[str]:
        return list(self.backend.encode(text, add_special_tokens=False).tokens)

    def encode_batch(self, texts: Sequence[str], fast: bool | None = None) -> list[list[int]]:
        """Ids for each text (the library's parallel batch encoder; `fast` is accepted for
        Tokenizer's signature and changes nothing)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of texts; use encode() for one string")
        return [list(e.ids) for e in self.backend.encode_batch(list(texts),
                                                               add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def pack(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
             max_length: int = 128) -> dict[str, np.ndarray]:
        """Texts (and optional second texts) -> int32 token_ids, segment_ids, attention_mask
        (B, max_length), laid out and truncated as Tokenizer.pack (pack_ids)."""
        return pack_texts(self, texts, pairs, max_length)


def load_tokenizer(path: str | os.PathLike, lower_case: bool | None = None, **options):
    """A BpeTokenizer for a tokenizer.json, else our WordPiece Tokenizer for a vocab.txt."""
    if is_tokenizer_json(path):
        return BpeTokenizer.from_file(path, lower_case)
    from bertlab.text.tokenizer import Tokenizer

    return Tokenizer.from_file(path, lower_case, **options)


__all__ = ["BpeTokenizer", "load_tokenizer", "is_tokenizer_json", "vocab_of", "UNK"]
