"""Shard round trips and the deterministic, resumable batch iterator."""

import json
import os

import numpy as np
import pytest

from bertlab.data.pretraining.iterator import BatchIterator, epoch_permutation
from bertlab.data.pretraining.shards import ShardedExamples, ShardError, ShardWriter

T = 12


def example(i: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Example i: [2, i, i+1, ..., 3] of length 3 + i % 8, segment 1 on its second half."""
    length = 3 + i % 8
    tokens = np.array([2] + [i + k for k in range(length - 2)] + [3])
    segments = (np.arange(length) >= length // 2).astype(np.int8)
    return tokens, segments, i % 2


def write_split(root, n: int, *, examples_per_shard=7, vocab_size=1000, meta=True) -> str:
    split = os.path.join(root, "train")
    writer = ShardWriter(split, max_seq_length=T, vocab_size=vocab_size,
                         examples_per_shard=examples_per_shard)
    for i in range(n):
        writer.add(*example(i))
    writer.close()
    if meta:
        with open(os.path.join(root, "meta.json"), "w") as f:
            json.dump({"max_seq_length": T}, f)
    return split


def expected_row(i: int):
    tokens, segments, nsp = example(i)
    row = np.zeros(T, np.int32)
    row[:len(tokens)] = tokens
    seg = np.zeros(T, np.int32)
    seg[:len(tokens)] = segments
    mask = (np.arange(T) < len(tokens)).astype(np.int32)
    return row, seg, mask, nsp


# ------------------------------------------------------------------------------------- shards

def test_round_trip_across_shards_in_requested_order(tmp_path):
    split = write_split(tmp_path, 23)
    data = ShardedExamples.open(split)
    assert len(data) == 23 and data.max_seq_length == T
    assert len(data.index["shards"]) == 4  # 7 + 7 + 7 + 2
    assert np.load(os.path.join(split, "shard-00000.tokens.npy")).dtype == np.uint16
    indices = np.array([22, 0, 7, 6, 13, 14, 7])
    batch = data.take(indices)
    assert batch["token_ids"].shape == (7, T) and batch["token_ids"].dtype == np.int32
    for row, i in enumerate(indices):
        tokens, segments, mask, nsp = expected_row(int(i))
        np.testing.assert_array_equal(batch["token_ids"][row], tokens)
        np.testing.assert_array_equal(batch["segment_ids"][row], segments)
        np.testing.assert_array_equal(batch["attention_mask"][row], mask)
        assert batch["nsp_labels"][row] == nsp
    np.testing.assert_array_equal(data.lengths(), [3 + i % 8 for i in range(23)])
    assert data.num_tokens == sum(3 + i % 8 for i in range(23))


def test_large_vocabulary_stores_int32(tmp_path):
    split = os.path.join(tmp_path, "train")
    writer = ShardWriter(split, max_seq_length=4, vocab_size=70_000)
    writer.add(np.array([2, 69_999, 3]), np.zeros(3, np.int8), 1)
    writer.close()
    (tmp_path / "meta.json").write_text("{}")
    data = ShardedExamples.open(split)
    assert data.take([0])["token_ids"].tolist() == [[2, 69_999, 3, 0]]
    assert np.load(os.path.join(split, "shard-00000.tokens.npy")).dtype == np.int32


def test_writer_rejects_too_long_examples(tmp_path):
    writer = ShardWriter(str(tmp_path / "train"), max_seq_length=4, vocab_size=10)
    with pytest.raises(ValueError, match="max_seq_length 4"):
        writer.add(np.arange(5), np.zeros(5, np.int8))


def test_out_of_range_index(tmp_path):
    data = ShardedExamples.open(write_split(tmp_path, 5))
    with pytest.raises(IndexError, match="example 5 out of range"):
        data.take([0, 5])


def test_open_refuses_incomplete_dataset(tmp_path):
    split = write_split(tmp_path, 5, meta=False)
    with pytest.raises(ShardError, match="meta.json: missing"):
        ShardedExamples.open(split)


def test_open_names_missing_and_corrupt_files(tmp_path):
    split = write_split(tmp_path, 9)
    os.remove(os.path.join(split, "shard-00001.nsp.npy"))
    with pytest.raises(ShardError, match=r"shard-00001\.nsp\.npy: shard file missing"):
        ShardedExamples.open(split)
    split = write_split(tmp_path / "b", 9)
    np.save(os.path.join(split, "shard-00000.offsets.npy"), np.arange(3))
    with pytest.raises(ShardError, match=r"shard-00000\.offsets\.npy: expected 8 entries"):
        ShardedExamples.open(split)
    with pytest.raises(ShardError, match="not a bertlab split"):
        ShardedExamples.open(str(tmp_path))


# ----------------------------------------------------------------------------------- iterator

def first_ids(batch):
    """The example index each row came from (token 1 of example i is i)."""
    return batch["token_ids"][:, 1].tolist()


def test_epoch_visits_a_permutation_and_drops_the_tail(tmp_path):
    data = ShardedExamples.open(write_split(tmp_path, 23))
    it = BatchIterator(data, batch_size=5, seed=3)
    assert it.batches_per_epoch == 4
    epoch0 = [first_ids(next(it)) for _ in range(4)]
    seen = sum(epoch0, [])
    assert len(set(seen)) == 20 and set(seen) <= set(range(23))
    assert seen == epoch_permutation(23, 3, 0)[:20].tolist()
    assert it.state() == {"epoch": 0, "position": 20}
    epoch1 = [first_ids(next(it)) for _ in range(4)]
    assert it.state() == {"epoch": 1, "position": 20}
    assert sum(epoch1, []) == epoch_permutation(23, 3, 1)[:20].tolist()
    assert epoch1 != epoch0


def test_same_seed_same_stream_other_seed_other_stream(tmp_path):
    data = ShardedExamples.open(write_split(tmp_path, 23))
    a, b, c = (BatchIterator(data, 4, seed=s) for s in (1, 1, 2))
    stream_a = [first_ids(next(a)) for _ in range(12)]
    assert stream_a == [first_ids(next(b)) for _ in range(12)]
    assert stream_a != [first_ids(next(c)) for _ in range(12)]


@pytest.mark.parametrize("steps", [0, 3, 5, 6, 11])  # 5 batches per epoch: resume at and across ends
def test_resume_gives_the_batch_the_uninterrupted_run_would(tmp_path, steps):
    data = ShardedExamples.open(write_split(tmp_path, 23))
    full = BatchIterator(data, 4, seed=7)
    reference = [next(full) for _ in range(steps + 4)]
    first = BatchIterator(data, 4, seed=7)
    for _ in range(steps):
        next(first)
    state = json.loads(json.dumps(first.state()))  # as a checkpoint would store it
    resumed = BatchIterator.from_state(data, 4, 7, state)
    for expected in reference[steps:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_resume_with_another_batch_size_continues_from_the_same_example(tmp_path):
    data = ShardedExamples.open(write_split(tmp_path, 23))
    it = BatchIterator(data, 4, seed=7)
    next(it), next(it)
    resumed = BatchIterator.from_state(data, 2, 7, it.state())
    assert first_ids(next(resumed)) == epoch_permutation(23, 7, 0)[8:10].tolist()


def test_processes_slice_the_global_batch(tmp_path):
    data = ShardedExamples.open(write_split(tmp_path, 23))
    whole = BatchIterator(data, 6, seed=5)
    parts = [BatchIterator(data, 6, seed=5, process_index=p, process_count=3) for p in range(3)]
    for _ in range(8):  # crosses two epoch boundaries (3 batches per epoch)
        expected = next(whole)
        pieces = [next(p) for p in parts]
        assert all(p["token_ids"].shape == (2, T) for p in pieces)
        for key in expected:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in pieces]), expected[key])
    assert {p.state()["position"] for p in parts} == {whole.state()["position"]}


def test_iterator_argument_errors(tmp_path):
    data = ShardedExamples.open(write_split(tmp_path, 5))
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        BatchIterator(data, 4, 0, process_count=3)
    with pytest.raises(ValueError, match="fewer than one batch of 8"):
        BatchIterator(data, 8, 0)
    with pytest.raises(ValueError, match="lacks"):
        BatchIterator.from_state(data, 2, 0, {"epoch": 1})


def test_add_batch_equals_adding_one_by_one(tmp_path):
    one = write_split(tmp_path / "one", 23, examples_per_shard=5)
    split = os.path.join(tmp_path, "batch", "train")
    writer = ShardWriter(split, max_seq_length=T, vocab_size=1000, examples_per_shard=5)
    for batch in (range(0, 3), range(3, 17), range(17, 23)):  # batches straddle shard ends
        examples = [example(i) for i in batch]
        writer.add_batch(np.concatenate([e[0] for e in examples]),
                         np.concatenate([e[1] for e in examples]),
                         np.array([len(e[0]) for e in examples]), np.array([e[2] for e in examples]))
    writer.close()
    for name in sorted(os.listdir(one)):
        assert open(os.path.join(one, name), "rb").read() == open(os.path.join(split, name), "rb").read()
    with pytest.raises(ValueError, match="lengths must be in"):
        writer2 = ShardWriter(str(tmp_path / "c"), max_seq_length=4, vocab_size=10)
        writer2.add_batch(np.arange(5), np.zeros(5, np.int8), np.array([5]), np.array([0]))
