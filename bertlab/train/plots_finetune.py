"""Per-epoch curves of a fine-tuning run: loss and the metric that picks the best epoch
(train.select_metric, resolved by bertlab.train.selection), train and validation.

bertlab.train.plots draws pretraining's loss against step; fine-tuning is read per epoch and needs the
selection metric beside the loss, so it has its own figure here (two panels, one PNG; one when the
loss itself selects). The plotted metric is the selection metric rather than the registry's
primary one because that is the number the run was judged by (F1 for MRPC, Matthews for CoLA,
or any metric the config chose): the curve shows why the best epoch won. Reads the
"train_epoch" and "eval" records of metrics.jsonl (one run, or every seed of a run overlaid);
matplotlib's object API with the Agg canvas.
"""

from __future__ import annotations

import math
import os

from bertlab.train.metric_writer import read_metrics
from bertlab.train.selection import LOSS

CURVES_PLOT = "curves.png"


def _by_epoch(records: dict[int, dict], key: str) -> tuple[list[int], list[float]]:
    points = {}
    for record in records.values():
        value, epoch = record.get(key), record.get("epoch")
        if isinstance(value, (int, float)) and math.isfinite(value) and epoch is not None:
            points[int(epoch)] = float(value)
    epochs = sorted(points)
    return epochs, [points[e] for e in epochs]


def plotted_split(axes, name: str) -> bool:
    """Whether a line labelled `name` is already on the axes (label each split once)."""
    return any(line.get_label() == name for line in axes.get_lines())


def plot_epoch_curves(metrics_path: str, out_path: str, *, metric: str,
                      title: str = "", eval_name: str = "validation") -> str | None:
    """One seed: writes the PNG (atomically) and returns its path; None before the first epoch."""
    title = title or os.path.basename(os.path.dirname(os.path.abspath(metrics_path)))
    return plot_seed_curves([metrics_path], out_path, metric=metric, title=title,
                            eval_name=eval_name)


def plot_seed_curves(metrics_paths: list[str], out_path: str, *, metric: str,
                     title: str = "", eval_name: str = "validation") -> str | None:
    """Loss (left) and `metric`, the run's selection metric (right, titled as such; the loss
    panel alone carries that title when metric is "loss"), per epoch, train in blue and the
    evaluated split in orange, labelled by its name (`eval_name`: data.eval_split, e.g. "test"
    for IMDB, which has no dev split), one line per seed's metrics.jsonl (several seeds show the
    spread). A train line is missing where the training epoch does not report the metric (the
    selected one is computed for evaluations only). None if nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    runs = [read_metrics(path) for path in metrics_paths]
    runs = [run for run in runs if run.get("train_epoch") or run.get("eval")]
    if not runs:
        return None
    figure = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(figure)
    alpha = 1.0 if len(runs) == 1 else 0.6
    keys = ("loss",) if metric == LOSS else ("loss", metric)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(1, len(keys), index + 1)
        plotted = False
        for split, name, color in (("train_epoch", "train", "tab:blue"),
                                   ("eval", eval_name, "tab:orange")):
            for run in runs:
                epochs, values = _by_epoch(run.get(split, {}), key)
                if epochs:
                    axes.plot(epochs, values, "o-", color=color, linewidth=1.2, alpha=alpha,
                              markersize=3, label=None if plotted_split(axes, name) else name)
                    plotted = True
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(key)
        if key == metric:
            axes.set_title(f"{metric}: selects the best epoch", fontsize="medium")
        axes.grid(True, alpha=0.3)
        if plotted:
            axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    tmp = out_path + ".tmp.png"
    figure.savefig(tmp)
    os.replace(tmp, out_path)
    return out_path
