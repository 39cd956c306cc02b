"""`bertlab report experiments/<study> [--out PATH]`: collect a study's runs into results.md.

One row per arm (n, median, mean ± std, bootstrap 95 % CI, paired difference against the
baseline arm with its CI and sign-flip p, extra metrics, wall time), then every seed's values and
the commands that reproduce them. Missing runs are shown, not fatal; exit 1 if nothing is there.
"""

from __future__ import annotations

import argparse
import os
import sys

from bertlab.commands.sweep import add_study_arguments

PROG = "report"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    add_study_arguments(parser)
    parser.add_argument("--out", default=None,
                        help="markdown file to write (default: <study>/results.md)")
    args = parser.parse_args(argv)

    from bertlab.lab import report
    from bertlab.lab.plan import display_path
    from bertlab.lab.study import load_study

    try:
        study = load_study(args.study, runs_dir=args.runs_dir)
    except ValueError as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        out, text, collected = report.write_report(study, args.out)
    except report.ReportError as e:
        print(f"bertlab {PROG}: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.results_table(collected)))
    print(f"wrote {display_path(os.path.abspath(out), os.getcwd())}")
    return 0
