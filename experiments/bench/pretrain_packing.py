"""Pretraining train step, packed vs padded (data.packing): real tokens/s on real corpora.

The padded step computes every row of max_seq_length tokens; the packed step (bertlab.data.
pretraining.packed) puts the short examples that short_seq_prob and document ends leave into
shared rows, with the same examples per update and the same masking. What it gains is bounded
by the data's padding share (less the rows a batch's planned bucket leaves empty), and it pays
for the block-diagonal attention mask, the per-example masking and the host-side packer. This
measures both on:

  sotu       the embedded default corpus (State of the Union), one document per file (the
             recipes' setting for it) and one per blank-line paragraph (data.doc_boundary's
             default)
  wikitext2  WikiText-2 validation + test (../shared/data/wikitext-2), blank-line paragraphs

with the bert-base-uncased vocabulary, T = 128, short_seq_prob 0.1, no NSP, 15 % masking
(P = 20), adamw, dropout 0.1, at tiny and mini size. Each case draws the same batches of
--batch examples (the loop's epoch-0 order) for both modes; the row buckets are planned as the
loop plans them (data.packing_programs = 3). Rounds interleave padded and packed in one process
so a busy machine disturbs both alike; the figure is the median over rounds of real tokens /
step time (packing on the host included: the loop does it between steps).

    .venv/bin/python experiments/bench/pretrain_packing.py --quick --out experiments/bench/pretrain_packing.md
    .venv/bin/python experiments/bench/pretrain_packing.py --out experiments/bench/pretrain_packing.md

--quick (~3 minutes on 2 idle cores): 1 batch per case, 3 rounds, sotu by file and
wikitext2 only. Shards are cached in --cache (made once, ~1 minute for sotu).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402

from bertlab.data.pretraining import packed  # noqa: E402
from bertlab.data.pretraining.create import create_pretraining_data  # noqa: E402
from bertlab.data.pretraining.iterator import epoch_permutation  # noqa: E402
from bertlab.data.pretraining.shards import ShardedExamples  # noqa: E402
from bertlab.models import BertForPreTraining, variant_config  # noqa: E402
from bertlab.text.tokenizer import Tokenizer  # noqa: E402
from bertlab.train import mesh as mesh_lib  # noqa: E402
from bertlab.train import optimizer as optimizer_lib  # noqa: E402
from bertlab.train import state as train_state  # noqa: E402
from bertlab.train import steps  # noqa: E402

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
CORPORA = {  # name -> (files, doc_boundary)
    "sotu (file)": (["default"], "file"),
    "sotu (blank)": (["default"], "blank"),
    "wikitext2": ([os.path.join(SHARED, "wikitext-2", "valid.txt"),
                   os.path.join(SHARED, "wikitext-2", "test.txt")], "blank"),
}
QUICK_CORPORA = ("sotu (file)", "wikitext2")
RATE, MAX_PREDICTIONS, PROGRAMS = 0.15, 20, 3


def dataset(name: str, tokenizer: Tokenizer, cache: str, seq_len: int) -> ShardedExamples:
    files, boundary = CORPORA[name]
    out = os.path.join(cache, f"{name.split()[0]}_{boundary}_{seq_len}")
    if not os.path.exists(os.path.join(out, "meta.json")):
        create_pretraining_data(files, tokenizer, out, max_seq_length=seq_len, short_seq_prob=0.1,
                                next_sentence=False, eval_fraction=0.0, doc_boundary=boundary,
                                overwrite=True, progress=False)
    return ShardedExamples.open(os.path.join(out, "train"))


def make_step(variant: str, vocab, seq_len: int, mesh):
    config = variant_config(variant, vocab_size=len(vocab), max_position_embeddings=512)
    model = BertForPreTraining(config, with_nsp=False)
    tx, schedule = optimizer_lib.make_optimizer("adamw", lr=1e-4, warmup_steps=10,
                                                num_steps=1000, weight_decay=0.01, b1=0.9,
                                                b2=0.999, eps=1e-6, clip_norm=1.0)
    mask_fn = steps.make_mask_fn(vocab, rate=RATE, max_predictions=MAX_PREDICTIONS,
                                 whole_word=False)
    step = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule, grad_accum_steps=1,
                                with_nsp=False, mesh=mesh)
    def new_state():  # fresh buffers each: the step donates its state
        params = train_state.init_params(model, jax.random.PRNGKey(0), seq_len=seq_len,
                                         num_predictions=MAX_PREDICTIONS, mesh=mesh)
        return train_state.create_train_state(model, tx, params, mesh=mesh)

    return new_state, step


def measure(examples: ShardedExamples, variant: str, vocab, args, mesh) -> dict:
    seq_len, batch = args.seq_len, args.batch
    order = epoch_permutation(len(examples), 0, 0)
    batches = [order[i * batch:(i + 1) * batch] for i in range(args.batches)]
    spec = packed.PackSpec(row_length=seq_len, rate=RATE, max_predictions=MAX_PREDICTIONS,
                           multiple=mesh.size)
    buckets = packed.plan_buckets(examples, batch_size=batch, micro_batches=1, seed=0,
                                  spec=spec, max_programs=PROGRAMS)
    real = sum(int(examples.lengths_of(b).sum()) for b in batches)

    def padded(indices):
        return mesh_lib.global_batch(examples.take(indices), mesh)

    def packed_batch(indices):
        local, stats = packed.pack_update(examples.take, [indices], 1, buckets, spec)
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
            None, mesh_lib.DATA_AXIS))
        return {key: jax.make_array_from_process_local_data(sharding, value)
                for key, value in local.items()}, stats["token_slots"]

    new_state, step = make_step(variant, vocab, seq_len, mesh)
    states = {"padded": new_state(), "packed": new_state()}
    rng = jax.random.PRNGKey(1)
    slots = 0
    for indices in batches:  # compile every program (each distinct R) before timing
        for mode in states:
            device = padded(indices) if mode == "padded" else packed_batch(indices)[0]
            states[mode], metrics = step(states[mode], device, rng)
            jax.block_until_ready(metrics)
    times = {mode: [] for mode in states}
    cpu = {mode: [] for mode in states}
    for _ in range(args.rounds):
        for mode in states:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.repeat):
                for indices in batches:
                    if mode == "padded":
                        device = padded(indices)
                    else:
                        device, computed = packed_batch(indices)
                        slots += computed
                    states[mode], metrics = step(states[mode], device, rng)
                    jax.block_until_ready(metrics)
            times[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - start_cpu)
    per_round = real * args.repeat
    rates = {mode: per_round / statistics.median(t) for mode, t in times.items()}
    cpu_rates = {mode: per_round / statistics.median(t) for mode, t in cpu.items()}
    return {"padding": 1 - real / (len(batches) * batch * seq_len),
            "efficiency": real * args.rounds * args.repeat / slots,
            "buckets": buckets, "padded": rates["padded"], "packed": rates["packed"],
            "speedup": rates["packed"] / rates["padded"],
            "cpu_speedup": cpu_rates["packed"] / cpu_rates["padded"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 batch, 3 rounds, 2 corpora")
    parser.add_argument("--variants", nargs="+", default=["tiny", "mini"])
    parser.add_argument("--corpora", nargs="+", default=None, choices=list(CORPORA))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batches", type=int, default=None, help="distinct batches per case")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="passes over the batches a round")
    parser.add_argument("--vocab", default=os.path.join(SHARED, "vocab",
                                                        "bert-base-uncased-vocab.txt"))
    parser.add_argument("--cache", default="/tmp/bertlab_bench_pretrain_packing")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    args.batches = args.batches or (1 if args.quick else 6)
    args.rounds = args.rounds or (3 if args.quick else 5)
    corpora = args.corpora or (QUICK_CORPORA if args.quick else tuple(CORPORA))

    tokenizer = Tokenizer.from_file(args.vocab)
    mesh = mesh_lib.data_mesh()
    started = time.perf_counter()
    lines = ["| corpus | size | padding share | packed efficiency | R buckets (of 128) | "
             "padded real tok/s | packed real tok/s | packed / padded | (CPU time) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in corpora:
        examples = dataset(name, tokenizer, args.cache, args.seq_len)
        for variant in args.variants:
            row = measure(examples, variant, tokenizer.vocab, args, mesh)
            lines.append(f"| {name} | {variant} | {100 * row['padding']:.1f} % | "
                         f"{100 * row['efficiency']:.1f} % | "
                         f"{' '.join(map(str, row['buckets']))} | {row['padded']:,.0f} | "
                         f"{row['packed']:,.0f} | {row['speedup']:.2f}x | "
                         f"{row['cpu_speedup']:.2f}x |")
            print(lines[-1], flush=True)
    elapsed = time.perf_counter() - started
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    command = ".venv/bin/python experiments/bench/pretrain_packing.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    device = jax.devices()[0]
    text = (f"# Pretraining: packed vs padded train step, real tokens/s\n\n"
            f"Command: `{command}`  \nCommit: {commit} · {device.platform} "
            f"({getattr(device, 'device_kind', '')}), {os.cpu_count()} CPUs · "
            f"Python {platform.python_version()} · jax {jax.__version__} · {elapsed:.0f} s\n\n"
            f"Batch {args.batch} x {args.seq_len} tokens, {args.batches} batches per case "
            f"(epoch-0 order), median of {args.rounds} interleaved rounds. Padding share: "
            f"1 - real tokens / (examples x {args.seq_len}) of those batches; packed "
            f"efficiency: real tokens / token slots the packed step computed. The last column is "
            f"the same ratio in process CPU time (less disturbed by other work on the machine "
            f"than wall time).\n\n"
            + "\n".join(lines) + "\n")
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
