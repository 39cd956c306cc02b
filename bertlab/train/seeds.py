"""Several seeds of one fine-tuning recipe: which seeds run, their summary (summary.json), and the
probe that warns when a pretrained backbone is collapsed before any seed is spent on it.

A seed whose result.json exists is finished and kept; an unfinished one restarts from scratch
(fine-tuning runs are short: no mid-run resume). The spread over seeds uses bertlab.lab.stats,
as study reports do, so a single seed has no standard deviation (None) in both.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Sequence

import numpy as np

from bertlab.checkpoints import init_from as init_from_lib
from bertlab.data.tasks.registry import TaskSpec
from bertlab.lab import stats
from bertlab.train import selection

RESULT_FILE = "result.json"
# A backbone whose mean-pooled outputs of different texts all have cosine above this is collapsed.
COLLAPSE_COSINE = 0.999
COLLAPSE_PROBE_EXAMPLES = 16


def seeds_of(train_config) -> tuple[int, ...]:
    """train.seeds, or the one train.seed."""
    return tuple(train_config.seeds) or (train_config.seed,)


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def run_seeds(seeds: Sequence[int], workdir: str, train_seed: Callable[[int, str], dict], *,
              log=print) -> list[dict]:
    """Each seed's result: read back when its result.json exists, else `train_seed(seed, dir)`
    in a fresh seed directory."""
    results = []
    for seed in seeds:
        directory = seed_dir(workdir, seed)
        result_path = os.path.join(directory, RESULT_FILE)
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                results.append(json.load(f))
            log(f"seed {seed}: finished earlier ({result_path}), kept")
            continue
        if os.path.exists(directory):
            log(f"seed {seed}: an unfinished run is in {directory}; restarting it from scratch")
            shutil.rmtree(directory)
        results.append(train_seed(seed, directory))
    return results


def spread(values: Sequence[float]) -> dict:
    """median, mean, min, max and std (sample, n - 1; None for one value) of per-seed numbers."""
    array = np.asarray(values, np.float64)
    return {"median": stats.median(array), "mean": stats.mean(array),
            "min": float(np.min(array)), "max": float(np.max(array)), "std": stats.std(array),
            "n": int(len(array)), "values": [float(v) for v in array]}


def primary(metrics: dict, spec: TaskSpec) -> float:
    """The task's primary metric, -inf when missing or not finite (never the best)."""
    return selection.rank(metrics, spec.metric)


def summarize(spec: TaskSpec, results: Sequence[dict], metric: str | None = None) -> dict:
    """summary.json: each metric's spread over seeds (eval at each seed's best epoch, and test),
    and the seed with the best eval `metric` (train.select_metric, resolved; None = the task's
    primary metric), the earlier seed on a tie: what evaluate / predict load by default."""
    metric = metric or spec.metric
    summary = {"task": spec.name, "metric": metric, "seeds": [r["seed"] for r in results],
               "per_seed": {str(r["seed"]): r for r in results}}
    for part in ("eval", "test"):
        rows = [r[part] for r in results if r.get(part)]
        if rows:
            summary[part] = {name: spread([row[name] for row in rows]) for name in rows[0]}
    summary["best_seed"] = selection.best_of(list(results), metric)["seed"]
    return summary


def backbone_collapse(backbone: init_from_lib.Backbone, texts: Sequence[str]) -> float:
    """The lowest cosine similarity between the mean-pooled outputs of `texts` (1.0 = the
    backbone ignores its input). Measured on a 400-step MLM demo pretraining, whose fine-tuning
    stayed at the majority class: 1.0000; all-MiniLM-L6-v2 on SST-2 sentences: -0.04."""
    from bertlab.inference import cosine_matrix, sentence_embeddings

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return 0.0
    return float(np.min(cosine_matrix(sentence_embeddings(backbone, texts, max_seq_length=64))))


def warn_if_collapsed(backbone: init_from_lib.Backbone, texts: Sequence[str], init_from: str,
                      *, log=print) -> None:
    """Says so when a pretrained backbone gives (nearly) one vector for every training text."""
    if backbone.params is None:
        return
    similarity = backbone_collapse(backbone, texts[:COLLAPSE_PROBE_EXAMPLES])
    if similarity > COLLAPSE_COSINE:
        log(f"warning: model.init_from={init_from!r} gives (nearly) the same vector for "
            f"every input (lowest cosine {similarity:.4f} between {COLLAPSE_PROBE_EXAMPLES} "
            f"training examples): an undertrained backbone, e.g. an MLM still at the "
            f"unigram stage. Fine-tuning may not leave the majority class; pretrain longer.")
