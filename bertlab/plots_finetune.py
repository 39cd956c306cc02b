"""Per-epoch curves of a fine-tuning run: loss and the task's metric, train and validation.

bertlab.plots draws pretraining's loss against step; fine-tuning is read per epoch and needs the
task metric beside the loss, so it has its own figure here (two panels, one PNG). Reads the
"train_epoch" and "eval" records of metrics.jsonl; matplotlib's object API with the Agg canvas.
"""

from __future__ import annotations

import math
import os

from bertlab.metric_writer import read_metrics

CURVES_PLOT = "curves.png"


def _by_epoch(records: dict[int, dict], key: str) -> tuple[list[int], list[float]]:
    points = {}
    for record in records.values():
        value, epoch = record.get(key), record.get("epoch")
        if isinstance(value, (int, float)) and math.isfinite(value) and epoch is not None:
            points[int(epoch)] = float(value)
    epochs = sorted(points)
    return epochs, [points[e] for e in epochs]


def plot_epoch_curves(metrics_path: str, out_path: str, *, metric: str,
                      title: str = "") -> str | None:
    """Writes the PNG (atomically) and returns its path; None before the first epoch ends."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = read_metrics(metrics_path)
    train, evaluation = metrics.get("train_epoch", {}), metrics.get("eval", {})
    if not train and not evaluation:
        return None
    figure = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(figure)
    for index, (key, label) in enumerate((("loss", "loss"), (metric, metric))):
        axes = figure.add_subplot(1, 2, index + 1)
        for records, name, color in ((train, "train", "tab:blue"),
                                     (evaluation, "validation", "tab:orange")):
            epochs, values = _by_epoch(records, key)
            if epochs:
                axes.plot(epochs, values, "o-", label=name, color=color, linewidth=1.2)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(title or os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
    figure.tight_layout()
    tmp = out_path + ".tmp.png"
    figure.savefig(tmp)
    os.replace(tmp, out_path)
    return out_path
