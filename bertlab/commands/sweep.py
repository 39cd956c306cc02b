"""`bertlab sweep experiments/<study> [--dry-run] [--arms a,b] [--seeds 0,1] [--keep-going]`.

Runs (or prints) every stage of every arm and seed of a study, skipping stages already done, so
the same line resumes an interrupted sweep. Each stage is an ordinary `bertlab` command run from
the repository root; its output goes to the terminal and to <workdir>/sweep.log, its timing and
exit code to <workdir>/sweep_run.json. Then `bertlab report experiments/<study>`.
"""

from __future__ import annotations

import argparse
import sys

PROG = "sweep"


def parse_list(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    return [cast(part.strip()) for part in text.split(",") if part.strip()]


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="the study directory (experiments/<study>) or its sweep.py")
    parser.add_argument("--runs-dir", default=None,
                        help="where the workdirs are (default: the study's runs_dir, "
                             "runs/<study> under the repository root)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    add_study_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print every command (as a shell script) and whether it is done")
    parser.add_argument("--arms", default=None, help="only these arms, comma-separated")
    parser.add_argument("--seeds", default=None, help="only these seeds, comma-separated")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed stage, go on with the runs that do not need it")
    args = parser.parse_args(argv)

    from bertlab.lab.plan import plan
    from bertlab.lab.runner import sweep
    from bertlab.lab.study import load_study

    try:
        study = load_study(args.study, runs_dir=args.runs_dir)
        seeds = parse_list(args.seeds, int)
        runs = plan(study, arms=parse_list(args.arms), seeds=seeds)
    except ValueError as e:         # StudyError, or a --seeds entry that is not an integer
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        return sweep(study, runs, dry_run=args.dry_run, keep_going=args.keep_going,
                           out=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"\nbertlab {PROG}: interrupted; rerun the same command to resume "
              f"(finished stages are skipped)", file=sys.stderr)
        return 130
