"""The fine-tuning loop end to end: from scratch on learnable synthetic tables (tests/
finetune_tables.py) with two seeds, early stopping, the workdir it leaves, reruns, regression,
divergence, the CLI with a pair task; then a real task, all-MiniLM-L6-v2 on SST-2 (skipped when
../shared is absent)."""

import json
import os
import re

import jax
import numpy as np
import pytest

from bertlab import inference
from bertlab.checkpoints import init_from
from bertlab.commands import evaluate as evaluate_cmd
from bertlab.commands import finetune as finetune_cmd
from bertlab.commands import predict as predict_cmd
from bertlab.train import finetune, task_data
from bertlab.train.loop import NonFiniteLossError, TrainConfigError

from conftest import shared_path
from finetune_tables import finetune_configs, quick_config, read_jsonl, write_table

pytestmark = pytest.mark.usefixtures("module_compilation_cache")


# ---------------------------------------------------------------------- end to end (scratch)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """Keyword task from scratch, two seeds in one call, up to 6 epochs with patience 2: the dev
    accuracy reaches its ceiling 1.0 by epoch 2 or 3 (measured: 2), so the two epochs after it
    cannot improve on it and each seed stops early."""
    data = write_table(tmp_path_factory.mktemp("single_data"), "single")
    workdir = str(tmp_path_factory.mktemp("single_run"))
    config = quick_config(data, **{"train.seeds": (0, 1), "train.epochs": 6,
                                   "train.early_stopping_patience": 2})
    summary = finetune.train_and_evaluate(config, workdir)
    return config, workdir, summary


def test_from_scratch_learns_a_keyword_task_with_two_seeds(single_run):
    config, workdir, summary = single_run
    assert summary["seeds"] == [0, 1] and summary["task"] == "tsv"
    for seed in (0, 1):
        result = json.load(open(os.path.join(workdir, f"seed_{seed}", "result.json")))
        assert result["eval"]["accuracy"] == 1.0, result  # chance is 0.5
        # 256 examples / batch 8 = 32 updates per epoch, 6 epochs planned: 192, int(0.1 * 192)
        assert (result["num_steps"], result["warmup_steps"]) == (192, 19)
        assert summary["per_seed"][str(seed)]["eval"] == result["eval"]


def test_early_stopping_after_patience_epochs(single_run):
    _, workdir, summary = single_run
    for seed in ("0", "1"):
        result = summary["per_seed"][seed]
        assert result["stopped_early"] and result["best_epoch"] <= 3, result
        assert result["epochs_run"] == result["best_epoch"] + 2  # patience 2
        assert result["steps"] == 32 * result["epochs_run"]
        records = read_jsonl(os.path.join(workdir, f"seed_{seed}", "metrics.jsonl"))
        evals = [r for r in records if r["split"] == "eval"]
        assert [r["epoch"] for r in evals] == list(range(1, result["epochs_run"] + 1))
        assert evals[-1]["accuracy"] <= evals[result["best_epoch"] - 1]["accuracy"]
    accuracies = [summary["per_seed"][s]["eval"]["accuracy"] for s in ("0", "1")]
    assert summary["eval"]["accuracy"]["median"] == pytest.approx(np.median(accuracies))
    assert summary["eval"]["accuracy"]["min"] == min(accuracies)
    assert summary["test"]["accuracy"]["n"] == 2


def test_workdir_layout_metrics_and_plots(single_run):
    config, workdir, _ = single_run
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["task"] == "tsv" and saved["train"]["seeds"] == [0, 1]
    records = read_jsonl(os.path.join(workdir, "seed_0", "metrics.jsonl"))
    per_epoch = {split: [r for r in records if r["split"] == split]
                 for split in ("train_epoch", "eval", "test")}
    epochs = list(range(1, json.load(open(os.path.join(workdir, "seed_0", "result.json")))[
        "epochs_run"] + 1))
    assert [r["epoch"] for r in per_epoch["eval"]] == epochs
    assert [r["epoch"] for r in per_epoch["train_epoch"]] == epochs
    assert all({"loss", "accuracy", "f1"} <= set(r) for r in per_epoch["eval"])
    assert len(per_epoch["test"]) == 1
    assert any(r["split"] == "train" and "grad_norm" in r for r in records)
    for png in ("seed_0/curves.png", "curves.png"):  # one seed; every seed overlaid
        with open(os.path.join(workdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isdir(os.path.join(workdir, "seed_0", "tensorboard"))


def test_from_scratch_vocabulary_comes_from_the_training_texts(single_run):
    config, workdir, _ = single_run
    tokens = open(os.path.join(workdir, "vocab.txt")).read().split("\n")
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "excellent" in tokens and "director" in tokens
    export = init_from.load_export(os.path.join(workdir, "seed_0", "model"))
    assert export.config.vocab_size == len([t for t in tokens if t])
    assert (export.config.hidden_size, export.config.num_layers) == (32, 1)
    assert open(export.vocab_path).read() == open(os.path.join(workdir, "vocab.txt")).read()


def test_rerun_keeps_finished_seeds_and_refuses_another_recipe(single_run, capsys):
    config, workdir, summary = single_run
    result_path = os.path.join(workdir, "seed_1", "result.json")
    mtime = os.stat(result_path).st_mtime_ns
    again = finetune.train_and_evaluate(config, workdir)
    assert os.stat(result_path).st_mtime_ns == mtime
    assert again["eval"] == summary["eval"]
    assert "finished earlier" in capsys.readouterr().out
    changed = quick_config(config.data.data_dir, **{"train.seeds": (0, 1), "train.epochs": 6,
                                                    "train.early_stopping_patience": 2})
    changed.optimizer.lr = 1e-4
    with pytest.raises(TrainConfigError, match="optimizer.lr=0.003"):
        finetune.train_and_evaluate(changed, workdir)


def test_reloaded_export_predicts_what_training_scored(single_run):
    config, workdir, _ = single_run
    model = inference.load_finetuned(workdir)  # the best seed
    assert model.export.meta["seed"] == json.load(open(os.path.join(workdir, "summary.json")))[
        "best_seed"]
    prepared_eval = task_data.load_data(config).eval
    logits = inference.predict_logits(model, prepared_eval.texts)
    saved = np.load(os.path.join(os.path.dirname(model.export.directory), "eval_logits.npy"))
    np.testing.assert_allclose(logits, saved, atol=1e-6, rtol=0)
    labels = model.spec.label_names
    clear = inference.predict_logits(model, ["the excellent film", "a terrible long movie"])
    assert [labels[i] for i in clear.argmax(-1)] == ["positive", "negative"]


def test_regression_from_scratch_learns_a_level(tmp_path):
    data = write_table(tmp_path / "data", "regression")
    config = quick_config(data, **{"train.epochs": 5, "table.regression": True})
    summary = finetune.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["metric"] == "pearson"
    assert summary["eval"]["pearson"]["median"] > 0.9, summary["eval"]  # measured 0.996
    model = inference.load_finetuned(str(tmp_path / "run"))
    assert model.spec.is_regression and model.spec.num_labels == 1
    values = inference.predict_logits(model, ["the none film", "a high film"])[:, 0]
    assert values[1] - values[0] > 1.5  # targets 0 and 3


def test_a_diverging_run_stops_with_the_step_range_and_exit_status_1(tmp_path, capsys):
    """lr 1e38 overflows the logits within a few updates: the run must stop, not train on NaN."""
    data = write_table(tmp_path / "data", "single")
    config = quick_config(data, **{"train.epochs": 1, "optimizer.lr": 1e38})
    with pytest.raises(NonFiniteLossError, match=r"seed 0: loss became nan within steps \[1, 8\]"
                       ) as raised:
        finetune.train_and_evaluate(config, str(tmp_path / "run"))
    assert "no model/ was written" in str(raised.value)  # no epoch ended: nothing is kept
    assert not os.path.exists(tmp_path / "run" / "seed_0" / "result.json")  # the seed is not done
    code = finetune_cmd.main(["--config", "configs/finetune.py:task=tsv,recipe=quick",
                              "--workdir", str(tmp_path / "cli"), f"--config.data.data_dir={data}",
                              "--config.table.text=sentence", "--config.optimizer.lr=1e38"])
    assert code == 1
    assert "loss became nan" in capsys.readouterr().err


# --------------------------------------------------------------------------- the CLI, pairs


def test_cli_pair_task_finetune_evaluate_predict(tmp_path, capsys):
    data = write_table(tmp_path / "data", "pair")
    workdir = str(tmp_path / "run")
    code = finetune_cmd.main(["--config", "configs/finetune.py:task=tsv,recipe=quick",
                              "--workdir", workdir, f"--config.data.data_dir={data}",
                              "--config.table.text=s1", "--config.table.text_pair=s2",
                              "--config.train.epochs=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "eval accuracy" in out
    assert json.load(open(os.path.join(workdir, "summary.json")))["eval"]["accuracy"][
        "median"] >= 0.9  # the label is in the second text only: pairs are packed and seen

    assert evaluate_cmd.main(["--workdir", workdir, "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "tsv test: 64 examples" in out and "confusion matrix" in out
    accuracy = float(re.search(r"accuracy\s+([0-9.]+)", out).group(1))
    table = re.search(r"true \\ predicted\s+different\s+same\n(.*)\n(.*)", out)
    counts = [[int(x) for x in line.split()[1:]] for line in table.groups()]
    assert sum(map(sum, counts)) == 64
    assert accuracy == pytest.approx((counts[0][0] + counts[1][1]) / 64, abs=1e-4)

    inputs = tmp_path / "pairs.txt"
    inputs.write_text("the film\tthe yes movie\n\nold camera\tno story long\n")
    assert predict_cmd.main(["--workdir", workdir, str(inputs)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines[0] == "label\tp(different)\tp(same)\ttext"
    assert [line.split("\t")[0] for line in lines[1:]] == ["same", "different"]
    probabilities = [float(x) for x in lines[1].split("\t")[1:3]]
    assert sum(probabilities) == pytest.approx(1.0, abs=2e-4)

    inputs.write_text("one text only\n")
    assert predict_cmd.main(["--workdir", workdir, str(inputs)]) == 2
    assert "pairs.txt:1: a pair task needs TEXT<tab>TEXT" in capsys.readouterr().err


# ------------------------------------------------------------------ a real task: MiniLM, SST-2


@pytest.fixture(scope="module")
def minilm_sst2(tmp_path_factory):
    """all-MiniLM-L6-v2 frozen, one fresh encoder layer + pooler trained on 256 SST-2 sentences
    for one epoch (the KerasNLP frozen-backbone recipe, shrunk)."""
    model_dir = shared_path("models", "all-MiniLM-L6-v2")
    glue = shared_path("data", "glue_data", "SST-2")
    config = finetune_configs.get_config("task=sst2,recipe=frozen")
    config.model.init_from = str(model_dir)
    config.data.data_dir = str(glue.parent)
    config.model.extra_layers = 1
    config.data.max_train_examples, config.data.max_eval_examples = 256, 200
    config.data.max_seq_length, config.data.batch_size, config.train.epochs = 32, 16, 1
    config.optimizer.lr = 1e-3
    workdir = str(tmp_path_factory.mktemp("minilm_sst2"))
    return config, workdir, finetune.train_and_evaluate(config, workdir), model_dir


def test_minilm_frozen_backbone_beats_chance_on_sst2(minilm_sst2):
    _, _, summary, _ = minilm_sst2
    # 200 dev sentences, about half positive: chance is 0.5 (std 0.035); measured 0.73
    assert summary["eval"]["accuracy"]["median"] > 0.65, summary["eval"]


def test_minilm_frozen_backbone_is_bitwise_the_checkpoint(minilm_sst2):
    _, workdir, _, model_dir = minilm_sst2
    original = init_from.resolve_backbone(str(model_dir))
    export = init_from.load_export(os.path.join(workdir, "seed_0", "model"))
    flat = lambda tree: dict(jax.tree_util.tree_leaves_with_path(tree))
    before, after = flat(original.params), flat(export.params["bert"])
    assert before.keys() == after.keys()
    for path, value in before.items():
        assert np.asarray(value).tobytes() == np.asarray(after[path]).tobytes(), path
    assert export.extra_layers == 1 and "head_encoder" in export.params


def test_minilm_reload_gives_identical_predictions(minilm_sst2):
    config, workdir, _, _ = minilm_sst2
    model = inference.load_finetuned(workdir)
    assert model.tokenizer.lower_case and model.spec.label_names == ("negative", "positive")
    dev = task_data.load_data(config).eval
    metrics, logits = inference.evaluate_split(model, dev)
    saved = np.load(os.path.join(workdir, "seed_0", "eval_logits.npy"))
    np.testing.assert_allclose(logits, saved, atol=1e-6, rtol=0)
    result = json.load(open(os.path.join(workdir, "seed_0", "result.json")))
    assert metrics["accuracy"] == result["eval"]["accuracy"]


@pytest.mark.slow
def test_minilm_full_finetune_sst2(tmp_path):
    """Every weight trained: 1,024 sentences, 2 epochs, lr 1e-4 (5 minutes on 2 busy cores)."""
    config = finetune_configs.get_config("task=sst2")
    config.model.init_from = str(shared_path("models", "all-MiniLM-L6-v2"))
    config.data.data_dir = str(shared_path("data", "glue_data"))
    config.data.max_train_examples, config.data.max_eval_examples = 1024, 400
    config.data.max_seq_length, config.train.epochs = 64, 2
    config.optimizer.lr = 1e-4
    summary = finetune.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["eval"]["accuracy"]["median"] > 0.75, summary["eval"]  # measured 0.8025
