"""`bertlab predict --workdir DIR [FILE | --split S [--task T] [--data-dir D]] [--out TABLE]`.

Labels and probabilities for raw text, or for a split of a task. Reads one example per line
from FILE (or stdin): a text, or for a sentence-pair task the two texts separated by a tab.
Prints a tab-separated table: the predicted label name, the softmax probability of every label,
and the text (regression tasks: the predicted value). Blank lines are skipped. --json prints one
object per line instead.

--split S scores split S of the model's task (or --task T with the same labels, e.g. ax for an
MNLI model) read the way training read it, labelled or not (GLUE test splits have no labels).
--out writes the per-example table (id, text(s), gold if known, prediction, probabilities) as
.csv, .tsv or .jsonl instead of printing it. `bertlab submit` writes GLUE server files.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bertlab.commands import add_finetuned_model_arguments

PROG = "predict"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default="-",
                        help="text file, one example per line (pairs: TEXT<tab>TEXT); - = stdin")
    add_finetuned_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per example")
    parser.add_argument("--split", default=None,
                        help="score this split of the task instead of FILE (e.g. test)")
    parser.add_argument("--task", default=None,
                        help="with --split: another task with the model's labels (default: the "
                             "model's own task)")
    parser.add_argument("--data-dir", default=None,
                        help="with --split: where the task's files are (default: training's)")
    parser.add_argument("--max-examples", type=int, default=0,
                        help="with --split: a fixed random subset of this size (0 = all)")
    parser.add_argument("--out", default=None,
                        help="write one row per example to this .csv / .tsv / .jsonl")
    return parser


def read_examples(lines, is_pair: bool, source: str) -> tuple[list[str], list[str] | None]:
    """(texts, pairs) from lines; a pair line without exactly one tab is an error naming it."""
    texts, pairs = [], []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if is_pair:
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{source}:{number}: a pair task needs TEXT<tab>TEXT, found "
                                 f"{len(parts)} tab-separated field(s)")
            texts.append(parts[0])
            pairs.append(parts[1])
        else:
            texts.append(line)
    return texts, (pairs if is_pair else None)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from bertlab import inference
    from bertlab.checkpoints.init_from import InitFromError
    from bertlab.data.tasks.registry import Split
    from bertlab.train.loop import TrainConfigError

    if args.split is None and (args.task or args.data_dir or args.max_examples):
        print(f"bertlab {PROG}: error: --task, --data-dir and --max-examples go with --split",
              file=sys.stderr)
        return 2
    if args.split is not None and args.file != "-":
        print(f"bertlab {PROG}: error: give either FILE or --split, not both", file=sys.stderr)
        return 2
    try:
        model = inference.load_finetuned(args.workdir, args.seed)
        if args.split is not None:
            split = inference.load_task_split(model, args.split, args.data_dir,
                                              args.max_examples, task=args.task)
            source = split.source
        else:
            source = "<stdin>" if args.file == "-" else args.file
            if args.file == "-":
                texts, pairs = read_examples(sys.stdin, model.spec.is_pair, source)
            else:
                with open(args.file, encoding="utf-8") as f:
                    texts, pairs = read_examples(f, model.spec.is_pair, source)
            split = Split(texts=texts, text_pairs=pairs,
                          labels=np.full(len(texts), -1, np.int32))
    except (InitFromError, TrainConfigError, ValueError, OSError) as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    if not len(split):
        print(f"bertlab {PROG}: error: {source} holds no text", file=sys.stderr)
        return 2
    logits = inference.predict_split(model, split, args.batch_size, packed=args.packing)
    if args.out:
        try:
            inference.write_predictions(args.out, model.spec, split, logits)
        except (ValueError, OSError) as e:
            print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
            return 2
        print(f"{len(split)} predictions -> {args.out}")
        return 0
    print_predictions(model.spec, split.texts, split.text_pairs if model.spec.is_pair else None,
                      logits, as_json=args.json)
    return 0


def print_predictions(spec, texts, pairs, logits, *, as_json: bool) -> None:
    from bertlab import inference

    pairs_or_none = pairs or [None] * len(texts)
    shown = [t if p is None else f"{t}\t{p}" for t, p in zip(texts, pairs_or_none)]
    if spec.is_regression:
        if not as_json:
            print("value\ttext")
        for value, text, pair, line in zip(logits[:, 0], texts, pairs_or_none, shown):
            if as_json:
                print(json.dumps({"text": text, "text_pair": pair, "value": float(value)}))
            else:
                print(f"{value:.4f}\t{line}")
        return
    probabilities = inference.softmax(logits)
    names = spec.label_names
    if not as_json:
        print("\t".join(["label"] + [f"p({name})" for name in names] + ["text"]))
    for row, text, pair, line in zip(probabilities, texts, pairs_or_none, shown):
        label = names[int(row.argmax())]
        if as_json:
            print(json.dumps({"text": text, "text_pair": pair, "label": label,
                              "probabilities": {n: float(p) for n, p in zip(names, row)}}))
        else:
            print("\t".join([label] + [f"{p:.4f}" for p in row] + [line]))
