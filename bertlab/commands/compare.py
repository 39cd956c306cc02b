"""`bertlab compare RUN [RUN ...] [--names a,b] [--out compare.md] [--plot compare.png]`.

Final metrics and differing config keys of any pretraining or fine-tuning workdirs as markdown
tables (printed, and written with --out), with every run's curves overlaid in one PNG. No sweep
definition needed: for planned studies with seeds and paired statistics use `bertlab report`.
"""

from __future__ import annotations

import argparse
import sys

from bertlab.files import write_text

PROG = "compare"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="pretraining or fine-tuning workdirs")
    parser.add_argument("--names", default="", help="comma-separated labels (default: dir names)")
    parser.add_argument("--out", default="", help="also write the tables to this markdown file")
    parser.add_argument("--plot", default="compare.png",
                        help="PNG of the overlaid curves ('' for none; default compare.png)")
    args = parser.parse_args(argv)

    from bertlab.lab.compare import CompareError, compare

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    try:
        text, _ = compare(args.runs, names=names, plot=args.plot or None)
    except CompareError as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    if args.plot:
        print(f"wrote {args.plot}")
    return 0
