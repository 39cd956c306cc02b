"""Where each token of a document comes from in its raw text, so a segment can be shipped as text.

Raw-text datasets (create-data --raw-text) hand the device the *text* of each A and B segment
instead of its ids, and the device tokenises it (bertlab.data.pretraining.on_device). The segment boundaries
are still decided here, on the host, from token counts: the pair rules (target lengths, the A/B
split, one-token-at-a-time truncation from either end) count tokens, and the truncation may cut
inside a word ("##ing" can be the first token kept). So a segment is shipped as

    text  the raw text from the start of the whitespace chunk holding its first kept token to
          the end of the chunk holding its last one (lines of a document joined by "\n");
    skip  how many tokens that text yields before the first kept one (pieces of the first chunk
          that truncation removed);
    keep  how many tokens are kept.

The device takes ids[skip:skip + keep] of the text's tokenisation, which equals the host's
segment token for token because whitespace always ends a chunk: the host tokenizer looks at
nothing across it (lower-casing, accent stripping, typed special tokens and WordPiece all work
inside a chunk), so tokenising a run of whole chunks gives exactly those chunks' ids. That
claim is checked for every line when the dataset is made (`line_layout` raises otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
import unicodedata
from typing import Sequence

import numpy as np

LINE_SEPARATOR = "\n"  # between the lines of a document in DocumentText.text


@functools.lru_cache(maxsize=1)
def _chunk_pattern() -> re.Pattern:
    """Runs of characters that are not whitespace in the host tokenizer's sense (tokenizer.
    is_whitespace: space, tab, newline, carriage return and category Zs)."""
    spaces = [c for c in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(c) == "Zs"]
    spaces += ["\t", "\n", "\r"]
    return re.compile("[^" + "".join(re.escape(c) for c in spaces) + "]+")


@dataclasses.dataclass(frozen=True)
class DocumentText:
    """A document's raw text and, for each of its chunks that yields tokens, where it is."""

    text: str                # the document's lines joined by LINE_SEPARATOR
    char_start: np.ndarray   # (C,) int64 first character of chunk c in text
    char_end: np.ndarray     # (C,) int64 one past its last character
    first_token: np.ndarray  # (C + 1,) int64 chunk c yields tokens first_token[c]:first_token[c+1]

    def segment(self, start: int, end: int) -> tuple[bytes, int, int]:
        """(UTF-8 text, skip, keep) of the document's tokens [start, end); b"", 0, 0 if empty."""
        if end <= start:
            return b"", 0, 0
        first = int(np.searchsorted(self.first_token, start, side="right")) - 1
        last = int(np.searchsorted(self.first_token, end - 1, side="right")) - 1
        text = self.text[self.char_start[first]:self.char_end[last]]
        return text.encode("utf-8"), start - int(self.first_token[first]), end - start


class LayoutError(ValueError):
    """Tokenising a line chunk by chunk did not give the line's ids (should never happen)."""


def line_layout(tokenizer, lines: Sequence[str], flat: np.ndarray, line_lengths: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The chunks of every line that yield tokens, in order: (line index, char start, char end,
    token count), each (C,). Checks that the chunks' ids laid end to end are `flat`, the ids the
    host path made from whole lines (encode_lines), so a raw-text dataset can never disagree
    with its own id shards."""
    pattern = _chunk_pattern()
    where = [(index, m.start(), m.end()) for index, line in enumerate(lines)
             for m in pattern.finditer(line)]
    ids = tokenizer.encode_batch([lines[i][s:e] for i, s, e in where]) if where else []
    counts = np.fromiter(map(len, ids), np.int64, count=len(ids))
    chunk_ids = np.fromiter((t for chunk in ids for t in chunk), np.int32, count=int(counts.sum()))
    if not np.array_equal(chunk_ids, flat):
        per_line = np.bincount(np.array([i for i, _, _ in where], np.int64), weights=counts,
                               minlength=len(lines)).astype(np.int64)
        bad = int(np.nonzero(per_line != line_lengths)[0][0]) if np.any(
            per_line != line_lengths) else 0
        raise LayoutError(f"tokenising line {bad} of this chunk of the corpus whitespace chunk by "
                          f"chunk gives other ids than tokenising it whole: {lines[bad][:200]!r}")
    keep = counts > 0
    where_arr = np.array(where, np.int64).reshape(-1, 3)[keep]
    return where_arr[:, 0], where_arr[:, 1], where_arr[:, 2], counts[keep]


def document_texts(lines: Sequence[str], lines_per_document: Sequence[int],
                   layout: tuple[np.ndarray, ...]) -> list[DocumentText]:
    """One DocumentText per document of a chunk of lines (line_layout's output for them)."""
    line_index, char_start, char_end, counts = layout
    line_starts = np.concatenate([[0], np.cumsum(lines_per_document)])  # (D + 1,) first lines
    out = []
    for d in range(len(lines_per_document)):
        first_line, stop_line = int(line_starts[d]), int(line_starts[d + 1])
        doc_lines = lines[first_line:stop_line]
        # Character offset of each of the document's lines in the joined text.
        offsets = np.concatenate([[0], np.cumsum([len(l) + len(LINE_SEPARATOR)
                                                  for l in doc_lines])]).astype(np.int64)
        lo, hi = np.searchsorted(line_index, [first_line, stop_line])
        shift = offsets[line_index[lo:hi] - first_line]  # (C_d,) line offset of each chunk
        out.append(DocumentText(
            text=LINE_SEPARATOR.join(doc_lines),
            char_start=char_start[lo:hi] + shift,
            char_end=char_end[lo:hi] + shift,
            first_token=np.concatenate([[0], np.cumsum(counts[lo:hi])]).astype(np.int64)))
    return out


def segment_records(pairs: Sequence[tuple], spans: Sequence[tuple], checksum,
                    ) -> tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]:
    """document_pairs' pairs and spans -> TextShardWriter.add_batch's (texts, cuts, checks, nsp).

    The checksums are of the host's ids, so the device can tell when its ids differ."""
    texts: list[bytes] = []
    cuts = np.zeros((len(pairs), 4), np.int32)
    checks = np.zeros((len(pairs), 2), np.uint32)
    for row, ((a, b, _), (doc, a0, a1, b_doc, b0, b1)) in enumerate(zip(pairs, spans)):
        text_a, skip_a, keep_a = doc.text.segment(a0, a1)
        text_b, skip_b, keep_b = b_doc.text.segment(b0, b1)
        texts += (text_a, text_b)
        cuts[row] = skip_a, keep_a, skip_b, keep_b
        checks[row] = checksum(a), checksum(b)
    nsp = np.array([is_random for _, _, is_random in pairs], np.int8)
    return texts, cuts, checks, nsp
