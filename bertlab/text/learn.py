"""Learning a WordPiece vocabulary from raw text.

Words are split exactly as `bertlab.text.tokenizer.basic_tokenize` splits them, so the vocabulary fits
the tokenizer that will use it. Pieces are learned by BPE-style merges over word counts, with `##`
marking pieces that continue a word (the same family as HuggingFace tokenizers' WordPiece trainer);
the result is then applied by the tokenizer's greedy longest-match-first WordPiece, not by replaying
merges. Pair counts are updated incrementally, so each merge touches only the words that contain it.

Layout of the result: reserved tokens, then `[unused0]..[unusedN-1]`, then every character seen
(word-initial and `##` forms), then learned pieces in the order they were merged. Everything is
deterministic: ties between equally frequent pairs go to the lexicographically smallest
(left, right) pair, never to hash or set order.
"""

from __future__ import annotations

import collections
import heapq
from typing import Iterable, Iterator, Mapping, Sequence

from tqdm import tqdm

from bertlab.text.normalize import basic_tokenize, is_cjk, is_punctuation
from bertlab.text.tokenizer import MAX_CHARS_PER_WORD
from bertlab.text.vocab import CONTINUATION, SPECIAL_TOKENS, Vocab, vocab_from_tokens

# Distinct space-separated chunks kept before they are folded into word counts; bounds memory on
# corpora with a long tail of distinct chunks while keeping the common case one pass.
_MAX_PENDING_CHUNKS = 1_000_000


class VocabLearnError(ValueError):
    """Learning cannot produce a usable vocabulary (empty input, size below the minimum)."""


def count_words(lines: Iterable[str], lower_case: bool = True,
                progress: bool = False) -> collections.Counter[str]:
    """Word frequencies as `basic_tokenize` would split the lines, read streaming.

    Lines are first split on plain spaces and identical chunks are tokenised once: basic_tokenize
    works word by word after turning all whitespace into spaces, so tokenising each space-separated
    chunk gives exactly the words of the whole line, at a fraction of the cost on real text."""
    words: collections.Counter[str] = collections.Counter()
    chunks: collections.Counter[str] = collections.Counter()
    for line in tqdm(lines, desc="counting words", unit=" lines", disable=not progress):
        chunks.update(line.split(" "))
        if len(chunks) > _MAX_PENDING_CHUNKS:
            _fold_chunks(chunks, words, lower_case)
    _fold_chunks(chunks, words, lower_case)
    return words


def _fold_chunks(chunks: collections.Counter[str], words: collections.Counter[str],
                 lower_case: bool) -> None:
    for chunk, count in chunks.items():
        for word in basic_tokenize(chunk, lower_case):
            words[word] += count
    chunks.clear()


def trainable_words(word_counts: Mapping[str, int],
                    reserved: Sequence[str] = SPECIAL_TOKENS) -> dict[str, int]:
    """The words that shape the vocabulary: reserved tokens typed in the text are kept whole by
    the tokenizer and words longer than MAX_CHARS_PER_WORD always become [UNK], so neither is
    learned from."""
    reserved = set(reserved)
    return {w: n for w, n in word_counts.items()
            if n > 0 and w not in reserved and len(w) <= MAX_CHARS_PER_WORD}


def can_continue_word(char: str) -> bool:
    """basic_tokenize makes every punctuation mark and CJK ideograph a word of its own, so their
    `##` forms could never be used."""
    return not (is_punctuation(char) or is_cjk(ord(char)))


def alphabet_tokens(word_counts: Mapping[str, int]) -> list[str]:
    """Every character seen, bare and as a `##` continuation, so that held-out text made of known
    characters never becomes [UNK]; sorted by code point for a fixed order."""
    chars: set[str] = set()
    continuing: set[str] = set()
    for word in word_counts:
        chars.update(word)
        continuing.update(word[1:])
    bare = sorted(chars)
    cont = sorted(c for c in chars if c in continuing or can_continue_word(c))
    return bare + [CONTINUATION + c for c in cont]


def unused_tokens(num_unused: int) -> list[str]:
    return [f"[unused{i}]" for i in range(num_unused)]


def initial_tokens(word_counts: Mapping[str, int], reserved: Sequence[str] = SPECIAL_TOKENS,
                   num_unused: int = 0) -> list[str]:
    """Reserved + unused + alphabet (characters equal to a reserved token are not repeated): the
    entries every learned vocabulary starts with, before any merge."""
    _check_reserved(reserved)
    if num_unused < 0:
        raise VocabLearnError(f"num_unused must be >= 0, got {num_unused}")
    unused = unused_tokens(num_unused)
    clash = sorted(set(reserved) & set(unused))
    if clash:
        raise VocabLearnError(f"reserved tokens {clash} repeat [unusedN] tokens; "
                              "drop them from reserved or lower num_unused")
    tokens = list(reserved) + unused
    present = set(tokens)
    tokens += [t for t in alphabet_tokens(word_counts) if t not in present]
    return tokens


def _check_reserved(reserved: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, token in enumerate(reserved):
        if not isinstance(token, str) or not token or token != token.strip():
            raise VocabLearnError(
                f"reserved token #{i} {token!r} must be a non-empty string without surrounding "
                "whitespace (vocab.txt holds one token per line)")
        if token in seen:
            raise VocabLearnError(f"reserved token {token!r} is listed twice")
        seen.add(token)


def merge_pieces(word_counts: Mapping[str, int], min_frequency: int = 2) -> Iterator[str]:
    """Pieces in merge order: repeatedly join the most frequent adjacent pair of symbols, counting
    each word as often as it occurs, until no pair is seen `min_frequency` times.

    Words start as their first character followed by `##`-prefixed characters. A merged piece
    keeps the left symbol's form (word-initial or `##`). Symbols are interned by spelling, so if
    two different pairs ever spell the same piece the second merge reuses the first symbol and
    the caller skips the repeat (a safeguard: random search found no corpus that does this).

    Pair counts and the words holding each pair are kept up to date merge by merge; a max-heap
    with lazy re-insertion finds the best pair. Each heap entry's count is never below the pair's
    true count, so the first entry whose count is current is the true best."""
    names: list[str] = []
    ids: dict[str, int] = {}

    def intern(name: str) -> int:
        if name not in ids:
            ids[name] = len(names)
            names.append(name)
        return ids[name]

    words: list[list[int]] = []
    counts: list[int] = []
    for word, count in sorted(word_counts.items()):
        if len(word) > 1:
            words.append([intern(word[0])] + [intern(CONTINUATION + c) for c in word[1:]])
            counts.append(count)

    pair_counts: dict[tuple[int, int], int] = collections.defaultdict(int)
    where: dict[tuple[int, int], set[int]] = collections.defaultdict(set)
    for index, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[index]
            where[pair].add(index)

    # (-count, left name, right name) orders by count, then by the fixed lexicographic tie-break.
    heap = [(-n, names[a], names[b], a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)
    while heap:
        negative, left, right, a, b = heapq.heappop(heap)
        current = pair_counts.get((a, b), 0)
        if current != -negative:
            if current > 0:
                heapq.heappush(heap, (-current, left, right, a, b))
            continue
        if current < min_frequency:
            return
        merged_name = left + right[len(CONTINUATION):]
        yield merged_name
        merged = intern(merged_name)
        grown: set[tuple[int, int]] = set()
        for index in where.pop((a, b)):
            old = words[index]
            new = _merge_pair(old, a, b, merged)
            count = counts[index]
            old_pairs = list(zip(old, old[1:]))
            new_pairs = list(zip(new, new[1:]))
            for pair in old_pairs:
                pair_counts[pair] -= count
            for pair in new_pairs:
                pair_counts[pair] += count
                if merged in pair:
                    grown.add(pair)
            old_set, new_set = set(old_pairs), set(new_pairs)
            for pair in old_set - new_set:
                holders = where.get(pair)
                if holders is not None:
                    holders.discard(index)
            for pair in new_set - old_set:
                where[pair].add(index)
            words[index] = new
        pair_counts.pop((a, b), None)
        # Only pairs next to the new symbol can have gained; all others only lost, and their
        # heap entries stay valid upper bounds.
        for pair in sorted(grown):
            heapq.heappush(heap, (-pair_counts[pair], names[pair[0]], names[pair[1]], *pair))


def _merge_pair(symbols: list[int], a: int, b: int, merged: int) -> list[int]:
    """Left-to-right, non-overlapping replacement of (a, b) by merged, as BPE applies a merge."""
    out: list[int] = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def learn_from_counts(word_counts: Mapping[str, int], size: int, *,
                      reserved: Sequence[str] = SPECIAL_TOKENS, num_unused: int = 0,
                      min_frequency: int = 2, progress: bool = False) -> Vocab:
    """A vocabulary of at most `size` entries from word frequencies (see `learn_vocab`)."""
    if min_frequency < 1:
        raise VocabLearnError(f"min_frequency must be >= 1, got {min_frequency}")
    words = trainable_words(word_counts, reserved)
    if not words:
        raise VocabLearnError("no words to learn from: the text is empty or only whitespace")
    tokens = initial_tokens(words, reserved, num_unused)
    if size < len(tokens):
        num_alphabet = len(tokens) - len(reserved) - num_unused
        raise VocabLearnError(
            f"size {size} is too small: every vocabulary holds the {len(reserved)} reserved + "
            f"{num_unused} unused tokens and the {num_alphabet} character tokens seen in the text "
            f"(word-initial and ## forms), so the size must be at least {len(tokens)}")
    present = set(tokens)
    with tqdm(total=size - len(tokens), desc="learning pieces", unit=" pieces",
              disable=not progress) as bar:
        pieces = merge_pieces(words, min_frequency)
        while len(tokens) < size:
            piece = next(pieces, None)
            if piece is None:
                break
            if piece not in present:
                tokens.append(piece)
                present.add(piece)
                bar.update(1)
    return vocab_from_tokens(tokens, source="<learned vocabulary>")


def learn_vocab(lines: Iterable[str], size: int, *, lower_case: bool = True,
                reserved: Sequence[str] = SPECIAL_TOKENS, num_unused: int = 0,
                min_frequency: int = 2, progress: bool = False) -> Vocab:
    """Learns a WordPiece vocabulary of `size` entries from lines of text, read streaming.

    The alphabet always fits: a size below reserved + unused + alphabet is an error naming the
    minimum. The result is smaller than `size` when no pair of symbols is seen `min_frequency`
    times any more (a small corpus cannot support a large vocabulary). Use the same `lower_case`
    with the Tokenizer that applies the vocabulary."""
    return learn_from_counts(count_words(lines, lower_case, progress), size, reserved=reserved,
                             num_unused=num_unused, min_frequency=min_frequency,
                             progress=progress)
