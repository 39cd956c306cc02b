"""Pretraining inputs: the vocabulary and the shards, made once per workdir and checked on every
start, and the held-out examples; with data.tokenize_on_device, the raw segment texts and the
in-graph tokenizer that turns them into ids.

    vocab.txt   a copy of data.vocab, or learned from data.corpus (bertlab.text.learn)
    data/       shards + meta.json made from data.corpus, unless data.prepared points elsewhere
    eval_data/  data.eval_corpus's shards, all held out

A cached dataset made with another vocabulary, casing, shard setting or corpus is refused with
the key that differs; nothing is remade silently.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax

from bertlab.data.pretraining.shards import ShardedExamples
from bertlab.text.tokenizer import Tokenizer
from bertlab.train import mesh as mesh_lib
from bertlab.train.loop import TrainConfigError
from bertlab.train.model_config import copy_or_learn_vocab

DATA_DIR = "data"
EVAL_DATA_DIR = "eval_data"          # data.eval_corpus's shards


@dataclasses.dataclass
class Inputs:
    """What the loop reads: the vocabulary and the train / held-out examples (token ids, or raw
    segment texts with data.tokenize_on_device)."""

    vocab_path: str
    vocab: Any
    train: Any
    eval: Any


def prepare_inputs(data_config, workdir: str, *, log=print) -> Inputs:
    """The vocabulary, then the shards (both made on the first start), opened for the loop."""
    vocab_path, vocab = prepare_vocab(data_config, workdir, log=log)
    dataset_dir = prepare_data(data_config, workdir, vocab, log=log)
    if data_config.tokenize_on_device:
        train_examples, eval_examples = open_raw_text(dataset_dir)
    else:
        train_examples = ShardedExamples.open(os.path.join(dataset_dir, "train"))
        eval_dir = (prepare_eval_data(data_config, workdir, vocab, log=log)
                    if data_config.eval_corpus else dataset_dir)
        eval_examples = ShardedExamples.open(os.path.join(eval_dir, "eval"))
    if len(train_examples) < data_config.batch_size:
        raise TrainConfigError(
            f"{train_examples.split_dir} holds {len(train_examples)} training examples, fewer "
            f"than one batch (data.batch_size={data_config.batch_size}); add text to data.corpus "
            f"or lower data.batch_size")
    return Inputs(vocab_path, vocab, train_examples, eval_examples)


def corpus_files(data_config, key: str = "corpus") -> list[str]:
    """data.<key> (corpus or eval_corpus) resolved to files; a missing or empty path is an error
    naming the key."""
    from bertlab.data.pretraining.corpus import CorpusError, resolve_corpus

    paths = [p.strip() for p in data_config[key].split(",") if p.strip()]
    try:
        return resolve_corpus(paths)
    except CorpusError as e:
        raise TrainConfigError(f"data.{key}={data_config[key]!r}: {e}") from None


def prepare_vocab(data_config, workdir: str, *, log=print):
    """workdir/vocab.txt: a copy of data.vocab, or learned from the corpus; (path, Vocab)."""
    return copy_or_learn_vocab(workdir, data_config.vocab,
                               functools.partial(learn_corpus_vocab, data_config, log=log))


def learn_corpus_vocab(data_config, *, log=print):
    """A data.vocab_size WordPiece vocabulary learned from data.corpus (streamed)."""
    from bertlab.data.pretraining.corpus import iter_lines
    from bertlab.text.learn import VocabLearnError, learn_vocab

    if data_config.prepared:
        raise TrainConfigError(f"data.prepared={data_config.prepared!r} needs data.vocab, the "
                               "vocab.txt the shards were made with")
    files = corpus_files(data_config)
    log(f"learning a {data_config.vocab_size}-entry WordPiece vocabulary from {len(files)} file(s)")
    try:
        return learn_vocab(iter_lines(files), data_config.vocab_size,
                           lower_case=data_config.lower_case, progress=True)
    except VocabLearnError as e:
        raise TrainConfigError(f"data.corpus={data_config.corpus!r} "
                               f"({len(files)} file(s)): {e}") from None


# Data settings that shape the shards: a cached dataset must have been made with the same ones.
_DATA_ARGS = ("max_seq_length", "short_seq_prob", "next_sentence", "eval_fraction", "seed",
              "doc_boundary")


def data_args(data_config) -> dict:
    """create_pretraining_data's arguments for data.corpus. With data.eval_corpus the corpus holds
    nothing out: evaluation reads the eval corpus instead, so every corpus document is trained on."""
    args = {key: data_config[key] for key in _DATA_ARGS}
    if data_config.eval_corpus:
        args["eval_fraction"] = 0.0
    return args


def prepare_data(data_config, workdir: str, vocab, *, log=print) -> str:
    """The dataset directory: data.prepared, or workdir/data (created on the first start)."""
    dataset = data_config.prepared or os.path.join(workdir, DATA_DIR)
    if data_config.prepared:
        if not os.path.exists(os.path.join(dataset, "meta.json")):
            raise TrainConfigError(f"data.prepared={dataset!r}: no meta.json there; make it "
                                   "with `bertlab create-data`")
        return _checked_dataset(dataset, data_config, vocab, data_args(data_config),
                                keys=("max_seq_length", "next_sentence"), files=None,
                                remake="set it back")
    files = corpus_files(data_config)
    return _made_dataset(dataset, files, data_config, vocab, data_args(data_config), log=log,
                         corpus_key="data.corpus")


def prepare_eval_data(data_config, workdir: str, vocab, *, log=print) -> str:
    """workdir/eval_data: all of data.eval_corpus as a held-out split, made like the training
    shards (same length, pairing, seed, document boundaries), so its MLM loss compares."""
    args = {**data_args(data_config), "eval_fraction": 1.0}
    files = corpus_files(data_config, "eval_corpus")
    return _made_dataset(os.path.join(workdir, EVAL_DATA_DIR), files, data_config, vocab, args,
                         log=log, corpus_key="data.eval_corpus")


def _made_dataset(dataset, files, data_config, vocab, args, *, log, corpus_key) -> str:
    """`dataset`, created from `files` on the first start and checked against them afterwards."""
    from bertlab.data.pretraining.create import create_pretraining_data

    if not os.path.exists(os.path.join(dataset, "meta.json")):
        if jax.process_count() > 1:
            raise TrainConfigError("multi-host runs need data made beforehand on a shared "
                                   "filesystem: set data.prepared and data.vocab")
        log(f"creating pretraining shards in {dataset} from {len(files)} file(s) of {corpus_key}")
        tokenizer = Tokenizer(vocab, data_config.lower_case)
        create_pretraining_data(files, tokenizer, dataset, overwrite=True,
                                raw_text=bool(data_config.tokenize_on_device), **args)
    return _checked_dataset(dataset, data_config, vocab, args, keys=_DATA_ARGS, files=files,
                            remake=f"delete {dataset} to remake the data", corpus_key=corpus_key)


def _checked_dataset(dataset, data_config, vocab, args, *, keys, files, remake,
                     corpus_key="data.corpus") -> str:
    """Refuses a dataset made with another vocabulary, casing, shard settings or corpus files."""
    from bertlab.data.pretraining.create import read_meta, vocab_sha256

    meta_path = os.path.join(dataset, "meta.json")
    meta = read_meta(dataset)
    where = f"{meta_path} (made by an earlier start or by create-data)"
    if data_config.tokenize_on_device and not meta.get("raw_text"):
        how = ("make it again with `bertlab create-data ... --raw-text`"
               if data_config.prepared else f"delete {dataset} to remake it with raw text")
        raise TrainConfigError(
            f"data.tokenize_on_device=True needs the raw segment texts, but the dataset "
            f"{dataset} was made without them (no raw_text in {meta_path}); {how}")
    if meta.get("vocab_sha256") != vocab_sha256(vocab):
        raise TrainConfigError(f"{where} was made with another vocabulary than {vocab.source}")
    if meta.get("lower_case") is not None and meta["lower_case"] != data_config.lower_case:
        raise TrainConfigError(f"data.lower_case={data_config.lower_case} but {where} has "
                               f"lower_case={meta['lower_case']}")
    made_with = meta.get("args", meta)
    for key in keys:
        if key in made_with and made_with[key] != args[key]:
            shown = (f"data.{key}={data_config[key]!r}" if args[key] == data_config[key] else
                     f"{key}={args[key]!r} (data.{key} under data.eval_corpus="
                     f"{data_config.eval_corpus!r})")
            raise TrainConfigError(f"{shown} but {where} has {key}={made_with[key]!r}; "
                                   f"{remake}")
    if files is not None and made_with.get("files") not in (None, files):
        raise TrainConfigError(f"{corpus_key} names other files than {where}; "
                               f"delete {dataset} to remake the data")
    return dataset


def open_raw_text(dataset_dir: str):
    """The train and eval TextExamples of data.tokenize_on_device. Both pad to the dataset-wide
    widths in meta.json, so train and eval batches share one compiled tokeniser."""
    from bertlab.data.pretraining.create import read_meta
    from bertlab.data.pretraining.shards import ShardError
    from bertlab.data.pretraining.text_shards import TextExamples

    limits = read_meta(dataset_dir)["raw_text"]
    try:
        return tuple(TextExamples.open(os.path.join(dataset_dir, split), **limits)
                     for split in ("train", "eval"))
    except ShardError as e:
        raise TrainConfigError(f"data.tokenize_on_device=True: {e}") from None


def device_tokenizer(vocab, lower_case: bool, examples, mesh):
    """raw batch -> (token batch, segments whose ids differ from the host's), jitted; the
    WordPiece tables are built once here and replicated over the mesh."""
    from bertlab.data.pretraining.on_device import make_tokenize_fn
    from bertlab.text.device.tables import tables_for

    fn = make_tokenize_fn(vocab, max_seq_length=examples.max_seq_length,
                          max_encoded=examples.max_encoded)
    tables = mesh_lib.replicate(tables_for(Tokenizer(vocab, lower_case)), mesh)
    return lambda raw: fn(tables, raw)

