"""Using trained models: reload a fine-tuned export and score, predict or evaluate with it; embed
sentences with any backbone and compare them.

The commands evaluate / predict / embed / similarity are thin shells over these functions, and
the fine-tuning loop scores its eval split with the same `run_eval` + `score`, so a reloaded
export predicts exactly what training measured (tests/test_inference.py checks it bit for bit).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertlab.checkpoints import init_from as init_from_lib
from bertlab.data import packing
from bertlab.data.tasks import prediction_table
from bertlab.data.tasks.metrics import task_metrics
from bertlab.data.tasks.registry import Split, TaskSpec
from bertlab.models import BertForSequenceClassification, BertModel, mean_pool
from bertlab.models.config import BertConfig
from bertlab.text.tokenizer import Tokenizer, pack_ids
from bertlab.train import loop
from bertlab.train import mesh as mesh_lib
from bertlab.train import steps
from bertlab.train.loop import TrainConfigError
from bertlab.train.task_data import (PROGRAM_COST_ROWS, PackPlan, encode_split, load_split,
                                     packed_batch_of, plan_packing, subsample)

# Packed inference (the default; packed=False is the padded path). Scoring a split packs K
# examples per batch, more than a padded batch holds (its rows cost nothing when empty: K only
# sizes the [CLS] gather and the head), in input order, into at most EVAL_PROGRAMS row counts.
# Why packing rather than sorting by length into a few padded bucket lengths: packing reaches
# 91-93 % real tokens at T=128 on SST-2 / MRPC / QNLI dev (experiments/bench/
# packing_efficiency.md), needs no reordering, and its compiled shapes are planned like
# training's; experiments/bench/real_data.md measures predict and embed against PyTorch with
# per-batch padding.
PACKED_EVAL_EXAMPLES = 256
EVAL_PROGRAMS = 2


# --------------------------------------------------------------------------------------------
# Scoring a split (the fine-tuning loop's evaluation too).
# --------------------------------------------------------------------------------------------

def eval_plan(encoded: dict, batch_size: int, mesh) -> PackPlan:
    """The packed plan of one pass over `encoded`: batches of K consecutive rows (input order),
    K = max(batch_size, PACKED_EVAL_EXAMPLES) rounded up to the mesh, rows of the arrays' T."""
    count, width = encoded["token_ids"].shape
    examples = packing.round_up(max(batch_size, PACKED_EVAL_EXAMPLES), mesh.size)
    lengths = packing.example_lengths(encoded["attention_mask"])
    batches = [np.arange(start, min(start + examples, count))
               for start in range(0, count, examples)]
    return plan_packing(lengths, batches, examples=examples, row_length=width,
                        max_programs=EVAL_PROGRAMS, multiple=mesh.size)


def run_eval(eval_step: Callable, state, encoded: dict, batch_size: int, mesh, *,
             packed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, L), per-example loss (N,)) of every row of `encoded`, in order. packed: the
    same examples in packed batches (eval_plan); outputs within float rounding of padded."""
    count = len(encoded["token_ids"])
    if not count:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
    if packed:
        return _run_packed_eval(eval_step, state, encoded, batch_size, mesh)
    take = lambda rows: {name: value[rows] for name, value in encoded.items()}
    batches = loop.eval_batches(take, count, batch_size)
    logits, losses = [], []
    total = loop.eval_batch_count(count, batch_size)
    for index, batch in enumerate(loop.with_progress(batches, total, "evaluating")):
        out = eval_step(state, mesh_lib.global_batch(batch, mesh))
        real = min(batch_size, count - index * batch_size)
        logits.append((out["logits"], real))
        losses.append((out["loss"], real))
    fetch = lambda parts: np.concatenate([np.asarray(jax.device_get(x))[:n] for x, n in parts])
    return fetch(logits), fetch(losses)


def _run_packed_eval(eval_step: Callable, state, encoded: dict, batch_size: int, mesh
                     ) -> tuple[np.ndarray, np.ndarray]:
    plan = eval_plan(encoded, batch_size, mesh)
    count, examples = len(encoded["token_ids"]), plan.examples
    logits, losses = [], []
    batches = range(len(plan.rows))
    for index in loop.with_progress(batches, len(plan.rows), "evaluating"):
        rows = np.arange(index * examples, min((index + 1) * examples, count))
        batch = packed_batch_of(encoded, rows, examples, plan, index)
        out = eval_step(state, mesh_lib.global_batch(batch, mesh))  # (K, ...) slot s = row s
        logits.append((out["logits"], len(rows)))
        losses.append((out["loss"], len(rows)))
    fetch = lambda parts: np.concatenate([np.asarray(jax.device_get(x))[:n] for x, n in parts])
    return fetch(logits), fetch(losses)


def score(spec: TaskSpec, logits: np.ndarray, losses: np.ndarray, labels: np.ndarray) -> dict:
    """The task's metrics and the mean loss of one pass over a split."""
    result = {"loss": float(np.mean(losses))}
    result.update(task_metrics(spec, logits, labels))
    return result


# --------------------------------------------------------------------------------------------
# A fine-tuned model: reload, predict, evaluate.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FineTuned:
    """A reloaded fine-tuned model, ready to score text."""

    export: init_from_lib.Export
    spec: TaskSpec
    tokenizer: Tokenizer
    state: Any  # a TrainState holding the params (no optimizer), for classify_eval_step
    mesh: Any
    eval_step: Callable  # the loop's jitted evaluation step, compiled once per loaded model

    @property
    def max_seq_length(self) -> int:
        return self.export.max_seq_length


def load_finetuned(path: str, seed: int | None = None) -> FineTuned:
    """An export dir, a seed dir or a fine-tuning workdir (best seed unless `seed`)."""
    from bertlab.train.state import create_train_state

    export = init_from_lib.load_export(init_from_lib.find_export(path, seed))
    spec = export.task_spec()
    model = BertForSequenceClassification(export.config, num_labels=spec.num_labels,
                                          extra_layers=export.extra_layers)
    mesh = mesh_lib.data_mesh()
    params = mesh_lib.replicate(jax.tree_util.tree_map(jnp.asarray, export.params), mesh)
    state = create_train_state(model, optax.identity(), params, mesh=mesh)
    tokenizer = Tokenizer.from_file(export.vocab_path, lower_case=export.lower_case)
    return FineTuned(export, spec, tokenizer, state, mesh, steps.jit_classify_eval_step(mesh=mesh))


def predict_logits(model: FineTuned, texts: Sequence[str], pairs: Sequence[str] | None = None,
                   batch_size: int = 64, *, packed: bool = True) -> np.ndarray:
    """Logits (N, num_labels) (the regression value in column 0), through the same jitted step
    as the training loop's evaluation."""
    if model.spec.is_pair and pairs is None:
        raise ValueError(f"{model.spec.name} is a pair task: give the second texts too")
    if not model.spec.is_pair and pairs is not None:
        raise ValueError(f"{model.spec.name} takes single texts, not pairs")
    encoded = model.tokenizer.pack(list(texts), None if pairs is None else list(pairs),
                                   max_length=model.max_seq_length)
    encoded["labels"] = np.zeros(len(texts), np.float32 if model.spec.is_regression else np.int32)
    logits, _ = run_eval(model.eval_step, model.state, encoded,
                         packing.round_up(batch_size, model.mesh.size), model.mesh, packed=packed)
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


def evaluate_split(model: FineTuned, split: Split, batch_size: int = 64, *,
                   packed: bool = True) -> tuple[dict, np.ndarray]:
    """(metrics incl. loss, logits) of the model on a labelled split."""
    encoded = encode_split(model.tokenizer, model.spec, split, model.max_seq_length)
    logits, losses = run_eval(model.eval_step, model.state, encoded,
                              packing.round_up(batch_size, model.mesh.size), model.mesh,
                              packed=packed)
    return score(model.spec, logits, losses, encoded["labels"]), logits


def load_eval_split(model: FineTuned, split: str, data_dir: str | None = None,
                    max_examples: int = 0) -> Split:
    """A labelled split of the task the model was trained on, read the way training read it."""
    loaded = load_task_split(model, split, data_dir, max_examples)
    if not loaded.is_labelled:
        raise TrainConfigError(f"split {split!r} of {model.export.data['task']} has no labels; "
                               f"use `bertlab predict --split {split}` for its predictions")
    return loaded


def load_task_split(model: FineTuned, split: str, data_dir: str | None = None,
                    max_examples: int = 0, task: str | None = None) -> Split:
    """A split (labelled or not) of `task` (default: the model's own task), read the way
    training read it. Another task must have the model's labels (ax or mnli-mm for an MNLI
    model)."""
    record = model.export.data
    if not record.get("task"):
        raise TrainConfigError(f"{model.export.directory}: the export records no task data")
    task = task or record["task"]
    data_dir = record.get("data_dir", "") if data_dir is None else os.path.abspath(data_dir)
    options = dict(record.get("options", {})) if task == record["task"] else {}
    spec, loaded = load_split(task, data_dir, split, options, key="data-dir")
    if tuple(spec.label_names) != tuple(model.spec.label_names) or spec.is_pair != \
            model.spec.is_pair:
        raise TrainConfigError(f"task {task} ({', '.join(spec.label_names) or 'a score'}) does "
                               f"not match the model's task {record['task']} "
                               f"({', '.join(model.spec.label_names) or 'a score'})")
    return subsample(loaded, max_examples, record.get("data_seed", 0))


def predict_split(model: FineTuned, split: Split, batch_size: int = 64, *,
                  packed: bool = True) -> np.ndarray:
    """Logits (N, num_labels) of every example of a split, labelled or not, in its order."""
    encoded = encode_split(model.tokenizer, model.spec, split, model.max_seq_length)
    encoded["labels"] = np.zeros_like(encoded["labels"])  # gold (if any) is not needed here
    logits, _ = run_eval(model.eval_step, model.state, encoded,
                         packing.round_up(batch_size, model.mesh.size), model.mesh, packed=packed)
    return logits


def prediction_rows(spec: TaskSpec, split: Split, logits: np.ndarray) -> list[dict]:
    """The per-example table of a scored split: ids from the split (else row indices), texts,
    gold when labelled, prediction, probabilities (bertlab.data.tasks.prediction_table)."""
    return prediction_table.prediction_rows(
        logits=logits, label_names=() if spec.is_regression else spec.label_names,
        texts=split.texts, text_pairs=split.text_pairs if spec.is_pair else None, ids=split.ids,
        gold=split.labels if split.is_labelled else None)


def write_predictions(path: str, spec: TaskSpec, split: Split, logits: np.ndarray) -> str:
    """prediction_rows written as CSV / TSV / JSONL by path's extension."""
    return prediction_table.write_prediction_table(path, prediction_rows(spec, split, logits))


# --------------------------------------------------------------------------------------------
# Sentence embeddings (any backbone) and their similarities.
# --------------------------------------------------------------------------------------------

def _encode_sentences(params, token_ids, segment_ids, attention_mask, *, config: BertConfig):
    sequence_output, _ = BertModel(config).apply({"params": params}, token_ids, segment_ids,
                                                 attention_mask, deterministic=True)
    return mean_pool(sequence_output, attention_mask)  # (B, H)


@functools.lru_cache(maxsize=8)
def _sentence_encoder(config: BertConfig) -> Callable:
    """The jitted encoder of one model config, kept so repeated calls compile once."""
    return jax.jit(functools.partial(_encode_sentences, config=config))


def _encode_packed(params, batch: dict, *, config: BertConfig, num_examples: int):
    sequence_output, _ = BertModel(config).apply(
        {"params": params}, batch["token_ids"], batch["segment_ids"], batch["attention_mask"],
        deterministic=True, example_ids=batch["example_ids"], positions=batch["positions"],
        cls_index=batch["cls_index"])  # (R, T, H)
    return mean_pool(sequence_output, batch["attention_mask"], batch["example_ids"],
                     num_examples=num_examples)  # (K, H), slot s = input row s


@functools.lru_cache(maxsize=8)
def _packed_sentence_encoder(config: BertConfig, num_examples: int) -> Callable:
    return jax.jit(functools.partial(_encode_packed, config=config, num_examples=num_examples))


# Packed embedding rows are at least this long (or max_seq_length if shorter): rows of the
# longest sentence alone would hold one or two sentences each, which is padding again.
EMBED_ROW_MIN = 128
PACKED_KEYS_TO_MODEL = ("token_ids", "segment_ids", "attention_mask", "example_ids", "positions",
                        "cls_index")


def sentence_embeddings(backbone: init_from_lib.Backbone, texts: Sequence[str], *,
                        max_seq_length: int = 256, batch_size: int = 32,
                        normalize: bool = False, packed: bool = True) -> np.ndarray:
    """Mean-pooled last-layer vectors (N, H), sentence-transformers' recipe; optionally L2-
    normalised; row i is texts[i]. packed (default): max(batch_size, PACKED_EVAL_EXAMPLES)
    sentences per packed batch in rows of min(max_seq_length, max(EMBED_ROW_MIN, longest
    rounded up to 16)) tokens. Padded: batches of batch_size padded only to their longest text
    (rounded up to 16). Mean pooling over real tokens makes either layout irrelevant to the
    result, up to float rounding."""
    if backbone.params is None:
        raise ValueError("sentence_embeddings needs pretrained weights")
    max_seq_length = min(max_seq_length, backbone.config.max_position_embeddings)
    tokenizer = Tokenizer.from_file(backbone.vocab_path, lower_case=backbone.lower_case)
    params = jax.tree_util.tree_map(jnp.asarray, backbone.params)
    if packed:
        vectors = _packed_embeddings(backbone.config, params, tokenizer, list(texts),
                                     max_seq_length, batch_size)
    else:
        vectors = _padded_embeddings(backbone.config, params, tokenizer, list(texts),
                                     max_seq_length, batch_size)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return vectors


def _padded_embeddings(config: BertConfig, params, tokenizer: Tokenizer, texts: list[str],
                       max_seq_length: int, batch_size: int) -> np.ndarray:
    ids = tokenizer.encode_batch(texts)
    encode = _sentence_encoder(config)
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        longest = max(len(x) for x in chunk) + 2
        length = min(max_seq_length, packing.round_up(longest, 16))
        batch = pack_ids(chunk, None, max_length=length, vocab=tokenizer.vocab)
        out.append(np.asarray(encode(params, batch["token_ids"], batch["segment_ids"],
                                     batch["attention_mask"])))
    return np.concatenate(out) if out else np.zeros((0, config.hidden_size), np.float32)


def _packed_embeddings(config: BertConfig, params, tokenizer: Tokenizer, texts: list[str],
                       max_seq_length: int, batch_size: int) -> np.ndarray:
    if not texts:
        return np.zeros((0, config.hidden_size), np.float32)
    encoded = tokenizer.pack(texts, None, max_length=max_seq_length)  # (N, max_seq_length)
    lengths = packing.example_lengths(encoded["attention_mask"])  # (N,)
    row_length = min(max_seq_length, max(EMBED_ROW_MIN, packing.round_up(int(lengths.max()), 16)))
    examples = max(batch_size, PACKED_EVAL_EXAMPLES)
    batches = [np.arange(start, min(start + examples, len(texts)))
               for start in range(0, len(texts), examples)]
    plan = plan_packing(lengths, batches, examples=examples, row_length=row_length,
                        max_programs=EVAL_PROGRAMS)
    encode = _packed_sentence_encoder(config, plan.examples)
    out = []
    for index, rows in enumerate(batches):
        batch = packed_batch_of(encoded, rows, plan.examples, plan, index)
        vectors = encode(params, {key: batch[key] for key in PACKED_KEYS_TO_MODEL})
        out.append(np.asarray(vectors)[:len(rows)])  # drop the empty slots
    return np.concatenate(out)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return unit @ unit.T
