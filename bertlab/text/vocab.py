"""The WordPiece vocabulary: vocab.txt <-> an immutable token/id table, and its special tokens.

A vocabulary file is one token per line, id = line number - 1, as the original BERT's. Loading
checks what a tokenizer or a model will need later, so a bad file fails here, naming the file
and line, instead of as a KeyError at the first unknown word: no empty or duplicate entry, valid
UTF-8, and the five special tokens [PAD] [UNK] [CLS] [SEP] [MASK] present. vocab_from_tokens
builds a table in memory without the special-token check, because vocabulary learning and small
tests build tables that are not (yet) a full BERT vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Mapping

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"  # marks a piece that continues a word ("##ing")


class VocabError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Vocab:
    """An immutable token <-> id table. Ids are line numbers of vocab.txt (0-based)."""

    tokens: tuple[str, ...]
    ids: Mapping[str, int] = dataclasses.field(repr=False, compare=False, default=None)
    source: str = dataclasses.field(default="<memory>", compare=False)
    # Length of the longest entry: WordPiece never tries a longer candidate (a pure speed-up).
    longest: int = dataclasses.field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self):
        if self.ids is None:
            object.__setattr__(self, "ids", {t: i for i, t in enumerate(self.tokens)})
        object.__setattr__(self, "longest", max(map(len, self.tokens), default=0))

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
    """Reads vocab.txt: one token per line, id = line number - 1 (as the original). Refuses a
    file without the five special tokens, which every tokenizer and model here looks up."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VocabError(f"{path}: vocabulary file not found")
    if os.path.isdir(path):
        raise VocabError(f"{path}: is a directory, expected a vocab.txt file")
    try:
        with open(path, "r", encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise VocabError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None
    if lines and lines[-1] == "":
        lines.pop()  # trailing newline of the last entry
    tokens = [line.rstrip("\r") for line in lines]
    if tokens and tokens[0].startswith("\ufeff"):
        tokens[0] = tokens[0][1:]
    vocab = vocab_from_tokens(tokens, source=path)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise VocabError(f"{path}: not a BERT vocabulary: missing the special token"
                         f"{'s' if len(missing) > 1 else ''} {' '.join(missing)} (every vocab.txt "
                         f"needs {' '.join(SPECIAL_TOKENS)}; `bertlab vocab` writes them first)")
    return vocab


def save_vocab(vocab: Vocab, path: str | os.PathLike) -> None:
    """Writes vocab.txt atomically (temp file + rename), so a crash never leaves half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for token in vocab.tokens:
            f.write(token + "\n")
    os.replace(tmp, path)


def infer_lower_case(vocab: Vocab) -> bool:
    """True for an uncased vocabulary: no entry that lower-casing would change (bracketed
    entries such as [CLS] or [unused0] aside). Cased BERT vocabularies have thousands."""
    return not any(t != t.lower() for t in vocab.tokens
                   if not (t.startswith("[") and t.endswith("]")))

