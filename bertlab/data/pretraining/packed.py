"""Packed pretraining batches: the short segments that short_seq_prob and document ends leave
share rows, so the step computes on real tokens only (bertlab.data.packing's layout).

What stays as padded pretraining:

* the iterator: it yields the same global batches in the same order, and its (epoch,
  position) state is untouched, so kill-and-resume stays exact;
* the examples per update and how an update splits into micro-batches: micro-batch i of an
  update holds the examples the padded step gives it (rows i, k + i, 2k + i, ... of the batch;
  under a batch ramp, the i-th iterator batch), and is packed on its own;
* the masking: bertlab.data.pretraining.masking draws an example's random numbers at (its row
  in the padded batch, its offset), so a packed example is masked exactly as padded.

The layout of one update (what `pack_update` returns, this process's share):

    token_ids, segment_ids, attention_mask, example_ids, positions   (k, R / P, T) int32
    cls_index, example_lengths, example_index, example_weights,
    nsp_labels                                                       (k, K / P)

k micro-batches stacked on a leading axis (1 without accumulation), R rows of T tokens per
micro-batch, K slots = the micro-batch's examples, P processes. Every host packs the GLOBAL
micro-batch (it reads all of it: memory-mapped shards make that cheap) and keeps its rows and
slots, so the rows are one function of the data, the same whatever the process and device
count; slot ids and cls_index are global.

A packed row keeps the padded row's max_predictions (P) masked-position slots: the packer puts
examples together only while the predictions they ask for (min(P, max(1, round(rate * n)))
each) sum to at most P (masking.prediction_counts, the packer's second capacity). So the MLM
head gathers as many positions per row as padded, never drops a prediction, and most rows
are unaffected: a full row of examples asks for about rate * T <= P in all. The alternative,
sizing the slots for the worst row (rate * T + examples per row), costs every row that many
extra vocabulary projections, which on small models is a large share of the step.

R comes from a few planned buckets (few compiled programs): `plan_buckets` runs the packer on a
fixed sample of batches (the start of epoch 0, so a resumed run plans the same), keeps at most
max_programs row counts (packing.plan_row_buckets) and adds K, the row count that always fits
(one example per row), for the rare batch that needs more than the sample did: a program only
compiles when a batch first uses it. Every R is a multiple of the device count.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bertlab.data import packing
from bertlab.data.pretraining.iterator import epoch_permutation
from bertlab.data.pretraining.masking import prediction_counts

# Examples the plan looks at: enough batches for a stable histogram, cheap on the host.
PLAN_EXAMPLES = 16_384
TOKEN_KEYS = packing.TOKEN_KEYS + ("example_ids", "positions")  # (R, T) per micro-batch
SLOT_KEYS = ("cls_index", "example_lengths", "example_index", "example_weights", "nsp_labels")


@dataclasses.dataclass(frozen=True)
class PackSpec:
    """How every micro-batch of a run is packed: rows of row_length tokens whose examples ask
    for at most max_predictions predictions at `rate` (the masking's), R a multiple of
    `multiple` (the data mesh's size), this host's share (process_index of process_count)."""

    row_length: int
    rate: float
    max_predictions: int
    multiple: int = 1
    process_index: int = 0
    process_count: int = 1


def needed_rows(lengths: np.ndarray, spec: PackSpec) -> int:
    """R one micro-batch needs under the spec's row limits (packing.rows_needed)."""
    return packing.rows_needed(np.asarray(lengths), spec.row_length, multiple=spec.multiple,
                               **row_limits(lengths, spec))


def placement_of(batch: dict, spec: PackSpec) -> list[list[int]]:
    """first_fit_decreasing's rows for one micro-batch (take() arrays) under the spec's limits."""
    lengths = packing.example_lengths(batch["attention_mask"])
    return packing.first_fit_decreasing(lengths, spec.row_length, **row_limits(lengths, spec))


def row_limits(lengths: np.ndarray, spec: PackSpec) -> dict:
    """The packer's second capacity: each example's predictions, at most P per row."""
    return {"costs": prediction_counts(lengths, spec.rate, spec.max_predictions),
            "max_cost": spec.max_predictions}


def update_micro_batches(indices: np.ndarray, k: int) -> list[np.ndarray]:
    """The global example indices (B,) of one update -> its k micro-batches as the padded step
    splits them: micro-batch i = rows i, k + i, 2k + i, ... (slot s is batch row s * k + i)."""
    return [np.asarray(indices)[i::k] for i in range(k)]


def plan_buckets(examples, *, batch_size: int, micro_batches: int, seed: int, spec: PackSpec,
                 max_programs: int) -> tuple[int, ...]:
    """The row counts (buckets) micro-batches run at: planned on the start of epoch 0's order
    (whole updates of batch_size examples, at most PLAN_EXAMPLES of them), plus K = batch_size
    / micro_batches (rounded to the device multiple), which always fits."""
    slots = batch_size // micro_batches
    order = epoch_permutation(len(examples), seed, 0)
    updates = max(1, min(len(examples), PLAN_EXAMPLES) // batch_size)
    lengths = examples.lengths_of(order[:updates * batch_size])
    needs = [max(needed_rows(lengths[u * batch_size:(u + 1) * batch_size][i::micro_batches],
                             spec) for i in range(micro_batches)) for u in range(updates)]
    buckets = packing.plan_row_buckets(needs, max_programs)
    fits_all = packing.round_up(slots, spec.multiple)
    return tuple(sorted(set(buckets) | {fits_all}))


def pack_micro_batch(batch: dict, rows: int, spec: PackSpec,
                     placement: list[list[int]] | None = None) -> dict:
    """One global micro-batch (take() arrays (K, T) + example_weights (K,)) -> this host's share
    of its packed rows and slots (see the module docstring). placement: placement_of(batch)
    when the caller sized R with it (None: packed here)."""
    lengths = packing.example_lengths(batch["attention_mask"])
    packed = packing.pack_batch(batch, rows=rows, row_length=spec.row_length,
                                placement=placement, **row_limits(lengths, spec))
    slots = len(packed["cls_index"])
    row_share, slot_share = rows // spec.process_count, slots // spec.process_count
    mine_rows = slice(spec.process_index * row_share, (spec.process_index + 1) * row_share)
    mine_slots = slice(spec.process_index * slot_share, (spec.process_index + 1) * slot_share)
    return {**{key: packed[key][mine_rows] for key in TOKEN_KEYS},
            **{key: packed[key][mine_slots] for key in SLOT_KEYS}}


def empty_micro_batch(rows: int, slots: int, spec: PackSpec) -> dict:
    """A micro-batch with no example (weight 0 everywhere): the ramp's skipped ones."""
    row_share, slot_share = rows // spec.process_count, slots // spec.process_count
    out = {key: np.zeros((row_share, spec.row_length), np.int32) for key in TOKEN_KEYS}
    out.update({key: np.zeros((slot_share,), np.int32) for key in SLOT_KEYS})
    out["example_index"] = np.full((slot_share,), -1, np.int32)
    out["example_weights"] = np.zeros((slot_share,), np.float32)
    return out


def pack_update(take, micro_batches: list[np.ndarray], total: int, buckets, spec: PackSpec
                ) -> tuple[dict, dict]:
    """One update: `micro_batches` (each the global example indices of one micro-batch, in
    slot order) packed at one R (the smallest bucket that holds all of them), stacked, with
    `total - len(micro_batches)` empty micro-batches after them (a batch ramp's step always
    takes `total`). Returns (this host's arrays, stats: real tokens and token slots of the
    whole global update, for the packing efficiency and the throughput)."""
    batches = []
    for indices in micro_batches:
        batch = take(indices)
        batch["example_weights"] = np.ones(len(indices), np.float32)
        batches.append(batch)
    placements = [placement_of(b, spec) for b in batches]  # the packer runs once per batch
    need = max(packing.rows_of(p, spec.multiple) for p in placements)
    rows = packing.bucket_rows(need, buckets)
    stacked = [pack_micro_batch(b, rows, spec, p) for b, p in zip(batches, placements)]
    slots = len(micro_batches[0])
    stacked += [empty_micro_batch(rows, slots, spec)] * (total - len(stacked))
    out = {key: np.stack([m[key] for m in stacked]) for key in stacked[0]}  # (k, ...)
    real = int(sum(int(np.asarray(b["attention_mask"]).sum()) for b in batches))
    return out, {"real_tokens": real, "token_slots": rows * spec.row_length * len(batches)}


def plan_eval_rows(lengths: np.ndarray, batch_size: int, count: int, spec: PackSpec,
                   max_programs: int) -> list[int]:
    """R of each of the first `count` held-out batches (rows 0..N-1 in order, the last one short,
    as bertlab.train.loop.eval_batches): every batch is known, so the plan is exact."""
    needs = [needed_rows(lengths[b * batch_size:(b + 1) * batch_size], spec)
             for b in range(count)]
    buckets = packing.plan_row_buckets(needs, max_programs)
    return [packing.bucket_rows(need, buckets) for need in needs]


def pack_eval_batch(take, num_rows: int, batch_size: int, index: int, rows: int,
                    spec: PackSpec) -> dict:
    """Held-out batch `index` (global rows index*B .. index*B+B-1, those past N weight 0),
    packed into `rows` rows: this host's share, unstacked ((R / P, T) rows, (K / P,) slots)."""
    global_rows = np.arange(index * batch_size, (index + 1) * batch_size)  # (B,)
    present = global_rows < num_rows
    batch = take(np.where(present, global_rows, 0))
    batch["example_weights"] = present.astype(np.float32)
    return pack_micro_batch(batch, rows, spec)


def efficiency(stats: dict) -> float:
    """Real tokens / token slots of packed stats (pack_update's second value)."""
    return stats["real_tokens"] / max(stats["token_slots"], 1)
