"""Vocabulary learning: hand-worked merges, layout, determinism, errors, the CLI, and quality
against HuggingFace tokenizers' WordPiece trainer (a test-only reference)."""

import collections
import os
import random
import subprocess
import sys

import pytest

from bertlab.commands import vocab as vocab_command
from bertlab.data.pretraining.corpus import CorpusError, default_corpus_files, iter_lines
from bertlab.text.normalize import basic_tokenize
from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import SPECIAL_TOKENS, UNK, load_vocab, save_vocab, vocab_from_tokens
from bertlab.text.learn import (VocabLearnError, alphabet_tokens, count_words, learn_from_counts,
                           learn_vocab, merge_pieces)

# Sennrich et al.'s example corpus, as word counts.
SENNRICH = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
SENNRICH_ALPHABET = ["d", "e", "i", "l", "n", "o", "r", "s", "t", "w",
                     "##d", "##e", "##i", "##l", "##n", "##o", "##r", "##s", "##t", "##w"]
# Worked by hand. Start: (##e,##s) 9 and (##s,##t) 9 tie -> lexicographically smaller left
# wins: ##es. Then (##es,##t) 9 -> ##est. (##o,##w) 7 and (l,##o) 7 tie, "##o" < "l" -> ##ow,
# then (l,##ow) 7 -> low. newest = n ##e ##w ##est: (##e,##w), (##w,##est), (n,##e) all 6 ->
# ##ew, then (##ew,##est) 6 and (n,##ew) 6 -> ##ewest, then newest. widest = w ##i ##d ##est:
# all pairs 3 -> ##dest, ##idest, widest. Last lower = low ##e ##r: pairs 2 -> ##er, lower.
SENNRICH_PIECES = ["##es", "##est", "##ow", "low", "##ew", "##ewest", "newest",
                   "##dest", "##idest", "widest", "##er", "lower"]


def test_hand_worked_merges():
    assert list(merge_pieces(SENNRICH, min_frequency=1)) == SENNRICH_PIECES


def test_learned_vocab_layout_is_reserved_unused_alphabet_pieces():
    vocab = learn_from_counts(SENNRICH, 100, num_unused=2)
    assert vocab.tokens == (*SPECIAL_TOKENS, "[unused0]", "[unused1]", *SENNRICH_ALPHABET,
                            *SENNRICH_PIECES)
    custom = learn_from_counts(SENNRICH, 100, reserved=("[CLS]", "[SEP]", "[UNK]"))
    assert custom.tokens[:3] == ("[CLS]", "[SEP]", "[UNK]")
    assert custom.tokens[3:] == (*SENNRICH_ALPHABET, *SENNRICH_PIECES)


def test_min_frequency_stops_merging():
    # (##e,##r) and (low,##er) are seen only twice (the two "lower"s).
    assert list(merge_pieces(SENNRICH, min_frequency=3)) == SENNRICH_PIECES[:-2]
    assert list(merge_pieces(SENNRICH, min_frequency=2)) == SENNRICH_PIECES
    vocab = learn_from_counts(SENNRICH, 100, min_frequency=3)
    assert len(vocab) == 5 + 20 + 10  # stops early: smaller than asked for


def test_size_caps_the_learned_pieces():
    vocab = learn_from_counts(SENNRICH, 5 + 20 + 4)
    assert vocab.tokens[25:] == tuple(SENNRICH_PIECES[:4])


def test_repeated_symbol_merges_left_to_right_and_counts_stay_exact():
    # a ##a ##a ##a: (##a,##a) is seen twice in the word -> merged left to right into
    # a ##aa ##a; then (a,##aa) and (##aa,##a) tie at 1, "##aa" < "a" -> ##aaa, then aaaa.
    assert list(merge_pieces({"aaaa": 1}, min_frequency=1)) == ["##aa", "##aaa", "aaaa"]
    # with min_frequency 2 only the pair seen twice inside the one word is merged
    assert list(merge_pieces({"aaaa": 1}, min_frequency=2)) == ["##aa"]


def test_ties_do_not_depend_on_input_order():
    forward = {"cd": 1, "ab": 1, "ef": 1}
    backward = dict(reversed(list(forward.items())))
    assert list(merge_pieces(forward, 1)) == list(merge_pieces(backward, 1)) == ["ab", "cd", "ef"]


def test_alphabet_has_both_forms_except_for_punctuation_and_cjk():
    # punctuation and CJK ideographs are always words of their own: no ## form is ever used
    counts = count_words(["Hello, world! 中文"])
    assert alphabet_tokens(counts) == ["!", ",", "d", "e", "h", "l", "o", "r", "w", "中", "文",
                                       "##d", "##e", "##h", "##l", "##o", "##r", "##w"]


def test_count_words_equals_basic_tokenize_of_whole_lines():
    lines = ["The  Union,\tis strong!", "naïve café\u00a0CAFÉ\u3000x", "a\x0cb c\u200bd 中文字",
             "keep [MASK] whole; [mask] not", "", "   ", "e.g. U.S.A. -- 1,000,000"]
    expected = collections.Counter(w for line in lines for w in basic_tokenize(line, True))
    assert count_words(lines) == expected
    expected_cased = collections.Counter(w for line in lines for w in basic_tokenize(line, False))
    assert count_words(lines, lower_case=False) == expected_cased


def test_cased_and_uncased():
    text = ["Héllo World", "Héllo world"]
    uncased = learn_vocab(text, 100, min_frequency=1)
    cased = learn_vocab(text, 100, lower_case=False, min_frequency=1)
    assert "hello" in uncased and "world" in uncased
    assert "H" not in uncased and "é" not in uncased
    assert "Héllo" in cased and "World" in cased and "world" in cased and "é" in cased
    assert "##é" in cased and "hello" not in cased
    assert Tokenizer(uncased).tokenize("HELLO world") == ["hello", "world"]
    assert Tokenizer(cased, lower_case=False).tokenize("Héllo World") == ["Héllo", "World"]


def test_reserved_tokens_in_text_and_overlong_words_are_not_learned():
    long_word = "z" * 101  # the tokenizer turns it into [UNK] whatever the vocabulary
    vocab = learn_vocab([f"[MASK] ab ab [MASK] {long_word} {long_word}"], 100)
    assert vocab.tokens == (*SPECIAL_TOKENS, "a", "b", "##a", "##b", "ab")


def test_same_input_gives_identical_file(tmp_path):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(["the", "then", "there", "other", "thermal", "her", "mother",
                                  "Hers", "ethernet", "theta,"]) for _ in range(12))
             for _ in range(300)]
    first, second, shuffled = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    save_vocab(learn_vocab(lines, 40), first)
    save_vocab(learn_vocab(iter(lines), 40), second)
    save_vocab(learn_vocab(rng.sample(lines, len(lines)), 40), shuffled)
    assert first.read_bytes() == second.read_bytes() == shuffled.read_bytes()
    assert len(load_vocab(first)) == 40


def test_empty_input_is_an_error():
    for lines in ([], ["", "   ", "\t"]):
        with pytest.raises(VocabLearnError, match="no words to learn from"):
            learn_vocab(lines, 100)


def test_size_below_the_alphabet_is_an_error_naming_the_minimum():
    with pytest.raises(VocabLearnError, match="must be at least 25"):
        learn_from_counts(SENNRICH, 24)
    assert len(learn_from_counts(SENNRICH, 25)) == 25  # exactly the alphabet fits
    with pytest.raises(VocabLearnError, match="must be at least 28"):
        learn_from_counts(SENNRICH, 27, num_unused=3)


def test_bad_reserved_and_options_are_errors():
    with pytest.raises(VocabLearnError, match=r"'\[UNK\]' is listed twice"):
        learn_from_counts(SENNRICH, 100, reserved=("[PAD]", "[UNK]", "[UNK]"))
    with pytest.raises(VocabLearnError, match=r"\[unused0\]"):
        learn_from_counts(SENNRICH, 100, reserved=("[PAD]", "[unused0]"), num_unused=1)
    with pytest.raises(VocabLearnError, match="non-empty"):
        learn_from_counts(SENNRICH, 100, reserved=("[PAD]", ""))
    with pytest.raises(VocabLearnError, match="min_frequency"):
        learn_from_counts(SENNRICH, 100, min_frequency=0)


# ---------------------------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------------------------

def test_cli_end_to_end(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"low low low low low lower lower\n\n"
                       b"newest newest newest newest newest newest\n"
                       b"widest widest widest\n\xff\n")  # one invalid UTF-8 byte
    out = tmp_path / "sub" / "vocab.txt"
    rc = vocab_command.main(["--corpus", str(corpus), "--size", "100", "--out", str(out),
                             "--unused", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    assert load_vocab(out).tokens == (*SPECIAL_TOKENS, "[unused0]", "[unused1]",
                                      *SENNRICH_ALPHABET, *SENNRICH_PIECES)
    assert "16 words (4 distinct, uncased)" in captured.out
    assert "39 entries = 5 reserved + 2 unused + 20 characters + 12 learned pieces" in captured.out
    assert "stopped at 39 of the 100 entries" in captured.out
    assert "1 invalid UTF-8 byte sequences were replaced" in captured.err


def test_cli_cased(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Ab Ab Ab\n", encoding="utf-8")
    out = tmp_path / "v.txt"
    assert vocab_command.main(["--corpus", str(corpus), "--size", "10", "--out", str(out),
                               "--cased", "--no-progress"]) == 0
    assert load_vocab(out).tokens == (*SPECIAL_TOKENS, "A", "b", "##A", "##b", "Ab")


@pytest.mark.parametrize("args, message", [
    (["--corpus", "{tmp}/missing.txt", "--size", "100"], "missing.txt: corpus file not found"),
    (["--corpus", "{tmp}/empty.txt", "--size", "100"], "no words to learn from: {tmp}/empty.txt"),
    (["--corpus", "{tmp}/small.txt", "--size", "6"], "size must be at least 7"),
])
def test_cli_errors_exit_2_without_traceback(tmp_path, capsys, args, message):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    (tmp_path / "small.txt").write_text("aa\n", encoding="utf-8")
    args = [a.format(tmp=tmp_path) for a in args]
    rc = vocab_command.main(args + ["--out", str(tmp_path / "v.txt"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err
    assert not (tmp_path / "v.txt").exists()


def test_cli_output_does_not_depend_on_hash_seed(tmp_path):
    """Determinism across processes: string hashing (set/dict order) must never leak in."""
    corpus = tmp_path / "c.txt"
    rng = random.Random(1)
    syllables = ["ka", "to", "ri", "men", "sa", "lo", "un", "ve", "pi", "dor"]
    corpus.write_text("\n".join(" ".join("".join(rng.choices(syllables, k=rng.randint(1, 4)))
                                         for _ in range(15)) for _ in range(200)), "utf-8")
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"v{seed}.txt"
        subprocess.run([sys.executable, "-m", "bertlab", "vocab", "--corpus", str(corpus),
                        "--size", "120", "--out", str(out), "--no-progress"], check=True,
                       capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 120


# ---------------------------------------------------------------------------------------------
# Quality against HuggingFace tokenizers' WordPiece trainer, both applied by our tokenizer.
# ---------------------------------------------------------------------------------------------

def sotu_split(num_files):
    try:
        files = default_corpus_files()[:num_files]
    except CorpusError as e:
        pytest.skip(str(e))
    held = files[9::10]
    return [f for f in files if f not in held], held


def hf_wordpiece_vocab(lines, size):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token=UNK))
    hf.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        show_progress=False, continuing_subword_prefix="##")
    hf.train_from_iterator(lines, trainer)
    table = hf.get_vocab()
    return vocab_from_tokens(sorted(table, key=table.get))


def unk_rate_and_pieces_per_word(vocab, lines):
    tokenizer = Tokenizer(vocab)
    words = pieces = unknown = 0
    for line in lines:
        tokens = tokenizer.tokenize(line)
        words += len(basic_tokenize(line))
        pieces += len(tokens)
        unknown += tokens.count(UNK)
    return unknown / pieces, pieces / words


def check_quality_against_hf(num_files, size):
    train, held = sotu_split(num_files)
    held_lines = [line for line in iter_lines(held) if line]
    ours = learn_vocab(iter_lines(train), size)
    reference = hf_wordpiece_vocab(iter_lines(train), size)
    assert len(ours) == size
    our_unk, our_ppw = unk_rate_and_pieces_per_word(ours, held_lines)
    _, hf_ppw = unk_rate_and_pieces_per_word(reference, held_lines)
    assert our_unk < 0.01
    assert our_ppw <= 1.10 * hf_ppw, (our_ppw, hf_ppw)


def test_quality_matches_hf_trainer_on_a_sample():
    check_quality_against_hf(num_files=20, size=2000)


@pytest.mark.slow
def test_quality_matches_hf_trainer_on_the_whole_corpus():
    check_quality_against_hf(num_files=10_000, size=8000)
