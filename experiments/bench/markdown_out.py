"""Appending a benchmark table to its markdown file, with the command that produced it.

Kept free of jax imports: start-up and memory benchmarks import it in their parent process.
"""

from __future__ import annotations

import sys


def append_table(out: str, script: str, argv, title: str, table: str) -> None:
    """Append `### title`, the command that made the table, and the table to `out`."""
    command = f".venv/bin/python experiments/bench/{script} " + " ".join(
        argv if argv is not None else sys.argv[1:])
    with open(out, "a", encoding="utf-8") as f:
        f.write(f"\n### {title}\n\nCommand: `{command}`\n\n{table}\n")
