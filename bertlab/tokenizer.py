"""WordPiece tokenisation exactly as the original BERT (google-research/bert tokenization.py).

Everything here is a pure function over an immutable `Vocab`: normalise and split text the way
BasicTokenizer does, then greedy longest-match-first WordPiece with `##` continuations.
The reference behaviour is transformers' `BertTokenizer` (a faithful port of the original);
where the Rust `BertTokenizerFast` or tf-text differ, we follow the original (see README).
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from typing import Iterable, Mapping, Sequence

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"
MAX_CHARS_PER_WORD = 100  # the original's limit: longer words become [UNK]


class VocabError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Vocab:
    """An immutable token <-> id table. Ids are line numbers of vocab.txt (0-based)."""

    tokens: tuple[str, ...]
    ids: Mapping[str, int] = dataclasses.field(repr=False, compare=False, default=None)
    source: str = dataclasses.field(default="<memory>", compare=False)

    def __post_init__(self):
        if self.ids is None:
            object.__setattr__(self, "ids", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.ids

    def id(self, token: str) -> int:
        """Id of a token that must exist (special tokens are looked up by name through this)."""
        try:
            return self.ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the vocabulary {self.source}") from None

    @property
    def pad_id(self) -> int:
        return self.id(PAD)

    @property
    def unk_id(self) -> int:
        return self.id(UNK)

    @property
    def cls_id(self) -> int:
        return self.id(CLS)

    @property
    def sep_id(self) -> int:
        return self.id(SEP)

    @property
    def mask_id(self) -> int:
        return self.id(MASK)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids of the special tokens present (never masked, never split)."""
        return tuple(self.ids[t] for t in SPECIAL_TOKENS if t in self.ids)


def vocab_from_tokens(tokens: Iterable[str], source: str = "<memory>") -> Vocab:
    """Builds a Vocab, rejecting empty tables and duplicate entries (named by line)."""
    tokens = tuple(tokens)
    if not tokens:
        raise VocabError(f"{source}: vocabulary is empty")
    seen: dict[str, int] = {}
    for line, token in enumerate(tokens, start=1):
        if token == "":
            raise VocabError(f"{source}:{line}: empty vocabulary entry")
        if token in seen:
            raise VocabError(
                f"{source}:{line}: duplicate vocabulary entry {token!r} (first on line {seen[token]})")
        seen[token] = line
    return Vocab(tokens, {t: i for i, t in enumerate(tokens)}, source)


def load_vocab(path: str | os.PathLike) -> Vocab:
    """Reads vocab.txt: one token per line, id = line number - 1 (as the original)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VocabError(f"{path}: vocabulary file not found")
    with open(path, "r", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # trailing newline of the last entry
    tokens = [line.rstrip("\r") for line in lines]
    if tokens and tokens[0].startswith("\ufeff"):
        tokens[0] = tokens[0][1:]
    return vocab_from_tokens(tokens, source=path)


def save_vocab(vocab: Vocab, path: str | os.PathLike) -> None:
    """Writes vocab.txt atomically (temp file + rename), so a crash never leaves half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for token in vocab.tokens:
            f.write(token + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Normalisation and pre-tokenisation (BasicTokenizer).
# --------------------------------------------------------------------------------------------

def is_whitespace(char: str) -> bool:
    # \t \n \r are control characters in Unicode but the original treats them as whitespace.
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def is_punctuation(char: str) -> bool:
    # ASCII non-letter/number symbols such as ^ $ ` count as punctuation too, as in the original.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(cp: int) -> bool:
    """The CJK Unified Ideographs blocks the original splits into single characters."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def clean_text(text: str) -> str:
    """Drops NUL, U+FFFD and control characters; maps every whitespace character to a space."""
    out = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or is_control(char):
            continue
        out.append(" " if is_whitespace(char) else char)
    return "".join(out)


def pad_cjk(text: str) -> str:
    """Surrounds every CJK ideograph with spaces so each becomes its own word."""
    out = []
    for char in text:
        if is_cjk(ord(char)):
            out.extend((" ", char, " "))
        else:
            out.append(char)
    return "".join(out)


def strip_accents(text: str) -> str:
    """NFD then drop combining marks (category Mn), as the original does after lower-casing."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def split_punctuation(word: str) -> list[str]:
    """Every punctuation character becomes its own token."""
    pieces: list[str] = []
    start_new = True
    for char in word:
        if is_punctuation(char):
            pieces.append(char)
            start_new = True
        else:
            if start_new:
                pieces.append("")
                start_new = False
            pieces[-1] += char
    return pieces


def basic_tokenize(text: str, lower_case: bool = True,
                   never_split: Sequence[str] = SPECIAL_TOKENS) -> list[str]:
    """Text -> words: clean, split CJK, (lower-case + strip accents), split on whitespace and
    punctuation. Tokens in `never_split` (e.g. "[MASK]" typed in the text) pass through whole."""
    text = pad_cjk(clean_text(text))
    words: list[str] = []
    for word in text.split():  # str.split() splits on the spaces clean_text left
        if word in never_split:
            words.append(word)
            continue
        if lower_case:
            word = strip_accents(word.lower())
        words.extend(split_punctuation(word))
    return [w for w in words if w]


def wordpiece(word: str, vocab: Vocab, max_chars: int = MAX_CHARS_PER_WORD) -> list[str]:
    """Greedy longest-match-first split of one word; no match anywhere -> [UNK] for the word."""
    if len(word) > max_chars:
        return [UNK]
    pieces: list[str] = []
    start, n = 0, len(word)
    ids = vocab.ids
    while start < n:
        end = n
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


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """BasicTokenizer + WordPiece over one vocabulary. Immutable; every method is pure."""

    vocab: Vocab
    lower_case: bool = True
    max_chars_per_word: int = MAX_CHARS_PER_WORD

    def tokenize(self, text: str) -> list[str]:
        pieces: list[str] = []
        for word in basic_tokenize(text, self.lower_case):
            if word in SPECIAL_TOKENS and word in self.vocab:
                pieces.append(word)
            else:
                pieces.extend(wordpiece(word, self.vocab, self.max_chars_per_word))
        return pieces

    def encode(self, text: str) -> list[int]:
        ids = self.vocab.ids
        return [ids[t] for t in self.tokenize(text)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return decode_tokens(self.vocab.tokens[int(i)] for i in ids)
