"""The loss curve of a run (train and eval MLM loss against step), from metrics.jsonl.

Uses matplotlib's object API with the Agg canvas, so no global backend is switched and no display
is needed.
"""

from __future__ import annotations

import math
import os

from bertlab.train.metric_writer import read_metrics

LOSS_PLOT = "loss.png"


def _series(records: dict[int, dict], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for step in sorted(records):
        value = records[step].get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(step)
            values.append(float(value))
    return steps, values


def plot_loss_curve(metrics_path: str, out_path: str, *, title: str = "") -> str | None:
    """Writes the PNG (atomically) and returns its path; None when there is nothing to plot yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = read_metrics(metrics_path)
    train = _series(metrics.get("train", {}), "loss")
    train_mlm = _series(metrics.get("train", {}), "mlm_loss")
    evaluation = _series(metrics.get("eval", {}), "mlm_loss")
    if not train[0] and not evaluation[0]:
        return None
    figure = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if train[0]:
        axes.plot(*train, label="train loss", color="tab:blue", linewidth=1.2)
    if train_mlm[0] and train_mlm[1] != train[1]:
        axes.plot(*train_mlm, label="train MLM loss", color="tab:cyan", linewidth=1.0)
    if evaluation[0]:
        axes.plot(*evaluation, "o-", label="eval MLM loss", color="tab:orange", linewidth=1.2)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats)")
    axes.set_title(title or os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    tmp = out_path + ".tmp.png"
    figure.savefig(tmp)
    os.replace(tmp, out_path)
    return out_path
