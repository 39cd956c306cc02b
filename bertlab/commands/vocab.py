"""`bertlab vocab`: learn a WordPiece vocabulary from text files and write vocab.txt."""

from __future__ import annotations

import argparse
import os
import sys
import time

from bertlab.data.pretraining.corpus import CorpusError, ReadStats, iter_lines, resolve_corpus
from bertlab.text.vocab import SPECIAL_TOKENS, save_vocab
from bertlab.text.learn import VocabLearnError, count_words, initial_tokens, learn_from_counts, \
    trainable_words

EXAMPLES = """examples:
  bertlab vocab --corpus default --size 8000 --out runs/vocab/vocab.txt
  bertlab vocab --corpus books/ extra.txt --size 30000 --cased --unused 100 --out vocab.txt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertlab vocab", description="Learn a WordPiece vocabulary from text files.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", required=True, metavar="FILE|DIR|default",
                        help="text files, directories (every *.txt inside), globs, or 'default' "
                             "for the bundled State of the Union speeches")
    parser.add_argument("--size", type=int, required=True,
                        help="number of vocabulary entries, reserved and unused tokens included")
    parser.add_argument("--out", required=True, help="vocab.txt to write (atomically)")
    parser.add_argument("--cased", action="store_true",
                        help="keep case and accents (default: lower-case and strip accents, as "
                             "uncased BERT); use the same setting when tokenising")
    parser.add_argument("--unused", type=int, default=0, metavar="N",
                        help="add [unused0]..[unusedN-1] after the reserved tokens")
    parser.add_argument("--min-frequency", type=int, default=2, metavar="K",
                        help="learn a piece only from a pair seen at least K times (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def describe_paths(paths: list[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown if len(paths) <= limit else f"{shown} and {len(paths) - limit} more"


def fail(message: str) -> int:
    print(f"bertlab vocab: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        files = resolve_corpus(args.corpus)
    except CorpusError as e:
        return fail(str(e))
    stats = ReadStats()
    try:
        counts = count_words(iter_lines(files, stats), lower_case=not args.cased,
                             progress=not args.no_progress)
    except OSError as e:
        return fail(f"cannot read the corpus: {e}")
    if stats.invalid_bytes_replaced:
        print(f"warning: {stats.invalid_bytes_replaced:,} invalid UTF-8 byte sequences were "
              "replaced while reading the corpus", file=sys.stderr)
    if not trainable_words(counts, SPECIAL_TOKENS):
        return fail(f"the corpus holds no words to learn from: {describe_paths(files)}")
    try:
        vocab = learn_from_counts(counts, args.size, num_unused=args.unused,
                                  min_frequency=args.min_frequency,
                                  progress=not args.no_progress)
    except VocabLearnError as e:
        return fail(str(e))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        save_vocab(vocab, args.out)
    except OSError as e:
        return fail(f"cannot write {args.out}: {e.strerror or e}")

    fixed = len(initial_tokens(trainable_words(counts, SPECIAL_TOKENS), SPECIAL_TOKENS,
                               args.unused))
    alphabet = fixed - len(SPECIAL_TOKENS) - args.unused
    print(f"read {stats.files:,} files, {stats.lines:,} lines: {sum(counts.values()):,} words "
          f"({len(counts):,} distinct, {'cased' if args.cased else 'uncased'})")
    print(f"wrote {args.out}: {len(vocab):,} entries = {len(SPECIAL_TOKENS)} reserved + "
          f"{args.unused} unused + {alphabet} characters + {len(vocab) - fixed:,} learned pieces, "
          f"in {time.perf_counter() - start:.1f} s")
    if len(vocab) < args.size:
        print(f"note: stopped at {len(vocab):,} of the {args.size:,} entries asked for: no pair "
              f"of pieces is seen {args.min_frequency} times any more (a larger corpus or a lower "
              "--min-frequency gives more)")
    return 0
