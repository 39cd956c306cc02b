"""`bertlab similarity --model PATH [FILE] --out heatmap.png`: cosine similarities of sentences.

Embeds each sentence as `bertlab embed` does (mean pooling), prints the cosine-similarity matrix
and draws it as a heatmap (matplotlib, Agg canvas: no display needed), sentences as row and
column labels.

`bertlab similarity --model PATH --task stsb --data-dir GLUE_DIR [--split dev] [--out m.json]`
scores a labelled sentence-pair task instead, with no training: the Pearson and Spearman
correlation between each pair's cosine similarity and its gold score. That is how
sentence-transformers and MTEB evaluate an embedding model on STS-B, so an imported checkpoint
can be checked against their published numbers; --out writes the metrics as JSON for
`bertlab report`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bertlab.commands.embed import add_model_arguments, load_sentences_and_model

PROG = "similarity"


def draw_heatmap(matrix, labels: list[str], out_path: str, title: str = "") -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    short = [label if len(label) <= 40 else label[:37] + "..." for label in labels]
    size = 2.5 + 0.45 * len(labels)
    figure = Figure(figsize=(size + 1.5, size + 0.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap="viridis", vmin=min(0.0, float(matrix.min())), vmax=1.0)
    axes.set_xticks(range(len(labels)))
    axes.set_yticks(range(len(labels)))
    axes.set_xticklabels(short, rotation=90, fontsize=8)
    axes.set_yticklabels(short, fontsize=8)
    if len(labels) <= 15:
        for i in range(len(labels)):
            for j in range(len(labels)):
                axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if matrix[i, j] < 0.6 else "black")
    figure.colorbar(image, ax=axes, label="cosine similarity")
    axes.set_title(title or "sentence similarity")
    figure.tight_layout()
    tmp = out_path + ".tmp.png"
    figure.savefig(tmp)
    os.replace(tmp, out_path)
    return out_path


def format_matrix(matrix, labels: list[str]) -> str:
    lines = ["\t".join([""] + [str(i) for i in range(len(labels))])]
    for i, row in enumerate(matrix):
        lines.append("\t".join([str(i)] + [f"{v:.3f}" for v in row]))
    lines += [f"{i}: {label}" for i, label in enumerate(labels)]
    return "\n".join(lines)


def pair_cosines(backbone, texts, pairs, *, max_seq_length: int = 256,
                 batch_size: int = 32, packed: bool = True):
    """(N,) cosine similarity of texts[i] and pairs[i]. Each distinct sentence is embedded once
    (STS-B repeats many), shortest first so that batches padded to their longest text waste
    little; mean pooling over real tokens makes the order irrelevant to the vectors."""
    import numpy as np

    from bertlab.inference import sentence_embeddings

    unique = sorted(set(texts) | set(pairs), key=lambda s: (len(s), s))
    row = {sentence: i for i, sentence in enumerate(unique)}
    vectors = sentence_embeddings(backbone, unique, max_seq_length=max_seq_length,
                                  batch_size=batch_size, normalize=True,
                                  packed=packed)  # (U, H), unit rows
    first = vectors[[row[t] for t in texts]]  # (N, H)
    second = vectors[[row[p] for p in pairs]]  # (N, H)
    return np.sum(first * second, axis=-1)


def correlations(scores, gold) -> dict:
    """Pearson and Spearman correlation of predicted similarities with gold scores."""
    from bertlab.data.tasks.metrics import pearson, spearman

    return {"pearson": pearson(scores, gold), "spearman": spearman(scores, gold)}


def score_task(args, backbone) -> dict:
    """The metrics of --task/--split: cosines of the pair embeddings against the gold labels."""
    from bertlab.data.tasks.registry import load_task

    spec, split = load_task(args.task, args.data_dir, args.split)
    if not spec.is_pair:
        raise ValueError(f"task {spec.name} has one text per example; --task needs a "
                         f"sentence-pair task such as stsb")
    if not split.is_labelled:
        raise ValueError(f"split {args.split!r} of {spec.name} ({split.source}) has no gold "
                         f"scores; use a labelled split such as dev (for stsb also sts-test, the "
                         f"STS Benchmark's own test file with its scores)")
    started = time.time()
    scores = pair_cosines(backbone, split.texts, split.text_pairs,
                          max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                          packed=args.packing)
    return {"task": spec.name, "split": args.split, "examples": len(split),
            "source": split.source, "model": backbone.source, "pooling": "mean",
            "similarity": "cosine", "max_seq_length": args.max_seq_length,
            **correlations(scores, split.labels), "seconds": round(time.time() - started, 2)}


def write_metrics(path: str, value: dict) -> None:
    """Written whole or not at all (a crash never leaves a half-written metrics file), into a
    directory created if needed."""
    from bertlab.files import write_json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(path, value)


def main_task(args) -> int:
    from bertlab.checkpoints.init_from import InitFromError, resolve_backbone

    if args.file != "-":
        print(f"bertlab {PROG}: error: give either FILE or --task, not both", file=sys.stderr)
        return 2
    try:
        backbone = resolve_backbone(args.model)
        metrics = score_task(args, backbone)
    except (InitFromError, OSError, ValueError) as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"{metrics['task']} {metrics['split']}: {metrics['examples']} pairs, cosine of "
          f"mean-pooled embeddings vs gold: Pearson {metrics['pearson']:.4f}, "
          f"Spearman {metrics['spearman']:.4f} ({metrics['seconds']:.1f} s)")
    if args.out:
        write_metrics(args.out, metrics)
        print(f"metrics -> {args.out}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--out", default=None,
                        help="heatmap PNG to write (default similarity.png); with --task, a "
                             "metrics JSON (default: printed only)")
    parser.add_argument("--task", default=None,
                        help="score this labelled sentence-pair task (e.g. stsb) instead of FILE: "
                             "correlation of pair cosines with the gold scores")
    parser.add_argument("--data-dir", default="",
                        help="with --task: where its files are (e.g. ../shared/data/glue_data)")
    parser.add_argument("--split", default="dev", help="with --task: the split to score")
    args = parser.parse_args(argv)
    if args.task:
        return main_task(args)
    args.out = args.out or "similarity.png"
    sentences, backbone = load_sentences_and_model(args, PROG)
    if sentences is None:
        return backbone
    from bertlab.inference import cosine_matrix, sentence_embeddings

    vectors = sentence_embeddings(backbone, sentences, max_seq_length=args.max_seq_length,
                                  batch_size=args.batch_size, packed=args.packing)
    matrix = cosine_matrix(vectors)
    print(format_matrix(matrix, sentences))
    draw_heatmap(matrix, sentences, args.out, title=os.path.basename(backbone.source.rstrip("/")))
    print(f"heatmap -> {args.out}")
    return 0
