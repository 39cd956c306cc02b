"""`bertlab export-text`: write the texts of a fine-tuning task's split as a pretraining corpus.

Domain pretraining (MLM on the reviews you will later classify, as in the KerasNLP guide's IMDB
backbone) needs the task's texts as plain text files, which `data.corpus` / `create-data` read.
Each example becomes one document: its text on one line (line breaks inside it become spaces)
followed by a blank line, so the default `doc_boundary=blank` keeps every example a document of
its own and never packs two reviews into one sequence. A pair task writes both texts, one per line,
in the same document. Labels are not written. The file is written to a temporary name and renamed,
so an interrupted export leaves no half-written corpus behind.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

EXAMPLES = """examples:
  bertlab export-text --task imdb --data-dir ../shared/data/imdb/aclImdb.tar.gz --split train \\
      --output runs/imdb_text/train.txt
  bertlab export-text --task sst2 --data-dir ../shared/data/glue_data --split train dev \\
      --output runs/sst2_text/sst2.txt
"""

_LINE_BREAKS = re.compile(r"\s*[\r\n\u2028\u2029\x0b\x0c\x85]+\s*")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertlab export-text",
        description="Write a task split's texts as a corpus: one document per example.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="a bertlab.data.tasks.registry name (imdb, sst2, ...)")
    parser.add_argument("--data-dir", default="", help="where the task's files are (as finetune's "
                                                       "data_dir)")
    parser.add_argument("--split", nargs="+", default=["train"],
                        help="split(s) to export, written in this order (default: train)")
    parser.add_argument("--output", required=True, help="text file to write")
    parser.add_argument("--limit", type=int, default=0,
                        help="at most this many examples per split (the loader's first rows); 0 = all")
    return parser


def one_line(text: str) -> str:
    """The text on a single line: any run of line breaks (and the spaces around it) -> one space."""
    return _LINE_BREAKS.sub(" ", text).strip()


def document_lines(texts, pairs=None):
    """Lines of the corpus: each example's text(s), then a blank line; empty texts are skipped."""
    for index, text in enumerate(texts):
        parts = [one_line(text)] + ([one_line(pairs[index])] if pairs is not None else [])
        parts = [part for part in parts if part]
        if parts:
            yield from parts
            yield ""


def main(argv: list[str]) -> int:
    from bertlab.data.tasks.registry import load_task

    args = build_parser().parse_args(argv)
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else ""
    splits = []
    for split in args.split:
        try:
            _, data = load_task(args.task, data_dir, split,
                                **({"limit": args.limit} if args.limit else {}))
        except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
            print(f"bertlab export-text: error: task {args.task}, split {split!r}, "
                  f"--data-dir {args.data_dir!r}: {e}", file=sys.stderr)
            return 2
        splits.append((split, data))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = f"{args.output}.tmp{os.getpid()}"
    documents = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for _, data in splits:
                for line in document_lines(data.texts, data.text_pairs):
                    f.write(line + "\n")
                    documents += line == ""
        os.replace(tmp, args.output)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        print(f"bertlab export-text: error: cannot write {args.output}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {len(data):,}" for split, data in splits)
    print(f"wrote {documents:,} documents ({counts} examples) to {args.output}")
    return 0
