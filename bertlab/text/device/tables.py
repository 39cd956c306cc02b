"""Compiles a WordPiece vocabulary and the Unicode rules of the original BERT into dense int32
arrays, so that `bertlab.text.device.tokenizer` can tokenise with nothing but gathers.

Two groups of tables, both built once on the host and then moved to the device:

1. The Unicode stage maps each code point to a *result id*: a row of small tables saying what the
   host tokenizer does to that character (dropped, whitespace, CJK ideograph, or part of a word),
   and, after lower-casing + NFD + dropping combining marks (uncased vocabularies only), which
   0..3 normalised characters it becomes, each as (trie symbol, letter / punctuation / space).
   Code points go through a two-level table (blocks of 256 with identical blocks shared), so all
   of 0..0x10FFFF costs ~100 KB instead of a 1.1 M-entry array per field. No code point becomes
   more characters than it has UTF-8 bytes (checked when building), which lets the encoder put
   the expansion of a character into the byte slots it came from: shapes never grow.

2. The WordPiece stage is the LinMaxMatch automaton of Song et al. 2021 ("Fast WordPiece
   Tokenization", EMNLP): a trie over the word-initial pieces (root `ROOT`) and one over the
   `##` pieces (root `SUFFIX_ROOT`), each node with a failure link f(v) and failure pops F(v)
   (the pieces greedy longest-match pops off str(v) before what is left is again a trie node).
   The trie runs over *code points remapped to dense symbols* 1..A (A ~ 1,000 for the BERT
   vocabularies), not over UTF-8 bytes: the original's rules (the 100-character limit, the
   punctuation split, accent stripping) all count code points, a character outside the
   vocabulary becomes the one symbol 0 that no edge carries (so it can only end in [UNK]), and
   a code-point trie never has more states than a byte trie. Transitions are a double-array
   trie (Aoe 1989): child(u, c) = base[u] + c if check[base[u] + c] == u, i.e. two gathers and
   ~1 int32 per state for both arrays, instead of a (states x alphabet) matrix.

   Each state also stores its *chain*: F(u) ++ F(f(u)) ++ ... up to the suffix root, as a slice
   of one pool of token ids. Whatever LinMaxMatch emits at a step is a prefix of the chain of the
   state it started the step in, so the encoder records (state, count) per step and gathers the
   ids once at the end, in parallel.

Pieces that can never match are left out of the trie: any word the original feeds to WordPiece
that contains punctuation is that single punctuation character, so multi-character pieces with
punctuation in them ("[unused0]", "##.") and `##` pieces with punctuation are dead weight.

Typed special tokens ("[MASK]" in the text) follow `Tokenizer.special_tokens`: they are matched
on the raw bytes (all BERT special tokens are ASCII) and cut the text there, as the host does.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import unicodedata
from typing import Sequence

import jax
import numpy as np

from bertlab.text.normalize import CJK_RANGES, clean_text, is_cjk, is_punctuation, strip_accents
from bertlab.text.tokenizer import MAX_CHARS_PER_WORD, Tokenizer
from bertlab.text.vocab import CONTINUATION, UNK, Vocab

NUM_CODE_POINTS = sys.maxunicode + 1  # 0x110000
BLOCK_BITS = 8  # two-level table: 256 code points per block
MAX_EXPANSION = 3  # most normalised characters one code point becomes (Hangul syllables: 3 jamo)

# What the text-level steps of the original do to a raw character (`raw_kind`).
DROP, SPACE, CJK, WORD = 0, 1, 2, 3
# What a normalised character is inside a chunk (`char_kind`): split_punctuation + str.split.
LETTER, PUNCT, INNER_SPACE = 0, 1, 2
# Python's str.lower() maps a capital sigma to the final form 'ς' when the character before it
# (skipping case-ignorable ones) is cased and the character after it is not. The encoder needs
# each raw character's side of that rule (`sigma_class`); BOUNDARY stands for the chunk's ends.
TRANSPARENT, IGNORABLE, CASED, UNCASED, BOUNDARY = 0, 1, 2, 3, 4
CAPITAL_SIGMA, SMALL_SIGMA, FINAL_SIGMA = "\u03a3", "\u03c3", "\u03c2"

ROOT, SUFFIX_ROOT = 0, 1  # double-array cells of the two trie roots
NO_LINK = 0  # f(v) = null; ROOT is never a failure target, so its cell number is free for this
_SEP = "\ufdd0"  # a noncharacter: never in text we build tables from


# --------------------------------------------------------------------------------------------
# Code point properties (independent of the vocabulary; computed once per process).
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CodePointRules:
    """What the host tokenizer does to every code point, for one casing mode."""

    raw_kind: np.ndarray     # (0x110000,) int8: DROP / SPACE / CJK / WORD
    sigma_class: np.ndarray  # (0x110000,) int8: IGNORABLE / CASED / UNCASED (uncased mode)
    normalised: dict         # code point -> str, only where it is not the character itself
    punct: np.ndarray        # (0x110000,) bool: is_punctuation of the character itself
    inner_space: np.ndarray  # (0x110000,) bool: str.isspace of the character itself


@functools.lru_cache(maxsize=None)
def _assigned_code_points() -> np.ndarray:
    """Code points whose general category is not Cn/Co/Cs (~145 k of 1.1 M). The others are
    unassigned, private-use or surrogates: Python lower-cases, decomposes and classifies all of
    them as plain, caseless word characters, which the vectorised defaults below encode (and
    tests/test_tokenizer_jax.py checks on a sample)."""
    cps = np.arange(NUM_CODE_POINTS)
    keep = [unicodedata.category(chr(cp)) not in ("Cn", "Co", "Cs") for cp in range(NUM_CODE_POINTS)]
    return cps[np.asarray(keep)]


def _cjk_mask() -> np.ndarray:
    mask = np.zeros(NUM_CODE_POINTS, dtype=bool)
    for lo, hi in CJK_RANGES:
        mask[lo:hi + 1] = True
    return mask


@functools.lru_cache(maxsize=None)
def code_point_rules(lower_case: bool) -> CodePointRules:
    """Evaluates the host tokenizer's own character functions on every assigned code point, so
    the tables agree with it by construction (about a second, once per process and casing)."""
    assigned = _assigned_code_points()
    chars = [chr(cp) for cp in assigned]

    raw_kind = np.full(NUM_CODE_POINTS, WORD, dtype=np.int8)
    raw_kind[_cjk_mask()] = CJK
    cleaned = [clean_text(ch) for ch in chars]
    kinds = [DROP if c == "" else SPACE if (c == " " or ch.isspace()) else
             CJK if is_cjk(ord(ch)) else WORD for ch, c in zip(chars, cleaned)]
    raw_kind[assigned] = kinds

    punct = np.zeros(NUM_CODE_POINTS, dtype=bool)
    punct[assigned] = [is_punctuation(ch) for ch in chars]
    inner_space = np.zeros(NUM_CODE_POINTS, dtype=bool)
    inner_space[assigned] = [ch.isspace() for ch in chars]

    sigma_class = np.full(NUM_CODE_POINTS, UNCASED, dtype=np.int8)
    normalised: dict[int, str] = {}
    if lower_case:
        # (c + "Σ").lower() ends in "ς" iff c is cased and not case-ignorable; ("A" + c + "Σ")
        # also when c is case-ignorable (the scan skips it and finds the cased "A").
        # Joined with a permanent noncharacter (caseless, not case-ignorable: it acts like the
        # end of a string) so that two str.lower() calls do the whole alphabet.
        after_c = _SEP.join(ch + CAPITAL_SIGMA for ch in chars).lower().split(_SEP)
        after_a_c = _SEP.join("A" + ch + CAPITAL_SIGMA for ch in chars).lower().split(_SEP)
        sigma_class[assigned] = [CASED if x[-1] == FINAL_SIGMA else
                                 IGNORABLE if y[-1] == FINAL_SIGMA else UNCASED
                                 for x, y in zip(after_c, after_a_c)]
        for ch in chars:
            out = strip_accents(ch.lower())
            if out != ch:
                normalised[ord(ch)] = out
    return CodePointRules(raw_kind, sigma_class, normalised, punct, inner_space)


# --------------------------------------------------------------------------------------------
# The LinMaxMatch trie.
# --------------------------------------------------------------------------------------------

def _can_match(body: str, suffix: bool, rules: CodePointRules) -> bool:
    """Whether a piece can ever be produced: words reaching WordPiece never hold whitespace, and
    hold punctuation only as the whole (one-character) word."""
    cps = [ord(ch) for ch in body]
    if any(rules.inner_space[cp] for cp in cps):
        return False
    return not any(rules.punct[cp] for cp in cps) or (not suffix and len(cps) == 1)


@dataclasses.dataclass
class _Trie:
    """The two tries as node lists (node 0 = word-initial root, node 1 = `##` root)."""

    children: list[dict[int, int]]  # node -> {symbol: child node}
    token: list[int]                # node -> vocabulary id of str(node), or -1


def _build_trie(pieces: Sequence[tuple[bool, tuple[int, ...], int]]) -> _Trie:
    trie = _Trie(children=[{}, {}], token=[-1, -1])
    for suffix, symbols, token_id in pieces:
        node = SUFFIX_ROOT if suffix else ROOT
        for sym in symbols:
            nxt = trie.children[node].get(sym)
            if nxt is None:
                nxt = len(trie.token)
                trie.children[node][sym] = nxt
                trie.children.append({})
                trie.token.append(-1)
            node = nxt
        trie.token[node] = token_id
    return trie


def _failure_links(trie: _Trie) -> tuple[list[int], list[tuple[int, ...]]]:
    """f(v) and F(v) for every node (Song et al. 2021, Algorithm 2), in breadth-first order so
    that f(u) and F(u) are final before any child of u needs them. None stands for null."""
    n = len(trie.token)
    fail: list[int | None] = [None] * n
    pops: list[tuple[int, ...]] = [()] * n
    queue = collections.deque([ROOT, SUFFIX_ROOT])
    while queue:
        u = queue.popleft()
        for sym, v in trie.children[u].items():
            queue.append(v)
            if trie.token[v] >= 0:  # str(v) is a piece: pop it whole, continue after `##`
                fail[v], pops[v] = SUFFIX_ROOT, (trie.token[v],)
                continue
            z, popped = fail[u], pops[u]
            while z is not None and sym not in trie.children[z]:
                popped = popped + pops[z]
                z = fail[z]
            if z is not None:
                fail[v], pops[v] = trie.children[z][sym], popped
    return fail, pops


def _chains(fail, pops) -> tuple[list[tuple[int, ...]], list[bool]]:
    """chain(u) = F(u) ++ F(f(u)) ++ ... up to the `##` root; ok(u) = the walk gets there."""
    n = len(fail)
    chain: list[tuple[int, ...] | None] = [None] * n
    ok = [False] * n
    chain[SUFFIX_ROOT], ok[SUFFIX_ROOT] = (), True
    chain[ROOT] = ()
    for start in range(n):
        path = []
        u = start
        while u is not None and chain[u] is None:
            path.append(u)
            u = fail[u]
        tail, tail_ok = ((), False) if u is None else (chain[u], ok[u])
        for v in reversed(path):
            if fail[v] is None:
                chain[v], ok[v] = (), False
            else:
                chain[v], ok[v] = pops[v] + tail, tail_ok
            tail, tail_ok = chain[v], ok[v]
    return chain, ok


def _double_array(trie: _Trie) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Places the nodes into cells so that child(u, c) = base[u] + c (first fit, parents first).
    Returns base (cells,), check (cells,) and the cell of every node."""
    n = len(trie.token)
    cell_of = [-1] * n
    cell_of[ROOT], cell_of[SUFFIX_ROOT] = ROOT, SUFFIX_ROOT
    max_label = max((max(k) for k in trie.children if k), default=1)
    used = bytearray(2 * n + 2 * max_label + 16)  # cell taken? (doubled if first fit needs more)
    used[ROOT] = used[SUFFIX_ROOT] = 1
    base = [0] * len(used)
    first_free = 2
    order = collections.deque([ROOT, SUFFIX_ROOT])
    while order:
        u = order.popleft()
        kids = trie.children[u]
        if not kids:
            continue
        labels = sorted(kids)
        lo = labels[0]
        first_free = used.find(0, first_free)
        t = used.find(0, max(first_free, lo))  # candidate cell for the smallest label
        while t < 0 or t - lo + labels[-1] >= len(used) or any(used[t - lo + c] for c in labels[1:]):
            if t < 0 or t - lo + labels[-1] >= len(used):  # out of room: double the cells
                t = len(used) if t < 0 else t
                base.extend([0] * len(used))
                used.extend(bytes(len(used)))
                continue
            t = used.find(0, t + 1)
        b = t - lo
        base[cell_of[u]] = b
        for c in labels:
            used[b + c] = 1
            cell_of[kids[c]] = b + c
            order.append(kids[c])
    num_cells = used.rfind(1) + 1
    check = np.full(num_cells, -1, dtype=np.int32)
    for u in range(n):
        for v in trie.children[u].values():
            check[cell_of[v]] = cell_of[u]
    return np.asarray(base[:num_cells], dtype=np.int32), check, np.asarray(cell_of)


# --------------------------------------------------------------------------------------------
# The tables.
# --------------------------------------------------------------------------------------------

_STATIC = dict(static=True)


@functools.partial(jax.tree_util.register_dataclass)
@dataclasses.dataclass(frozen=True)
class WordPieceTables:
    """Everything `tokenizer_jax.encode` needs, as int32/bool arrays (a pytree: pass it to jit;
    `jax.device_put(tables)` once to keep it on the device). C = double-array cells, A = trie
    alphabet, R = distinct per-character results, K = typed special tokens."""

    # Unicode stage: code point -> result id r = cp_result[cp_block[cp >> 8], cp & 255].
    cp_block: np.ndarray      # (0x1100,) int32
    cp_result: np.ndarray     # (blocks, 256) int32
    result_info: np.ndarray   # (R,) int32  raw kind | sigma class << 3 | capital sigma << 6
                              #             | number of normalised characters << 7 (see unpack_info)
    result_chars: np.ndarray  # (R, MAX_EXPANSION) int32  trie symbol * 4 + LETTER/PUNCT/INNER_SPACE
                              #             (symbol 0: a character no piece contains)
    # LinMaxMatch over the double array; states are cells, ROOT and SUFFIX_ROOT fixed.
    base: np.ndarray          # (C,) int32
    check: np.ndarray         # (C + A + 1,) int32  parent cell, -1 for a free cell
    fail: np.ndarray          # (C,) int32  f(u), NO_LINK for null
    fail_pops: np.ndarray     # (C,) int32  |F(u)|
    end_len: np.ndarray       # (C,) int32  |chain(u)| if the failure links from u reach the
                              #             `##` root (a word may end in u), else 0 ([UNK])
    chain_start: np.ndarray   # (C + 1 + K,) int32  chain(u) = pool[chain_start[u]:], then the
                              #             one-id chains of [UNK] and of each special token
    pool: np.ndarray          # (P,) int32 token ids
    # Static facts (hashable: part of the jit cache key).
    special_tokens: tuple[str, ...] = dataclasses.field(metadata=_STATIC, default=())
    lower_case: bool = dataclasses.field(metadata=_STATIC, default=True)
    max_chars_per_word: int = dataclasses.field(metadata=_STATIC, default=MAX_CHARS_PER_WORD)
    final_sigma_symbol: int = dataclasses.field(metadata=_STATIC, default=0)
    pad_id: int = dataclasses.field(metadata=_STATIC, default=0)

    @property
    def num_cells(self) -> int:
        return int(self.base.shape[0])

    @property
    def alphabet_size(self) -> int:
        return int(self.check.shape[0] - self.base.shape[0] - 1)

    @property
    def unk_state(self) -> int:
        """Pseudo-state whose chain is [UNK]; the special tokens' follow it."""
        return self.num_cells


def pack_info(raw_kind: int, sigma_class: int, capital_sigma: int, num_chars: int) -> int:
    return raw_kind | sigma_class << 3 | capital_sigma << 6 | num_chars << 7


def unpack_info(info):
    """result_info -> (raw kind, sigma class, capital sigma, number of characters); works on
    ints, numpy and jax arrays alike."""
    return info & 7, (info >> 3) & 7, (info >> 6) & 1, info >> 7


def _symbol_and_kind(cp: int, alphabet: np.ndarray, rules: CodePointRules) -> int:
    kind = PUNCT if rules.punct[cp] else INNER_SPACE if rules.inner_space[cp] else LETTER
    return int(alphabet[cp]) * 4 + kind


def _results(rules: CodePointRules, alphabet: np.ndarray, lower_case: bool):
    """Per-code-point result ids and the result rows. Code points the normalisation leaves alone
    are handled in bulk; the ~16 k it changes (uncased only) one by one."""
    raw_kind = rules.raw_kind.astype(np.int64)
    sigma = np.where(raw_kind == WORD, rules.sigma_class,
                     np.where(raw_kind == DROP, TRANSPARENT, BOUNDARY)).astype(np.int64)
    is_sigma = np.zeros(NUM_CODE_POINTS, dtype=np.int64)
    if lower_case:
        is_sigma[ord(CAPITAL_SIGMA)] = 1
    num_chars = ((raw_kind == WORD) | (raw_kind == CJK)).astype(np.int64)
    kind = np.where(rules.punct, PUNCT, np.where(rules.inner_space, INNER_SPACE, LETTER))
    first = np.where(num_chars > 0, alphabet.astype(np.int64) * 4 + kind, 0)
    # One int64 key per code point: (first char, #chars, sigma flag, sigma class, raw kind).
    key = (((first * 4 + num_chars) * 2 + is_sigma) * 8 + sigma) * 4 + raw_kind
    changed = np.fromiter(rules.normalised, dtype=np.int64, count=len(rules.normalised))
    key[changed] = -1
    common, result_of = np.unique(key, return_inverse=True)
    rows = []
    for k in common:
        if k < 0:
            rows.append(None)  # placeholder for the changed code points' shared key
            continue
        k, rk = divmod(int(k), 4)
        k, sc = divmod(k, 8)
        k, sg = divmod(k, 2)
        f, n = divmod(k, 4)
        rows.append((rk, sc, sg, n, (f,) if n else ()))
    interned: dict[tuple, int] = {}
    for cp, out in rules.normalised.items():
        if len(out) > len(chr(cp).encode("utf-8")):
            raise ValueError(f"U+{cp:04X} normalises to {len(out)} characters, more than its "
                             f"UTF-8 bytes: the in-graph encoder cannot place them")
        row = (int(raw_kind[cp]), int(sigma[cp]), int(is_sigma[cp]),
               len(out) if num_chars[cp] else 0,
               tuple(_symbol_and_kind(ord(ch), alphabet, rules) for ch in out) if num_chars[cp] else ())
        if row not in interned:
            interned[row] = len(rows)
            rows.append(row)
        result_of[cp] = interned[row]
    rows = [r if r is not None else (WORD, UNCASED, 0, 0, ()) for r in rows]
    return result_of.astype(np.int32), rows


def _two_level(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blocks = values.reshape(-1, 1 << BLOCK_BITS)  # (0x1100, 256)
    unique, block_of = np.unique(blocks, axis=0, return_inverse=True)
    return block_of.reshape(-1).astype(np.int32), unique.astype(np.int32)


def compile_tables(vocab: Vocab, lower_case: bool = True, *,
                   max_chars_per_word: int = MAX_CHARS_PER_WORD,
                   special_tokens: Sequence[str] | None = None) -> WordPieceTables:
    """Vocabulary + casing -> tables (~2 s for a 30 k vocabulary, most of it the Unicode pass
    shared by every later call in the process). `special_tokens`: the typed tokens kept whole,
    by default those of the host Tokenizer (its SPECIAL_TOKENS present in the vocabulary)."""
    if UNK not in vocab:
        raise ValueError(f"{vocab.source}: the vocabulary has no {UNK}, which WordPiece needs")
    if special_tokens is None:
        special_tokens = Tokenizer(vocab, lower_case).special_tokens
    for tok in special_tokens:
        if not tok or not tok.isascii() or tok not in vocab:
            raise ValueError(f"special token {tok!r} must be ASCII and in {vocab.source}")
    for a in special_tokens:  # matches found independently at every byte must not overlap
        for b in special_tokens:
            if any(a[i:].startswith(b[:len(a) - i]) for i in range(0 if a != b else 1, len(a))):
                raise ValueError(f"special tokens {a!r} and {b!r} can overlap in text; the "
                                 f"in-graph encoder matches them independently per byte")
    rules = code_point_rules(lower_case)

    # Reachable pieces, and symbols numbered by how often they label a piece's character.
    pieces = []
    for token_id, token in enumerate(vocab.tokens):
        suffix = token.startswith(CONTINUATION) and len(token) > len(CONTINUATION)
        body = token[len(CONTINUATION):] if suffix else token
        if _can_match(body, suffix, rules):
            pieces.append((suffix, body, token_id))
    counts = collections.Counter(ch for _, body, _ in pieces for ch in body)
    alphabet = np.zeros(NUM_CODE_POINTS, dtype=np.int32)
    for symbol, (ch, _) in enumerate(counts.most_common(), start=1):
        alphabet[ord(ch)] = symbol
    num_symbols = len(counts)

    trie = _build_trie([(suffix, tuple(int(alphabet[ord(ch)]) for ch in body), token_id)
                        for suffix, body, token_id in pieces])
    fail, pops = _failure_links(trie)
    chain, ok = _chains(fail, pops)
    base, check, cell_of = _double_array(trie)
    cells = base.shape[0]

    fail_cells = np.full(cells, NO_LINK, dtype=np.int32)
    pops_cells = np.zeros(cells, dtype=np.int32)
    end_len = np.zeros(cells, dtype=np.int32)
    chain_lists: list[tuple[int, ...]] = [()] * cells
    for node, cell in enumerate(cell_of):
        if fail[node] is not None:
            fail_cells[cell] = cell_of[fail[node]]
        pops_cells[cell] = len(pops[node])
        end_len[cell] = len(chain[node]) if ok[node] else 0
        chain_lists[cell] = chain[node]
    special_ids = [vocab.id(t) for t in special_tokens]
    chain_lists += [(vocab.unk_id,)] + [(i,) for i in special_ids]
    lens = np.fromiter(map(len, chain_lists), dtype=np.int64, count=len(chain_lists))
    chain_start = (np.cumsum(lens) - lens).astype(np.int32)
    pool = np.fromiter((i for c in chain_lists for i in c), dtype=np.int32, count=int(lens.sum()))

    result_of, rows = _results(rules, alphabet, lower_case)
    cp_block, cp_result = _two_level(result_of)
    info = np.asarray([pack_info(raw, sigma, capital, len(chars))
                       for raw, sigma, capital, _, chars in rows], dtype=np.int32)
    chars = np.zeros((len(rows), MAX_EXPANSION), dtype=np.int32)
    for r, row in enumerate(rows):
        chars[r, :len(row[4])] = row[4]

    return WordPieceTables(
        cp_block=cp_block, cp_result=cp_result,
        result_info=info, result_chars=chars,
        base=base, check=np.concatenate([check, np.full(num_symbols + 1, -1, np.int32)]),
        fail=fail_cells, fail_pops=pops_cells, end_len=end_len, chain_start=chain_start, pool=pool,
        special_tokens=tuple(special_tokens),
        lower_case=bool(lower_case), max_chars_per_word=int(max_chars_per_word),
        final_sigma_symbol=int(alphabet[ord(FINAL_SIGMA)]) if lower_case else 0,
        pad_id=vocab.ids.get("[PAD]", 0))


def tables_for(tokenizer: Tokenizer) -> WordPieceTables:
    """The tables that reproduce one host Tokenizer (vocabulary, casing, word limit, specials)."""
    return compile_tables(tokenizer.vocab, tokenizer.lower_case,
                          max_chars_per_word=tokenizer.max_chars_per_word,
                          special_tokens=tokenizer.special_tokens)


def table_sizes(tables: WordPieceTables) -> dict[str, tuple[tuple[int, ...], str, int]]:
    """name -> (shape, dtype, bytes) of every array, for reports."""
    return {f.name: (tuple(v.shape), str(v.dtype), int(v.nbytes))
            for f in dataclasses.fields(tables) if not f.metadata.get("static")
            for v in [getattr(tables, f.name)]}
