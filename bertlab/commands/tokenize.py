"""`bertlab tokenize`: one line of WordPiece tokens (or ids) per input line, streaming.

    bertlab tokenize --vocab vocab.txt corpus.txt > corpus.tok
    echo "The [MASK] sat." | bertlab tokenize --vocab vocab.txt --ids

Lines are read as bytes and handed to Tokenizer.encode_batch a chunk at a time, so memory stays
flat on any input size and large chunks take the fast batch path. Invalid UTF-8 never stops a
run: each bad sequence becomes U+FFFD (which the tokenizer then deletes, as the original does)
and the total is reported on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, Iterator

from bertlab.text.tokenizer import Tokenizer
from bertlab.text.vocab import VocabError

CHUNK_LINES = 4096  # lines per encode_batch call: well above the fast-path threshold
PROGRESS_MIN_BYTES = 1 << 20  # no progress bar for inputs smaller than this


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertlab tokenize",
        description="Tokenise lines of text with BERT's WordPiece (exactly as the original). "
                    "Writes one line per input line: tokens (or ids) separated by spaces.")
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="text file to read (default: standard input)")
    parser.add_argument("--vocab", required=True, help="vocab.txt, one token per line")
    casing = parser.add_mutually_exclusive_group()
    casing.add_argument("--uncased", dest="lower_case", action="store_const", const=True,
                        help="lower-case and strip accents (default when the vocabulary has no "
                             "upper-case entries)")
    casing.add_argument("--cased", dest="lower_case", action="store_const", const=False,
                        help="keep case and accents (default when the vocabulary has upper case)")
    parser.add_argument("--ids", action="store_true", help="write token ids instead of tokens")
    parser.add_argument("--split-special-tokens", action="store_true",
                        help="split [MASK], [SEP], ... typed in the text like any other text "
                             "(the original's behaviour; by default they stay whole)")
    parser.add_argument("--chunk-lines", type=int, default=CHUNK_LINES,
                        help=f"lines per batch (default {CHUNK_LINES})")
    return parser


def decode_lines(raw_lines: list[bytes]) -> tuple[list[str], int]:
    """UTF-8 lines -> (texts, number of invalid byte sequences replaced by U+FFFD)."""
    blob = b"\n".join(raw_lines)
    try:
        return blob.decode("utf-8").split("\n"), 0
    except UnicodeDecodeError:
        text = blob.decode("utf-8", errors="replace")
        # Every U+FFFD beyond those spelled out in the input (EF BF BD) is a replacement.
        replaced = text.count("\ufffd") - blob.count(b"\xef\xbf\xbd")
        return text.split("\n"), replaced


def read_chunks(stream: BinaryIO, chunk_lines: int, progress) -> Iterator[list[bytes]]:
    """Lists of at most `chunk_lines` lines without their line ends (LF or CRLF)."""
    chunk: list[bytes] = []
    for raw in stream:
        progress.update(len(raw))
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        chunk.append(raw)
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress_bar(path: str | None):
    """A tqdm bar on stderr for large files read from disk; a no-op otherwise (pipes, small
    inputs, or stderr redirected to a file where the bar would only be noise)."""
    from tqdm import tqdm
    size = os.path.getsize(path) if path is not None else 0
    show = path is not None and size >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
    return tqdm(total=size, unit="B", unit_scale=True, desc="tokenize", file=sys.stderr,
                disable=not show, leave=False)


def tokenize_stream(tokenizer: Tokenizer, stream: BinaryIO, out: BinaryIO, *, ids: bool,
                    chunk_lines: int = CHUNK_LINES, progress=None) -> tuple[int, int]:
    """Writes one output line per input line; returns (lines, invalid UTF-8 sequences)."""
    tokens = tokenizer.vocab.tokens
    lines = replaced = 0
    progress = progress if progress is not None else _NoProgress()
    for raw_lines in read_chunks(stream, chunk_lines, progress):
        texts, bad = decode_lines(raw_lines)
        replaced += bad
        encoded = tokenizer.encode_batch(texts)
        if ids:
            rendered = [" ".join(map(str, row)) for row in encoded]
        else:
            rendered = [" ".join([tokens[i] for i in row]) for row in encoded]
        out.write(("\n".join(rendered) + "\n").encode("utf-8"))
        out.flush()
        lines += len(texts)
    return lines, replaced


class _NoProgress:
    def update(self, n: int) -> None:
        pass


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.chunk_lines < 1:
        print(f"bertlab tokenize: --chunk-lines must be at least 1, got {args.chunk_lines}",
              file=sys.stderr)
        return 2
    try:
        tokenizer = Tokenizer.from_file(args.vocab, lower_case=args.lower_case,
                                        split_special_tokens=args.split_special_tokens)
    except VocabError as e:
        print(f"bertlab tokenize: {e}", file=sys.stderr)
        return 2
    try:
        stream = open(args.file, "rb") if args.file is not None else sys.stdin.buffer
    except OSError as e:
        print(f"bertlab tokenize: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    source = args.file if args.file is not None else "<stdin>"
    try:
        with _progress_bar(args.file) as progress:
            _, replaced = tokenize_stream(tokenizer, stream, sys.stdout.buffer, ids=args.ids,
                                          chunk_lines=args.chunk_lines, progress=progress)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining
        # again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if replaced:
        print(f"bertlab tokenize: {source}: replaced {replaced} invalid UTF-8 byte "
              f"sequence(s) with U+FFFD", file=sys.stderr)
    return 0
