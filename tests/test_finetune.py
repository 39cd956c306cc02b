"""Fine-tuning: the config, the optimizer pieces, the train step, the loop, the CLI.

Learnable synthetic tables (a keyword decides the label, the second text of a pair decides it, a
word count is the regression target) let a 1-layer hidden-32 model trained from scratch reach
(near) perfect dev scores in seconds: that checks the whole path (vocabulary learned on the
training texts, packing of pairs, losses, evaluation, export) does what it should, not just that it
runs. The real-task check is all-MiniLM-L6-v2 on SST-2 (skipped when ../shared is absent).
"""

import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab.train import finetune
from bertlab.checkpoints import init_from
from bertlab.train import steps
from bertlab.commands import evaluate as evaluate_cmd
from bertlab.data.tasks.registry import TASKS
from bertlab.commands import finetune as finetune_cmd
from bertlab.commands import predict as predict_cmd
from bertlab.models import BertForSequenceClassification, variant_config
from bertlab.train.state import create_train_state
from bertlab.train.mesh import data_mesh, replicate
from bertlab.train.pretrain import NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import finetune as finetune_configs  # noqa: E402  (configs/finetune.py)

from conftest import shared_path  # noqa: E402

LEVELS = ("none", "low", "mid", "high")
FILLER = ("the a film movie story actor plot scene music ending cast script director camera long "
          "short old new").split()


pytestmark = pytest.mark.usefixtures("module_compilation_cache")


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
    config = finetune_configs.get_config("task=tsv,recipe=quick")
    config.data_dir = data_dir
    config.table.text = "sentence"
    config.test_split = "test"
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


# --------------------------------------------------------------------------------- config file


def test_recipes_follow_the_paper_and_the_tutorials():
    mrpc = finetune_configs.get_config("task=mrpc,variant=tiny")
    assert (mrpc.task, mrpc.optimizer.lr, mrpc.epochs, mrpc.batch_size, mrpc.max_seq_length) == \
        ("mrpc", 2e-5, 5, 32, 128)
    assert mrpc.model.variant == "tiny" and mrpc.optimizer.name == "adamw"
    sst2 = finetune_configs.get_config("sst2")
    assert (sst2.optimizer.lr, sst2.epochs, sst2.batch_size, sst2.optimizer.warmup_fraction) == \
        (2e-5, 3, 32, 0.1)
    snli = finetune_configs.get_config("task=snli")  # KerasNLP semantic-similarity recipe
    assert (snli.optimizer.name, snli.optimizer.lr, snli.optimizer.warmup_fraction, snli.epochs,
            snli.batch_size, snli.eval_split, snli.test_split) == \
        ("adamw", 1e-4, 0.2, 3, 16, "dev", "test")
    adam = finetune_configs.get_config("task=snli,recipe=adam")
    assert (adam.optimizer.name, adam.optimizer.lr, adam.optimizer.warmup_fraction,
            adam.optimizer.weight_decay, adam.epochs) == ("adam", 5e-5, 0.0, 0.0, 1)
    scratch = finetune_configs.get_config("task=imdb,recipe=scratch")
    assert scratch.from_scratch and scratch.vocab_size == 20000 and scratch.max_seq_length == 512
    assert (scratch.model.num_layers, scratch.model.hidden_size, scratch.model.num_heads,
            scratch.model.intermediate_size, scratch.epochs) == (1, 64, 2, 128, 3)
    assert scratch.eval_split == "test"  # IMDB has no dev split
    frozen = finetune_configs.get_config("task=imdb,recipe=frozen")
    assert frozen.freeze_backbone and frozen.extra_layers == 2


def test_every_config_key_is_commented():
    source = open(os.path.join(REPO, "configs", "finetune.py")).read()
    body = source[source.index("def get_config"):source.index("    if recipe ==")]
    assignments = re.findall(r"^\s+(?:config|table|model|opt)\.(\w+) = .*$", body, re.M)
    uncommented = [line for line in re.findall(r"^\s+(?:config|table|model|opt)\.\w+ = .*$",
                                               body, re.M)
                   if "#" not in line and "ConfigDict()" not in line]
    assert len(assignments) > 30 and uncommented == []


def test_config_argument_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'nosuch'"):
        finetune_configs.get_config("task=nosuch")
    with pytest.raises(ValueError, match="unknown argument 'lr'"):
        finetune_configs.get_config("task=mrpc,lr=3")
    with pytest.raises(ValueError, match="unknown recipe"):
        finetune_configs.get_config("task=mrpc,recipe=fast")


def test_bad_overrides_exit_with_one_line(tmp_path, capsys):
    base = ["--config", "configs/finetune.py:task=mrpc", "--workdir", str(tmp_path / "w")]
    assert finetune_cmd.main(base + ["--config.optimizer.lrr=1e-4"]) == 2
    assert "did you mean 'optimizer.lr'" in capsys.readouterr().err
    assert finetune_cmd.main(base + ["--config.epochs=three"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert finetune_cmd.main(base) == 2  # neither init_from nor from_scratch
    assert "init_from" in capsys.readouterr().err
    missing = str(tmp_path / "no_such_model")
    assert finetune_cmd.main(base + [f"--config.init_from={missing}",
                                     f"--config.data_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "no such file" in err
    assert not os.path.exists(tmp_path / "w" / "seed_0")


def test_model_overrides_apply_to_a_pretrained_backbone_but_sizes_are_refused():
    backbone = init_from.Backbone(variant_config("tiny", vocab_size=50), None, "vocab.txt", True,
                                  "huggingface", "somewhere")
    config = finetune_configs.get_config("task=sst2")
    config.init_from = "somewhere"
    config.model.hidden_dropout, config.model.attention_dropout = 0.3, 0.0
    model_config = finetune.finetune_model_config(config, backbone)
    assert (model_config.hidden_dropout, model_config.attention_dropout) == (0.3, 0.0)
    assert model_config.hidden_size == 128 and model_config.vocab_size == 50
    config.model.hidden_size = 256
    with pytest.raises(finetune.FinetuneConfigError, match=r"model.hidden_size=256 .* has "
                                                           r"hidden_size=128"):
        finetune.finetune_model_config(config, backbone)
    config.model.hidden_size = None
    config.max_seq_length = 1024
    with pytest.raises(finetune.FinetuneConfigError, match="max_position_embeddings=512"):
        finetune.finetune_model_config(config, backbone)
    scratch = finetune_configs.get_config("task=imdb,recipe=scratch")
    sizes = finetune.scratch_model_config(scratch, 20000)
    assert (sizes.num_layers, sizes.hidden_size, sizes.num_heads, sizes.intermediate_size,
            sizes.vocab_size, sizes.max_position_embeddings) == (1, 64, 2, 128, 20000, 512)


def test_config_values_are_checked_by_name():
    config = finetune_configs.get_config("task=sst2")
    config.init_from = "x"
    for key, value, message in (("optimizer.warmup_fraction", 1.5, "warmup_fraction=1.5"),
                                ("optimizer.name", "sgd", "optimizer.name='sgd'"),
                                ("seeds", (1, 1), "repeats a seed"),
                                ("batch_size", 0, "batch_size=0")):
        bad = finetune_configs.get_config("task=sst2")
        bad.init_from = "x"
        node, *rest = key.split(".")
        if rest:
            bad[node][rest[0]] = value
        else:
            bad[node] = value
        with pytest.raises(finetune.FinetuneConfigError, match=re.escape(message)):
            finetune.check_config(bad)
    finetune.check_config(config)


def test_from_scratch_with_a_given_vocabulary_uses_it_and_keeps_a_copy(tmp_path):
    """The no-pretraining control of a pretraining ablation: random init, but the pretrained
    arms' vocabulary, so only the weights differ."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "##s"]
    given = tmp_path / "pretrain_vocab.txt"
    given.write_text("\n".join(tokens) + "\n")
    config = finetune_configs.get_config("task=sst2")
    config.from_scratch, config.vocab = True, str(given)
    config.model.hidden_size, config.model.num_layers = 32, 1
    config.model.num_heads, config.model.intermediate_size = 2, 64
    finetune.check_config(config)
    workdir = tmp_path / "run"
    workdir.mkdir()
    backbone = finetune.prepare_backbone(config, str(workdir), None)  # no texts: nothing learned
    assert backbone.params is None and backbone.config.vocab_size == 9
    assert open(backbone.vocab_path).read().split() == tokens
    assert backbone.vocab_path == str(workdir / "vocab.txt")
    # a workdir made with another vocabulary is refused, a missing file or init_from too
    (tmp_path / "other.txt").write_text("\n".join(tokens[:-1]) + "\n")
    config.vocab = str(tmp_path / "other.txt")
    with pytest.raises(finetune.FinetuneConfigError, match="differs from"):
        finetune.prepare_backbone(config, str(workdir), None)
    config.vocab = str(tmp_path / "missing.txt")
    with pytest.raises(finetune.FinetuneConfigError, match="missing.txt': file not found"):
        finetune.check_config(config)
    config.vocab, config.from_scratch, config.init_from = str(given), False, "x"
    with pytest.raises(finetune.FinetuneConfigError, match="only with from_scratch"):
        finetune.check_config(config)


# ------------------------------------------------------------------------ schedule, optimizer


def test_warmup_steps_from_dataset_size_epochs_and_fraction():
    # SNLI tutorial arithmetic on a 1,000-example set: ceil(1000 / 16) = 63 batches per epoch
    # (the last one has 8 examples), 3 epochs = 189 updates, int(0.2 * 189) = 37 of warm-up.
    assert finetune.training_steps(1000, 16, 3, 0.2) == (63, 189, 37)
    assert finetune.training_steps(1024, 16, 3, 0.2) == (64, 192, 38)
    assert finetune.training_steps(5, 8, 2, 0.5) == (1, 2, 1)
    opt = finetune_configs.get_config("task=snli").optimizer
    _, schedule = finetune.make_finetune_optimizer(opt, num_steps=189, warmup_steps=37)
    rates = [float(schedule(s)) for s in (0, 18, 37, 113, 189)]
    assert rates[0] == 0.0 and rates[2] == pytest.approx(1e-4)
    assert rates[1] == pytest.approx(1e-4 * 18 / 37)
    assert rates[3] == pytest.approx(1e-4 * (189 - 113) / (189 - 37))  # triangular decay
    assert rates[4] == 0.0


def test_adam_recipe_is_plain_adam_at_a_constant_rate():
    opt = finetune_configs.get_config("task=snli,recipe=adam").optimizer
    tx, schedule = finetune.make_finetune_optimizer(opt, num_steps=50, warmup_steps=0)
    reference = optax.adam(5e-5, b1=0.9, b2=0.999, eps=1e-7)
    params = {"w": jnp.arange(6.0).reshape(2, 3), "LayerNorm": {"bias": jnp.ones(3)}}
    state, ref_state = tx.init(params), reference.init(params)
    for i in range(3):
        grads = jax.tree_util.tree_map(lambda p: jnp.sin(p + i), params)
        updates, state = tx.update(grads, state, params)
        ref_updates, ref_state = reference.update(grads, ref_state, params)
        for a, b in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(ref_updates)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    assert [float(schedule(s)) for s in (0, 10, 49)] == [np.float32(5e-5)] * 3


def test_frozen_groups_get_zero_updates_and_no_optimizer_state():
    opt = finetune_configs.get_config("task=sst2").optimizer
    tx, _ = finetune.make_finetune_optimizer(opt, num_steps=10, warmup_steps=0, frozen=("bert",))
    params = {"bert": {"kernel": jnp.ones((4, 4))}, "classifier": {"kernel": jnp.ones((4, 2))}}
    state = tx.init(params)
    sizes = sum(x.size for x in jax.tree_util.tree_leaves(state))
    assert sizes < 2 * 16 + 3 * 8  # Adam moments only for the classifier (2 x 8) + counters
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    assert not np.any(np.asarray(updates["bert"]["kernel"]))
    assert np.all(np.asarray(updates["classifier"]["kernel"]) != 0)


# ------------------------------------------------------------------------------ train step


def test_losses_hand_computed():
    logits = jnp.array([[0.0, np.log(3.0)], [2.0, 0.0]])
    ce = steps.classification_losses(logits, jnp.array([1, 1]), regression=False)
    np.testing.assert_allclose(ce, [-np.log(0.75), -np.log(1 / (1 + np.e ** 2))], rtol=1e-6)
    mse = steps.classification_losses(jnp.array([[1.0], [3.0]]), jnp.array([2.0, 1.0]),
                                      regression=True)
    np.testing.assert_allclose(mse, [1.0, 4.0])


def _tiny_state():
    """A 1-layer hidden-16 classifier with one extra layer, backbone frozen, lr 1e-2."""
    config = variant_config("tiny", hidden_size=16, num_layers=1, num_heads=2,
                            intermediate_size=32, vocab_size=40, max_position_embeddings=16)
    model = BertForSequenceClassification(config, num_labels=2, extra_layers=1)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(lambda key: model.init({"params": key}, ids, ids, ids + 1)["params"])(
        jax.random.PRNGKey(0))
    params = replicate(params, data_mesh())  # as the loop places them: one compilation
    opt = finetune_configs.get_config("task=sst2").optimizer
    opt.lr = 1e-2
    tx, schedule = finetune.make_finetune_optimizer(opt, num_steps=10, warmup_steps=0,
                                                    frozen=("bert",))
    return create_train_state(model, tx, params, mesh=data_mesh()), schedule


@pytest.fixture(scope="module")
def tiny_step():
    """(fresh-state factory, the jitted train step as the loop builds it): compiled once."""
    _, schedule = _tiny_state()
    step = steps.jit_classify_train_step(schedule=schedule, regression=False, frozen=("bert",),
                                         mesh=data_mesh())
    return (lambda: _tiny_state()[0]), step


def _batch(rng, batch=4, length=8):
    ids = rng.integers(5, 40, size=(batch, length)).astype(np.int32)
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids),
            "attention_mask": np.ones_like(ids), "labels": rng.integers(0, 2, batch).astype(np.int32),
            "example_weights": np.array([1, 1, 1, 0], np.float32)}


def test_train_step_keeps_a_frozen_backbone_bitwise(tiny_step):
    new_state, step = tiny_step
    rng = np.random.default_rng(0)
    state = new_state()
    before = jax.device_get(state.params)
    for _ in range(3):
        state, metrics = step(state, _batch(rng), jax.random.PRNGKey(1))
    after = jax.device_get(state.params)
    for a, b in zip(jax.tree_util.tree_leaves(before["bert"]), jax.tree_util.tree_leaves(after["bert"])):
        assert a.tobytes() == b.tobytes()
    for group in ("head_encoder", "head_pooler", "classifier"):
        changed = [not np.array_equal(a, b) for a, b in zip(
            jax.tree_util.tree_leaves(before[group]), jax.tree_util.tree_leaves(after[group]))]
        assert any(changed), group
    assert metrics["logits"].shape == (4, 2) and np.isfinite(float(metrics["loss"]))


def test_train_step_loss_is_the_mean_over_real_rows(tiny_step):
    new_state, step = tiny_step
    batch = _batch(np.random.default_rng(1))  # row 3 pads the batch (weight 0)
    run = lambda b: step(new_state(), b, jax.random.PRNGKey(0))[1]
    metrics = run(batch)
    logits = np.asarray(metrics["logits"], np.float64)
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    by_hand = -np.mean([log_probs[i, batch["labels"][i]] for i in range(3)])
    assert float(metrics["loss"]) == pytest.approx(by_hand, rel=1e-5)
    flipped = dict(batch, labels=batch["labels"].copy())
    flipped["labels"][3] = 1 - flipped["labels"][3]  # only the padding row changes
    assert float(run(flipped)["loss"]) == float(metrics["loss"])


# ------------------------------------------------------------------------------- summaries


def test_spread_is_hand_computed():
    stats = finetune.spread([0.8, 0.9, 0.7, 0.85])
    assert stats["median"] == pytest.approx(0.825) and stats["mean"] == pytest.approx(0.8125)
    assert (stats["min"], stats["max"], stats["n"]) == (0.7, 0.9, 4)
    # squared deviations 0.00015625 + 0.00765625 + 0.01265625 + 0.00140625 = 0.021875; / (4 - 1)
    assert stats["std"] == pytest.approx((0.021875 / 3) ** 0.5)
    assert finetune.spread([0.5])["std"] == 0.0


def test_summary_picks_the_best_seed_by_the_primary_metric():
    spec = TASKS["mrpc"]
    results = [{"seed": s, "eval": {"accuracy": a, "f1": f, "accuracy_f1_mean": (a + f) / 2},
                "test": None} for s, a, f in ((0, 0.80, 0.85), (1, 0.84, 0.83), (2, 0.70, 0.90))]
    summary = finetune.summarize(spec, results)
    assert summary["best_seed"] == 1  # 0.835 beats 0.825 and 0.80
    assert summary["eval"]["accuracy"]["median"] == pytest.approx(0.80)
    assert summary["eval"]["f1"]["max"] == pytest.approx(0.90)
    assert "test" not in summary


# ---------------------------------------------------------------------- end to end (scratch)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """Keyword task from scratch, two seeds in one call, up to 6 epochs with patience 2: the dev
    accuracy reaches its ceiling 1.0 by epoch 2 or 3 (measured: 2), so the two epochs after it
    cannot improve on it and each seed stops early."""
    data = write_table(tmp_path_factory.mktemp("single_data"), "single")
    workdir = str(tmp_path_factory.mktemp("single_run"))
    config = quick_config(data, seeds=(0, 1), epochs=6, early_stopping_patience=2)
    summary = finetune.finetune(config, workdir)
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
    assert saved["task"] == "tsv" and saved["seeds"] == [0, 1]
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
    again = finetune.finetune(config, workdir)
    assert os.stat(result_path).st_mtime_ns == mtime
    assert again["eval"] == summary["eval"]
    assert "finished earlier" in capsys.readouterr().out
    changed = quick_config(config.data_dir, seeds=(0, 1), epochs=6, early_stopping_patience=2)
    changed.optimizer.lr = 1e-4
    with pytest.raises(finetune.FinetuneConfigError, match="optimizer.lr=0.003"):
        finetune.finetune(changed, workdir)


def test_reloaded_export_predicts_what_training_scored(single_run):
    config, workdir, _ = single_run
    model = finetune.load_finetuned(workdir)  # the best seed
    assert model.export.meta["seed"] == json.load(open(os.path.join(workdir, "summary.json")))[
        "best_seed"]
    prepared_eval = finetune.load_data(config).eval
    logits = finetune.predict_logits(model, prepared_eval.texts)
    saved = np.load(os.path.join(os.path.dirname(model.export.directory), "eval_logits.npy"))
    np.testing.assert_allclose(logits, saved, atol=1e-6, rtol=0)
    labels = model.spec.label_names
    clear = finetune.predict_logits(model, ["the excellent film", "a terrible long movie"])
    assert [labels[i] for i in clear.argmax(-1)] == ["positive", "negative"]


def test_regression_from_scratch_learns_a_level(tmp_path):
    data = write_table(tmp_path / "data", "regression")
    config = quick_config(data, epochs=5, **{"table.regression": True})
    summary = finetune.finetune(config, str(tmp_path / "run"))
    assert summary["metric"] == "pearson"
    assert summary["eval"]["pearson"]["median"] > 0.9, summary["eval"]  # measured 0.996
    model = finetune.load_finetuned(str(tmp_path / "run"))
    assert model.spec.is_regression and model.spec.num_labels == 1
    values = finetune.predict_logits(model, ["the none film", "a high film"])[:, 0]
    assert values[1] - values[0] > 1.5  # targets 0 and 3


def test_a_diverging_run_stops_with_the_step_range_and_exit_status_1(tmp_path, capsys):
    """lr 1e38 overflows the logits within a few updates: the run must stop, not train on NaN."""
    data = write_table(tmp_path / "data", "single")
    config = quick_config(data, epochs=1, **{"optimizer.lr": 1e38})
    with pytest.raises(NonFiniteLossError, match=r"seed 0: loss became nan within steps \[1, 8\]"):
        finetune.finetune(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "seed_0" / "result.json")  # the seed is not done
    code = finetune_cmd.main(["--config", "configs/finetune.py:task=tsv,recipe=quick",
                              "--workdir", str(tmp_path / "cli"), f"--config.data_dir={data}",
                              "--config.table.text=sentence", "--config.optimizer.lr=1e38"])
    assert code == 1
    assert "loss became nan" in capsys.readouterr().err


# --------------------------------------------------------------------------- the CLI, pairs


def test_cli_pair_task_finetune_evaluate_predict(tmp_path, capsys):
    data = write_table(tmp_path / "data", "pair")
    workdir = str(tmp_path / "run")
    code = finetune_cmd.main(["--config", "configs/finetune.py:task=tsv,recipe=quick",
                              "--workdir", workdir, f"--config.data_dir={data}",
                              "--config.table.text=s1", "--config.table.text_pair=s2",
                              "--config.epochs=4"])
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
    config.init_from = str(model_dir)
    config.data_dir = str(glue.parent)
    config.extra_layers = 1
    config.max_train_examples, config.max_eval_examples = 256, 200
    config.max_seq_length, config.batch_size, config.epochs = 32, 16, 1
    config.optimizer.lr = 1e-3
    workdir = str(tmp_path_factory.mktemp("minilm_sst2"))
    return config, workdir, finetune.finetune(config, workdir), model_dir


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
    model = finetune.load_finetuned(workdir)
    assert model.tokenizer.lower_case and model.spec.label_names == ("negative", "positive")
    dev = finetune.load_data(config).eval
    metrics, logits = finetune.evaluate_split(model, dev)
    saved = np.load(os.path.join(workdir, "seed_0", "eval_logits.npy"))
    np.testing.assert_allclose(logits, saved, atol=1e-6, rtol=0)
    result = json.load(open(os.path.join(workdir, "seed_0", "result.json")))
    assert metrics["accuracy"] == result["eval"]["accuracy"]


@pytest.mark.slow
def test_minilm_full_finetune_sst2(tmp_path):
    """Every weight trained: 1,024 sentences, 2 epochs, lr 1e-4 (5 minutes on 2 busy cores)."""
    config = finetune_configs.get_config("task=sst2")
    config.init_from = str(shared_path("models", "all-MiniLM-L6-v2"))
    config.data_dir = str(shared_path("data", "glue_data"))
    config.max_train_examples, config.max_eval_examples = 1024, 400
    config.max_seq_length, config.epochs = 64, 2
    config.optimizer.lr = 1e-4
    summary = finetune.finetune(config, str(tmp_path / "run"))
    assert summary["eval"]["accuracy"]["median"] > 0.75, summary["eval"]  # measured 0.8025
