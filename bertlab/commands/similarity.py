"""`bertlab similarity --model PATH [FILE] --out heatmap.png`: cosine similarities of sentences.

Embeds each sentence as `bertlab embed` does (mean pooling), prints the cosine-similarity matrix
and draws it as a heatmap (matplotlib, Agg canvas: no display needed), sentences as row and
column labels.
"""

from __future__ import annotations

import argparse
import os

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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--out", default="similarity.png", help="heatmap PNG to write")
    args = parser.parse_args(argv)
    sentences, backbone = load_sentences_and_model(args, PROG)
    if sentences is None:
        return backbone
    from bertlab.finetune import cosine_matrix, sentence_embeddings

    vectors = sentence_embeddings(backbone, sentences, max_seq_length=args.max_seq_length,
                                  batch_size=args.batch_size)
    matrix = cosine_matrix(vectors)
    print(format_matrix(matrix, sentences))
    draw_heatmap(matrix, sentences, args.out, title=os.path.basename(backbone.source.rstrip("/")))
    print(f"heatmap -> {args.out}")
    return 0
