"""`bertlab submit --out DIR TASK=WORKDIR [TASK=WORKDIR ...] [--data-dir D] [--zip]`.

Writes the GLUE leaderboard's files (bertlab.data.tasks.glue_submission: file names, header,
label strings, row counts) from one fine-tuned workdir per task: each model predicts its task's
test split, read the way its training read the task (or from --data-dir). An MNLI workdir also
writes MNLI-mm (the mismatched test set) and AX (the diagnostic set), as the server expects
them from the MNLI model. Every file is checked against the server's rules before it is
written; --zip also writes DIR/submission.zip.
"""

from __future__ import annotations

import argparse
import sys

PROG = "submit"

# An MNLI model answers these too (same three labels).
ALSO_FROM = {"mnli": ("mnli-mm", "ax")}


def parse_assignments(values: list[str]) -> dict[str, str]:
    """['sst2=runs/sst2', ...] -> {'sst2': 'runs/sst2'}; a GLUE task at most once."""
    from bertlab.data.tasks.glue_submission import submission_entry

    tasks: dict[str, str] = {}
    for value in values:
        task, sep, workdir = value.partition("=")
        task = task.strip().lower()
        if not sep or not task or not workdir:
            raise ValueError(f"{value!r}: expected TASK=WORKDIR (e.g. sst2=runs/sst2)")
        submission_entry(task)  # names the GLUE tasks when this is not one
        if task in tasks:
            raise ValueError(f"task {task} is given twice")
        tasks[task] = workdir
    return tasks


def task_files(tasks: dict[str, str]) -> list[tuple[str, str]]:
    """(file task, workdir) for every file to write: the given tasks, plus MNLI-mm and AX from
    an MNLI workdir unless given on their own."""
    out = []
    for task, workdir in tasks.items():
        out.append((task, workdir))
        out += [(extra, workdir) for extra in ALSO_FROM.get(task, ()) if extra not in tasks]
    return out


def write_submission(out_dir: str, tasks: dict[str, str], *, data_dir: str | None = None,
                     batch_size: int = 64, packed: bool = True, check_rows: bool = True,
                     log=print) -> list[str]:
    """The files for `tasks` in out_dir; returns their paths."""
    from bertlab import inference
    from bertlab.data.tasks.glue_submission import prediction_strings, write_task_file

    written, models = [], {}
    for task, workdir in task_files(tasks):
        if workdir not in models:
            models[workdir] = inference.load_finetuned(workdir)
        model = models[workdir]
        trained = model.export.data.get("task")
        own = task if task not in ("mnli-mm", "ax") else "mnli"
        if trained not in (own, task):
            raise ValueError(f"{workdir} was fine-tuned on {trained!r}, not {own}; give "
                             f"{trained}={workdir} or the right workdir")
        split = inference.load_task_split(model, "test", data_dir, task=task)
        logits = inference.predict_split(model, split, batch_size, packed=packed)
        ids = split.ids if split.ids is not None else [str(i) for i in range(len(split))]
        path = write_task_file(out_dir, task, ids, prediction_strings(task, logits),
                               check_rows=check_rows)
        log(f"{task}: {len(split)} test predictions from {model.export.directory} -> {path}")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bertlab {PROG}", description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", metavar="TASK=WORKDIR",
                        help="a GLUE task and the fine-tuned workdir (or export) that predicts it")
    parser.add_argument("--out", required=True, help="directory for the task files")
    parser.add_argument("--data-dir", default=None,
                        help="the glue_data directory (default: each workdir's training data_dir)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch")
    parser.add_argument("--no-packing", dest="packing", action="store_false",
                        help="padded batches instead of packed ones (same predictions)")
    parser.add_argument("--zip", action="store_true", help="also write OUT/submission.zip")
    args = parser.parse_args(argv)

    from bertlab.checkpoints.init_from import InitFromError
    from bertlab.data.tasks.glue_submission import zip_submission
    from bertlab.train.loop import TrainConfigError

    try:
        tasks = parse_assignments(args.tasks)
        write_submission(args.out, tasks, data_dir=args.data_dir, batch_size=args.batch_size,
                         packed=args.packing)
        if args.zip:
            print(f"zip -> {zip_submission(args.out)}")
    except (InitFromError, TrainConfigError, ValueError, OSError) as e:
        print(f"bertlab {PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0
