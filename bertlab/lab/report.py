"""A study's results.md, generated from its workdirs: nothing in it is typed by hand.

`collect` reads each (arm, seed)'s metric by dotted path from the JSON its stage wrote, and the
timings from the sweep_run.json files the sweep left; `render` turns that into markdown with the
statistics of bertlab.lab.stats, the commit, the machine and the commands that rerun everything. A
run that is missing or unfinished is shown as such (the n column says how many seeds an arm has),
so a report can be written while a sweep is still going.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from dataclasses import dataclass, field

from bertlab.lab import stats
from bertlab.lab.plan import display_path, expand, plan, stage_workdir
from bertlab.lab.runner import git_state, machine, read_record
from bertlab.lab.study import Study, shared_root


class ReportError(ValueError):
    """A study with nothing to report."""


def lookup(data, path: str):
    """`data` at a dotted path; integer components index lists ('eval.accuracy.values.0')."""
    value = data
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value[part]
        else:
            raise KeyError(part)
    return value


@dataclass
class Cell:
    """One metric of one (arm, seed): a scaled value, or why there is none."""
    value: float | None = None
    missing: str = ""


@dataclass
class ArmResults:
    arm: str
    metric: dict = field(default_factory=dict)          # seed -> Cell
    extras: list = field(default_factory=list)          # per extra metric: seed -> Cell
    seconds: dict = field(default_factory=dict)         # seed -> summed per-seed stage seconds

    def values(self, cells: dict) -> dict:
        return {seed: c.value for seed, c in cells.items() if c.value is not None}


@dataclass
class Collected:
    study: Study
    arms: list                     # ArmResults, in the study's order
    total_seconds: float           # every recorded stage run (study/arm/seed levels)
    stage_runs: int                # how many stage runs that is
    commits: list                  # distinct commits of the runs, in order of appearance
    dirty: bool                    # some run was made with modified tracked files
    machines: list                 # distinct machines of the runs
    loads: list                    # 1-minute load average at each recorded stage start


def read_metric(study: Study, metric: dict, arm: str, seed: int) -> Cell:
    stage = study.stage(metric["stage"])
    workdir = stage_workdir(study, stage, arm, seed)
    done = os.path.join(workdir, expand(study, stage, stage.done, arm, seed))
    if not os.path.exists(done):
        return Cell(missing="unfinished" if os.path.isdir(workdir) else "not run")
    path = os.path.join(workdir, metric["file"])
    # "{seed}" in a dotted path reaches per-seed records ("per_seed.{seed}.best_epoch")
    dotted = metric["path"].replace("{seed}", str(seed))
    try:
        with open(path, encoding="utf-8") as f:
            value = lookup(json.load(f), dotted)
    except OSError:
        return Cell(missing=f"no {metric['file']}")
    except ValueError:
        return Cell(missing=f"{metric['file']} is not JSON")
    except (KeyError, IndexError, TypeError):
        return Cell(missing=f"no {dotted}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return Cell(missing=f"{dotted} = {value!r}")
    return Cell(value=float(value) * float(metric.get("scale", 1.0)))


def collect(study: Study) -> Collected:
    arms = []
    for arm in study.arms:
        result = ArmResults(arm=arm, extras=[{} for _ in study.extra_metrics])
        for seed in study.seeds:
            result.metric[seed] = read_metric(study, study.metric, arm, seed)
            for i, extra in enumerate(study.extra_metrics):
                result.extras[i][seed] = read_metric(study, extra, arm, seed)
        arms.append(result)
    by_arm = {a.arm: a for a in arms}
    total, count, commits, machines, loads, dirty = 0.0, 0, [], [], [], False
    for run in plan(study):
        record = read_record(run)
        if not record or record.get("seconds") is None:
            continue
        total += float(record["seconds"])
        count += 1
        dirty = dirty or bool(record.get("dirty"))
        if isinstance(record.get("load_average"), (int, float)):
            loads.append(float(record["load_average"]))
        for key, seen in (("commit", commits), ("machine", machines)):
            if record.get(key) and record[key] not in seen:
                seen.append(record[key])
        if run.seed is not None:
            seconds = by_arm[run.arm].seconds
            seconds[run.seed] = seconds.get(run.seed, 0.0) + float(record["seconds"])
    return Collected(study=study, arms=arms, total_seconds=total, stage_runs=count,
                     commits=commits, dirty=dirty, machines=machines, loads=loads)


# --------------------------------------------------------------------------------------------
# Formatting.
# --------------------------------------------------------------------------------------------

DASH = "—"


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def fmt_extra(value: float | None) -> str:
    """Extra columns hold counts too (updates, tokens scored): whole numbers from 100 up are
    printed as such, with thousands separators."""
    if value is not None and abs(value) >= 100 and float(value).is_integer():
        return f"{value:,.0f}"
    return fmt(value)


def fmt_ci(ci, signed: bool = False) -> str:
    return DASH if ci is None else f"[{fmt(ci[0], signed)}, {fmt(ci[1], signed)}]"


def fmt_p(p: float | None) -> str:
    return DASH if p is None else f"{p:.3f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def arm_row(collected: Collected, result: ArmResults, baseline: ArmResults) -> list[str]:
    study = collected.study
    values = result.values(result.metric)
    n = f"{len(values)}/{len(study.seeds)}"
    if not values:
        row = [result.arm, n, DASH, DASH, DASH, DASH, DASH]
    else:
        s = stats.summary(list(values.values()))
        spread = f"{fmt(s['mean'])} ± {fmt(s['std'])}"
        if result is baseline:
            delta, p = "baseline", ""
        else:
            pair = stats.paired(values, baseline.values(baseline.metric))
            if pair is None:
                delta, p = DASH, DASH
            else:
                delta = fmt(pair["mean"], signed=True)
                if pair["ci"] is not None:
                    delta += " " + fmt_ci(pair["ci"], signed=True)
                if pair["n"] != len(study.seeds):
                    delta += f" (n={pair['n']})"
                p = fmt_p(pair["p"])
        row = [result.arm, n, fmt(s["median"]), spread, fmt_ci(s["ci"]), delta, p]
    for extra in result.extras:
        extra_values = list(result.values(extra).values())
        row.append(fmt_extra(stats.median(extra_values)) if extra_values else DASH)
    seconds = list(result.seconds.values())
    row.append(fmt_duration(stats.median(seconds) if seconds else None))
    return row


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def unit_suffix(metric: dict) -> str:
    return f" ({metric['unit']})" if metric.get("unit") else ""


def results_table(collected: Collected) -> list[str]:
    study = collected.study
    baseline = next(a for a in collected.arms if a.arm == study.baseline)
    header = ["arm", "n", "median", "mean ± std", "95 % CI", f"Δ vs {study.baseline} [95 % CI]",
              "p"]
    header += [f"{m['name']}{unit_suffix(m)} (median)" for m in study.extra_metrics]
    header += ["wall time / seed (median)"]
    return table([arm_row(collected, a, baseline) for a in collected.arms], header)


def per_seed_table(collected: Collected) -> list[str]:
    study = collected.study
    metrics = [study.metric, *study.extra_metrics]
    header = ["arm", "seed"] + [f"{m['name']}{unit_suffix(m)}" for m in metrics] + ["wall time"]
    rows = []
    for result in collected.arms:
        for seed in study.seeds:
            cells = [(fmt, result.metric[seed])] + [(fmt_extra, extra[seed])
                                                   for extra in result.extras]
            rows.append([result.arm, str(seed)]
                        + [show(c.value) if c.value is not None else f"({c.missing})"
                           for show, c in cells]
                        + [fmt_duration(result.seconds.get(seed))])
    return table(rows, header)


def study_args(study: Study) -> str:
    """`experiments/<study>` as sweep and report take it (plus --runs-dir if one was given)."""
    where = display_path(study.directory, study.root)
    if study.runs_dir_override:
        where += f" --runs-dir {display_path(study.runs_dir, study.root)}"
    return where


def commands_section(study: Study) -> list[str]:
    root = study.root
    lines = ["## Commands", "",
             "From the repository root; the sweep skips stages already done, so the same line "
             "resumes it, and `--dry-run` prints every expanded command:", "", "```bash",
             f"bertlab sweep {study_args(study)}", f"bertlab report {study_args(study)}", "```",
             "",
             f"Each stage below is one `bertlab` command, run once per arm and seed (or once per "
             f"arm / once in all, as stated) with the arm's extra arguments appended; the sweep "
             f"fills in `{{seed}}`, `{{arm}}`, `{{workdir}}` (`"
             f"{display_path(study.runs_dir, root)}/<arm>/seed_<seed>/<stage>`), "
             f"`{{stage:NAME}}` (that stage's workdir) and `{{shared}}` "
             f"(`{display_path(shared_root(root), root)}`). Seeds: "
             f"{', '.join(map(str, study.seeds))}.", ""]
    runs = plan(study)
    for stage in study.stages:
        template = "bertlab " + " ".join(stage.argv)
        lines += [f"**{stage.name}** (per {stage.per}; done when `{stage.done}` exists):", "",
                  "```bash", template, "```", ""]
        if stage.per != "study":
            for arm, extra in study.arms.items():
                args = " ".join(extra.get(stage.name, ())) or "(none)"
                lines.append(f"- arm `{arm}`: {f'`{args}`' if extra.get(stage.name) else args}")
            lines.append("")
        example = next(r for r in runs if r.stage.name == stage.name)
        lines += [f"e.g. arm {example.arm or '*'}, seed "
                  f"{'*' if example.seed is None else example.seed}:", "", "```bash",
                  example.command, "```", ""]
    return lines


def machine_line() -> str:
    try:
        import jax
        jax_part = f"jax {jax.__version__} ({jax.default_backend()} backend)"
    except Exception as e:  # a report must not fail for want of jax
        jax_part = f"jax unavailable ({type(e).__name__})"
    return f"{platform.platform()}, {os.cpu_count()} CPUs, {jax_part}"


def load_note(loads: list) -> str:
    """The load range, flagged as shared only above 1.5 x the CPUs: a stage's 1-minute average
    still counts the sweep's own previous stage, which on a quiet machine leaves up to about
    the CPU count behind it."""
    if not loads:
        return ""
    note = (f"; 1-minute load average at stage starts {min(loads):.1f}–{max(loads):.1f} on "
            f"{os.cpu_count()} CPUs (it includes the sweep's own previous stage)")
    if max(loads) > 1.5 * (os.cpu_count() or 1):
        note += " (other jobs shared the machine: wall times are inflated)"
    return note


def render(collected: Collected, *, now: datetime.datetime | None = None) -> str:
    study = collected.study
    metric = study.metric
    commit, dirty = git_state(study.root)
    now = now or datetime.datetime.now().astimezone()
    direction = "higher is better" if metric.get("higher_is_better", True) else "lower is better"
    runs_commits = ", ".join(f"`{c}`" for c in collected.commits) or DASH
    lines = [f"# {study.title}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [
        f"- Generated by `bertlab report {study_args(study)}` "
        f"at commit `{commit or DASH}`{' (modified tracked files)' if dirty else ''}, "
        f"{now.isoformat(timespec='seconds')}",
        f"- Runs made at commit(s) {runs_commits}"
        f"{' (some with modified tracked files)' if collected.dirty else ''}",
        f"- Machine: {machine_line()}"
        + (f"; runs on: {'; '.join(collected.machines)}"
           if collected.machines and collected.machines != [machine()] else ""),
        f"- Wall time: {fmt_duration(collected.total_seconds if collected.stage_runs else None)} "
        f"in all ({collected.stage_runs} stage runs, study- and arm-level stages included)"
        + load_note(collected.loads),
        "",
        f"## {metric['name']}{unit_suffix(metric)}, {direction}",
        "",
        *results_table(collected),
        "",
        f"n: seeds with a result / seeds in the study. mean ± std: sample standard deviation "
        f"(n − 1). 95 % CI: percentile bootstrap of the mean ({stats.BOOTSTRAP_RESAMPLES:,} "
        f"resamples, fixed generator seed {stats.BOOTSTRAP_SEED}). Δ: mean over the seeds both "
        f"arms finished of (arm − {study.baseline}), same seed paired, with its bootstrap CI; "
        f"p: exact two-sided sign-flip permutation test over all 2^n sign patterns of those "
        f"differences. With n seeds the smallest attainable p is 2/2^n (0.25 for 3 seeds, 0.5 for "
        f"2), so p here describes the data rather than deciding anything. Wall time: median "
        f"over seeds of the summed per-seed stage times.",
        "",
        "## Per seed",
        "",
        *per_seed_table(collected),
        "",
        *commands_section(study),
    ]
    return "\n".join(lines).rstrip() + "\n"


def write_report(study: Study, out: str | None = None) -> tuple[str, str, Collected]:
    """Collects and renders; writes `out` (default <study>/results.md) atomically. Raises
    ReportError when no (arm, seed) has a result."""
    collected = collect(study)
    if not any(a.values(a.metric) for a in collected.arms):
        raise ReportError(f"{study.path}: no results yet under {study.runs_dir} (no finished "
                          f"{study.metric['stage']} stage with {study.metric['file']}:"
                          f"{study.metric['path']}); run `bertlab sweep` first")
    text = render(collected)
    out = out or os.path.join(study.directory, "results.md")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    return out, text, collected
