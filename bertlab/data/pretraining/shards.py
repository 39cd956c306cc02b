"""The on-disk format of pretraining examples: variable-length rows in memory-mapped .npy shards.

A split directory (dataset/train, dataset/eval) holds

    index.json                    format, version, max_seq_length, pad_id, token dtype, shard list
    shard-00000.tokens.npy        (total_tokens,) uint16 (int32 for vocabularies over 65,536)
    shard-00000.segments.npy      (total_tokens,) int8   segment id of every token
    shard-00000.offsets.npy       (n + 1,) int64         example i is tokens[offsets[i]:offsets[i+1]]
    shard-00000.nsp.npy           (n,) int8              next-sentence label (1 = random B)
    ...

Rows are stored unpadded (offsets give each example's length), so short examples cost only their
tokens; `take` pads to max_seq_length on the way out. Files are plain .npy, opened with
np.load(mmap_mode="r"): nothing is read until a batch touches it, so a dataset larger than RAM
opens instantly. A split counts as valid only when its dataset's meta.json exists, which the
creator writes last (see pretraining.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from bertlab.failures import naming

FORMAT = "bertlab-shards"
VERSION = 1
INDEX_FILE = "index.json"
DATASET_META_FILE = "meta.json"
ARRAYS = ("tokens", "segments", "offsets", "nsp")


class ShardError(ValueError):
    """A split directory that cannot be read; the message names the file."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest id type for the vocabulary: uint16 holds ids < 65,536."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def shard_file(split_dir: str, shard: str, array: str) -> str:
    return os.path.join(split_dir, f"{shard}.{array}.npy")


class ShardWriter:
    """Appends examples to an in-memory buffer of one shard and saves it when full.

    Memory is bounded by one shard: examples_per_shard * max_seq_length tokens. The caller
    owns atomicity (the writer writes into a directory that is renamed into place at the end)."""

    def __init__(self, split_dir: str, *, max_seq_length: int, vocab_size: int, pad_id: int = 0,
                 examples_per_shard: int = 1 << 16, metadata: dict[str, Any] | None = None):
        if examples_per_shard < 1:
            raise ValueError(f"examples_per_shard must be >= 1, got {examples_per_shard}")
        self.split_dir = split_dir
        self.max_seq_length = max_seq_length
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.examples_per_shard = examples_per_shard
        self.metadata = dict(metadata or {})
        self.dtype = token_dtype(vocab_size)
        capacity = examples_per_shard * max_seq_length
        self._tokens = np.empty(capacity, self.dtype)
        self._segments = np.empty(capacity, np.int8)
        self._offsets = np.zeros(examples_per_shard + 1, np.int64)
        self._nsp = np.empty(examples_per_shard, np.int8)
        self._count = 0
        self.shards: list[dict[str, Any]] = []
        self._saved_examples = 0
        self._saved_tokens = 0
        os.makedirs(split_dir, exist_ok=True)

    @property
    def num_examples(self) -> int:
        """Examples added so far (saved or still in the buffer)."""
        return self._saved_examples + self._count

    @property
    def num_tokens(self) -> int:
        return self._saved_tokens + (int(self._offsets[self._count]) if self._count else 0)

    def add(self, token_ids: np.ndarray, segment_ids: np.ndarray, nsp_label: int = 0) -> None:
        length = len(token_ids)
        if not 0 < length <= self.max_seq_length or len(segment_ids) != length:
            raise ValueError(f"example of {length} tokens / {len(segment_ids)} segment ids does not "
                             f"fit max_seq_length {self.max_seq_length}")
        start = self._offsets[self._count]
        self._tokens[start:start + length] = token_ids
        self._segments[start:start + length] = segment_ids
        self._nsp[self._count] = nsp_label
        self._count += 1
        self._offsets[self._count] = start + length
        if self._count == self.examples_per_shard:
            self._flush()

    def add_batch(self, token_ids: np.ndarray, segment_ids: np.ndarray, lengths: np.ndarray,
                  nsp_labels: np.ndarray) -> None:
        """Many examples laid end to end: token_ids / segment_ids (sum(lengths),), lengths and
        nsp_labels (n,). One copy per shard touched instead of one per example."""
        lengths = np.asarray(lengths, np.int64)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > self.max_seq_length):
            raise ValueError(f"example lengths must be in [1, max_seq_length "
                             f"{self.max_seq_length}], got {lengths.min()}..{lengths.max()}")
        if len(token_ids) != lengths.sum() or len(segment_ids) != len(token_ids):
            raise ValueError(f"{len(token_ids)} token ids / {len(segment_ids)} segment ids for "
                             f"examples of {lengths.sum()} tokens in all")
        done = taken = 0
        while done < len(lengths):
            n = min(self.examples_per_shard - self._count, len(lengths) - done)
            sizes = lengths[done:done + n]
            start = self._offsets[self._count]
            ends = start + np.cumsum(sizes)  # (n,)
            total = int(ends[-1] - start)
            self._tokens[start:start + total] = token_ids[taken:taken + total]
            self._segments[start:start + total] = segment_ids[taken:taken + total]
            self._offsets[self._count + 1:self._count + 1 + n] = ends
            self._nsp[self._count:self._count + n] = nsp_labels[done:done + n]
            self._count += n
            done += n
            taken += total
            if self._count == self.examples_per_shard:
                self._flush()

    def _flush(self) -> None:
        if self._count == 0:
            return
        name = f"shard-{len(self.shards):05d}"
        total = int(self._offsets[self._count])
        for array, values in (("tokens", self._tokens[:total]),
                              ("segments", self._segments[:total]),
                              ("offsets", self._offsets[:self._count + 1]),
                              ("nsp", self._nsp[:self._count])):
            path = shard_file(self.split_dir, name, array)
            with naming(path):  # a full disk names the shard file
                np.save(path, values)
        self.shards.append({"name": name, "num_examples": self._count, "num_tokens": total})
        self._saved_examples += self._count
        self._saved_tokens += total
        self._count = 0

    def close(self) -> dict[str, Any]:
        """Saves the last partial shard and index.json; returns the index."""
        self._flush()
        index = {
            "format": FORMAT, "version": VERSION, "max_seq_length": self.max_seq_length,
            "vocab_size": self.vocab_size, "pad_id": self.pad_id, "token_dtype": self.dtype.name,
            "num_examples": self._saved_examples, "num_tokens": self._saved_tokens,
            "shards": self.shards, **self.metadata,
        }
        path = os.path.join(self.split_dir, INDEX_FILE)
        with naming(path), open(path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1)
        self._tokens = self._segments = self._offsets = self._nsp = None  # free the buffer
        return index


@dataclasses.dataclass(frozen=True)
class _Shard:
    tokens: np.ndarray  # (total_tokens,) memmap
    segments: np.ndarray  # (total_tokens,) memmap
    offsets: np.ndarray  # (n + 1,) memmap
    nsp: np.ndarray  # (n,) memmap


def open_npy(path: str) -> np.ndarray:
    """Memory-maps one shard file (nothing is read yet). The id shards and the raw-text shards
    (text_shards.py) both open their files here, so a missing or corrupt file is one ShardError
    naming it, whichever format it belongs to; the caller checks the shape it expects."""
    if not os.path.exists(path):
        raise ShardError(f"{path}: shard file missing")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ShardError(f"{path}: not a readable .npy file ({e})") from None


def _load_array(path: str, dtype_kind: str, expected_len: int | None) -> np.ndarray:
    array = open_npy(path)
    if array.ndim != 1 or array.dtype.kind not in dtype_kind:
        raise ShardError(f"{path}: expected a 1-d integer array, found {array.dtype} {array.shape}")
    if expected_len is not None and len(array) != expected_len:
        raise ShardError(f"{path}: expected {expected_len} entries, found {len(array)}")
    return array


def _open_shard(split_dir: str, entry: dict[str, Any]) -> _Shard:
    name, n, total = entry["name"], int(entry["num_examples"]), int(entry["num_tokens"])
    offsets = _load_array(shard_file(split_dir, name, "offsets"), "i", n + 1)
    if int(offsets[0]) != 0 or int(offsets[-1]) != total:
        raise ShardError(f"{shard_file(split_dir, name, 'offsets')}: offsets must run from 0 to "
                         f"{total}, found {int(offsets[0])}..{int(offsets[-1])}")
    return _Shard(tokens=_load_array(shard_file(split_dir, name, "tokens"), "iu", total),
                  segments=_load_array(shard_file(split_dir, name, "segments"), "i", total),
                  offsets=offsets,
                  nsp=_load_array(shard_file(split_dir, name, "nsp"), "i", n))


def rows_by_shard(starts: np.ndarray, indices: np.ndarray, where: str):
    """Group example `indices` by the shard holding them: yields (shard number, rows of
    `indices` in it, their positions inside that shard). `starts` (num_shards + 1,) are the
    cumulative example counts; an index outside [0, starts[-1]) is an IndexError naming `where`."""
    total = int(starts[-1])
    if len(indices) and (indices.min() < 0 or indices.max() >= total):
        bad = indices[(indices < 0) | (indices >= total)][0]
        raise IndexError(f"example {bad} out of range for {where} ({total} examples)")
    which_shard = np.searchsorted(starts, indices, side="right") - 1  # (N,)
    for s in np.unique(which_shard):
        rows = np.nonzero(which_shard == s)[0]
        yield s, rows, indices[rows] - starts[s]


class ShardedExamples:
    """Random access to the examples of one split, padded to max_seq_length on the way out."""

    def __init__(self, split_dir: str, index: dict[str, Any], shards: list[_Shard]):
        self.split_dir = split_dir
        self.index = index
        self.max_seq_length: int = int(index["max_seq_length"])
        self.pad_id: int = int(index.get("pad_id", 0))
        self._shards = shards
        counts = np.array([int(e["num_examples"]) for e in index["shards"]], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # (num_shards + 1,)

    @classmethod
    def open(cls, split_dir: str) -> "ShardedExamples":
        split_dir = os.fspath(split_dir)
        index_path = os.path.join(split_dir, INDEX_FILE)
        meta_path = os.path.join(os.path.dirname(os.path.abspath(split_dir)), DATASET_META_FILE)
        if not os.path.isdir(split_dir):
            raise ShardError(f"{split_dir}: split directory not found")
        if not os.path.exists(index_path):
            raise ShardError(f"{index_path}: missing; {split_dir} is not a bertlab split directory")
        if not os.path.exists(meta_path):
            raise ShardError(f"{meta_path}: missing, so the dataset is incomplete (creation was "
                             "interrupted); create it again with --overwrite")
        try:
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, ValueError) as e:
            raise ShardError(f"{index_path}: unreadable ({e})") from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ShardError(f"{index_path}: format {index.get('format')!r} version "
                             f"{index.get('version')!r}, expected {FORMAT!r} version {VERSION}")
        for key in ("max_seq_length", "shards"):
            if key not in index:
                raise ShardError(f"{index_path}: key {key!r} missing")
        return cls(split_dir, index, [_open_shard(split_dir, e) for e in index["shards"]])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(self.index.get("num_tokens", 0))

    def lengths(self) -> np.ndarray:
        """(N,) int64 tokens per example ([CLS] and [SEP]s included)."""
        return np.concatenate([np.diff(s.offsets) for s in self._shards]) if self._shards else \
            np.zeros(0, np.int64)

    def lengths_of(self, indices: np.ndarray) -> np.ndarray:
        """(n,) int64 tokens of the examples at `indices` (their offsets only: no token is read)."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        out = np.zeros(len(indices), np.int64)
        for s, rows, local in rows_by_shard(self._starts, indices, self.split_dir):
            offsets = self._shards[s].offsets
            out[rows] = offsets[local + 1] - offsets[local]
        return out

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at `indices`, in that order, padded: token_ids / segment_ids /
        attention_mask (N, T) int32 and nsp_labels (N,) int32."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        n, length = len(indices), self.max_seq_length
        token_ids = np.full((n, length), self.pad_id, np.int32)
        segment_ids = np.zeros((n, length), np.int32)
        attention_mask = np.zeros((n, length), np.int32)
        nsp_labels = np.zeros(n, np.int32)
        columns = np.arange(length)
        for s, rows, local in rows_by_shard(self._starts, indices, self.split_dir):
            shard = self._shards[s]
            begin = shard.offsets[local]  # (n_s,)
            size = shard.offsets[local + 1] - begin
            present = columns[None, :] < size[:, None]  # (n_s, T)
            flat = np.where(present, begin[:, None] + columns[None, :], 0)  # (n_s, T)
            token_ids[rows] = np.where(present, shard.tokens[flat], self.pad_id)
            segment_ids[rows] = np.where(present, shard.segments[flat], 0)
            attention_mask[rows] = present
            nsp_labels[rows] = shard.nsp[local]
        return {"token_ids": token_ids, "segment_ids": segment_ids,
                "attention_mask": attention_mask, "nsp_labels": nsp_labels}
