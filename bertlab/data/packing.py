"""Packing one batch's examples into fewer rows, without cross-contamination (Krell et al. 2021,
"Efficient Sequence Packing without Cross-contamination").

A padded batch spends compute on [PAD]: B examples of mean length 25 in rows of 128 are 80 %
padding. Packing puts several examples side by side in one row of T tokens; the model then
keeps them apart (bertlab.models: block-diagonal attention from `example_ids`, positions that
restart at 0 for each example, [CLS] gathered at each example's start), so a packed step
computes exactly what the padded step computes, only without the padding.

Batch semantics are the papers': the examples packed together are ONE batch, in the order the
loop drew them, so `batch_size` still means examples per update and an epoch still visits the
data in the same order. Only where they sit in the (R, T) token grid changes.

Layout of a packed batch (what `pack_batch` returns; numpy, ready for the device):

    token_ids, segment_ids, attention_mask   (R, T) int32   as Tokenizer.pack, several per row
    example_ids                              (R, T) int32   0 on padding, s + 1 on the tokens of
                                                            the example in slot s (a batch-wide
                                                            slot, not a row-local one: attention
                                                            masks, pooling and the loss all key
                                                            on it, and slot s is input row s)
    positions                                (R, T) int32   0, 1, 2, ... from each example's
                                                            [CLS]; 0 on padding
    cls_index                                (K,)   int32   row * T + start of slot s's [CLS]
                                                            (its (row, start) as one flat index)
    example_lengths                          (K,)   int32   real tokens of slot s (0 if unused)
    example_index                            (K,)   int32   s for a used slot, -1 for an unused
    example_weights                          (K,)   float32 the input weight; 0 for unused slots
    labels, nsp_labels, ... (any per-example key of the input)   (K,)   zero-filled past B

Slots are in input order (slot s holds input row s), so per-example outputs of the packed
step (logits (K, C)) line up with the padded batch's (B, C) with no permutation; K >= B and the
slots past B, and the rows of weight 0, are empty (weight 0, no tokens). An unused slot's
cls_index points at token 0: its outputs are finite, and weighted out.

Choosing R. Shapes must be static, so R cannot be "whatever this batch needs" without a new
XLA program per distinct value. The loop knows every batch of an epoch before it starts (the
order is fixed by the seed), so it computes each batch's need with `rows_needed` and asks
`plan_row_buckets` for the set of at most `max_programs` R values that wastes the fewest token
slots over the epoch (an exact dynamic programme over the histogram of needs); each batch then
runs at `bucket_rows(need, buckets)`. max_programs=1 gives one program at the epoch's largest
need; more programs trade compile time for efficiency (measured in
experiments/bench/packing_efficiency.md). T is the task's max_seq_length; K is the batch size.

Examples are placed first-fit-decreasing (longest first, ties by input order), which is
deterministic and, for 32 examples, within a row of the ceil(total / T) bound in practice.
Rows from Tokenizer.pack(max_length=T) are already truncated by the original's pair rule, so
packing them by their attention_mask lengths keeps truncation exactly as unpacked.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

# Token-level inputs: (B, L) in, (R, T) out. Every other input array with a leading B axis is
# per-example and comes out (K, ...) in slot order.
TOKEN_KEYS = ("token_ids", "segment_ids", "attention_mask")
# Keys pack_batch writes itself; an input carrying one of these is already packed.
PACKED_KEYS = ("example_ids", "positions", "cls_index", "example_lengths", "example_index")


class PackingError(ValueError):
    """An example that cannot be placed: longer than a row, or more rows / slots than allowed."""


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= value (row and slot counts split over devices)."""
    return -(-int(value) // multiple) * multiple


def example_lengths(attention_mask: np.ndarray) -> np.ndarray:
    """(B, L) 1/0 mask with real tokens first (Tokenizer.pack's layout) -> (B,) lengths."""
    mask = np.asarray(attention_mask)
    lengths = mask.sum(axis=1).astype(np.int64)
    prefix = np.arange(mask.shape[1])[None, :] < lengths[:, None]  # (B, L)
    if not np.array_equal(prefix, mask.astype(bool)):
        row = int(np.nonzero((prefix != mask.astype(bool)).any(axis=1))[0][0])
        raise PackingError(f"attention_mask row {row} has padding before a real token; packing "
                           f"needs each example's tokens first, as Tokenizer.pack writes them")
    return lengths


def first_fit_decreasing(lengths: Sequence[int], row_length: int, *,
                         costs: Sequence[int] | None = None,
                         max_cost: int | None = None) -> list[list[int]]:
    """Examples (by index) per row: longest first (ties by index), each into the first row with
    room. Length-0 examples are not placed. Deterministic: no randomness, no hash order.
    costs / max_cost (None: none): a second capacity per row, an example going only where the
    row's costs stay <= max_cost (pretraining: each example's masked predictions, so a packed
    row's predictions fit the padded row's max_predictions slots)."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    free: list[int] = []
    budget: list[int] = []  # max_cost minus the row's costs (unused without costs)
    for i in order:
        need = int(lengths[i])
        cost = 0 if costs is None else int(costs[i])
        if need > row_length:
            raise PackingError(f"example {i} has {need} tokens, more than the row length "
                               f"{row_length}; pack the output of Tokenizer.pack(max_length="
                               f"{row_length}) so the pair truncation rule applies")
        for r, space in enumerate(free):
            if space >= need and (costs is None or budget[r] >= cost):
                rows[r].append(i)
                free[r] -= need
                budget[r] -= cost
                break
        else:
            rows.append([i])
            free.append(row_length - need)
            budget.append((max_cost or 0) - cost)
    return rows


def rows_needed(lengths: Sequence[int], row_length: int, *, multiple: int = 1,
                costs: Sequence[int] | None = None, max_cost: int | None = None) -> int:
    """R for these examples: the rows of `row_length` first-fit-decreasing uses, at least one
    (a batch of only empty slots still runs a step), rounded up to `multiple` (the data mesh's
    size: rows are split over the devices)."""
    return rows_of(first_fit_decreasing(lengths, row_length, costs=costs, max_cost=max_cost),
                   multiple)


def rows_of(placement: Sequence[Sequence[int]], multiple: int = 1) -> int:
    """R for a first_fit_decreasing placement: see rows_needed."""
    return round_up(max(len(placement), 1), max(int(multiple), 1))


def plan_row_buckets(needs: Sequence[int], max_programs: int, program_cost: float = 0.0
                     ) -> tuple[int, ...]:
    """The at most `max_programs` row counts that cover every need with the fewest token slots.

    program_cost: what one more compiled program costs, in rows (one row of one step). Each
    bucket is an XLA program to compile, and on a CPU a compile costs as much as hundreds of
    row-steps, so a short run is better off with fewer, larger buckets: the plan minimises
    rows run + program_cost * buckets (0: the fewest rows with up to max_programs buckets).

    Each batch runs at the smallest bucket >= its need, so the largest need is always a bucket;
    the rest are chosen by an exact dynamic programme over the distinct needs (sorted values
    v_1 < ... < v_m seen c_j times: f[p][j] = min_i f[p-1][i-1] + v_j * (c_i + ... + c_j)).
    m <= batch size, so this is instant. Returns the buckets in increasing order."""
    if max_programs < 1:
        raise ValueError(f"plan_row_buckets: max_programs must be >= 1, got {max_programs}")
    values, counts = np.unique(np.asarray(needs, dtype=np.int64), return_counts=True)
    if values.size == 0:
        raise ValueError("plan_row_buckets: no batches to plan for")
    m = len(values)
    prefix = np.concatenate([[0], np.cumsum(counts)])  # prefix[j] = c_1 + ... + c_j
    inf = float("inf")
    # cost[p][j]: least slots covering values[:j] with p buckets, the last one at values[j-1].
    cost = [[inf] * (m + 1) for _ in range(max_programs + 1)]
    choice = [[-1] * (m + 1) for _ in range(max_programs + 1)]
    cost[0][0] = 0.0
    for p in range(1, max_programs + 1):
        for j in range(1, m + 1):
            for i in range(1, j + 1):  # bucket values[j-1] covers values[i-1 .. j-1]
                prev = cost[p - 1][i - 1]
                if prev == inf:
                    continue
                total = prev + float(values[j - 1]) * float(prefix[j] - prefix[i - 1])
                if total < cost[p][j]:
                    cost[p][j], choice[p][j] = total, i - 1
    best_p = min(range(1, max_programs + 1),
                 key=lambda p: (cost[p][m] + program_cost * p, p))
    buckets, j, p = [], m, best_p
    while j > 0:
        buckets.append(int(values[j - 1]))
        j, p = choice[p][j], p - 1
    return tuple(sorted(buckets))


def bucket_rows(need: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `need` rows."""
    for bucket in sorted(buckets):
        if bucket >= need:
            return int(bucket)
    raise PackingError(f"a batch needs {need} rows but the largest planned bucket is "
                       f"{max(buckets)}; plan the buckets over every batch the loop will run")


def plan_batches(lengths: np.ndarray, batches: Iterable[Sequence[int]], row_length: int,
                 max_programs: int, *, multiple: int = 1, program_cost: float = 0.0
                 ) -> tuple[list[int], tuple[int, ...]]:
    """R for every batch of a run, from the examples' lengths alone (no token arrays).

    lengths: (N,) real tokens per example of the split (example_lengths of its Tokenizer.pack
    mask); batches: each batch's example indices, every batch the run will take (all epochs,
    so the compiled shapes are fixed before the first step and a resumed run plans the same).
    multiple: every R is a multiple of it (the data mesh's size: rows are split over the
    devices). program_cost: see plan_row_buckets. Returns (R per batch, the buckets)."""
    lengths = np.asarray(lengths)
    needs = [rows_needed(lengths[np.asarray(rows, dtype=np.int64)], row_length, multiple=multiple)
             for rows in batches]
    buckets = plan_row_buckets(needs, max_programs, program_cost)
    return [bucket_rows(need, buckets) for need in needs], buckets


def pack_batch(batch: Mapping[str, np.ndarray], *, rows: int | None = None,
               row_length: int | None = None, max_examples: int | None = None,
               costs: np.ndarray | None = None, max_cost: int | None = None,
               placement: list[list[int]] | None = None) -> dict:
    """One padded batch (Tokenizer.pack arrays (B, L) + per-example arrays (B,)) -> packed arrays.

    rows: R (None: exactly what first-fit-decreasing needs, for inference or tests).
    row_length: T (None: the input's L). max_examples: K (None: B). costs (B,) / max_cost: a
    second per-row capacity (None: none; first_fit_decreasing). placement: the
    first_fit_decreasing result for this batch when the caller already has it (it sized R with
    it), so the packer does not run twice; None: computed here. Rows whose
    `example_weights` is 0 (the loop's filler rows in an epoch's last batch) are left out, their
    slot empty. See the module docstring for every output key."""
    for key in PACKED_KEYS:
        if key in batch:
            raise PackingError(f"pack_batch: input already has {key!r}; it is packed")
    token_ids = np.asarray(batch["token_ids"])
    count, width = token_ids.shape
    row_length = width if row_length is None else int(row_length)
    max_examples = count if max_examples is None else int(max_examples)
    if max_examples < count:
        raise PackingError(f"pack_batch: {count} examples but at most K={max_examples} slots")
    weights = np.asarray(batch.get("example_weights", np.ones(count, np.float32)), np.float32)
    lengths = np.where(weights > 0, example_lengths(batch["attention_mask"]), 0)  # (B,)
    if placement is None:
        placement = first_fit_decreasing(lengths, row_length, costs=costs, max_cost=max_cost)
    rows = len(placement) if rows is None else int(rows)
    if len(placement) > rows:
        raise PackingError(f"pack_batch: these {count} examples need {len(placement)} rows of "
                           f"{row_length} tokens, but R={rows}; choose R with rows_needed / "
                           f"plan_row_buckets")

    out = {key: np.zeros((rows, row_length), np.int32) for key in TOKEN_KEYS + ("example_ids",
                                                                               "positions")}
    cls_index = np.zeros(max_examples, np.int32)
    slot_lengths = np.zeros(max_examples, np.int32)
    for r, members in enumerate(placement):
        start = 0
        for i in members:
            n = int(lengths[i])
            span = slice(start, start + n)
            for key in TOKEN_KEYS:
                out[key][r, span] = np.asarray(batch[key])[i, :n]
            out["example_ids"][r, span] = i + 1
            out["positions"][r, span] = np.arange(n)
            cls_index[i] = r * row_length + start
            slot_lengths[i] = n
            start += n
    used = slot_lengths > 0
    out["cls_index"] = cls_index
    out["example_lengths"] = slot_lengths
    out["example_index"] = np.where(used, np.arange(max_examples), -1).astype(np.int32)
    for key, value in batch.items():
        if key in TOKEN_KEYS:
            continue
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != count:
            raise PackingError(f"pack_batch: key {key!r} has shape {value.shape}; only token "
                               f"arrays (B, L) and per-example arrays (B, ...) can be packed")
        slots = np.zeros((max_examples,) + value.shape[1:], value.dtype)  # (K, ...)
        slots[:count] = value
        out[key] = slots
    out["example_weights"] = np.where(used, np.pad(weights, (0, max_examples - count)),
                                      0.0).astype(np.float32)
    return out


def packing_efficiency(packed: Mapping[str, np.ndarray]) -> float:
    """Real tokens / token slots of a packed (or padded) batch: what the loop logs per step."""
    mask = np.asarray(packed["attention_mask"])
    return float(mask.sum()) / float(mask.size)


def is_packed(batch: Mapping) -> bool:
    """Packed batches carry per-token example ids; the steps and models branch on this."""
    return "example_ids" in batch
