"""The fast batch path must give exactly the pure path's ids. Its one assumption (a text the
routing check lets through splits into the same chunks with str.split() as with the original's
clean/pad/split) is checked for every code point, then the whole path on hard strings, random
strings and real text."""

import random
import sys

import pytest

from bertlab.text import fast
from bertlab.text import normalize
from bertlab.data.pretraining.corpus import default_corpus_files, iter_lines
from bertlab.text.fast import encode_batch_fast, needs_pure_path
from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import SPECIAL_TOKENS, load_vocab, vocab_from_tokens

TINY = [*SPECIAL_TOKENS, "the", "a", "##b", "x", "##x", "!", ".", "[", "]", "mask", "中", "e",
        "##s", "cafe", "café", "hello", "world", "ab", "##c"]

# (text, why it must take the pure path) — one per class of character the text-level steps touch.
DIRTY = [
    ("a\x00b", "NUL is deleted, gluing a and b"),
    ("a\x0bb", "vertical tab: str.split() splits, BERT deletes (control)"),
    ("a\x1cb", "file separator: str.split() splits, BERT deletes"),
    ("a\x85b", "NEL (C1 control): str.split() splits, BERT deletes"),
    ("a\x7fb", "DEL is a control character"),
    ("a\u200db", "zero-width joiner is a format character (Cf): deleted"),
    ("a\u00adb", "soft hyphen (Cf): deleted"),
    ("a\ufeffb", "BOM / ZWNBSP (Cf): deleted"),
    ("a\ufffdb", "U+FFFD is deleted"),
    ("a中b", "CJK ideographs get spaces around them"),
    ("a\U00020000b", "CJK extension B"),
    ("a\uf900b", "CJK compatibility ideograph"),
    ("the [MASK].", "typed special token"),
    ("x[SEP]x", "typed special token glued to text"),
    ("tab\tthen\u200bzero-width", "non-printable text with a Cf inside"),
]
CLEAN = ["plain ascii text.", "em—dash ‘quotes’ • bullet ½", "tab\tand\nnewline\r\n",
         "nbsp\u00a0and\u3000ideographic space", "line\u2028separator", "café naïve ΟΔΟΣ",
         "[mask] lower-case is not special", "a [ b ] c", "", "   "]


@pytest.fixture(params=[(True, False), (False, False), (True, True)],
                ids=["uncased", "cased", "split-specials"])
def tiny(request):
    lower_case, split_special = request.param
    return Tokenizer(vocab_from_tokens(TINY), lower_case, split_special_tokens=split_special)


def test_every_code_point_routes_or_splits_like_the_original():
    """For every code point c: either c routes a text to the pure path, or cleaning and CJK
    padding change nothing about "a{c}b" that str.split() would see. (Casing plays no part.)"""
    clean_char = normalize._clean_char.__wrapped__  # uncached: keeps the memos small
    pad_char = normalize._pad_cjk_char.__wrapped__
    routes = fast._needs_text_step.__wrapped__
    routed = 0
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        if cp < 128 or routes(c):
            routed += cp >= 128
            continue
        assert ("a" + pad_char(clean_char(c)) + "b").split() == f"a{c}b".split(), hex(cp)
    assert 200 < routed < 100_000  # the controls, format characters and ideographs
    # ASCII takes its own checks (str.isprintable + a regex): every character, exhaustively.
    tiny = Tokenizer(vocab_from_tokens(TINY))
    for cp in range(128):
        text = f"a{chr(cp)}b"
        if not needs_pure_path(tiny, text):
            assert normalize.pre_tokenize(text) == text.split(), hex(cp)
    # And needs_pure_path really is that per-character test on non-ASCII text.
    for cp in range(128, sys.maxunicode + 1, 101):
        assert needs_pure_path(tiny, f"a{chr(cp)}b") == routes(chr(cp)), hex(cp)


@pytest.mark.parametrize("text, why", DIRTY, ids=[why for _, why in DIRTY])
def test_dirty_texts_take_the_pure_path(tiny, text, why):
    if tiny.split_special_tokens and "[" in text and text.isprintable():
        assert not needs_pure_path(tiny, text)  # nothing special to find
    else:
        assert needs_pure_path(tiny, text), why
    assert encode_batch_fast(tiny, [text]) == [tiny.encode(text)]


@pytest.mark.parametrize("text", CLEAN)
def test_clean_texts_take_the_fast_path(tiny, text):
    assert not needs_pure_path(tiny, text)
    assert encode_batch_fast(tiny, [text]) == [tiny.encode(text)]


def test_random_strings_match_the_pure_path(tiny):
    rng = random.Random(1234)
    alphabet = (list("abcex .,![]") + ["[MASK]", "[SEP]", "[mask]", "中", "é", "e\u0301", "Σ",
                "\x00", "\x0b", "\x1c", "\x85", "\u200d", "\u00ad", "\ufffd", "\t", "\n",
                "\u00a0", "\u2028", "\u3000", "ａ", "😀", "—", "ß", "İ", "\ud800"])
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
             for _ in range(3000)]
    expected = [Tokenizer(tiny.vocab, tiny.lower_case,
                          split_special_tokens=tiny.split_special_tokens).encode(t) for t in texts]
    assert encode_batch_fast(tiny, texts) == expected
    assert tiny.encode_batch(texts, fast=True) == tiny.encode_batch(texts, fast=False) == expected


def test_fast_path_matches_pure_path_on_sotu(uncased_vocab_path, cased_vocab_path):
    lines = [line for line in iter_lines(default_corpus_files()) if line][::10]  # ~2,600 lines
    for path in (uncased_vocab_path, cased_vocab_path):
        fast, pure = Tokenizer.from_file(path), Tokenizer.from_file(path)
        assert fast.encode_batch(lines, fast=True) == pure.encode_batch(lines, fast=False), path


def test_real_vocab_hard_strings(uncased_vocab_path):
    vocab = load_vocab(uncased_vocab_path)
    for lower_case in (True, False):
        texts = [t for t, _ in DIRTY] + CLEAN
        fast = Tokenizer(vocab, lower_case).encode_batch(texts, fast=True)
        assert fast == [Tokenizer(vocab, lower_case).encode(t) for t in texts]
