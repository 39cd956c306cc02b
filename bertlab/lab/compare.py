"""`bertlab compare RUN...`: any workdirs side by side, no sweep needed.

A researcher's runs are often ad hoc: a baseline from last week, two overrides tried this
morning. compare reads what every workdir already holds (config.json, final_metrics.json or
summary.json, metrics.jsonl) and writes three things: a table of final metrics, a table of only
the config keys that differ between the runs, and one PNG with every run's curves overlaid.

Pretraining workdirs contribute their final metrics (train loss, eval MLM loss/accuracy/
perplexity, tokens/s) and loss-by-step curves; fine-tuning workdirs the median over seeds of each
eval (and test) metric, with its spread, and the task metric by epoch averaged over seeds.
Comparing the two kinds in one call works but rarely means anything; the kind is a column.
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Sequence

import numpy as np

from bertlab.train.loop import flat_keys
from bertlab.train.metric_writer import METRICS_FILE, read_metrics

PRETRAIN_METRICS = ("step", "loss", "eval_mlm_loss", "eval_mlm_accuracy", "eval_perplexity",
                    "tokens_per_second")
# Keys that differ between any two runs without describing the recipe.
IGNORED_CONFIG_KEYS = ("data.prepared", "data_dir", "data.data_dir", "init_from", "model.init_from",
                       "train.seeds")


class CompareError(ValueError):
    """A path that is not a bertlab workdir; the message names it."""


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_run(workdir: str, name: str | None = None) -> dict:
    """{name, kind, config, metrics, curves} of one workdir; metrics are flat numbers (or
    (median, std, n) triples for fine-tuning), curves {series: (xs, ys)}."""
    if not os.path.isdir(workdir):
        raise CompareError(f"{workdir}: not a directory")
    name = name or os.path.basename(os.path.normpath(workdir))
    config = flat_keys(_read_json(os.path.join(workdir, "config.json")) or {})
    summary = _read_json(os.path.join(workdir, "summary.json"))
    seed_metrics = sorted(glob.glob(os.path.join(workdir, "seed_*", METRICS_FILE)))
    if summary is not None or seed_metrics:
        return {"name": name, "kind": "finetune", "config": config,
                "metrics": _finetune_metrics(summary or {}),
                "curves": _finetune_curves(seed_metrics, (summary or {}).get("metric"))}
    metrics_path = os.path.join(workdir, METRICS_FILE)
    final = _read_json(os.path.join(workdir, "final_metrics.json"))
    if final is None and not os.path.exists(metrics_path):
        raise CompareError(f"{workdir}: no final_metrics.json, summary.json or metrics.jsonl; "
                           "is it a bertlab pretrain or finetune workdir?")
    records = read_metrics(metrics_path)
    if final is None:  # an unfinished run: its latest logged values
        final = {}
        for split, prefix in (("train", ""), ("eval", "eval_")):
            if records.get(split):
                last = records[split][max(records[split])]
                final.update({prefix + k: v for k, v in last.items() if k not in ("split", "time")})
    metrics = {key: final[key] for key in PRETRAIN_METRICS
               if isinstance(final.get(key), (int, float))}
    curves = {"train loss": _series(records.get("train", {}), "loss"),
              "eval MLM loss": _series(records.get("eval", {}), "mlm_loss")}
    return {"name": name, "kind": "pretrain", "config": config, "metrics": metrics,
            "curves": curves}


def _series(records: dict, key: str, x: str = "step") -> tuple[list[float], list[float]]:
    points = sorted((float(r.get(x, s)), float(r[key])) for s, r in records.items()
                    if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]))
    return [p[0] for p in points], [p[1] for p in points]


def _finetune_metrics(summary: dict) -> dict:
    metrics = {}
    for part in ("eval", "test"):
        for metric, spread in (summary.get(part) or {}).items():
            metrics[f"{part}_{metric}"] = (spread["median"], spread.get("std"), spread.get("n"))
    return metrics


def _finetune_curves(paths: Sequence[str], metric: str | None) -> dict:
    """Mean over seeds, per epoch, of the eval task metric and the training loss."""
    curves = {}
    for label, split, key in (("train loss", "train_epoch", "loss"),
                              (f"eval {metric}", "eval", metric)):
        if key is None:
            continue
        per_epoch: dict[float, list[float]] = {}
        for path in paths:
            xs, ys = _series(read_metrics(path).get(split, {}), key, x="epoch")
            for x, y in zip(xs, ys):
                per_epoch.setdefault(x, []).append(y)
        epochs = sorted(per_epoch)
        curves[label] = (epochs, [float(np.mean(per_epoch[e])) for e in epochs])
    return curves


def config_differences(runs: Sequence[dict]) -> dict[str, list]:
    """key -> each run's value, for the keys whose values are not the same in every run."""
    keys = sorted(set().union(*(run["config"] for run in runs)))
    out = {}
    for key in keys:
        if key in IGNORED_CONFIG_KEYS:
            continue
        values = [run["config"].get(key, "<absent>") for run in runs]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            out[key] = values
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        median, std, n = value
        spread = f" ± {std:.4f}" if std is not None and n and n > 1 else ""
        return f"{median:.4f}{spread}" + (f" (n={n})" if n else "")
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def render(runs: Sequence[dict]) -> str:
    """Markdown: final metrics (one row per run), then the differing config keys."""
    names = sorted(set().union(*(run["metrics"] for run in runs)))
    lines = ["## Final metrics", ""]
    lines += _table(["run", "kind", *names],
                    [[run["name"], run["kind"], *(_cell(run["metrics"].get(n)) for n in names)]
                     for run in runs])
    differences = config_differences(runs)
    lines += ["", "## Config differences", ""]
    if differences:
        lines += _table(["key", *(run["name"] for run in runs)],
                        [[key, *(json.dumps(v) if not isinstance(v, str) else v for v in values)]
                         for key, values in differences.items()])
    else:
        lines.append("(the runs' configs are identical)")
    return "\n".join(lines) + "\n"


def plot_runs(runs: Sequence[dict], out_path: str) -> str | None:
    """Every run's curves overlaid, one panel per series name; None if nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = []
    for run in runs:
        series += [name for name, (xs, _) in run["curves"].items() if xs and name not in series]
    if not series:
        return None
    figure = Figure(figsize=(5.5 * len(series), 4))
    FigureCanvasAgg(figure)
    for index, name in enumerate(series):
        axes = figure.add_subplot(1, len(series), index + 1)
        for run in runs:
            xs, ys = run["curves"].get(name, ([], []))
            if xs:
                axes.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=run["name"])
        axes.set_title(name)
        axes.set_xlabel("epoch" if runs[0]["kind"] == "finetune" else "step")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = out_path + ".tmp.png"
    figure.savefig(tmp, dpi=100)
    os.replace(tmp, out_path)
    return out_path


def compare(workdirs: Sequence[str], *, names: Sequence[str] | None = None,
            plot: str | None = None) -> tuple[str, list[dict]]:
    if len(workdirs) < 1:
        raise CompareError("give at least one workdir")
    if names and len(names) != len(workdirs):
        raise CompareError(f"{len(names)} names for {len(workdirs)} workdirs")
    runs = [read_run(w, names[i] if names else None) for i, w in enumerate(workdirs)]
    if plot:
        plot_runs(runs, plot)
    return render(runs), runs
