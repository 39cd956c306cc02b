"""Packing efficiency (real tokens / token slots) on real GLUE data at T=128, bert-base-uncased.

The issue's target is >= 90 % on SST-2, MRPC and QNLI. Training keeps the papers' batch
semantics: each step packs its own 32 examples, drawn in order, so a step wastes on average
about half a row, whatever the packer. The table shows where that leaves each task and what
reaches the target at which cost:

  padded 128        every example in its own row of 128 (bertlab unpacked)
  pad to longest    per-batch padding to the batch's longest (the transformers + PyTorch peer)
  packed, exact R   first-fit-decreasing within the batch, R = the rows it needs
                    (one program per distinct R: the "programs" column)
  ceil bound        ceil(batch tokens / 128) rows: no packer of one batch does better
  packed, P progs   R from plan_row_buckets with at most P programs (what the loop runs)
  rows 64 or 128    each batch in rows of 64 when all its examples fit, else 128 (exact R):
                    shorter rows halve the granularity of the waste, at twice the programs
  window 128 / split  packing 128 examples (4 steps' worth) or the whole split at once: no
                    training semantics (a step is one batch), but fine for evaluation and
                    inference, where batches are only a memory bound

Usage:
    .venv/bin/python experiments/bench/packing_efficiency.py \
        --data-dir ../shared/data/glue_data --vocab ../shared/data/vocab/bert-base-uncased-vocab.txt \
        --out experiments/bench/packing_efficiency.md
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import time

import numpy as np

from bertlab.data import packing
from bertlab.data.tasks.glue import load_glue
from bertlab.text.tokenizer import Tokenizer

CASES = (("sst2", "train"), ("sst2", "dev"), ("mrpc", "train"), ("mrpc", "dev"), ("qnli", "dev"))


def lengths_of(task: str, split: str, data_dir: str, tokenizer: Tokenizer, row_length: int
               ) -> np.ndarray:
    """Real token counts of each example as Tokenizer.pack(max_length=T) truncates it."""
    data = load_glue(task, data_dir, split)
    arrays = tokenizer.pack(data.texts, data.text_pairs, max_length=row_length)
    return packing.example_lengths(arrays["attention_mask"])


def batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]


def whole_split_rows(lengths: np.ndarray, row_length: int) -> int:
    """Best-fit decreasing over a whole split, by free-space counts: O(n T), not O(n rows)."""
    rows_with_free = np.zeros(row_length + 1, np.int64)  # [s] = rows with s tokens free
    rows = 0
    for n in np.sort(lengths)[::-1]:
        fits = np.nonzero(rows_with_free[n:])[0]
        if fits.size:
            space = n + fits[0]
            rows_with_free[space] -= 1
            rows_with_free[space - n] += 1
        else:
            rows += 1
            rows_with_free[row_length - n] += 1
    return rows


def measure(lengths: np.ndarray, row_length: int, batch_size: int) -> dict:
    real = float(lengths.sum())
    groups = batches(lengths, batch_size)
    needs = [packing.rows_needed(g, row_length) for g in groups]
    row = {
        "examples": len(lengths),
        "mean length": float(lengths.mean()),
        "padded 128": real / (len(lengths) * row_length),
        "pad to longest": real / sum(len(g) * int(g.max()) for g in groups),
        "packed, exact R": real / (sum(needs) * row_length),
        "programs (exact)": len(set(needs)),
        "ceil bound": real / (sum(math.ceil(g.sum() / row_length) for g in groups) * row_length),
    }
    for programs in (1, 2, 4):
        buckets = packing.plan_row_buckets(needs, programs)
        slots = sum(packing.bucket_rows(n, buckets) for n in needs) * row_length
        row[f"packed, {programs} prog"] = real / slots
        row[f"R buckets ({programs})"] = buckets
    half = row_length // 2
    shapes, slots = set(), 0
    for g in groups:
        width = half if g.max() <= half else row_length
        r = packing.rows_needed(g, width)
        shapes.add((r, width))
        slots += r * width
    row["rows 64 or 128"] = real / slots
    row["programs (64/128)"] = len(shapes)
    window = [packing.rows_needed(g, row_length) for g in batches(lengths, 4 * batch_size)]
    row["window 128"] = real / (sum(window) * row_length)
    row["whole split"] = real / (whole_split_rows(lengths, row_length) * row_length)
    return row


COLUMNS = ("examples", "mean length", "padded 128", "pad to longest", "packed, exact R",
           "programs (exact)", "ceil bound", "packed, 1 prog", "packed, 2 prog", "packed, 4 prog",
           "R buckets (4)", "rows 64 or 128", "programs (64/128)", "window 128", "whole split")


def cell(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.1f}" if value > 1.0 else f"{100 * value:.1f} %"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/glue_data")
    parser.add_argument("--vocab", default="../shared/data/vocab/bert-base-uncased-vocab.txt")
    parser.add_argument("--row-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=None, help="write the markdown here as well")
    args = parser.parse_args(argv)

    tokenizer = Tokenizer.from_file(args.vocab)
    start = time.perf_counter()
    rows = []
    for task, split in CASES:
        lengths = lengths_of(task, split, args.data_dir, tokenizer, args.row_length)
        rows.append((f"{task} {split}", measure(lengths, args.row_length, args.batch_size)))
    elapsed = time.perf_counter() - start

    lines = ["| split | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(row[c]) for c in COLUMNS) + " |"
              for name, row in rows]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    command = ".venv/bin/python experiments/bench/packing_efficiency.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    table = "\n".join(lines)
    footer = (f"\nT={args.row_length}, batches of {args.batch_size} examples in file order, "
              f"bert-base-uncased WordPiece with the original pair truncation. "
              f"{elapsed:.0f} s including tokenising.\n\nCommand: `{command}`  \n"
              f"Commit: {commit} · Python {platform.python_version()}\n")
    print(table + "\n" + footer)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(_HEADER + "\n" + table + "\n" + footer + _NOTES)


_HEADER = """# Packing efficiency on GLUE at T=128

Real tokens / token slots (higher is better; 100 % = no padding computed). Columns are
explained in `experiments/bench/packing_efficiency.py`'s docstring; in short: within-batch
packing keeps the papers' batch semantics (one step = the same 32 examples, in order), the
last two columns do not and suit evaluation and inference only.
"""

_NOTES = """
## Reading it

- Within-batch packing of 32 examples cannot beat the `ceil bound` column: a batch's tokens
  fill ceil(tokens / 128) rows at best, so on average about half a row per step is padding.
  On SST-2 (13 tokens per training sentence: 3.3 rows a batch) that alone caps training at
  86.7 %, below the 90 % target, whatever the packer.
- On MRPC and QNLI first-fit-decreasing stays ~4 points under the ceil bound because their
  examples are large (40-128 tokens) relative to a row: two 70-token examples never share one.
  Measured on the same batches (not in the table): best-fit decreasing needs exactly the same
  rows, and minimum-bin-slack (Gupta & Ho 1999) needs 0.1-0.7 % more on MRPC/QNLI and 0.2-0.5 %
  fewer on SST-2, so FFD stays.
- Four planned programs (plan_row_buckets) keep all but ~0.5 point of the exact-R efficiency;
  one program (R = the largest need) loses 10-30 points: compile a few shapes.
- What reaches 90 % for SST-2 training with the batch semantics kept: rows of 64 when every
  example of the batch fits (92.5 %), at the price of more compiled shapes (one per (R, T)
  pair; plan them with plan_row_buckets per row length). Larger pack windows (4 batches:
  96 %) or a fixed token budget per step would change what a step is (examples per update
  varies, and order within an epoch is regrouped), which the issue rules out for training.
- For evaluation, `predict`, `embed` and `similarity` there are no batch semantics to keep:
  packing a window of several batches or the whole split reaches the last two columns.
"""


if __name__ == "__main__":
    main()
