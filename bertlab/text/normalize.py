"""Normalisation and pre-tokenisation: the original BERT's BasicTokenizer, step by step.

Clean the text (drop NUL, U+FFFD and control/format characters, every whitespace character to a
space), put spaces around CJK ideographs, split on whitespace into *chunks*; then, per chunk,
optionally lower-case and strip accents (NFD, drop Mn), and split off punctuation (ASCII symbols
such as ^ $ ` included, as in the original). Nothing after the chunk split looks across a chunk
boundary, which is what lets the tokenizer memoise chunks (bertlab.text.tokenizer) and the fast
path skip the text-level steps for text they would not change (bertlab.text.fast).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Sequence

from bertlab.text.vocab import SPECIAL_TOKENS


def is_whitespace(char: str) -> bool:
    # \t \n \r are control characters in Unicode but the original treats them as whitespace.
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


@functools.lru_cache(maxsize=1 << 16)
def is_punctuation(char: str) -> bool:
    # ASCII non-letter/number symbols such as ^ $ ` count as punctuation too, as in the original.
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


# The CJK Unified Ideographs blocks the original splits into single characters (inclusive).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(cp: int) -> bool:
    """Whether a code point is one of the ideographs the original puts spaces around."""
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


@functools.lru_cache(maxsize=1 << 16)
def _clean_char(char: str) -> str:
    # Memoised per character (bounded): real text uses few distinct characters, and map() over an
    # lru_cache wrapper stays in C, which makes clean_text ~10x faster than a plain loop.
    if char == "\x00" or char == "\ufffd" or is_control(char):
        return ""
    return " " if is_whitespace(char) else char


def clean_text(text: str) -> str:
    """Drops NUL, U+FFFD and control characters; maps every whitespace character to a space."""
    return "".join(map(_clean_char, text))


@functools.lru_cache(maxsize=1 << 16)
def _pad_cjk_char(char: str) -> str:
    return f" {char} " if is_cjk(ord(char)) else char


def pad_cjk(text: str) -> str:
    """Surrounds every CJK ideograph with spaces so each becomes its own word."""
    return "".join(map(_pad_cjk_char, text))


def strip_accents(text: str) -> str:
    """NFD then drop combining marks (category Mn), as the original does after lower-casing."""
    if text.isascii():
        return text  # NFD leaves ASCII alone and it has no marks
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def split_punctuation(word: str) -> list[str]:
    """Every punctuation character becomes its own token."""
    pieces: list[str] = []
    start_new = True
    for char in word:  # the original's loop; is_punctuation is memoised per character
        if is_punctuation(char):
            pieces.append(char)
            start_new = True
        else:
            if start_new:
                pieces.append("")
                start_new = False
            pieces[-1] += char
    return pieces


def pre_tokenize(text: str) -> list[str]:
    """The text-level half of BasicTokenizer: clean, pad CJK, split on whitespace -> chunks.
    Nothing after this step looks across a chunk boundary (that is what makes chunks cacheable)."""
    return pad_cjk(clean_text(text)).split()


# In ASCII, punctuation is exactly the four ranges is_punctuation lists first, so one regex
# does split_punctuation's work for an ASCII chunk (tests compare the two on every character).
_ASCII_PUNCTUATION_SPLIT = re.compile(r"[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~]+").findall


def split_chunk(chunk: str, lower_case: bool) -> list[str]:
    """The per-chunk half of BasicTokenizer: (lower-case + strip accents), split punctuation."""
    if lower_case:
        chunk = strip_accents(chunk.lower())
    pieces = _ASCII_PUNCTUATION_SPLIT(chunk) if chunk.isascii() else split_punctuation(chunk)
    # The original re-splits on whitespace at the end; normalisation never creates any, but the
    # extra split keeps us exact even if a future Unicode version did.
    return [w for piece in pieces for w in piece.split()]


def basic_tokenize(text: str, lower_case: bool = True,
                   never_split: Sequence[str] = SPECIAL_TOKENS) -> list[str]:
    """Text -> words: clean, split CJK, (lower-case + strip accents), split on whitespace and
    punctuation. Chunks equal to a `never_split` token (e.g. "[MASK]" between spaces) pass whole."""
    words: list[str] = []
    for chunk in pre_tokenize(text):
        if chunk in never_split:
            words.append(chunk)
        else:
            words.extend(split_chunk(chunk, lower_case))
    return words
