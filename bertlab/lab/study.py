"""A study's definition: `experiments/<study>/sweep.py`'s get_study() dict, validated into a Study.

A study names its stages (each an ordinary `bertlab <command> ...` line with placeholders, run
once per study, per arm or per seed), its arms (extra arguments per stage, or a grid of flag
values), its seeds and the metric the report compares. Everything is checked here, before any
run starts: unknown keys, duplicate names, placeholders a stage cannot resolve at its level
({seed} in a per-arm stage, {stage:X} naming a later or finer stage); every error names the
study file and the key at fault. Turning a Study into runs is bertlab.lab.plan; running them is
bertlab.lab.runner. See README.md, "Experiments: sweeps and reports", for the format.
"""

from __future__ import annotations

import itertools
import os
import re
import runpy
from dataclasses import dataclass

STUDY_FILE = "sweep.py"

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

