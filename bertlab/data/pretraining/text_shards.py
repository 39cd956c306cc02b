"""The on-disk format of raw-text examples: each example's A and B segment texts, for tokenising on
the device (data.tokenize_on_device; see bertlab.data.pretraining.segment_text for what a segment's text,
skip and keep mean, and bertlab.data.pretraining.on_device for the device side).

A raw-text dataset keeps its id shards (shards.py) and adds, in every split directory,

    text/index.json              format, version, counts, max_bytes, max_encoded, shard list
    text/shard-00000.bytes.npy   (total_bytes,) uint8   all segment texts laid end to end
    text/shard-00000.offsets.npy (2n + 1,) int64        A of example i is bytes[o[2i]:o[2i+1]],
                                                        B is bytes[o[2i+1]:o[2i+2]] (b"" if none)
    text/shard-00000.cuts.npy    (n, 4) int32           skip A, keep A, skip B, keep B
    text/shard-00000.checks.npy  (n, 2) uint32          segment_checksum of A's and B's kept ids
    text/shard-00000.nsp.npy     (n,) int8              next-sentence label

Example i here is example i of the id shards, so the BatchIterator visits the same examples in
the same order whichever the run reads. The checksums let the device count segments whose ids
differ from the host's (tokenizer_jax.DIVERGENCES) without shipping the ids.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from bertlab.data.pretraining.shards import (DATASET_META_FILE, INDEX_FILE, ShardError, open_npy,
                                             rows_by_shard, shard_file)
from bertlab.failures import naming

FORMAT = "bertlab-text-shards"
VERSION = 1
TEXT_DIR = "text"
CHECKSUM_MULTIPLIER = 2654435761  # Knuth's multiplicative hash constant: mixes positions


def segment_checksum(ids: np.ndarray) -> int:
    """sum_j (ids[j] + 1) * ((j + 1) * CHECKSUM_MULTIPLIER) mod 2**32: order-sensitive, and
    computable on the device with uint32 wrap-around (on_device.device_checksums)."""
    ids = np.asarray(ids, np.uint64)
    weights = (np.arange(1, len(ids) + 1, dtype=np.uint64) * CHECKSUM_MULTIPLIER) % (1 << 32)
    return int(np.sum((ids + 1) * weights, dtype=np.uint64) % (1 << 32))


class TextShardWriter:
    """Buffers one shard of segment texts and saves it when examples_per_shard are in."""

    def __init__(self, text_dir: str, *, max_seq_length: int, examples_per_shard: int):
        self.text_dir = text_dir
        self.max_seq_length = max_seq_length
        self.examples_per_shard = examples_per_shard
        self._texts: list[bytes] = []
        self._cuts: list[np.ndarray] = []
        self._checks: list[np.ndarray] = []
        self._nsp: list[np.ndarray] = []
        self._count = 0
        self.shards: list[dict[str, Any]] = []
        self.num_examples = 0
        self.max_bytes = 0     # longest segment text
        self.max_encoded = 0   # most tokens the device must produce for a segment: skip + keep
        os.makedirs(text_dir, exist_ok=True)

    def add_batch(self, texts: Sequence[bytes], cuts: np.ndarray, checks: np.ndarray,
                  nsp_labels: np.ndarray) -> None:
        """n examples: texts (2n,) A0, B0, A1, B1, ...; cuts (n, 4); checks (n, 2); nsp (n,)."""
        cuts = np.asarray(cuts, np.int32).reshape(-1, 4)
        n = len(cuts)
        if len(texts) != 2 * n or len(checks) != n or len(nsp_labels) != n:
            raise ValueError(f"{len(texts)} texts, {len(checks)} checksums, {len(nsp_labels)} "
                             f"labels for {n} examples (expected {2 * n}, {n}, {n})")
        if n == 0:
            return
        self.max_bytes = max(self.max_bytes, max(map(len, texts)))
        self.max_encoded = max(self.max_encoded, int((cuts[:, 0::2] + cuts[:, 1::2]).max()))
        done = 0
        while done < n:
            take = min(self.examples_per_shard - self._count, n - done)
            self._texts += texts[2 * done:2 * (done + take)]
            self._cuts.append(cuts[done:done + take])
            self._checks.append(np.asarray(checks, np.uint32)[done:done + take])
            self._nsp.append(np.asarray(nsp_labels, np.int8)[done:done + take])
            self._count += take
            done += take
            if self._count == self.examples_per_shard:
                self._flush()

    def _flush(self) -> None:
        if not self._count:
            return
        name = f"shard-{len(self.shards):05d}"
        lengths = np.fromiter(map(len, self._texts), np.int64, count=len(self._texts))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (2n + 1,)
        data = np.frombuffer(b"".join(self._texts), np.uint8)
        for array, values in (("bytes", data), ("offsets", offsets),
                              ("cuts", np.concatenate(self._cuts)),
                              ("checks", np.concatenate(self._checks)),
                              ("nsp", np.concatenate(self._nsp))):
            path = shard_file(self.text_dir, name, array)
            with naming(path):  # a full disk names the shard file
                np.save(path, values)
        self.shards.append({"name": name, "num_examples": self._count, "num_bytes": len(data)})
        self.num_examples += self._count
        self._texts, self._cuts, self._checks, self._nsp, self._count = [], [], [], [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        index = {"format": FORMAT, "version": VERSION, "max_seq_length": self.max_seq_length,
                 "num_examples": self.num_examples, "max_bytes": self.max_bytes,
                 "max_encoded": self.max_encoded, "shards": self.shards}
        path = os.path.join(self.text_dir, INDEX_FILE)
        with naming(path), open(path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1)
        return index


def _load(path: str, shape_tail: tuple[int, ...], rows: int) -> np.ndarray:
    array = open_npy(path)
    if array.shape != (rows,) + shape_tail:
        raise ShardError(f"{path}: expected shape {(rows,) + shape_tail}, found {array.shape}")
    return array


class TextExamples:
    """Random access to one split's segment texts, padded to fixed widths on the way out.

    The widths (max_bytes, max_encoded) are static shapes of the device program, so a run passes
    the dataset-wide maxima from meta.json: train and eval then share one compilation."""

    def __init__(self, split_dir: str, index: dict, shards: list[dict[str, np.ndarray]], *,
                 max_bytes: int, max_encoded: int):
        self.split_dir = split_dir
        self.index = index
        self.max_seq_length = int(index["max_seq_length"])
        self.max_bytes = max(1, int(max_bytes))
        self.max_encoded = max(1, int(max_encoded))
        self._shards = shards
        counts = np.array([int(e["num_examples"]) for e in index["shards"]], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # (num_shards + 1,)

    @classmethod
    def open(cls, split_dir: str, *, max_bytes: int | None = None,
             max_encoded: int | None = None) -> "TextExamples":
        split_dir = os.fspath(split_dir)
        text_dir = os.path.join(split_dir, TEXT_DIR)
        index_path = os.path.join(text_dir, INDEX_FILE)
        dataset_dir = os.path.dirname(os.path.abspath(split_dir))
        if not os.path.exists(os.path.join(dataset_dir, DATASET_META_FILE)):
            raise ShardError(f"{os.path.join(dataset_dir, DATASET_META_FILE)}: missing, so the "
                             "dataset is incomplete; create it again with --overwrite")
        if not os.path.exists(index_path):
            raise ShardError(f"{index_path}: missing; {dataset_dir} was made without raw text "
                             "(make it with `bertlab create-data ... --raw-text`)")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ShardError(f"{index_path}: format {index.get('format')!r} version "
                             f"{index.get('version')!r}, expected {FORMAT!r} version {VERSION}")
        shards = []
        for entry in index["shards"]:
            name, n = entry["name"], int(entry["num_examples"])
            offsets = _load(shard_file(text_dir, name, "offsets"), (), 2 * n + 1)
            shards.append({
                "bytes": _load(shard_file(text_dir, name, "bytes"), (), int(offsets[-1])),
                "offsets": offsets,
                "cuts": _load(shard_file(text_dir, name, "cuts"), (4,), n),
                "checks": _load(shard_file(text_dir, name, "checks"), (2,), n),
                "nsp": _load(shard_file(text_dir, name, "nsp"), (), n)})
        return cls(split_dir, index, shards,
                   max_bytes=index["max_bytes"] if max_bytes is None else max_bytes,
                   max_encoded=index["max_encoded"] if max_encoded is None else max_encoded)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at `indices`: text_bytes (N, 2, max_bytes) uint8 (A, B; zero-padded),
        text_lengths / skip / keep (N, 2) int32, checksums (N, 2) uint32, nsp_labels (N,) int32."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        n, width = len(indices), self.max_bytes
        text = np.zeros((n, 2, width), np.uint8)
        lengths = np.zeros((n, 2), np.int32)
        cuts = np.zeros((n, 4), np.int32)
        checks = np.zeros((n, 2), np.uint32)
        nsp = np.zeros(n, np.int32)
        columns = np.arange(width)
        for s, rows, local in rows_by_shard(self._starts, indices, self.split_dir):
            shard = self._shards[s]
            segment = 2 * local[:, None] + np.arange(2)[None, :]           # (n_s, 2)
            begin = shard["offsets"][segment]
            size = shard["offsets"][segment + 1] - begin
            if size.max(initial=0) > width:
                raise ShardError(f"{self.split_dir}: a segment text of {size.max()} bytes is "
                                 f"wider than max_bytes={width}")
            present = columns[None, None, :] < size[..., None]             # (n_s, 2, W)
            flat = np.where(present, begin[..., None] + columns, 0)
            text[rows] = np.where(present, shard["bytes"][flat], 0)
            lengths[rows] = size
            cuts[rows] = shard["cuts"][local]
            checks[rows] = shard["checks"][local]
            nsp[rows] = shard["nsp"][local]
        return {"text_bytes": text, "text_lengths": lengths, "skip": cuts[:, 0::2],
                "keep": cuts[:, 1::2], "checksums": checks, "nsp_labels": nsp}
