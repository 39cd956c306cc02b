"""Packed fine-tuning and inference compute what the padded path computes (issue 14 item 2).

With dropout off, a packed run (data.packing=True, the default) and a padded one
(data.packing=False) take the same examples per update in the same order, so their per-epoch
train losses, eval metrics and eval logits agree to float32 rounding (1e-5), on a single-text
and a pair task; evaluate / predict / embed give the same outputs packed and padded, in the
input's order; the rows and slots of a packed batch are rounded up to the data mesh (2 CPU
devices, in a subprocess).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bertlab import inference
from bertlab.data import packing
from bertlab.train import finetune, task_data

from finetune_tables import REPO, quick_config, read_jsonl, write_table

pytestmark = pytest.mark.usefixtures("module_compilation_cache")

NO_DROPOUT = {"model.hidden_dropout": 0.0, "model.attention_dropout": 0.0}


def run_both(tmp_path, kind: str, **overrides):
    data = write_table(tmp_path / "data", kind, sizes=(("train", 128), ("dev", 40), ("test", 24)))
    if kind == "pair":
        overrides = {"table.text": "s1", "table.text_pair": "s2", **overrides}
    runs = {}
    for packed in (True, False):
        config = quick_config(data, **{**NO_DROPOUT, "train.epochs": 3,
                                       "data.max_train_examples": 0, "data.packing": packed,
                                       **overrides})
        workdir = str(tmp_path / ("packed" if packed else "padded"))
        finetune.train_and_evaluate(config, workdir)
        runs[packed] = (config, workdir)
    return runs


def epoch_lines(workdir: str) -> dict:
    lines = read_jsonl(os.path.join(workdir, "seed_0", "metrics.jsonl"))
    return {kind: [l for l in lines if l["split"] == kind]
            for kind in ("train_epoch", "eval", "test")}


def assert_runs_agree(runs):
    packed, padded = (epoch_lines(runs[p][1]) for p in (True, False))
    for kind in ("train_epoch", "eval", "test"):
        assert len(packed[kind]) == len(padded[kind]) > 0, kind
        for a, b in zip(packed[kind], padded[kind]):
            for name, value in b.items():
                if isinstance(value, float) and name != "time":
                    assert a[name] == pytest.approx(value, abs=1e-5), (kind, name)
    logits = [np.load(os.path.join(runs[p][1], "seed_0", "eval_logits.npy")) for p in (True, False)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["single", "pair"])
def test_packed_and_padded_finetuning_agree_without_dropout(tmp_path, kind):
    runs = run_both(tmp_path, kind)
    assert_runs_agree(runs)
    summary = json.load(open(os.path.join(runs[True][1], "summary.json")))
    assert summary["eval"]["accuracy"]["median"] >= 0.7  # it learns (chance 0.5): not trivial
    lines = read_jsonl(os.path.join(runs[True][1], "seed_0", "metrics.jsonl"))
    efficiency = [l["packing_efficiency"] for l in lines if "packing_efficiency" in l]
    assert efficiency and all(0.3 < e <= 1.0 for e in efficiency)  # rows of 32, texts ~6-20
    padded_lines = read_jsonl(os.path.join(runs[False][1], "seed_0", "metrics.jsonl"))
    assert not any("packing_efficiency" in l for l in padded_lines)

    # the reloaded export predicts the same packed and padded, in input order
    config = runs[True][0]
    model = inference.load_finetuned(runs[True][1])
    split = task_data.load_data(config).eval
    pairs = split.text_pairs if kind == "pair" else None
    packed = inference.predict_logits(model, split.texts, pairs)
    padded = inference.predict_logits(model, split.texts, pairs, packed=False)
    np.testing.assert_allclose(packed, padded, atol=1e-5, rtol=0)
    reversed_logits = inference.predict_logits(model, split.texts[::-1],
                                               None if pairs is None else pairs[::-1])
    np.testing.assert_allclose(reversed_logits[::-1], packed, atol=1e-5, rtol=0)
    metrics_packed, _ = inference.evaluate_split(model, split)
    metrics_padded, _ = inference.evaluate_split(model, split, packed=False)
    for name, value in metrics_padded.items():
        assert metrics_packed[name] == pytest.approx(value, abs=1e-5), name
