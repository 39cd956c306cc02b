"""bertlab.text.tokenizer on a tiny hand-made vocabulary: every expected value is worked out by hand
from the original BERT rules (tokenization.py in google-research/bert)."""

import random

import numpy as np
import pytest

from bertlab.text import normalize
from bertlab.text import tokenizer as tk
from bertlab.text.normalize import (basic_tokenize, clean_text, pad_cjk, split_punctuation,
                                    strip_accents)
from bertlab.text.tokenizer import Tokenizer, decode_tokens, pack_ids, truncate_pair_lengths, wordpiece
from bertlab.text.vocab import (CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK, VocabError,
                                infer_lower_case, load_vocab, save_vocab, vocab_from_tokens)

TINY = [PAD, UNK, CLS, SEP, MASK, "[unused0]", "un", "##aff", "##able", "the", "cafe", "café",
        "a", "##b", "##bc", "ab", "x", "##x", "!", ".", ",", "$", "[", "]", "mask", "hello",
        "world", "##s", "中", "文", "is", "e", "##\u0301", "σ", "##ς", "##σ", "ο", "##δ", "##ος"]
IDS = {t: i for i, t in enumerate(TINY)}


@pytest.fixture
def vocab():
    return vocab_from_tokens(TINY, source="tiny")


@pytest.fixture
def uncased(vocab):
    return Tokenizer(vocab, lower_case=True)


@pytest.fixture
def cased(vocab):
    return Tokenizer(vocab, lower_case=False)


# ---------------------------------------------------------------------------- vocabulary files

def test_vocab_round_trip_and_special_lookup(tmp_path, vocab):
    path = tmp_path / "vocab.txt"
    save_vocab(vocab, path)
    assert path.read_text(encoding="utf-8") == "".join(t + "\n" for t in TINY)
    loaded = load_vocab(path)
    assert loaded == vocab and loaded.source == str(path)
    assert (loaded.pad_id, loaded.unk_id, loaded.cls_id, loaded.sep_id, loaded.mask_id) == (0, 1, 2, 3, 4)
    assert loaded.special_ids == (0, 1, 2, 3, 4)
    assert loaded.longest == len("[unused0]")


def test_vocab_tolerates_bom_crlf_and_missing_final_newline(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"\xef\xbb\xbf[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello")
    assert load_vocab(path).tokens == (PAD, UNK, CLS, SEP, MASK, "hello")


@pytest.mark.parametrize("content, message", [
    (b"", "vocabulary is empty"),
    (b"[PAD]\nhello\nworld\nhello\n", ":4: duplicate vocabulary entry 'hello' (first on line 2)"),
    (b"[PAD]\n\nhello\n", ":2: empty vocabulary entry"),
    (b"[PAD]\nok\n\xff\xfe\n", ":3: not valid UTF-8"),
])
def test_vocab_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(VocabError) as err:
        load_vocab(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_vocab_missing_file_or_directory(tmp_path):
    with pytest.raises(VocabError, match="vocab.txt: vocabulary file not found"):
        load_vocab(tmp_path / "vocab.txt")
    with pytest.raises(VocabError, match="is a directory"):
        load_vocab(tmp_path)


@pytest.mark.parametrize("tokens, missing", [
    (["[PAD]", "[CLS]", "[SEP]", "[MASK]", "hello"], "[UNK]"),
    (["hello", "world"], "[PAD] [UNK] [CLS] [SEP] [MASK]"),
    (["[pad]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[PAD]"),       # case matters
])
def test_vocab_file_without_special_tokens_fails_at_load(tmp_path, tokens, missing):
    """Before: such a file loaded and the first unknown word raised KeyError '[UNK]'."""
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    with pytest.raises(VocabError) as err:
        load_vocab(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a BERT vocabulary: missing the special token")
    assert f" {missing} (every vocab.txt needs [PAD] [UNK] [CLS] [SEP] [MASK]" in message
    assert "\n" not in message
    with pytest.raises(VocabError, match="not a BERT vocabulary"):
        Tokenizer.from_file(path)
    # in memory (vocabulary learning, tests) a table without them is still allowed
    assert len(vocab_from_tokens(tokens)) == len(tokens)


def test_tokenize_command_names_a_vocab_without_special_tokens(tmp_path, capsys):
    from bertlab.commands import tokenize as command

    path = tmp_path / "vocab.txt"
    path.write_text("hello\nworld\n", encoding="utf-8")
    assert command.main(["--vocab", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and "missing the special tokens [PAD] [UNK] [CLS] [SEP] [MASK]" in err


def test_missing_special_token_is_named(vocab):
    small = vocab_from_tokens(["[PAD]", "a"], source="small.txt")
    with pytest.raises(KeyError, match=r"'\[MASK\]' is not in the vocabulary small.txt"):
        small.mask_id


def test_infer_lower_case():
    assert infer_lower_case(vocab_from_tokens([PAD, "[unused0]", "the", "##ing", "ℝ"]))
    assert not infer_lower_case(vocab_from_tokens([PAD, "the", "The"]))


def test_from_file_infers_or_takes_casing(tmp_path):
    path = tmp_path / "vocab.txt"
    save_vocab(vocab_from_tokens([*SPECIAL_TOKENS, "Paris", "paris"]), path)
    assert Tokenizer.from_file(path).lower_case is False
    assert Tokenizer.from_file(path, lower_case=True).lower_case is True
    assert Tokenizer.from_file(path, split_special_tokens=True).split_special_tokens


# ------------------------------------------------------------------------- BasicTokenizer steps

def test_clean_text_drops_controls_and_maps_whitespace():
    # NUL, U+FFFD, a C0 control, DEL, a C1 control, soft hyphen and zero-width joiner (format
    # characters, Cf) disappear and glue their neighbours; tab, CR, LF, NBSP, ideographic space -> ' '.
    text = "a\x00b\ufffdc\x07d\x7fe\x85f\u00adg\u200dh\ti\rj\nk\u00a0l\u3000m"
    assert clean_text(text) == "abcdefgh i j k l m"
    # U+2028 (line separator) is neither whitespace nor control for BERT: kept here, and it
    # splits later only because str.split() does.
    assert clean_text("a\u2028b") == "a\u2028b"


def test_pad_cjk_only_ideographs():
    assert pad_cjk("ab中文c") == "ab 中  文 c"
    assert pad_cjk("カタカナ한국") == "カタカナ한국"  # kana and hangul are not split
    assert pad_cjk("\U00020000\uf900") == " \U00020000  \uf900 "


def test_strip_accents_nfd_drops_only_mn():
    assert strip_accents("café naïve") == "cafe naive"
    assert strip_accents("e\u0301") == "e"
    assert strip_accents("ß") == "ß"  # no canonical decomposition
    assert strip_accents("ａ") == "ａ"  # full-width: compatibility only, so kept (NFD, not NFKD)


def test_split_punctuation_counts_ascii_symbols():
    assert split_punctuation("$5^2`x`") == ["$", "5", "^", "2", "`", "x", "`"]
    assert split_punctuation("a—b€c") == ["a", "—", "b€c"]  # em dash is Pd; the euro sign is Sc
    assert split_punctuation("...") == [".", ".", "."]


def test_basic_tokenize_by_hand():
    text = " Héllo,\tWORLD!! 中文 don't\u00a0[MASK] "
    assert basic_tokenize(text, lower_case=True) == [
        "hello", ",", "world", "!", "!", "中", "文", "don", "'", "t", "[MASK]"]
    assert basic_tokenize(text, lower_case=False) == [
        "Héllo", ",", "WORLD", "!", "!", "中", "文", "don", "'", "t", "[MASK]"]
    assert basic_tokenize("[MASK]", never_split=()) == ["[", "mask", "]"]


# ---------------------------------------------------------------------------------- WordPiece

def test_wordpiece_greedy_longest_match_first(vocab):
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]
    # Greedy, not optimal: "ab" is taken first, after which "c" alone has no piece -> [UNK],
    # although "a" + "##bc" would have covered the word.
    assert wordpiece("abc", vocab) == [UNK]
    assert wordpiece("abx", vocab) == ["ab", "##x"]
    assert wordpiece("xq", vocab) == [UNK]  # one piece without a match makes the whole word [UNK]
    assert wordpiece("xxx", vocab) == ["x", "##x", "##x"]


def test_wordpiece_length_limit_counts_characters(vocab):
    assert wordpiece("x" * 100, vocab) == ["x"] + ["##x"] * 99
    assert wordpiece("x" * 101, vocab) == [UNK]
    assert wordpiece("x" * 150, vocab, max_chars=200) == ["x"] + ["##x"] * 149


# ---------------------------------------------------------------------------------- Tokenizer

def test_tokenize_encode_decode(uncased):
    tokens = uncased.tokenize("The CAFÉ is unaffable!")
    assert tokens == ["the", "cafe", "is", "un", "##aff", "##able", "!"]
    assert uncased.encode("The CAFÉ is unaffable!") == [IDS[t] for t in tokens]
    assert uncased.decode(uncased.encode("The CAFÉ is unaffable!")) == "the cafe is unaffable !"
    assert uncased.tokenize("") == [] and uncased.tokenize(" \t\n ") == []
    assert uncased.tokenize("zzz") == [UNK]


def test_cased_keeps_case_and_accents(cased):
    assert cased.tokenize("café Cafe") == ["café", UNK]


def test_special_tokens_typed_in_text_stay_whole(uncased, vocab):
    # Recognised anywhere, case-sensitive, like transformers' BertTokenizer.
    assert uncased.tokenize("the [MASK].") == ["the", MASK, "."]
    assert uncased.tokenize("x[MASK]x [mask]") == ["x", MASK, "x", "[", "mask", "]"]
    assert uncased.tokenize("[CLS]hello[SEP]") == [CLS, "hello", SEP]
    # The original splits them like any other text.
    original = Tokenizer(vocab, lower_case=True, split_special_tokens=True)
    assert original.tokenize("the [MASK].") == ["the", "[", "mask", "]", "."]


def test_no_nfc_and_python3_final_sigma(uncased, cased):
    # Decomposed é stays two code points when cased (transformers' BertTokenizer composes it).
    assert cased.tokenize("e\u0301") == ["e", "##\u0301"]
    assert uncased.tokenize("e\u0301") == ["e"]
    # str.lower() on the whole word gives a final sigma, as the original on Python 3.
    assert uncased.tokenize("ΟΔΟΣ") == ["ο", "##δ", "##ος"]


def test_decode_joins_pieces_and_can_skip_specials(uncased):
    ids = [IDS[t] for t in [CLS, "un", "##aff", "##able", "world", "##s", SEP, PAD, PAD]]
    assert uncased.decode(ids) == "[CLS] unaffable worlds [SEP] [PAD] [PAD]"
    assert uncased.decode(ids, skip_special_tokens=True) == "unaffable worlds"
    assert uncased.decode(np.array(ids, dtype=np.int32)) == uncased.decode(ids)
    assert decode_tokens(["##x", "a", "##b"]) == "##x ab"


def test_chunk_cache_is_bounded_and_never_changes_answers(vocab):
    tok = Tokenizer(vocab, lower_case=True)
    object.__setattr__(tok.chunk_cache, "_max_entries", 3)
    texts = ["hello world the x", "unaffable the", "hello xx cafe"] * 3
    assert [tok.encode(t) for t in texts] == [Tokenizer(vocab).encode(t) for t in texts]
    assert len(tok.chunk_cache) <= 3


def test_encode_batch_picks_fast_path_by_size(monkeypatch, uncased):
    import bertlab.text.fast as fast
    calls = []
    real = fast.encode_batch_fast
    monkeypatch.setattr(fast, "encode_batch_fast", lambda t, texts: calls.append(len(texts)) or real(t, texts))
    small = ["hello world"] * (tk.FAST_BATCH_THRESHOLD - 1)
    large = ["hello world"] * tk.FAST_BATCH_THRESHOLD
    assert uncased.encode_batch(small) == [[IDS["hello"], IDS["world"]]] * len(small)
    assert uncased.encode_batch(large) == [[IDS["hello"], IDS["world"]]] * len(large)
    assert calls == [len(large)]
    with pytest.raises(TypeError, match="use encode"):
        uncased.encode_batch("hello")


# ------------------------------------------------------------------------------------ packing

def _truncate_by_popping(len_a, len_b, budget):
    """The original _truncate_seq_pair, literally."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_truncate_pair_lengths_matches_the_original_loop():
    rng = random.Random(0)
    cases = [(rng.randrange(0, 60), rng.randrange(0, 60), rng.randrange(0, 80)) for _ in range(3000)]
    cases += [(a, b, n) for a in range(8) for b in range(8) for n in range(12)]
    for a, b, n in cases:
        assert truncate_pair_lengths(a, b, n) == _truncate_by_popping(a, b, n), (a, b, n)
    assert truncate_pair_lengths(10**6, 3, 125) == (122, 3)


def test_pack_single_and_pair_by_hand(vocab):
    c, s, p = IDS[CLS], IDS[SEP], IDS[PAD]
    single = pack_ids([[10, 11, 12], []], max_length=5, vocab=vocab)
    np.testing.assert_array_equal(single["token_ids"], [[c, 10, 11, 12, s], [c, s, p, p, p]])
    np.testing.assert_array_equal(single["segment_ids"], np.zeros((2, 5)))
    np.testing.assert_array_equal(single["attention_mask"], [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert all(v.dtype == np.int32 and v.shape == (2, 5) for v in single.values())

    truncated = pack_ids([[10, 11, 12, 13]], max_length=4, vocab=vocab)
    np.testing.assert_array_equal(truncated["token_ids"], [[c, 10, 11, s]])

    # A has 4 ids, B 2, room for 9 - 3 = 6: nothing dropped. With room for 4: A loses 2.
    pair = pack_ids([[10, 11, 12, 13]], [[20, 21]], max_length=9, vocab=vocab)
    np.testing.assert_array_equal(pair["token_ids"], [[c, 10, 11, 12, 13, s, 20, 21, s]])
    np.testing.assert_array_equal(pair["segment_ids"], [[0, 0, 0, 0, 0, 0, 1, 1, 1]])
    short = pack_ids([[10, 11, 12, 13]], [[20, 21]], max_length=7, vocab=vocab)
    np.testing.assert_array_equal(short["token_ids"], [[c, 10, 11, s, 20, 21, s]])
    padded = pack_ids([[10]], [[20]], max_length=7, vocab=vocab)
    np.testing.assert_array_equal(padded["token_ids"], [[c, 10, s, 20, s, p, p]])
    np.testing.assert_array_equal(padded["segment_ids"], [[0, 0, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(padded["attention_mask"], [[1, 1, 1, 1, 1, 0, 0]])


def test_pack_errors(vocab, uncased):
    with pytest.raises(ValueError, match="cannot hold the 3 special tokens of a text pair"):
        pack_ids([[1]], [[1]], max_length=2, vocab=vocab)
    with pytest.raises(ValueError, match="2 first segments but 1 second"):
        pack_ids([[1], [2]], [[1]], max_length=8, vocab=vocab)
    with pytest.raises(TypeError, match="wrap it in a list"):
        uncased.pack("hello")
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        uncased.pack(["a", "b"], ["c"])


def test_tokenizer_pack_texts_and_pairs(uncased):
    batch = uncased.pack(["hello world", "the [MASK] !"], ["x", "unaffable"], max_length=8)
    # Row 2: A and B have 3 ids each and room for 8 - 3 = 5; on a tie B loses its last id.
    expected = [[CLS, "hello", "world", SEP, "x", SEP, PAD, PAD],
                [CLS, "the", MASK, "!", SEP, "un", "##aff", SEP]]
    np.testing.assert_array_equal(batch["token_ids"], [[IDS[t] for t in row] for row in expected])
    np.testing.assert_array_equal(batch["segment_ids"], [[0, 0, 0, 0, 1, 1, 0, 0],
                                                         [0, 0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8])


# ------------------------------------------------------------------------ bertlab tokenize CLI

@pytest.fixture
def vocab_file(tmp_path, vocab):
    path = tmp_path / "vocab.txt"
    save_vocab(vocab, path)
    return path


def test_tokenize_stream_line_for_line(uncased):
    import io

    from bertlab.commands.tokenize import tokenize_stream
    long_line = "hello " * 50_000
    data = (b"The CAFE!\r\n\nhello\xff world\xef\xbf\xbd\n" + long_line.encode() + b"\n"
            + b"x [MASK] \xc3")  # no final newline; ends inside a 2-byte sequence
    out = io.BytesIO()
    lines, replaced = tokenize_stream(uncased, io.BytesIO(data), out, ids=False, chunk_lines=2)
    # \xff and the truncated \xc3 are replaced (then deleted like any U+FFFD); the U+FFFD spelled
    # out in the input is deleted too but is not a replacement.
    assert (lines, replaced) == (5, 2)
    assert out.getvalue().decode().split("\n") == [
        "the cafe !", "", "hello world", " ".join(["hello"] * 50_000), "x [MASK]", ""]


def test_tokenize_command_ids_from_file(tmp_path, vocab_file, capsysbinary):
    from bertlab.commands.tokenize import main
    text = tmp_path / "in.txt"
    text.write_bytes("unaffable\n\nthe [MASK]\n".encode())
    assert main(["--vocab", str(vocab_file), "--ids", str(text)]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out.decode() == f"6 7 8\n\n{IDS['the']} {IDS[MASK]}\n"
    assert captured.err == b""


def test_tokenize_command_cased_and_split_specials(tmp_path, vocab_file, capsysbinary):
    from bertlab.commands.tokenize import main
    text = tmp_path / "in.txt"
    text.write_bytes("Cafe café [MASK]\n".encode())
    assert main(["--vocab", str(vocab_file), "--cased", "--split-special-tokens", str(text)]) == 0
    assert capsysbinary.readouterr().out.decode() == "[UNK] café [ [UNK] ]\n"


def test_tokenize_command_errors(tmp_path, vocab_file, capsys):
    from bertlab.commands.tokenize import main
    assert main(["--vocab", str(tmp_path / "missing.txt"), "x"]) == 2
    assert "missing.txt: vocabulary file not found" in capsys.readouterr().err
    assert main(["--vocab", str(vocab_file), str(tmp_path / "nope.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_tokenize_command_reads_stdin_and_reports_invalid_utf8(vocab_file):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "bertlab", "tokenize", "--vocab", str(vocab_file)],
                            input=b"hello \xffworld\nthe\n", capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello world\nthe\n"
    assert b"<stdin>: replaced 1 invalid UTF-8 byte sequence(s)" in result.stderr


def test_progress_bar_only_for_large_files_on_a_terminal(tmp_path, monkeypatch):
    from bertlab.commands import tokenize as command
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_bytes(b"x\n")
    large.write_bytes(b"x\n" * (command.PROGRESS_MIN_BYTES // 2 + 1))
    monkeypatch.setattr(command.sys.stderr, "isatty", lambda: True, raising=False)
    assert not command._progress_bar(str(large)).disable
    assert command._progress_bar(str(small)).disable
    assert command._progress_bar(None).disable
    monkeypatch.setattr(command.sys.stderr, "isatty", lambda: False, raising=False)
    assert command._progress_bar(str(large)).disable


def test_ascii_chunks_split_like_split_punctuation():
    """split_chunk takes a regex shortcut for ASCII; it must agree with the transcription of the
    original on every ASCII character, alone and between letters."""
    for cp in range(128):
        for chunk in (chr(cp), f"ab{chr(cp)}cd", f"{chr(cp)}{chr(cp)}x"):
            expected = [w for p in split_punctuation(chunk.lower()) for w in p.split()]
            assert normalize.split_chunk(chunk, lower_case=True) == expected, hex(cp)
            expected = [w for p in split_punctuation(chunk) for w in p.split()]
            assert normalize.split_chunk(chunk, lower_case=False) == expected, hex(cp)


def test_tokenizer_pickles_with_its_memos(uncased):
    import pickle
    uncased.encode("hello world")
    copy = pickle.loads(pickle.dumps(uncased))
    assert copy == uncased and "hello" in copy.chunk_cache
    assert copy.encode("the cafe, unaffable") == uncased.encode("the cafe, unaffable")
    assert copy.chunk_cache._encode_chunk.__self__ is copy  # the memo fills the copy's own tables
