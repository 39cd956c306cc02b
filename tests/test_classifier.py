"""The fine-tuned model's pieces: update counts and warm-up, the optimizer recipes (frozen groups
included), and the classify train step the loop compiles (losses by hand, a frozen backbone
bit for bit)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab.models import BertForSequenceClassification, variant_config
from bertlab.train import classifier, steps, task_data
from bertlab.train.mesh import data_mesh, replicate
from bertlab.train.state import create_train_state

from finetune_tables import finetune_configs

pytestmark = pytest.mark.usefixtures("module_compilation_cache")


# ------------------------------------------------------------------------ schedule, optimizer


def test_warmup_steps_from_dataset_size_epochs_and_fraction():
    # SNLI tutorial arithmetic on a 1,000-example set: ceil(1000 / 16) = 63 batches per epoch
    # (the last one has 8 examples), 3 epochs = 189 updates, int(0.2 * 189) = 37 of warm-up.
    assert task_data.training_steps(1000, 16, 3, 0.2) == (63, 189, 37)
    assert task_data.training_steps(1024, 16, 3, 0.2) == (64, 192, 38)
    assert task_data.training_steps(5, 8, 2, 0.5) == (1, 2, 1)
    opt = finetune_configs.get_config("task=snli").optimizer
    _, schedule = classifier.make_finetune_optimizer(opt, num_steps=189, warmup_steps=37)
    rates = [float(schedule(s)) for s in (0, 18, 37, 113, 189)]
    assert rates[0] == 0.0 and rates[2] == pytest.approx(1e-4)
    assert rates[1] == pytest.approx(1e-4 * 18 / 37)
    assert rates[3] == pytest.approx(1e-4 * (189 - 113) / (189 - 37))  # triangular decay
    assert rates[4] == 0.0


def test_adam_recipe_is_plain_adam_at_a_constant_rate():
    opt = finetune_configs.get_config("task=snli,recipe=adam").optimizer
    tx, schedule = classifier.make_finetune_optimizer(opt, num_steps=50, warmup_steps=0)
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
    tx, _ = classifier.make_finetune_optimizer(opt, num_steps=10, warmup_steps=0, frozen=("bert",))
    params = {"bert": {"kernel": jnp.ones((4, 4))}, "classifier": {"kernel": jnp.ones((4, 2))}}
    state = tx.init(params)
    sizes = sum(x.size for x in jax.tree_util.tree_leaves(state))
    assert sizes < 2 * 16 + 3 * 8  # Adam moments only for the classifier (2 x 8) + counters
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    assert not np.any(np.asarray(updates["bert"]["kernel"]))
    assert np.all(np.asarray(updates["classifier"]["kernel"]) != 0)


# ------------------------------------------------------------------------ the classify step


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
    tx, schedule = classifier.make_finetune_optimizer(opt, num_steps=10, warmup_steps=0,
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
