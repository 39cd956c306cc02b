"""data.tokenize_on_device: raw segment texts in the shards, ids made by the jitted encoder.

The claim under test is that the device rebuilds the host path's batches exactly, so a run gives
the same losses either way (and may switch between the two on resume). The corpora here keep
clear of tokenizer_jax.DIVERGENCES: no runs of out-of-order spacing combining marks (the
canonical-reordering corner, uncased only), and every text is valid UTF-8 that fits its width.
"""

import json
import os
import random
import shutil

import jax
import numpy as np
import pytest

from bertlab import cli
from bertlab.train import pretrain
from bertlab.checkpoints import training_state as ckpt
from bertlab.config_cli import load_config_file
from bertlab.data.pretraining import on_device
from bertlab.data.pretraining.create import create_pretraining_data
from bertlab.data.pretraining.segment_text import document_texts, line_layout
from bertlab.data.pretraining.shards import ShardedExamples, ShardError
from bertlab.data.pretraining.text_shards import TextExamples, segment_checksum
from bertlab.train.metric_writer import read_metrics
from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import save_vocab, vocab_from_tokens
from bertlab.text.device.tables import tables_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/pretrain.py:quick"
LOSS_KEYS = ("loss", "mlm_loss", "mlm_accuracy", "grad_norm", "learning_rate")

pytestmark = pytest.mark.usefixtures("module_compilation_cache")

# ids:   0      1      2      3      4      5     6     7     8     9          10        11
HAND = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "un", "##believ",
        "##able", ".", "cafe", "σοφος", "東", "'", "t", "don", "on"]
#        12      13       14    15   16   17     18


@pytest.fixture(scope="module")
def hand():
    return Tokenizer(vocab_from_tokens(HAND), lower_case=True)


@pytest.fixture(scope="module")
def hand_tables(hand):
    return jax.device_put(tables_for(hand))


# ------------------------------------------------------------------ host side: where text is cut

def test_segment_text_by_hand(hand):
    lines = ["The cat", "unbelievable  cat."]
    ids = [hand.encode(line) for line in lines]
    assert ids == [[5, 6], [8, 9, 10, 6, 11]]  # the cat | un ##believ ##able cat .
    flat = np.array(sum(ids, []), np.int32)
    layout = line_layout(hand, lines, flat, np.array([2, 5]))
    (doc,) = document_texts(lines, [2], layout)
    assert doc.text == "The cat\nunbelievable  cat."
    # chunks: "The" "cat" | "unbelievable" "cat." -> first tokens 0, 1, 2, 5, end 7
    assert doc.first_token.tolist() == [0, 1, 2, 5, 7]
    # Tokens 3..5 (##believ ##able cat): the text from "unbelievable", skipping its first piece.
    assert doc.segment(3, 6) == (b"unbelievable  cat.", 1, 3)
    assert doc.segment(1, 3) == (b"cat\nunbelievable", 0, 2)  # across a line break
    assert doc.segment(4, 4) == (b"", 0, 0)


def test_checksum_by_hand():
    m = 2654435761
    assert segment_checksum([5, 7]) == (6 * m + 8 * 2 * m) % 2**32
    assert segment_checksum([]) == 0
    assert segment_checksum([7, 5]) != segment_checksum([5, 7])  # order matters
    ids = jax.numpy.array([[5, 7, 9], [7, 5, 0]])
    got = on_device.device_checksums(ids, jax.numpy.array([2, 2]))
    assert got.tolist() == [segment_checksum([5, 7]), segment_checksum([7, 5])]


# ------------------------------------------------------------------ device side: one batch

def raw_batch(rows):
    """TextExamples.take's layout from (text A, skip, keep, text B, skip, keep, nsp) rows."""
    width = 32
    out = {"text_bytes": np.zeros((len(rows), 2, width), np.uint8),
           "text_lengths": np.zeros((len(rows), 2), np.int32),
           "skip": np.zeros((len(rows), 2), np.int32), "keep": np.zeros((len(rows), 2), np.int32),
           "checksums": np.zeros((len(rows), 2), np.uint32),
           "nsp_labels": np.array([r[-1] for r in rows], np.int32)}
    for i, row in enumerate(rows):
        for s, (text, skip, keep, ids) in enumerate((row[0:4], row[4:8])):
            data = text.encode()
            out["text_bytes"][i, s, :len(data)] = np.frombuffer(data, np.uint8)
            out["text_lengths"][i, s] = len(data)
            out["skip"][i, s], out["keep"][i, s] = skip, keep
            out["checksums"][i, s] = segment_checksum(ids)
    return out


HAND_ROWS = [
    # A = "##believ ##able" (truncation removed "un"), B = "the cat sat"
    ("unbelievable cat", 1, 2, [9, 10], "The cat sat.", 0, 3, [5, 6, 7], 1),
    # one segment: typed [MASK], an accent stripped, a final sigma, a CJK ideograph
    ("[MASK] Café ΣΟΦΟΣ 東", 0, 4, [4, 12, 13, 14], "", 0, 0, [], 0),
    # B cut at the back inside "don't" (don ' t): keep 2 of its 3 tokens
    ("the", 0, 1, [5], "don't", 0, 2, [17, 15], 0),
]


def test_device_batch_by_hand(hand, hand_tables):
    tokenize = on_device.make_tokenize_fn(hand.vocab, max_seq_length=10, max_encoded=8)
    batch, wrong = tokenize(hand_tables, raw_batch(HAND_ROWS))
    batch = jax.device_get(batch)
    assert batch["token_ids"].tolist() == [
        [2, 9, 10, 3, 5, 6, 7, 3, 0, 0],   # [CLS] ##believ ##able [SEP] the cat sat [SEP]
        [2, 4, 12, 13, 14, 3, 0, 0, 0, 0],  # [CLS] [MASK] cafe σοφος 東 [SEP]
        [2, 5, 3, 17, 15, 3, 0, 0, 0, 0],   # [CLS] the [SEP] don ' [SEP]
    ]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 0, 0], [0] * 10,
                                             [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [8, 6, 6]
    assert batch["nsp_labels"].tolist() == [1, 0, 0]
    assert int(wrong) == 0
    reference = on_device.host_reference(raw_batch(HAND_ROWS), hand, 10)
    for key, value in reference.items():
        np.testing.assert_array_equal(batch[key], value, err_msg=key)


def test_device_counts_segments_that_differ_from_the_host(hand, hand_tables):
    raw = raw_batch(HAND_ROWS)
    raw["checksums"][0, 1] += 1   # as if the host had other ids for row 0's B
    raw["keep"][2, 1] = 4         # more tokens than "don't" has: cannot match the host
    tokenize = on_device.make_tokenize_fn(hand.vocab, max_seq_length=10, max_encoded=8)
    assert int(tokenize(hand_tables, raw)[1]) == 2


# ------------------------------------------------------------------ a whole raw-text dataset

@pytest.fixture(scope="module")
def hand_dataset(tmp_path_factory, hand):
    """Short sequences (max_seq_length 9) so truncation often cuts inside a word; with NSP."""
    rng = random.Random(1)
    words = ["the", "cat", "sat", "on", "unbelievable", "Café", "ΣΟΦΟΣ", "東東", "don't", "[MASK]",
             "cat.", "unknownword"]
    path = tmp_path_factory.mktemp("hand") / "corpus.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(30):
            for _ in range(rng.randint(2, 5)):
                f.write(" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + "\n")
            f.write("\n")
    out = tmp_path_factory.mktemp("hand_data") / "data"
    create_pretraining_data([str(path)], hand, str(out), max_seq_length=9, next_sentence=True,
                            eval_fraction=0.2, progress=False, raw_text=True, chunk_lines=7,
                            reservoir_documents=4)
    return out


def test_device_batches_equal_the_id_shards(hand, hand_tables, hand_dataset):
    limits = json.loads((hand_dataset / "meta.json").read_text())["raw_text"]
    tokenize = on_device.make_tokenize_fn(hand.vocab, max_seq_length=9,
                                          max_encoded=limits["max_encoded"])
    cut_inside_a_word = 0
    for split in ("train", "eval"):
        ids = ShardedExamples.open(hand_dataset / split)
        texts = TextExamples.open(hand_dataset / split, **limits)
        assert len(ids) == len(texts) > 0
        rows = np.arange(len(ids))
        want, raw = ids.take(rows), texts.take(rows)
        got, wrong = jax.device_get(tokenize(hand_tables, raw))
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{split} {key}")
        assert int(wrong) == 0
        cut_inside_a_word += int((raw["skip"] > 0).sum())
    assert cut_inside_a_word > 0  # the skip path is exercised


# ------------------------------------------------------------------ the pretraining loop

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The quick corpus of test_pretrain plus accents, Greek, CJK and typed [MASK]; a vocabulary
    learned from it and a --raw-text dataset made through the CLI."""
    from bertlab.text.learn import learn_vocab

    rng = random.Random(0)
    words = ("the of and to in a is that for it as was with be by on not he this are or his from "
             "at which but have an they you were her she there had been one all we their has "
             "Café naïve ΣΟΦΟΣ 東京 don't [MASK] e-mail").split()
    root = tmp_path_factory.mktemp("prepared")
    lines = []
    for _ in range(40):
        for _ in range(rng.randint(3, 8)):
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + ".")
        lines.append("")
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab_path = root / "vocab.txt"
    save_vocab(learn_vocab(iter(lines), 300, lower_case=True), vocab_path)
    assert cli.main(["create-data", "--corpus", str(root / "corpus.txt"), "--vocab",
                     str(vocab_path), "--uncased", "--out", str(root / "data"),
                     "--max-seq-length", "32", "--eval-fraction", "0.1", "--raw-text",
                     "--no-progress"]) == 0
    return root


def run(workdir, prepared, *overrides):
    """Padded batches on both paths: on-device tokenisation keeps padded rows (packing is a host
    step), so host and device runs are compared at the same layout."""
    return cli.main(["pretrain", "--config", CONFIG, "--workdir", str(workdir),
                     f"--config.data.prepared={prepared / 'data'}",
                     f"--config.data.vocab={prepared / 'vocab.txt'}",
                     "--config.data.packing=False",
                     "--config.train.peak_flops=1e11", *overrides])


@pytest.fixture(scope="module")
def host_run(tmp_path_factory, prepared):
    workdir = tmp_path_factory.mktemp("host")
    assert run(workdir, prepared) == 0
    return workdir


def assert_same_losses(workdir, reference):
    ours, want = read_metrics(workdir / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert sorted(ours["train"]) == sorted(want["train"]) == [5, 10, 15, 20]
    for step in (5, 10, 15, 20):  # identical batches, the same compiled step: bit for bit
        for key in LOSS_KEYS:
            assert ours["train"][step][key] == want["train"][step][key], (step, key)
    for step in (10, 20):
        assert ours["eval"][step]["mlm_loss"] == want["eval"][step]["mlm_loss"], step
    return ours


def test_same_losses_as_host_tokenisation(prepared, host_run, tmp_path):
    workdir = tmp_path / "device"
    assert run(workdir, prepared, "--config.data.tokenize_on_device=True") == 0
    ours = assert_same_losses(workdir, host_run)
    assert ours["train"][20]["tokenize_mismatches"] == 0
    assert "tokenize_mismatches" not in read_metrics(host_run / "metrics.jsonl")["train"][20]


def test_resume_switching_between_host_and_device(prepared, host_run, tmp_path):
    """device 0..10 (stop_after), host 10..15, device 15..20 == the straight host run."""
    workdir = tmp_path / "switch"
    on = "--config.data.tokenize_on_device=True"
    assert run(workdir, prepared, on, "--config.train.stop_after=10") == 0
    assert run(workdir, prepared, "--config.train.stop_after=15") == 0
    assert run(workdir, prepared, on) == 0
    assert_same_losses(workdir, host_run)
    got, meta = ckpt.restore_params(str(workdir))
    want, want_meta = ckpt.restore_params(str(host_run))
    assert meta["data"] == want_meta["data"]
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_text_shards_name_missing_and_corrupt_files(tmp_path, hand_dataset):
    """The same one-line errors as the id shards (shards.open_npy opens both formats' files)."""
    data = tmp_path / "data"
    shutil.copytree(hand_dataset, data)
    text_dir = data / "train" / "text"
    (text_dir / "shard-00000.cuts.npy").unlink()
    with pytest.raises(ShardError, match=r"shard-00000\.cuts\.npy: shard file missing"):
        TextExamples.open(data / "train")
    (text_dir / "shard-00000.cuts.npy").write_bytes(b"not numpy")
    with pytest.raises(ShardError, match=r"shard-00000\.cuts\.npy: not a readable \.npy file"):
        TextExamples.open(data / "train")
    np.save(text_dir / "shard-00000.cuts.npy", np.zeros((2, 4), np.int32))
    with pytest.raises(ShardError, match=r"shard-00000\.cuts\.npy: expected shape \(\d+, 4\), "
                                         r"found \(2, 4\)"):
        TextExamples.open(data / "train")


def test_dataset_without_raw_text_is_refused(tmp_path, hand):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the cat\nthe cat sat\n\nthe cat\non the cat sat\n")
    data = tmp_path / "ids_only"
    create_pretraining_data([str(corpus)], hand, str(data), max_seq_length=32, eval_fraction=0.0,
                            progress=False)
    save_vocab(hand.vocab, tmp_path / "vocab.txt")
    config = load_config_file(os.path.join(REPO, CONFIG))
    config.data.prepared, config.data.vocab = str(data), str(tmp_path / "vocab.txt")
    config.data.tokenize_on_device = True
    with pytest.raises(pretrain.TrainConfigError) as e:
        pretrain.train_and_evaluate(config, str(tmp_path / "w"))
    assert str(data) in str(e.value) and "bertlab create-data" in str(e.value)
    assert "--raw-text" in str(e.value) and "data.tokenize_on_device=True" in str(e.value)
    assert not (tmp_path / "w" / "checkpoints").exists()
