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

import numpy as np
import pytest

from bertlab import inference
from bertlab.train import finetune, task_data

from conftest import run_on_forced_cpu_devices
from finetune_tables import quick_config, read_jsonl, write_table

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


def test_eval_predictions_table_matches_the_eval_logits(tmp_path):
    data = write_table(tmp_path / "data", "single", sizes=(("train", 32), ("dev", 12), ("test", 8)))
    config = quick_config(data, **{"train.epochs": 1})
    workdir = tmp_path / "run"
    finetune.train_and_evaluate(config, str(workdir))
    logits = np.load(workdir / "seed_0" / "eval_logits.npy")
    lines = (workdir / "seed_0" / "eval_predictions.csv").read_text().splitlines()
    assert lines[0] == "id,text,gold,prediction,prob_negative,prob_positive,correct"
    rows = [line.split(",") for line in lines[1:]]
    split = task_data.load_data(config).eval
    assert [r[0] for r in rows] == [str(i) for i in range(12)]  # dev.tsv has no id column
    assert [r[1] for r in rows] == split.texts
    assert [r[2] for r in rows] == [["negative", "positive"][k] for k in split.labels]
    assert [r[3] for r in rows] == [["negative", "positive"][k] for k in logits.argmax(-1)]
    probabilities = inference.softmax(logits)
    np.testing.assert_allclose([[float(r[4]), float(r[5])] for r in rows], probabilities,
                               atol=1e-6)


def test_packed_embeddings_equal_padded_in_input_order(minilm_dir):
    from bertlab.checkpoints.init_from import resolve_backbone

    backbone = resolve_backbone(str(minilm_dir))
    texts = ["A man is playing a guitar.", "hi", "The stock market fell sharply today " * 6,
             "A woman is slicing an onion.", "ok then"] * 3
    packed = inference.sentence_embeddings(backbone, texts, batch_size=4)
    padded = inference.sentence_embeddings(backbone, texts, batch_size=4, packed=False)
    np.testing.assert_allclose(packed, padded, atol=1e-5, rtol=0)
    again = inference.sentence_embeddings(backbone, texts[::-1], batch_size=4)
    np.testing.assert_allclose(again[::-1], packed, atol=1e-5, rtol=0)


TWO_DEVICES = r'''
import jax, jax.numpy as jnp, numpy as np, optax
from bertlab import inference
from bertlab.data import packing
from bertlab.models import BertForSequenceClassification, variant_config
from bertlab.train import mesh as mesh_lib, steps, task_data
from bertlab.train.state import create_train_state
assert jax.device_count() == 2
mesh = mesh_lib.data_mesh()
config = variant_config("tiny", hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                        vocab_size=50, max_position_embeddings=32, hidden_dropout=0.0,
                        attention_dropout=0.0)
model = BertForSequenceClassification(config, num_labels=2)
rng = np.random.default_rng(0)
n, width = 13, 16
lengths = rng.integers(3, 17, size=n)
encoded = {"token_ids": np.zeros((n, width), np.int32), "segment_ids": np.zeros((n, width), np.int32),
           "attention_mask": np.zeros((n, width), np.int32), "labels": (np.arange(n) % 2).astype(np.int32)}
for i, length in enumerate(lengths):
    encoded["token_ids"][i, :length] = rng.integers(5, 50, size=length)
    encoded["attention_mask"][i, :length] = 1
ids = jnp.zeros((1, 8), jnp.int32)
params = jax.device_get(model.init({"params": jax.random.PRNGKey(0)}, ids, ids, ids + 1)["params"])
state = create_train_state(model, optax.sgd(0.1), mesh_lib.replicate(params, mesh), mesh=mesh)
eval_step = steps.jit_classify_eval_step(mesh=mesh)
packed, packed_loss = inference.run_eval(eval_step, state, encoded, 6, mesh, packed=True)
padded, padded_loss = inference.run_eval(eval_step, state, encoded, 6, mesh)
assert packed.shape == (n, 2)
np.testing.assert_allclose(packed, padded, atol=1e-5)
np.testing.assert_allclose(packed_loss, padded_loss, atol=1e-5)
plan = inference.eval_plan(encoded, 6, mesh)
assert plan.examples % 2 == 0 and all(r % 2 == 0 for r in plan.rows), plan
batches = [np.arange(0, 6), np.arange(6, 12), np.arange(12, 13)]
plan = task_data.plan_packing(packing.example_lengths(encoded["attention_mask"]), batches,
                              examples=6, row_length=width, max_programs=2, multiple=2)
assert all(r % 2 == 0 for r in plan.rows) and plan.examples == 6, plan
train_step = steps.jit_classify_train_step(schedule=lambda s: 0.1, regression=False, frozen=(),
                                           mesh=mesh)
losses = {}
for use_packing in (True, False):
    s = create_train_state(model, optax.sgd(0.1), mesh_lib.replicate(params, mesh), mesh=mesh)
    out = []
    for index, rows in enumerate(batches):
        local = (task_data.packed_batch_of(encoded, rows, 6, plan, index) if use_packing
                 else task_data.batch_of(encoded, rows, 6))
        s, metrics = train_step(s, mesh_lib.global_batch(local, mesh), jax.random.PRNGKey(1))
        out.append(float(metrics["loss"]))
    losses[use_packing] = out
np.testing.assert_allclose(losses[True], losses[False], atol=1e-5)
print("OK", plan.rows, losses[True])
'''


def test_two_devices_round_rows_and_slots_and_agree_with_padded(tmp_path):
    assert run_on_forced_cpu_devices(TWO_DEVICES, 2).startswith("OK")
