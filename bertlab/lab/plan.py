"""A study expanded into runs: arms x seeds x stages, each with its workdir, argv and done file.

Study-level stages run once for all arms, arm-level ones once per arm, the rest once per
(arm, seed), each at its first use, in the order a sweep runs them; placeholders ({seed},
{workdir}, {stage:X}, ...) are filled in here. Paths in commands are written relative to the
repository root where that reads well, so a printed command pastes into a shell as it is.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from bertlab.lab.study import PLACEHOLDER, Stage, Study, StudyError, shared_root


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
