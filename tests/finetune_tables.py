"""Shared by the fine-tuning tests: learnable synthetic tables (a keyword decides the label, the
second text of a pair decides it, a word count is the regression target) and the quick config
pointed at them. A 1-layer hidden-32 model trained from scratch reaches (near) perfect dev scores
on them in seconds, which checks the whole path does what it should, not just that it runs.
"""

import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import finetune as finetune_configs  # noqa: E402  (configs/finetune.py)

LEVELS = ("none", "low", "mid", "high")
FILLER = ("the a film movie story actor plot scene music ending cast script director camera long "
          "short old new").split()


def synthetic_rows(kind: str, n: int, seed: int):
    """(text, text_pair, label) rows; the label is decided by one token, so it is learnable."""
    rng = np.random.default_rng(seed)
    words = lambda: list(rng.choice(FILLER, size=int(rng.integers(3, 9))))
    rows = []
    for i in range(n):
        first = words()
        if kind == "single":
            first.insert(int(rng.integers(len(first) + 1)), "excellent" if i % 2 else "terrible")
            rows.append((" ".join(first), None, ["negative", "positive"][i % 2]))
        elif kind == "pair":  # only the SECOND text carries the answer
            second = words()
            second.insert(int(rng.integers(len(second) + 1)), "yes" if i % 2 else "no")
            rows.append((" ".join(first), " ".join(second), ["different", "same"][i % 2]))
        else:  # regression: a level word says the target, 0 to 3
            level = int(rng.integers(0, 4))
            first.insert(int(rng.integers(len(first) + 1)), LEVELS[level])
            rows.append((" ".join(first), None, str(level)))
    return rows


def write_table(folder, kind: str, sizes=(("train", 256), ("dev", 96), ("test", 64))) -> str:
    os.makedirs(folder, exist_ok=True)
    for seed, (split, n) in enumerate(sizes):
        with open(os.path.join(folder, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("s1\ts2\tlabel\n" if kind == "pair" else "sentence\tlabel\n")
            for a, b, label in synthetic_rows(kind, n, seed + 1):
                f.write(f"{a}\t{label}\n" if b is None else f"{a}\t{b}\t{label}\n")
    return str(folder)


def quick_config(data_dir: str, **overrides):
    """The quick recipe on a synthetic table; overrides by dotted key ("train.epochs": 6)."""
    config = finetune_configs.get_config("task=tsv,recipe=quick")
    config.data.data_dir = data_dir
    config.table.text = "sentence"
    config.data.test_split = "test"
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
