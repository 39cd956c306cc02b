"""`bertlab evaluate --workdir DIR [--split dev|test] [--data-dir PATH] [--seed N] [--out FILE]`.

Reloads a fine-tuned model (a finetune workdir's best seed, a seed_<n>/ directory or a model/
export) with its vocabulary, casing, label names and the way its task's data was read, scores a
labelled split with the task's metrics, and prints them with the confusion matrix. --out writes
the per-example table (id, text(s), gold, prediction, probabilities; .csv, .tsv or .jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys

from bertlab.commands import add_finetuned_model_arguments

PROG = "evaluate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    add_finetuned_model_arguments(parser)
    parser.add_argument("--split", default=None,
                        help="split to score (default: the eval split the model was trained with)")
    parser.add_argument("--data-dir", default=None,
                        help="where the task's files are (default: the data_dir of training)")
    parser.add_argument("--max-examples", type=int, default=0,
                        help="score a fixed random subset of this size (0 = all)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--out", default=None,
                        help="write one row per example to this .csv / .tsv / .jsonl")
    return parser


def format_confusion(counts, names) -> str:
    """counts[true, predicted] as a table with the label names."""
    corner = "true \\ predicted"
    width = max([len(corner)] + [len(n) for n in names])
    cell = max([len(n) for n in names] + [len(str(int(counts.max()))) if counts.size else 1])
    lines = [f"{corner:<{width}}  " + "  ".join(f"{n:>{cell}}" for n in names)]
    for name, row in zip(names, counts):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{int(v):>{cell}}" for v in row))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from bertlab import inference
    from bertlab.checkpoints.init_from import InitFromError
    from bertlab.train.loop import TrainConfigError
    from bertlab.data.tasks.metrics import confusion_matrix

    try:
        model = inference.load_finetuned(args.workdir, args.seed)
        split = args.split or model.export.data.get("eval_split") or "dev"
        data = inference.load_eval_split(model, split, args.data_dir, args.max_examples)
        metrics, logits = inference.evaluate_split(model, data, args.batch_size,
                                                   packed=args.packing)
        if args.out:
            inference.write_predictions(args.out, model.spec, data, logits)
    except (InitFromError, TrainConfigError, ValueError) as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    spec, meta = model.spec, model.export.meta
    result = {"task": spec.name, "split": split, "examples": len(data),
              "model": model.export.directory, "seed": meta.get("seed"),
              "epoch": meta.get("epoch"), **metrics}
    if not spec.is_regression:
        counts = confusion_matrix(logits.argmax(-1), data.labels, spec.num_labels)
        result["confusion_matrix"] = counts.tolist()
    if args.out:
        result["predictions"] = args.out
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{spec.name} {split}: {len(data)} examples; model {model.export.directory} "
          f"(seed {meta.get('seed')}, epoch {meta.get('epoch')})")
    for name in ("loss",) + tuple(spec.metrics):
        print(f"  {name:<24} {metrics[name]:.4f}")
    if not spec.is_regression:
        print("confusion matrix (rows: true label, columns: predicted):")
        print(format_confusion(counts, spec.label_names))
    if args.out:
        print(f"{len(data)} per-example predictions -> {args.out}")
    return 0
