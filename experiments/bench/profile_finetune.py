"""Where a packed fine-tune step's time goes, on one real batch, beside the PyTorch peer's step.

On short texts (CoLA, SST-2) packing cuts the token slots by 2x or more against per-batch
padding, yet the packed step is only 1.3-1.9x the PyTorch loop at mini / MiniLM size
(real_data.md). This shows why: it traces the jitted step (jax.profiler) on the first batch of
real_data.py's seeded order and sums the XLA ops' time by kind, so the costs that do not
shrink with the tokens (the AdamW update, zero-filling the (V, H) embedding gradient before its
scatter-add) stand beside the matmuls that do. The PyTorch row is the same batch padded to its
longest example (BertForSequenceClassification + torch AdamW, as real_data.py's peer).

    .venv/bin/python experiments/bench/profile_finetune.py --task cola --size mini
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

import real_data  # noqa: E402
from train_step import time_steps  # noqa: E402

# Op-name prefixes (XLA:CPU thunks) -> what they are; anything else is "other elementwise".
KINDS = (("ynn_fusion", "matmuls"), ("dot", "matmuls"), ("wrapped_broadcast", "zero fills"),
         ("multiply_add_fusion", "AdamW update"), ("copy", "copies / transposes"),
         ("transpose", "copies / transposes"), ("concatenate", "copies / transposes"))
NOT_OPS = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool", "CommonPjRt",
           "ParseArguments")


def op_times(step, calls: int) -> collections.Counter:
    """ms per step by op kind, from a jax.profiler trace of `calls` steps."""
    import jax

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(calls):
            step()
        jax.profiler.stop_trace()
        trace = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                                 recursive=True))[-1]
        with gzip.open(trace) as f:
            events = json.load(f)["traceEvents"]
    kinds, largest = collections.Counter(), {}
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(NOT_OPS):
            continue
        base = re.sub(r"(\.\d+)+$", "", name)
        kind = next((label for prefix, label in KINDS if base.startswith(prefix)),
                    "other elementwise")
        kinds[kind] += event.get("dur", 0) / 1000 / calls
        per_op = collections.Counter({name: event.get("dur", 0) / 1000 / calls})
        largest.setdefault(kind, collections.Counter()).update(per_op)
    return kinds, {kind: ops.most_common(1)[0] for kind, ops in largest.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cola", choices=sorted(real_data.CASES))
    parser.add_argument("--size", default="mini", choices=sorted(real_data.SIZES))
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    encoded = real_data.encoded_task(args.task, real_data.CASES[args.task], real_data.BATCH)
    batches = [np.arange(real_data.BATCH)]
    packed_step, warm, buckets = real_data.bertlab_engine(args.size, encoded, batches, True)
    torch_step, _, _ = real_data.torch_engine(args.size, encoded, batches)
    for _ in range(2):
        packed_step(0)
        torch_step(0)
    ours = 1000 * time_steps(lambda: packed_step(0), warmup=1, timed=args.calls)
    theirs = 1000 * time_steps(lambda: torch_step(0), warmup=1, timed=args.calls)
    kinds, largest = op_times(lambda: packed_step(0), args.calls)
    lengths = encoded["attention_mask"].sum(1)
    print(f"## {args.task} {real_data.CASES[args.task]}, first batch of {real_data.BATCH}, "
          f"{args.size}: {int(lengths.sum())} real tokens\n")
    print(f"`.venv/bin/python experiments/bench/profile_finetune.py --task {args.task} "
          f"--size {args.size}`\n")
    print(f"- bertlab packed step: {ours:.1f} ms median of {args.calls} ({buckets[0]} rows of "
          f"{real_data.T} = {buckets[0] * real_data.T} token slots)")
    print(f"- transformers PyTorch step: {theirs:.1f} ms ({real_data.BATCH} rows of "
          f"{int(lengths.max())} = {real_data.BATCH * int(lengths.max())} token slots)")
    print(f"- packed / torch: {theirs / ours:.2f}x\n")
    total = sum(kinds.values())
    print("| XLA ops of the packed step | ms per step | share | largest op (ms per step) |\n"
          "|---|---|---|---|")
    for kind, ms in kinds.most_common():
        name, op_ms = largest[kind]
        print(f"| {kind} | {ms:.1f} | {ms / total:.0%} | `{name}` ({op_ms:.1f}) |")
    print(f"| all ops (traced) | {total:.1f} | 100% | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
