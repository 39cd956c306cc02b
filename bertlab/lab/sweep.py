"""Studies: load `experiments/<study>/sweep.py`, expand arms x seeds x stages into runs, run them.

Each run is an ordinary `bertlab <command> ...` line, so a study can be printed (`--dry-run`) and
sent to a scheduler unchanged, or run here one stage at a time. A stage counts as finished when
its `done` file exists, so rerunning a sweep skips what is done and an interrupted stage (no done
file) simply runs again; the commands themselves resume too.

Commands run with the repository root as their working directory, so relative paths in a study
(configs/pretrain.py, runs/...) mean the same thing to the sweep and to a user who pastes them.
The repository root is the parent of the nearest ancestor of the study named `experiments`; a
study elsewhere uses the current directory. See README.md, "Experiments: sweeps and reports",
for the study format.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import platform
import re
import runpy
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from bertlab.files import write_json

STUDY_FILE = "sweep.py"
LOG_FILE = "sweep.log"
RUN_FILE = "sweep_run.json"

STUDY_KEYS = {"title", "description", "seeds", "runs_dir", "stages", "arms", "grid", "baseline",
              "metric", "extra_metrics"}
STAGE_KEYS = {"name", "per", "argv", "done"}
METRIC_KEYS = {"name", "stage", "file", "path", "higher_is_better", "scale", "unit"}
# Coarse to fine: a stage may refer ({stage:X}) only to an earlier stage at its level or coarser.
LEVELS = {"study": 0, "arm": 1, "seed": 2}
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class StudyError(ValueError):
    """A study file that cannot be expanded; the message names the file and the key."""


@dataclass(frozen=True)
class Stage:
    name: str
    per: str                      # study | arm | seed
    argv: tuple[str, ...]         # with placeholders
    done: str                     # relative to the stage's workdir


@dataclass(frozen=True)
class Study:
    path: str                     # the sweep.py, absolute
    directory: str                # the study directory, absolute
    root: str                     # where commands run (the repository root)
    title: str
    description: str
    seeds: tuple[int, ...]
    runs_dir: str                 # absolute
    stages: tuple[Stage, ...]
    arms: dict                    # arm -> {stage name: tuple of extra argv}, in order
    baseline: str
    metric: dict
    extra_metrics: tuple[dict, ...] = ()
    runs_dir_override: str | None = None   # --runs-dir as given (None: the study's runs_dir)

    @property
    def name(self) -> str:
        return os.path.basename(self.directory)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


@dataclass(frozen=True)
class Run:
    """One stage of one (arm, seed): arm/seed are None above their level."""
    index: int
    stage: Stage
    arm: str | None
    seed: int | None
    workdir: str                  # absolute
    argv: tuple[str, ...]         # expanded
    done_path: str                # absolute
    root: str = field(repr=False, default="")

    @property
    def command(self) -> str:
        return "bertlab " + " ".join(shlex.quote(a) for a in self.argv)

    @property
    def is_done(self) -> bool:
        return os.path.exists(self.done_path)

    def label(self) -> str:
        arm = self.arm if self.arm is not None else "*"
        seed = self.seed if self.seed is not None else "*"
        return f"arm={arm} seed={seed} stage={self.stage.name}"


# --------------------------------------------------------------------------------------------
# Loading and validation.
# --------------------------------------------------------------------------------------------

def study_file(path: str) -> str:
    """The sweep.py of a study given as its directory or the file itself."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, STUDY_FILE)
    if not os.path.isfile(path):
        raise StudyError(f"{path}: no such study file (give experiments/<study> or its sweep.py)")
    return path


def repo_root(study_dir: str) -> str:
    """The parent of the nearest ancestor named `experiments`, else the current directory."""
    here = os.path.abspath(study_dir)
    while True:
        parent = os.path.dirname(here)
        if os.path.basename(here) == "experiments":
            return parent
        if parent == here:
            return os.getcwd()
        here = parent


def shared_root(root: str) -> str:
    """The shared data root: $BERTLAB_SHARED, else ../shared next to the repository root."""
    return os.path.abspath(os.environ.get("BERTLAB_SHARED") or os.path.join(root, "..", "shared"))


def load_study(path: str, runs_dir: str | None = None) -> Study:
    """Imports the study's get_study() and validates it; `runs_dir` overrides the study's."""
    path = study_file(path)
    try:
        namespace = runpy.run_path(path)
    except Exception as e:
        raise StudyError(f"{path}: importing the study failed: {type(e).__name__}: {e}") from e
    if not callable(namespace.get("get_study")):
        raise StudyError(f"{path}: defines no get_study() function")
    spec = namespace["get_study"]()
    return parse_study(spec, path, runs_dir=runs_dir)


def parse_study(spec: dict, path: str, runs_dir: str | None = None) -> Study:
    """Validates the dict of get_study(); every error names `path` and the key at fault."""
    def fail(key: str, message: str):
        raise StudyError(f"{path}: {key}: {message}")

    if not isinstance(spec, dict):
        fail("get_study()", f"must return a dict, got {type(spec).__name__}")
    unknown = sorted(set(spec) - STUDY_KEYS)
    if unknown:
        fail(unknown[0], f"unknown key; the keys are {', '.join(sorted(STUDY_KEYS))}")
    for key in ("title", "stages", "metric"):
        if key not in spec:
            fail(key, "missing")
    directory = os.path.dirname(os.path.abspath(path))
    root = repo_root(directory)

    seeds = spec.get("seeds", [0])
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        fail("seeds", f"must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        fail("seeds", f"repeats a seed: {list(seeds)}")

    stages = _parse_stages(spec["stages"], fail)
    arms = _parse_arms(spec, stages, fail)
    baseline = spec.get("baseline", next(iter(arms)))
    if baseline not in arms:
        fail("baseline", f"{baseline!r} is not an arm; arms: {', '.join(arms)}")
    metric = _parse_metric(spec["metric"], stages, "metric", fail)
    extras = spec.get("extra_metrics", [])
    if not isinstance(extras, (list, tuple)):
        fail("extra_metrics", "must be a list of metric dicts")
    extras = tuple(_parse_metric(m, stages, f"extra_metrics[{i}]", fail)
                   for i, m in enumerate(extras))

    study_runs = spec.get("runs_dir") or os.path.join("runs", os.path.basename(directory))
    override = os.path.abspath(runs_dir) if runs_dir else None
    runs_dir = override or os.path.join(root, study_runs)
    study = Study(path=os.path.abspath(path), directory=directory, root=root,
                  title=str(spec["title"]), description=str(spec.get("description", "")),
                  seeds=tuple(seeds), runs_dir=os.path.normpath(runs_dir), stages=stages,
                  arms=arms, baseline=baseline, metric=metric, extra_metrics=extras,
                  runs_dir_override=override)
    _check_placeholders(study, fail)
    return study


def _parse_stages(stages, fail) -> tuple[Stage, ...]:
    if not isinstance(stages, (list, tuple)) or not stages:
        fail("stages", "must be a non-empty list of stage dicts")
    parsed, names = [], set()
    for i, stage in enumerate(stages):
        key = f"stages[{i}]"
        if not isinstance(stage, dict):
            fail(key, f"must be a dict, got {type(stage).__name__}")
        unknown = sorted(set(stage) - STAGE_KEYS)
        if unknown:
            fail(f"{key}.{unknown[0]}",
                 f"unknown key; the keys are {', '.join(sorted(STAGE_KEYS))}")
        for required in ("name", "argv", "done"):
            if not stage.get(required):
                fail(f"{key}.{required}", "missing")
        name = stage["name"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            fail(f"{key}.name", f"{name!r} must be letters, digits, _ . - (it names a directory)")
        if name in names:
            fail(f"{key}.name", f"duplicate stage name {name!r}")
        names.add(name)
        per = stage.get("per", "seed")
        if per not in LEVELS:
            fail(f"{key}.per", f"{per!r} must be one of {', '.join(LEVELS)}")
        argv = stage["argv"]
        if not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv):
            fail(f"{key}.argv", "must be a list of strings (a bertlab command and its arguments)")
        if not isinstance(stage["done"], str):
            fail(f"{key}.done", "must be a path relative to the stage workdir")
        parsed.append(Stage(name=name, per=per, argv=tuple(argv), done=stage["done"]))
    return tuple(parsed)


def _parse_arms(spec, stages, fail) -> dict:
    if "arms" in spec and "grid" in spec:
        fail("grid", "give either arms or grid, not both")
    if "grid" in spec:
        pairs = _grid_arms(spec["grid"], stages, fail)
        key = "grid"
    else:
        raw = spec.get("arms", {"default": {}})
        key = "arms"
        if isinstance(raw, dict):
            pairs = list(raw.items())
        elif isinstance(raw, (list, tuple)) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in raw):
            pairs = [tuple(p) for p in raw]
        else:
            fail("arms", "must be a dict arm name -> {stage: [extra argv]} (or a list of pairs)")
    if not pairs:
        fail(key, "no arms")
    by_name = {s.name: s for s in stages}
    arms = {}
    for name, extra in pairs:
        if (not isinstance(name, str) or not name or os.sep in name or name in (".", "..")
                or name.startswith("_")):
            fail(key, f"arm name {name!r} must be a non-empty string without {os.sep!r}, not "
                      f"starting with '_' (it names a directory beside _study)")
        if name in arms:
            fail(f"{key}.{name}", "duplicate arm name")
        if not isinstance(extra, dict):
            fail(f"{key}.{name}", "must be a dict stage name -> list of extra argv")
        for stage_name, args in extra.items():
            if stage_name not in by_name:
                fail(f"{key}.{name}.{stage_name}",
                     f"unknown stage; stages: {', '.join(by_name)}")
            if by_name[stage_name].per == "study":
                fail(f"{key}.{name}.{stage_name}",
                     "a per='study' stage runs once for all arms and cannot differ by arm")
            if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
                fail(f"{key}.{name}.{stage_name}", "must be a list of strings")
        arms[name] = {s: tuple(a) for s, a in extra.items()}
    return arms


def _grid_arms(grid, stages, fail) -> list:
    """{'pretrain': {'--config.data.mask_rate': [0.15, 0.3]}}
    -> [('mask_rate=0.15', {'pretrain': ['--config.data.mask_rate=0.15']}), ...]."""
    if not isinstance(grid, dict) or not grid:
        fail("grid", "must be a dict stage name -> {flag: [values]}")
    axes = []
    for stage_name, flags in grid.items():
        if not isinstance(flags, dict) or not flags:
            fail(f"grid.{stage_name}", "must be a dict flag -> list of values")
        for flag, values in flags.items():
            if not isinstance(values, (list, tuple)) or not values:
                fail(f"grid.{stage_name}.{flag}", "must be a non-empty list of values")
            axes.append((stage_name, flag, list(values)))
    pairs = []
    for combo in itertools.product(*[values for _, _, values in axes]):
        name_parts, extra = [], {}
        for (stage_name, flag, _), value in zip(axes, combo):
            name_parts.append(f"{flag.lstrip('-').split('.')[-1]}={value}")
            extra.setdefault(stage_name, []).append(f"{flag}={value}")
        pairs.append((",".join(name_parts), extra))
    return pairs


def _parse_metric(metric, stages, key, fail) -> dict:
    if not isinstance(metric, dict):
        fail(key, "must be a dict with name, stage, file, path")
    unknown = sorted(set(metric) - METRIC_KEYS)
    if unknown:
        fail(f"{key}.{unknown[0]}", f"unknown key; the keys are {', '.join(sorted(METRIC_KEYS))}")
    for required in ("name", "stage", "file", "path"):
        if not metric.get(required):
            fail(f"{key}.{required}", "missing")
    if metric["stage"] not in {s.name for s in stages}:
        fail(f"{key}.stage", f"unknown stage {metric['stage']!r}")
    return {"higher_is_better": True, "scale": 1.0, "unit": "", **metric}


def _check_placeholders(study: Study, fail) -> None:
    """Every {...} in argv, arm extras and done names something known at that stage's level."""
    for i, stage in enumerate(study.stages):
        texts = [("argv", t) for t in stage.argv] + [("done", stage.done)]
        texts += [(f"arms.{arm}", t) for arm, extra in study.arms.items()
                  for t in extra.get(stage.name, ())]
        for where, text in texts:
            for name in PLACEHOLDER.findall(text):
                problem = _placeholder_problem(name, stage, study.stages[:i], study.stages)
                if problem:
                    fail(f"stages[{i}] ({stage.name}).{where}", f"{problem} in {text!r}")


def _placeholder_problem(name: str, stage: Stage, earlier, all_stages) -> str | None:
    if name in ("workdir", "shared", "study", "runs"):
        return None
    if name in ("arm", "seed"):
        if LEVELS[stage.per] < LEVELS[name]:
            return f"{{{name}}} is undefined in a per={stage.per!r} stage"
        return None
    if name.startswith("stage:"):
        target = name[len("stage:"):]
        if target not in {s.name for s in all_stages}:
            return f"{{{name}}} names an unknown stage"
        match = [s for s in earlier if s.name == target]
        if not match:
            return f"{{{name}}} names a stage that does not run before this one"
        if LEVELS[match[0].per] > LEVELS[stage.per]:
            return (f"{{{name}}} is per={match[0].per!r}, finer than this per={stage.per!r} "
                    f"stage")
        return None
    return (f"unknown placeholder {{{name}}} (known: {{seed}} {{arm}} {{workdir}} "
            f"{{stage:NAME}} {{shared}} {{study}} {{runs}})")


# --------------------------------------------------------------------------------------------
# Expansion into runs.
# --------------------------------------------------------------------------------------------

def stage_workdir(study: Study, stage: Stage, arm: str | None, seed: int | None) -> str:
    if stage.per == "study":
        return os.path.join(study.runs_dir, "_study", stage.name)
    if stage.per == "arm":
        return os.path.join(study.runs_dir, arm, stage.name)
    return os.path.join(study.runs_dir, arm, f"seed_{seed}", stage.name)


def display_path(path: str, root: str) -> str:
    """Relative to the repository root where that reads well (inside it, or ../x), else absolute."""
    relative = os.path.relpath(path, root)
    return path if relative.startswith(os.path.join("..", "..")) else relative


def expand(study: Study, stage: Stage, text: str, arm: str | None, seed: int | None) -> str:
    def value(match):
        name = match.group(1)
        if name == "seed":
            return str(seed)
        if name == "arm":
            return arm
        if name == "workdir":
            return display_path(stage_workdir(study, stage, arm, seed), study.root)
        if name == "shared":
            return display_path(shared_root(study.root), study.root)
        if name == "study":
            return display_path(study.directory, study.root)
        if name == "runs":
            return display_path(study.runs_dir, study.root)
        if name.startswith("stage:"):
            target = study.stage(name[len("stage:"):])
            return display_path(stage_workdir(study, target, arm, seed), study.root)
        raise StudyError(f"{study.path}: stage {stage.name}: unknown placeholder {{{name}}} "
                         f"in {text!r}")
    return PLACEHOLDER.sub(value, text)


def plan(study: Study, arms: list[str] | None = None, seeds: list[int] | None = None) -> list[Run]:
    """Every run in order: for each arm, for each seed, each stage; study- and arm-level stages
    once, at their first use. `arms` / `seeds` select a subset (unknown ones are an error)."""
    arms = list(study.arms) if arms is None else list(arms)
    seeds = list(study.seeds) if seeds is None else list(seeds)
    for arm in arms:
        if arm not in study.arms:
            raise StudyError(f"{study.path}: --arms: unknown arm {arm!r}; arms: "
                             f"{', '.join(study.arms)}")
    for seed in seeds:
        if seed not in study.seeds:
            raise StudyError(f"{study.path}: --seeds: seed {seed} is not in the study's seeds "
                             f"{list(study.seeds)}")
    runs, seen = [], set()
    for arm in arms:
        for seed in seeds:
            for stage in study.stages:
                key_arm = None if stage.per == "study" else arm
                key_seed = seed if stage.per == "seed" else None
                if (stage.name, key_arm, key_seed) in seen:
                    continue
                seen.add((stage.name, key_arm, key_seed))
                extra = study.arms[arm].get(stage.name, ()) if key_arm is not None else ()
                argv = tuple(expand(study, stage, t, key_arm, key_seed)
                             for t in (*stage.argv, *extra))
                workdir = stage_workdir(study, stage, key_arm, key_seed)
                done = expand(study, stage, stage.done, key_arm, key_seed)
                runs.append(Run(index=len(runs) + 1, stage=stage, arm=key_arm, seed=key_seed,
                                workdir=workdir, argv=argv, done_path=os.path.join(workdir, done),
                                root=study.root))
    return runs


# --------------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------------

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
