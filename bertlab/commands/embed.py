"""`bertlab embed --model PATH [FILE] [--out emb.npy] [--normalize]`: sentence embeddings.

One sentence per line from FILE (or stdin) -> the mean of the last layer's token vectors over the
real tokens (sentence-transformers' pooling), from any backbone `init_from` accepts: a
HuggingFace dir such as all-MiniLM-L6-v2, a Google TF checkpoint, a bertlab pretraining workdir,
or a fine-tuned export. --out writes a float32 (N, H) .npy; without it the vectors are printed,
one line per sentence.
"""

from __future__ import annotations

import argparse
import sys

PROG = "embed"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments embed and similarity share."""
    parser.add_argument("file", nargs="?", default="-",
                        help="text file, one sentence per line (blank lines skipped); - = stdin")
    parser.add_argument("--model", required=True,
                        help="HF dir, Google checkpoint, bertlab pretraining workdir or export")
    parser.add_argument("--max-seq-length", type=int, default=256,
                        help="tokens per sentence incl. [CLS]/[SEP]; longer is cut (default 256, "
                             "as all-MiniLM-L6-v2 was trained)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="sentences per padded batch (packed batches hold at least 256)")
    parser.add_argument("--no-packing", dest="packing", action="store_false",
                        help="batches padded to their longest sentence instead of several "
                             "sentences packed per row (same vectors up to float rounding)")


def read_sentences(path: str) -> list[str]:
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    return [line.strip() for line in lines if line.strip()]


def load_sentences_and_model(args, prog: str):
    """(sentences, backbone), or an exit status after printing the error."""
    from bertlab.checkpoints.init_from import InitFromError, resolve_backbone

    try:
        sentences = read_sentences(args.file)
        backbone = resolve_backbone(args.model)
    except (InitFromError, OSError) as e:
        print(f"bertlab {prog}: error: {e}", file=sys.stderr)
        return None, 2
    if not sentences:
        print(f"bertlab {prog}: error: {args.file} holds no sentence", file=sys.stderr)
        return None, 2
    return sentences, backbone


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--out", default=None, help="write the (N, H) float32 array to this .npy")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise every vector")
    args = parser.parse_args(argv)
    sentences, backbone = load_sentences_and_model(args, PROG)
    if sentences is None:
        return backbone
    import numpy as np

    from bertlab.inference import sentence_embeddings

    vectors = sentence_embeddings(backbone, sentences, max_seq_length=args.max_seq_length,
                                  batch_size=args.batch_size, normalize=args.normalize,
                                  packed=args.packing)
    if args.out:
        np.save(args.out, vectors.astype(np.float32))
        print(f"{len(sentences)} embeddings of size {vectors.shape[1]} -> {args.out}")
    else:
        for row in vectors:
            print(" ".join(f"{v:.6f}" for v in row))
    return 0
