"""`bertlab predict --workdir DIR [FILE]`: labels and probabilities for raw text.

Reads one example per line from FILE (or stdin): a text, or for a sentence-pair task the two
texts separated by a tab. Prints a tab-separated table: the predicted label name, the softmax
probability of every label, and the text (regression tasks: the predicted value). Blank lines are
skipped. --json prints one object per line instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from bertlab.commands import add_finetuned_model_arguments

PROG = "predict"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default="-",
                        help="text file, one example per line (pairs: TEXT<tab>TEXT); - = stdin")
    add_finetuned_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per example")
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

    try:
        model = inference.load_finetuned(args.workdir, args.seed)
        source = "<stdin>" if args.file == "-" else args.file
        if args.file == "-":
            texts, pairs = read_examples(sys.stdin, model.spec.is_pair, source)
        else:
            with open(args.file, encoding="utf-8") as f:
                texts, pairs = read_examples(f, model.spec.is_pair, source)
    except (InitFromError, ValueError, OSError) as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    if not texts:
        print(f"bertlab {PROG}: error: {source} holds no text", file=sys.stderr)
        return 2
    logits = inference.predict_logits(model, texts, pairs, args.batch_size)
    spec = model.spec
    pairs_or_none = pairs or [None] * len(texts)
    shown = [t if p is None else f"{t}\t{p}" for t, p in zip(texts, pairs_or_none)]
    if spec.is_regression:
        if not args.json:
            print("value\ttext")
        for value, text, pair, line in zip(logits[:, 0], texts, pairs_or_none, shown):
            if args.json:
                print(json.dumps({"text": text, "text_pair": pair, "value": float(value)}))
            else:
                print(f"{value:.4f}\t{line}")
        return 0
    probabilities = inference.softmax(logits)
    names = spec.label_names
    if not args.json:
        print("\t".join(["label"] + [f"p({name})" for name in names] + ["text"]))
    for row, text, pair, line in zip(probabilities, texts, pairs_or_none, shown):
        label = names[int(row.argmax())]
        if args.json:
            print(json.dumps({"text": text, "text_pair": pair, "label": label,
                              "probabilities": {n: float(p) for n, p in zip(names, row)}}))
        else:
            print("\t".join([label] + [f"{p:.4f}" for p in row] + [line]))
    return 0
