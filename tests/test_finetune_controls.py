"""Fine-tuning controls (issue 16 item 2): the metric that picks the best epoch and seed and its
tie rule, class weights in the loss (against torch's CrossEntropyLoss(weight=...)), gradient
accumulation (padded and packed), layer-wise learning-rate decay, and their config checks."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab.data import packing
from bertlab.data.tasks.registry import TASKS
from bertlab.data.tasks.table import table_spec
from bertlab.models import BertForSequenceClassification
from bertlab.models.config import BertConfig
from bertlab.train import classifier, finetune, losses, optimizer, selection, seeds, steps
from bertlab.train.loop import TrainConfigError
from bertlab.train.mesh import data_mesh
from bertlab.train.state import create_train_state

from finetune_tables import finetune_configs, quick_config, read_jsonl, write_table

pytestmark = pytest.mark.usefixtures("module_compilation_cache")


# ------------------------------------------------------------------ train.select_metric


def test_default_selection_metric_is_the_tasks_glue_metric():
    defaults = {name: selection.select_metric("", TASKS[name])
                for name in ("cola", "mrpc", "qqp", "stsb", "sst2", "mnli", "rte", "snli",
                             "imdb", "rotten_tomatoes")}
    assert defaults == {"cola": "matthews", "mrpc": "f1", "qqp": "f1", "stsb": "spearman",
                        "sst2": "accuracy", "mnli": "accuracy", "rte": "accuracy",
                        "snli": "accuracy", "imdb": "accuracy", "rotten_tomatoes": "accuracy"}
    binary_table = table_spec("csv", "text", None, ("0", "1"), False)
    assert selection.select_metric("", binary_table) == "accuracy"


def test_selectable_metrics_per_task_and_the_error_names_the_key():
    # every reported metric, macro-F1 and MCC for any classification task, F1 only with two
    # classes, the correlations for regression, and the loss
    assert selection.selectable(TASKS["sst2"]) == ("accuracy", "macro_f1", "matthews", "f1",
                                                   "loss")
    assert selection.selectable(TASKS["mrpc"]) == ("accuracy", "f1", "accuracy_f1_mean",
                                                   "macro_f1", "matthews", "loss")
    assert selection.selectable(TASKS["mnli"]) == ("accuracy", "macro_f1", "matthews", "loss")
    assert selection.selectable(TASKS["stsb"]) == ("pearson", "spearman",
                                                   "pearson_spearman_mean", "loss")
    assert selection.select_metric("macro_f1", TASKS["sst2"]) == "macro_f1"
    with pytest.raises(TrainConfigError, match=r"train.select_metric='f1' is not a metric of "
                                               r"mnli; choose one of accuracy, macro_f1"):
        selection.select_metric("f1", TASKS["mnli"])
    with pytest.raises(TrainConfigError, match="train.select_metric='accuracy'.*stsb"):
        selection.select_metric("accuracy", TASKS["stsb"])


def test_loss_is_lower_better_and_a_non_finite_value_never_wins():
    assert selection.rank({"loss": 0.3}, "loss") > selection.rank({"loss": 0.4}, "loss")
    assert selection.rank({"f1": 0.4}, "f1") > selection.rank({"f1": 0.3}, "f1")
    assert selection.rank({"loss": float("nan")}, "loss") == -np.inf
    assert selection.rank({"accuracy": 0.9}, "f1") == -np.inf  # missing
    assert selection.improves({"loss": 0.3}, {"loss": 0.4}, "loss")
    assert not selection.improves({"loss": float("inf")}, {"loss": 0.4}, "loss")


def test_ties_keep_the_earliest_epoch_and_seed():
    # epochs' eval F1: 0.5, 0.7, 0.7, 0.6 -> epoch 2 (epoch 3 only equals it)
    best_epoch, best = 0, None
    for epoch, value in enumerate((0.5, 0.7, 0.7, 0.6), start=1):
        if selection.improves({"f1": value}, best, "f1"):
            best_epoch, best = epoch, {"f1": value}
    assert best_epoch == 2
    results = [{"seed": s, "eval": {"loss": v}} for s, v in ((3, 0.5), (1, 0.2), (2, 0.2))]
    assert selection.best_of(results, "loss")["seed"] == 1
    summary = seeds.summarize(TASKS["sst2"], results, metric="loss")
    assert summary["best_seed"] == 1 and summary["metric"] == "loss"


def test_summary_best_seed_uses_the_selection_metric():
    # accuracy_f1_mean (the registry's MRPC metric) picks seed 1; F1 (the selection default)
    # picks seed 2
    results = [{"seed": s, "eval": {"accuracy": a, "f1": f, "accuracy_f1_mean": (a + f) / 2},
                "test": None} for s, a, f in ((0, 0.80, 0.85), (1, 0.84, 0.83), (2, 0.70, 0.90))]
    assert seeds.summarize(TASKS["mrpc"], results)["best_seed"] == 1
    summary = seeds.summarize(TASKS["mrpc"], results, metric="f1")
    assert summary["best_seed"] == 2 and summary["metric"] == "f1"


def test_a_metric_the_task_does_not_report_is_added_from_the_logits():
    # SST-2 reports accuracy only; MCC from the logits: predictions 1, 0, 1, 1 vs gold 1, 0, 0, 1
    # TP 2, TN 1, FP 1, FN 0: (2*1 - 1*0) / sqrt(3 * 2 * 1 * 2) = 2 / sqrt(12)
    logits = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 1.0]])
    result = selection.with_selected({"accuracy": 0.75}, "matthews", TASKS["sst2"], logits,
                                     np.array([1, 0, 0, 1]))
    assert result == {"accuracy": 0.75, "matthews": pytest.approx(2 / np.sqrt(12))}
    assert selection.with_selected({"loss": 1.0}, "loss", TASKS["sst2"], logits, None) == \
        {"loss": 1.0}


# ------------------------------------------------------------------ class weights


def test_balanced_class_weights_are_sklearns_definition():
    # 6 examples, 3 classes with counts 3, 2, 1: 6 / (3 * count)
    assert classifier.balanced_class_weights(np.array([0, 0, 0, 1, 1, 2]), 3) == \
        pytest.approx((2 / 3, 1.0, 2.0))
    with pytest.raises(TrainConfigError, match=r"'balanced': class\(es\) \[2\] have no"):
        classifier.balanced_class_weights(np.array([0, 1, 1]), 3)
    spec = TASKS["sst2"]
    labels = np.array([0, 0, 0, 1])
    assert classifier.class_weights_for("", spec, labels) is None
    assert classifier.class_weights_for("balanced", spec, labels) == pytest.approx((2 / 3, 2.0))
    assert classifier.class_weights_for("1, 3.5", spec, labels) == (1.0, 3.5)


@pytest.mark.parametrize("value, message", [
    ("1,x", "is not '', 'balanced' nor comma-separated numbers"),
    ("1,-2", "every weight must be a positive finite number"),
    ("1,2,3", "has 3 weight\\(s\\) for 2 classes"),
])
def test_bad_class_weights_name_the_key(value, message):
    with pytest.raises(TrainConfigError, match=f"train.class_weights='{value}'.*{message}"):
        classifier.class_weights_for(value, TASKS["sst2"], np.array([0, 1]))


def test_class_weights_refused_for_regression():
    with pytest.raises(TrainConfigError, match="applies only to classification"):
        classifier.class_weights_for("balanced", TASKS["stsb"], np.array([0.5, 1.0]))


def test_weighted_loss_matches_torch_cross_entropy_with_weight():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2, 2, 0], np.int32)
    example_weights = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last row pads the batch
    class_weights = (0.5, 2.0, 3.0)
    weights = losses.classification_weights(jnp.asarray(labels), jnp.asarray(example_weights),
                                            class_weights)
    np.testing.assert_allclose(weights, [0.5, 3.0, 2.0, 3.0, 3.0, 0.0])
    per_example = steps.classification_losses(jnp.asarray(logits), jnp.asarray(labels),
                                              regression=False)
    ours = float(jnp.sum(per_example * weights) / losses.weighted_mean_denominator(weights))
    reference = torch.nn.CrossEntropyLoss(weight=torch.tensor(class_weights))(
        torch.tensor(logits[:5]), torch.tensor(labels[:5], dtype=torch.long))
    assert ours == pytest.approx(float(reference), rel=1e-6)
    # by hand: sum(w_y * nll) / (0.5 + 3 + 2 + 3 + 3)
    nll = -np.log(np.exp(logits[:5, ]) / np.exp(logits[:5]).sum(-1, keepdims=True))[
        np.arange(5), labels[:5]]
    assert ours == pytest.approx(float(np.sum(nll * [0.5, 3, 2, 3, 3]) / 11.5), rel=1e-6)
    # a batch of padding only: 0, not NaN
    assert float(losses.weighted_mean_denominator(jnp.zeros(3))) == 1.0


# ------------------------------------------------------------------ the step: weights, accumulation

T = 16
MODEL_CONFIG = BertConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2,
                          intermediate_size=32, max_position_embeddings=T, hidden_dropout=0.0,
                          attention_dropout=0.0)
LENGTHS = (3, 9, 16, 4, 7, 5, 2, 12)


def _batch(lengths=LENGTHS, seed=0, num_labels=3):
    rng = np.random.default_rng(seed)
    count = len(lengths)
    token_ids = np.zeros((count, T), np.int32)
    mask = np.zeros((count, T), np.int32)
    for row, n in enumerate(lengths):
        token_ids[row, :n] = rng.integers(5, 40, n)
        token_ids[row, 0] = 2  # [CLS]
        mask[row, :n] = 1
    return {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids),
            "attention_mask": mask,
            "labels": rng.integers(0, num_labels, count).astype(np.int32),
            "example_weights": np.array([1] * (count - 1) + [0], np.float32)}


@pytest.fixture(scope="module")
def model_and_params():
    model = BertForSequenceClassification(MODEL_CONFIG, num_labels=3)
    ids = jnp.zeros((1, T), jnp.int32)
    params = jax.jit(lambda key: model.init({"params": key}, ids, ids, ids + 1)["params"])(
        jax.random.PRNGKey(0))
    return model, jax.device_get(params)


def _run(model_and_params, batch, tx=None, **step_options):
    """One update with plain SGD (the update is -0.1 * gradient: comparable to 1e-6)."""
    model, params = model_and_params
    tx = tx or optax.sgd(0.1)
    state = create_train_state(model, tx, params, mesh=data_mesh())
    step = steps.jit_classify_train_step(schedule=lambda s: 0.1, regression=False, frozen=(),
                                         mesh=data_mesh(), **step_options)
    new_state, metrics = step(state, batch, jax.random.PRNGKey(1))
    return jax.device_get(new_state.params), jax.device_get(metrics)


def test_step_loss_with_class_weights_matches_torch(model_and_params):
    torch = pytest.importorskip("torch")
    batch = _batch()
    _, metrics = _run(model_and_params, batch, class_weights=(1.0, 3.0, 0.5))
    real = len(LENGTHS) - 1
    reference = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0, 0.5]))(
        torch.tensor(np.asarray(metrics["logits"][:real], np.float32)),
        torch.tensor(batch["labels"][:real], dtype=torch.long))
    assert float(metrics["loss"]) == pytest.approx(float(reference), rel=1e-5)


def test_grad_accumulation_two_micro_batches_equal_one_batch(model_and_params):
    # batch 8 (7 real rows + 1 filler) as 2 micro-batches of 4: the same SGD update within 1e-6
    batch = _batch()
    one, one_metrics = _run(model_and_params, batch)
    two, two_metrics = _run(model_and_params, batch, grad_accum_steps=2)
    assert float(two_metrics["loss"]) == pytest.approx(float(one_metrics["loss"]), abs=1e-6)
    np.testing.assert_allclose(two_metrics["logits"], one_metrics["logits"], atol=1e-6)
    assert float(two_metrics["grad_norm"]) == pytest.approx(float(one_metrics["grad_norm"]),
                                                            rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(two)):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_packed_batches_with_class_weights_and_accumulation_equal_padded(model_and_params):
    """Class weights, and 2 micro-batches of 2 packed rows each, give the padded update."""
    batch = _batch()
    weights = (1.0, 3.0, 0.5)
    padded, padded_metrics = _run(model_and_params, batch, class_weights=weights)
    packed_batch = packing.pack_batch(batch, rows=4)  # 4 rows of 16 tokens, 2 per micro-batch
    real = len(LENGTHS) - 1
    for k in (1, 2):
        packed, packed_metrics = _run(model_and_params, packed_batch, class_weights=weights,
                                      grad_accum_steps=k)
        assert float(packed_metrics["loss"]) == pytest.approx(float(padded_metrics["loss"]),
                                                              abs=1e-5)
        np.testing.assert_allclose(packed_metrics["logits"][:real],
                                   padded_metrics["logits"][:real], atol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(packed), jax.tree_util.tree_leaves(padded)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="4 rows does not split into grad_accum_steps=3"):
        _run(model_and_params, packed_batch, grad_accum_steps=3)


# ------------------------------------------------------------------ layer-wise lr decay


def test_layer_decay_scales_by_depth_hand_computed():
    scale = lambda name: optimizer.layer_decay_scale(name, 2, 0.5)
    assert scale("bert/embeddings/word_embeddings/embedding") == 0.125  # 0.5^(L + 1)
    assert scale("bert/encoder/layer_0/attention/self/query/kernel") == 0.25  # 0.5^(2 - 0)
    assert scale("bert/encoder/layer_1/output/dense/bias") == 0.5  # 0.5^(2 - 1)
    for name in ("bert/pooler/dense/kernel", "bert/encoder/LayerNorm/scale",
                 "classifier/kernel", "head_encoder/layer_0/output/dense/kernel",
                 "head_pooler/dense/bias"):
        assert scale(name) == 1.0, name
    with pytest.raises(ValueError, match="encoder layer 2 but the model has 2"):
        scale("bert/encoder/layer_2/output/dense/bias")


def _finetune_tx(layer_decay, frozen=()):
    opt = finetune_configs.get_config("task=sst2").optimizer
    opt.lr, opt.layer_decay = 1e-2, layer_decay
    tx, _ = classifier.make_finetune_optimizer(opt, num_steps=10, warmup_steps=0,
                                               frozen=frozen, num_layers=2)
    return tx


def _updates(model_and_params, tx):
    """Each parameter's first update (AdamW with weight decay and clipping) for one set of
    random gradients, by path: what the train step adds to the parameters."""
    _, params = model_and_params
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(0)
    grads = treedef.unflatten([rng.normal(size=np.shape(x)).astype(np.float32) for x in leaves])
    updates, _ = tx.update(grads, tx.init(params), params)
    return {optimizer.param_path_name(path): np.asarray(update, np.float64)
            for path, update in jax.tree_util.tree_leaves_with_path(updates)}


def test_layer_decay_effective_update_ratios(model_and_params):
    plain = _updates(model_and_params, _finetune_tx(1.0))
    decayed = _updates(model_and_params, _finetune_tx(0.5))
    expected = {"bert/embeddings/": 0.125, "bert/encoder/layer_0/": 0.25,
                "bert/encoder/layer_1/": 0.5, "bert/pooler/": 1.0, "classifier/": 1.0}
    seen = set()
    for name, update in plain.items():
        prefix = next(p for p in expected if name.startswith(p))
        seen.add(prefix)
        np.testing.assert_allclose(decayed[name], update * expected[prefix], rtol=1e-6,
                                   err_msg=name)
    assert seen == set(expected)


def test_layer_decay_with_a_frozen_backbone(model_and_params):
    frozen = ("bert",)
    plain = _updates(model_and_params, _finetune_tx(1.0, frozen))
    decayed = _updates(model_and_params, _finetune_tx(0.5, frozen))
    for name, update in decayed.items():
        if name.startswith("bert/"):
            assert not update.any(), name
        else:
            np.testing.assert_allclose(update, plain[name], atol=1e-9)


# ------------------------------------------------------------------ the config and the loop


@pytest.mark.parametrize("key, value, message", [
    ("train.select_metric", "f1", r"train.select_metric='f1' is not a metric of mnli"),
    ("train.class_weights", "1,2", r"train.class_weights='1,2' has 2 weight\(s\) for 3 classes"),
    ("optimizer.grad_accum_steps", 3, r"data.batch_size=32 must be a multiple of "
                                      r"optimizer.grad_accum_steps=3"),
    ("optimizer.grad_accum_steps", 0, r"optimizer.grad_accum_steps=0"),
    ("optimizer.layer_decay", 0.0, r"optimizer.layer_decay=0.0 must be in \(0, 1\]"),
    ("optimizer.layer_decay", 1.5, r"optimizer.layer_decay=1.5 must be in \(0, 1\]"),
])
def test_config_checks_name_the_key_before_any_work(key, value, message):
    config = finetune_configs.get_config("task=mnli")
    config.model.init_from = "/nonexistent"  # never reached: the checks come first
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(TrainConfigError, match=message):
        finetune.check_config(config)


def test_table_controls_are_checked_once_its_classes_are_known(tmp_path):
    data = write_table(tmp_path / "data", "single")
    named = quick_config(data, **{"table.label_names": "negative,positive",
                                  "train.class_weights": "1,2,3"})
    with pytest.raises(TrainConfigError, match=r"3 weight\(s\) for 2 classes"):
        finetune.check_config(named)  # the names give the count before any data is read
    unnamed = quick_config(data, **{"train.class_weights": "1,2,3"})
    finetune.check_config(unnamed)  # count unknown until the table is read ...
    with pytest.raises(TrainConfigError, match=r"3 weight\(s\) for 2 classes"):
        finetune.prepare(unnamed, str(tmp_path / "run"))  # ... then refused before training
    regression = quick_config(data, **{"table.regression": True, "train.select_metric": "f1"})
    with pytest.raises(TrainConfigError, match="train.select_metric='f1'.*pearson, spearman"):
        finetune.check_config(regression)


def test_a_run_with_every_control(tmp_path):
    """Loss picks the epoch (the lowest eval loss, the earliest on a tie) and the seed; balanced
    class weights, 2 micro-batches of packed rows and layer decay train the quick keyword task."""
    data = write_table(tmp_path / "data", "single")
    config = quick_config(data, **{"train.epochs": 3, "data.max_train_examples": 96,
                                   "train.select_metric": "loss",
                                   "train.class_weights": "balanced",
                                   "optimizer.grad_accum_steps": 2,
                                   "optimizer.layer_decay": 0.8})
    workdir = str(tmp_path / "run")
    summary = finetune.train_and_evaluate(config, workdir)
    assert summary["metric"] == "loss" and summary["best_seed"] == 0
    result = summary["per_seed"]["0"]
    evals = [r for r in read_jsonl(os.path.join(workdir, "seed_0", "metrics.jsonl"))
             if r["split"] == "eval"]
    losses_by_epoch = [r["loss"] for r in evals]
    assert result["best_epoch"] == 1 + int(np.argmin(losses_by_epoch))  # argmin: first minimum
    assert result["eval"]["loss"] == min(losses_by_epoch)
    assert result["steps"] == 3 * 12  # 96 examples / batch 8, accumulation does not add steps
    export = json.load(open(os.path.join(workdir, "seed_0", "model", "task.json")))
    assert export["meta"]["epoch"] == result["best_epoch"]  # the exported model is that epoch's
