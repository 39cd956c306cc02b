"""Running a planned study: each run as `python -m bertlab ...` in a subprocess, resumably.

Each run is an ordinary `bertlab <command> ...` line, so a study can be printed (`--dry-run`) and
sent to a scheduler unchanged, or run here one stage at a time. A stage counts as finished when
its `done` file exists, so rerunning a sweep skips what is done and an interrupted stage (no done
file) simply runs again; the commands themselves resume too.

Commands run with the repository root as their working directory, so relative paths in a study
(configs/pretrain.py, runs/...) mean the same thing to the sweep and to a user who pastes them.
The repository root is the parent of the nearest ancestor of the study named `experiments`; a
study elsewhere uses the current directory (bertlab.lab.study.repo_root).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Callable

from bertlab.files import write_json
from bertlab.lab.plan import Run, display_path
from bertlab.lab.study import Study

LOG_FILE = "sweep.log"
RUN_FILE = "sweep_run.json"


def git_state(root: str) -> tuple[str | None, bool]:
    """(short commit, tracked files modified) of the repository at `root`; (None, False) outside
    git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                                capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, check=True, capture_output=True, text=True).stdout
        return commit or None, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, False


def machine() -> str:
    """The host in words, without importing jax (the child runs do): OS and CPU count."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs"


def load_average() -> float | None:
    """The 1-minute load average when a stage starts: how shared the machine was while it ran
    (its wall time means little on a machine that other jobs keep busy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def execute(run: Run, *, echo=None) -> dict:
    """Runs one stage as `python -m bertlab ...` in the repository root, its output streamed to
    `echo` (default: this process's stdout) and appended to <workdir>/sweep.log; writes and
    returns the sweep_run.json record. On KeyboardInterrupt the child (which got the signal
    too) is waited for, the record says so, and the interrupt propagates."""
    echo = echo or (lambda data: (sys.stdout.buffer.write(data), sys.stdout.flush()))
    os.makedirs(run.workdir, exist_ok=True)
    commit, dirty = git_state(run.root)
    record = {"argv": list(run.argv), "command": run.command, "start": _now(), "end": None,
              "seconds": None, "returncode": None, "commit": commit, "dirty": dirty,
              "machine": machine(), "load_average": load_average()}
    record_path = os.path.join(run.workdir, RUN_FILE)
    previous = []
    if os.path.exists(record_path):          # keep earlier attempts (e.g. an interrupted one)
        try:
            with open(record_path, encoding="utf-8") as f:
                old = json.load(f)
            previous = old.pop("previous", []) + [old]
        except (OSError, ValueError):
            previous = []
    if previous:
        record["previous"] = previous
    started = time.monotonic()
    interrupted = False
    with open(os.path.join(run.workdir, LOG_FILE), "ab") as log:
        log.write(f"\n# {record['start']} (cwd {run.root})\n$ {run.command}\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen([sys.executable, "-m", "bertlab", *run.argv], cwd=run.root,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                data = os.read(child.stdout.fileno(), 65536)
                if not data:
                    break
                log.write(data)
                log.flush()
                echo(data)
            child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches the child too (same process group) and it stops cleanly (pretrain
            # saves a checkpoint); an interrupt sent to this process alone is passed on to it.
            interrupted = True
            try:
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.send_signal(signal.SIGINT)
                    child.wait(timeout=60)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                child.kill()
                child.wait()
        finally:
            child.stdout.close()
        record.update(end=_now(), seconds=round(time.monotonic() - started, 3),
                      returncode=child.returncode)
        if interrupted:
            record["interrupted"] = True
        log.write(f"# exit {child.returncode} after {record['seconds']} s\n".encode())
    write_json(record_path, record)
    if interrupted:
        raise KeyboardInterrupt
    return record


def read_record(run: Run) -> dict | None:
    path = os.path.join(run.workdir, RUN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def sweep(study: Study, runs: list[Run], *, dry_run: bool = False, keep_going: bool = False,
          out: Callable[[str], None] = print, echo=None) -> int:
    """Prints (dry_run) or runs every not-yet-done run in order; returns an exit status (0 all
    done, 1 a stage failed). A failure stops the sweep, or with keep_going skips only the runs
    that depend on the failed one (same arm and seed, same arm, or everything for a study-level
    stage) and goes on."""
    total = len(runs)
    if dry_run:
        out(f"# {study.title}: {len(study.arms)} arm(s) x {len(study.seeds)} seed(s); "
            f"run from {study.root}")
    failed: list[Run] = []
    for run in runs:
        head = f"[{run.index}/{total}] {run.label()}"
        if dry_run:
            out(f"# {head} ({'done' if run.is_done else 'to run'})")
            out(run.command)
            continue
        if run.is_done:
            out(f"{head} (skipped: done)")
            continue
        blocker = next((f for f in failed if _depends(run, f)), None)
        if blocker is not None:
            out(f"{head} (skipped: {blocker.stage.name} failed for {blocker.label()})")
            continue
        out(f"{head} (running)")
        out(f"  {run.command}")
        record = execute(run, echo=echo)
        log = os.path.join(run.workdir, LOG_FILE)
        if record["returncode"] == 0 and run.is_done:
            out(f"{head} (finished in {record['seconds']:.1f} s)")
            continue
        why = (f"exit code {record['returncode']}" if record["returncode"] != 0 else
               f"exit code 0 but {display_path(run.done_path, study.root)} was not written")
        out(f"{head} FAILED ({why}); log: {log}")
        failed.append(run)
        if not keep_going:
            out(f"sweep stopped: arm={run.arm} seed={run.seed} stage={run.stage.name} failed; "
                f"see {log}. Fix it and rerun: finished stages are skipped.")
            return 1
    if failed:
        out(f"{len(failed)} stage(s) failed: " + "; ".join(
            f"{f.label()} (log {os.path.join(f.workdir, LOG_FILE)})" for f in failed))
        return 1
    return 0


def _depends(run: Run, failed: Run) -> bool:
    """Whether `run` needs what `failed` should have produced (same scope or a finer one)."""
    if failed.arm is None:
        return True
    if failed.seed is None:
        return run.arm == failed.arm
    return run.arm == failed.arm and run.seed == failed.seed
