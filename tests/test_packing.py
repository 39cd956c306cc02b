"""Packed batches (bertlab.data.packing + the models' packed path + the steps) compute what the
padded batches compute: the packing algorithm by hand, then packed-vs-padded equality of
per-example logits, pooled vectors, MLM logits, losses and one optimizer update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertlab.data import packing
from bertlab.models import (BertConfig, BertForPreTraining, BertForSequenceClassification,
                            BertModel, mean_pool)
from bertlab.models import attention
from bertlab.train import optimizer, steps
from bertlab.train.mesh import data_mesh
from bertlab.train.state import create_train_state

CLS, SEP, PAD = 2, 3, 0
VOCAB_SIZE = 40
T = 16

# One batch whose first-fit-decreasing packing at T=16 has a row holding one example (16 tokens),
# a row holding two (9 + 7) and a row holding many (3 + 3 + 4 + 2 + 2 + 2): lengths in input order.
LENGTHS = (3, 9, 16, 4, 7, 3, 2, 2, 2)


def config(**overrides) -> BertConfig:
    values = dict(vocab_size=VOCAB_SIZE, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=48, max_position_embeddings=T, hidden_dropout=0.0,
                  attention_dropout=0.0)
    values.update(overrides)
    return BertConfig(**values)


def padded_batch(lengths=LENGTHS, pair=True, seed=0, width=T) -> dict:
    """Rows laid out as Tokenizer.pack writes them: [CLS] A [SEP] (B [SEP]) then [PAD]."""
    rng = np.random.default_rng(seed)
    count = len(lengths)
    token_ids = np.full((count, width), PAD, np.int32)
    segment_ids = np.zeros((count, width), np.int32)
    attention_mask = np.zeros((count, width), np.int32)
    for row, n in enumerate(lengths):
        tokens = rng.integers(5, VOCAB_SIZE, n)
        tokens[0], tokens[n - 1] = CLS, SEP
        token_ids[row, :n] = tokens
        attention_mask[row, :n] = 1
        if pair and n >= 4:
            split = 1 + (n - 2) // 2  # [CLS] + first half, then its [SEP]
            token_ids[row, split] = SEP
            segment_ids[row, split + 1:n] = 1
    return {"token_ids": token_ids, "segment_ids": segment_ids, "attention_mask": attention_mask,
            "labels": rng.integers(0, 2, count).astype(np.int32),
            "example_weights": np.ones(count, np.float32)}


def packed_kwargs(packed: dict) -> dict:
    return {key: jnp.asarray(packed[key]) for key in ("example_ids", "positions", "cls_index")}


def init(model, batch):
    return model.init(jax.random.PRNGKey(0), batch["token_ids"], batch["segment_ids"],
                      batch["attention_mask"])["params"]


def run(model, params, batch, **kwargs):
    """Eager on purpose: these models are too small to repay a compilation each."""
    return model.apply({"params": params}, batch["token_ids"], batch["segment_ids"],
                       batch["attention_mask"], **kwargs)


def token_pairs(packed: dict, lengths) -> list[tuple[int, int, int, int]]:
    """(slot, j, row, column): where the j-th token of example `slot` sits in the packed grid."""
    width = packed["token_ids"].shape[1]
    out = []
    for slot, n in enumerate(lengths):
        row, start = divmod(int(packed["cls_index"][slot]), width)
        out += [(slot, j, row, start + j) for j in range(n)]
    return out


# ------------------------------------------------------------------------------ the algorithm


def test_first_fit_decreasing_by_hand():
    # Longest first (8, 5, 3, 2): 8 opens row 0, 5 opens row 1, 3 fills row 1, 2 opens row 2.
    assert packing.first_fit_decreasing([5, 3, 8, 2], 8) == [[2], [0, 1], [3]]
    # Ties keep input order; a length-0 example (left out) is not placed.
    assert packing.first_fit_decreasing([4, 0, 4, 4], 8) == [[0, 2], [3]]
    assert packing.rows_needed([5, 3, 8, 2], 8) == 3


def test_pack_batch_by_hand():
    batch = padded_batch(lengths=(5, 3, 8, 2), pair=False, width=8)
    packed = packing.pack_batch(batch, max_examples=5)
    np.testing.assert_array_equal(packed["example_ids"], [[3, 3, 3, 3, 3, 3, 3, 3],
                                                          [1, 1, 1, 1, 1, 2, 2, 2],
                                                          [4, 4, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(packed["positions"], [[0, 1, 2, 3, 4, 5, 6, 7],
                                                        [0, 1, 2, 3, 4, 0, 1, 2],
                                                        [0, 1, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(packed["cls_index"], [8, 13, 0, 16, 0])  # row * 8 + start
    np.testing.assert_array_equal(packed["example_lengths"], [5, 3, 8, 2, 0])
    np.testing.assert_array_equal(packed["example_index"], [0, 1, 2, 3, -1])
    np.testing.assert_array_equal(packed["example_weights"], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(packed["labels"][:4], batch["labels"])
    assert packed["token_ids"][1, 5] == CLS and packed["token_ids"][2, 2] == PAD
    # 18 real tokens in 3 rows of 8.
    assert packing.packing_efficiency(packed) == pytest.approx(18 / 24)
    assert packing.packing_efficiency(batch) == pytest.approx(18 / 32)  # the padded batch's
    # Asking for more rows adds all-padding rows; fewer than needed is refused.
    assert packing.pack_batch(batch, rows=4)["token_ids"].shape == (4, 8)
    with pytest.raises(packing.PackingError, match="need 3 rows"):
        packing.pack_batch(batch, rows=2)


def test_pack_batch_keeps_every_example_once_and_respects_t_and_k():
    rng = np.random.default_rng(1)
    lengths = tuple(int(n) for n in rng.integers(2, T + 1, 40))
    batch = padded_batch(lengths, seed=1)
    packed = packing.pack_batch(batch, max_examples=48)
    again = packing.pack_batch(batch, max_examples=48)
    for key in packed:  # deterministic
        np.testing.assert_array_equal(packed[key], again[key])
    assert packed["token_ids"].shape[1] == T and packed["cls_index"].shape == (48,)
    ids = packed["example_ids"]
    for slot, n in enumerate(lengths):
        row, start = divmod(int(packed["cls_index"][slot]), T)
        assert (ids == slot + 1).sum() == n  # exactly its tokens, all in one row, contiguous
        assert (ids[row, start:start + n] == slot + 1).all()
        np.testing.assert_array_equal(packed["positions"][row, start:start + n], np.arange(n))
        for key in ("token_ids", "segment_ids"):
            np.testing.assert_array_equal(packed[key][row, start:start + n], batch[key][slot, :n])
    assert (ids > 0).sum() == sum(lengths) == packed["attention_mask"].sum()
    assert packed["example_weights"][40:].sum() == 0
    with pytest.raises(packing.PackingError, match="at most K=8"):
        packing.pack_batch(batch, max_examples=8)
    with pytest.raises(packing.PackingError, match="more than the row length 8"):
        packing.pack_batch(batch, row_length=8)


def test_rows_of_weight_zero_are_left_out():
    batch = padded_batch(lengths=(5, 3, 8, 2), pair=False, width=8)
    batch["example_weights"] = np.array([1, 1, 1, 0], np.float32)  # an epoch's filler row
    packed = packing.pack_batch(batch)
    assert packed["token_ids"].shape == (2, 8) and not (packed["example_ids"] == 4).any()
    np.testing.assert_array_equal(packed["example_index"], [0, 1, 2, -1])


def test_example_lengths_refuses_padding_before_a_token():
    with pytest.raises(packing.PackingError, match="row 1"):
        packing.example_lengths(np.array([[1, 1, 0], [1, 0, 1]]))


def test_plan_row_buckets_is_the_least_waste_by_hand():
    needs = [3, 3, 4, 5, 5, 5, 7]
    assert packing.plan_row_buckets(needs, 1) == (7,)
    # {5, 7}: 6 batches at 5 + one at 7 = 37 rows; {4, 7}: 40; {3, 7}: 41.
    assert packing.plan_row_buckets(needs, 2) == (5, 7)
    assert packing.plan_row_buckets(needs, 3) == (3, 5, 7)  # 33 rows; {4, 5, 7} costs 34
    assert packing.plan_row_buckets(needs, 9) == (3, 4, 5, 7)  # no more buckets than needs
    assert packing.bucket_rows(6, (5, 7)) == 7 and packing.bucket_rows(5, (5, 7)) == 5
    with pytest.raises(packing.PackingError, match="needs 8 rows"):
        packing.bucket_rows(8, (5, 7))


def test_plan_batches_gives_each_batch_a_planned_bucket_that_fits():
    lengths = np.array([8, 8, 8, 1, 1, 1, 5, 3, 8, 8])
    batches = [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]  # needs 3, 1, 1, 2 rows of 8
    rows, buckets = packing.plan_batches(lengths, batches, row_length=8, max_programs=2)
    assert buckets == (1, 3) and rows == [3, 1, 1, 3]
    for batch_rows, r in zip(batches, rows):
        batch = padded_batch(lengths=lengths[batch_rows], width=8)
        assert packing.pack_batch(batch, rows=r)["token_ids"].shape == (r, 8)


# ------------------------------------------------------------------------------ the model


def test_block_diagonal_bias_by_hand():
    bias = attention.attention_bias(jnp.array([[1, 1, 1, 0]]), jnp.array([[1, 1, 2, 0]]))
    keep = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(bias[0, 0], np.where(keep, 0.0, attention.MASKED_SCORE))


@pytest.mark.parametrize("pair", [True, False], ids=["pair", "single"])
@pytest.mark.parametrize("kernel", ["explicit", "fused"])
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary"])
def test_classifier_logits_packed_equal_padded(position, kernel, pair):
    batch = padded_batch(pair=pair)
    model = BertForSequenceClassification(config(position_embedding=position,
                                                 attention_kernel=kernel), num_labels=3)
    params = init(model, batch)
    packed = packing.pack_batch(batch)
    occupancy = sorted(np.bincount(packed["cls_index"] // T).tolist())
    assert occupancy == [1, 2, 6]  # a row of one, a row of two, a row of many
    padded_logits = run(model, params, batch)
    packed_logits = run(model, params, packed, **packed_kwargs(packed))
    assert packed_logits.shape == padded_logits.shape == (len(LENGTHS), 3)
    np.testing.assert_allclose(packed_logits, padded_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused_qkv", [True, False], ids=["fused_qkv", "three_projections"])
def test_pre_ln_geglu_classifier_packed_equal_padded(fused_qkv, monkeypatch):
    monkeypatch.setattr(attention, "FUSED_QKV", fused_qkv)
    batch = padded_batch()
    model = BertForSequenceClassification(config(pre_ln=True, activation="geglu",
                                                 position_embedding="rotary"), num_labels=2)
    params = init(model, batch)
    packed = packing.pack_batch(batch)
    np.testing.assert_allclose(run(model, params, packed, **packed_kwargs(packed)),
                               run(model, params, batch), atol=1e-5, rtol=1e-5)


def test_extra_layers_classifier_packed_equal_padded():
    batch = padded_batch()
    model = BertForSequenceClassification(config(position_embedding="rotary"), num_labels=2,
                                          extra_layers=1)
    params = init(model, batch)
    packed = packing.pack_batch(batch)
    np.testing.assert_allclose(run(model, params, packed, **packed_kwargs(packed)),
                               run(model, params, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["explicit", "fused"])
def test_every_token_and_mean_pool_packed_equal_padded(kernel):
    batch = padded_batch()
    model = BertModel(config(attention_kernel=kernel))
    params = init(model, batch)
    packed = packing.pack_batch(batch)
    sequence, pooled = run(model, params, batch)
    packed_sequence, packed_pooled = run(model, params, packed, **packed_kwargs(packed))
    for slot, j, row, column in token_pairs(packed, LENGTHS):
        np.testing.assert_allclose(packed_sequence[row, column], sequence[slot, j], atol=1e-5)
    np.testing.assert_allclose(packed_pooled, pooled, atol=1e-5)
    pooled_means = mean_pool(packed_sequence, packed["attention_mask"], packed["example_ids"],
                             num_examples=len(LENGTHS))
    np.testing.assert_allclose(pooled_means, mean_pool(sequence, batch["attention_mask"]),
                               atol=1e-5)


def test_mean_pool_packed_by_hand():
    sequence = jnp.array([[[1.0], [3.0], [10.0], [0.0]]])  # (1, 4, 1): examples 1, 1, 2, padding
    means = mean_pool(sequence, jnp.array([[1, 1, 1, 0]]), jnp.array([[1, 1, 2, 0]]),
                      num_examples=3)
    np.testing.assert_allclose(means, [[2.0], [10.0], [0.0]])  # an unused slot: zeros, no NaN


def test_mlm_and_nsp_logits_packed_equal_padded():
    batch = padded_batch()
    model = BertForPreTraining(config(position_embedding="rotary"), with_nsp=True)
    params = init(model, batch)
    packed = packing.pack_batch(batch)
    out = run(model, params, batch)  # masked_positions None: every position is scored
    packed_out = run(model, params, packed, **packed_kwargs(packed))
    for slot, j, row, column in token_pairs(packed, LENGTHS):
        np.testing.assert_allclose(packed_out["mlm_logits"][row, column], out["mlm_logits"][slot, j],
                                   atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(packed_out["nsp_logits"], out["nsp_logits"], atol=1e-5)


@pytest.mark.parametrize("kernel", ["explicit", "fused"])
def test_bfloat16_packed_close_to_padded(kernel):
    batch = padded_batch()
    model = BertModel(config(dtype="bfloat16", attention_kernel=kernel,
                             position_embedding="rotary"))
    params = init(model, batch)
    packed = packing.pack_batch(batch)
    sequence, pooled = run(model, params, batch)
    packed_sequence, packed_pooled = run(model, params, packed, **packed_kwargs(packed))
    assert packed_sequence.dtype == jnp.bfloat16
    for slot, j, row, column in token_pairs(packed, LENGTHS):
        np.testing.assert_allclose(np.float32(packed_sequence[row, column]),
                                   np.float32(sequence[slot, j]), atol=0.05, rtol=0.02)
    np.testing.assert_allclose(np.float32(packed_pooled), np.float32(pooled), atol=0.02)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kernel", ["explicit", "fused"])
def test_all_padding_rows_and_slots_stay_finite(kernel, dtype):
    batch = padded_batch(lengths=(5, 3))
    packed = packing.pack_batch(batch, rows=2, max_examples=4)  # row 1 and slots 2, 3 are empty
    assert packed["attention_mask"][1].sum() == 0
    cfg = config(attention_kernel=kernel, dtype=dtype)
    backbone, classifier = BertModel(cfg), BertForSequenceClassification(cfg, num_labels=2)
    sequence, pooled = run(backbone, init(backbone, batch), packed, **packed_kwargs(packed))
    logits = run(classifier, init(classifier, batch), packed, **packed_kwargs(packed))
    for value in (sequence, pooled, logits):
        assert np.isfinite(np.float32(value)).all()
    assert pooled.shape == (4, cfg.hidden_size) and logits.shape == (4, 2)


def test_packed_rows_need_positions():
    batch = padded_batch()
    model = BertModel(config())
    packed = packing.pack_batch(batch)
    with pytest.raises(ValueError, match="positions"):
        run(model, init(model, batch), packed, example_ids=packed["example_ids"])


# ------------------------------------------------------------------------------ the steps


STEP_CONFIG = config(position_embedding="rotary", num_layers=1)


@pytest.fixture(scope="module")
def classify_steps():
    """(fresh-state factory, jitted train step, jitted eval step), shared so that each step
    compiles once per batch shape (a state with a new model or optimizer object retraces)."""
    model = BertForSequenceClassification(STEP_CONFIG, num_labels=2)
    params = jax.device_get(init(model, padded_batch()))
    tx, schedule = optimizer.make_optimizer("adamw", lr=1e-3, warmup_steps=0, num_steps=10,
                                            weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                            clip_norm=1.0)
    # A fresh device copy of the host params each time: the train step donates its state.
    fresh_state = lambda: create_train_state(model, tx, params, mesh=data_mesh())
    train = steps.jit_classify_train_step(schedule=schedule, regression=False, frozen=(),
                                          mesh=data_mesh())
    return fresh_state, train, steps.jit_classify_eval_step(mesh=data_mesh())


@pytest.mark.parametrize("pair", [True, False], ids=["pair", "single"])
def test_classify_steps_packed_equal_padded(classify_steps, pair):
    """One update: same loss, logits and resulting parameters; then the eval step."""
    fresh_state, step, evaluate = classify_steps
    batch = padded_batch(pair=pair)
    batch["example_weights"][-1] = 0.0  # a filler row, as in an epoch's last batch
    packed = packing.pack_batch(batch, max_examples=12)
    rng = jax.random.PRNGKey(3)
    padded_state, padded_metrics = step(fresh_state(), batch, rng)
    packed_state, packed_metrics = step(fresh_state(), packed, rng)
    real = len(LENGTHS) - 1
    assert float(packed_metrics["loss"]) == pytest.approx(float(padded_metrics["loss"]), abs=1e-5)
    np.testing.assert_allclose(packed_metrics["logits"][:real], padded_metrics["logits"][:real],
                               atol=1e-5)
    assert float(packed_metrics["grad_norm"]) == pytest.approx(float(padded_metrics["grad_norm"]),
                                                               rel=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(packed_state.params),
                    jax.tree_util.tree_leaves(padded_state.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)

    padded_eval, packed_eval = evaluate(padded_state, batch), evaluate(padded_state, packed)
    np.testing.assert_allclose(packed_eval["logits"][:real], padded_eval["logits"][:real],
                               atol=1e-5)
    np.testing.assert_allclose(packed_eval["loss"][:real], padded_eval["loss"][:real], atol=1e-5)


def mask_every_real_token(rng, token_ids, attention_mask, **packed_rows):
    """A mask_fn that predicts every real position (unmasked): P = T, padding slots weigh 0.
    (Packed rows' example_ids / positions / draw rows are not needed for that.)"""
    mask = np.asarray(attention_mask)
    positions = np.zeros(mask.shape, np.int32)
    weights = np.zeros(mask.shape, np.float32)
    for row, real in enumerate(mask):
        where = np.nonzero(real)[0]
        positions[row, :len(where)], weights[row, :len(where)] = where, 1.0
    return {"input_ids": token_ids, "masked_positions": jnp.asarray(positions),
            "masked_labels": token_ids, "masked_weights": jnp.asarray(weights)}


def test_masked_inputs_weight_each_masked_token_by_its_example():
    batch = padded_batch()
    batch["nsp_labels"] = np.zeros(len(LENGTHS), np.int32)
    batch["example_weights"][2] = 0.0  # the 16-token example: its tokens must not count
    packed = packing.pack_batch(batch)
    inputs = steps.masked_inputs(packed, jax.random.PRNGKey(0), mask_every_real_token)
    owner = np.take_along_axis(packed["example_ids"], np.asarray(inputs["masked_positions"]), 1)
    expected = (owner != 3) & (packed["attention_mask"].sum(1, keepdims=True) >
                               np.arange(T)[None])  # real slots of rows, not of example 3
    np.testing.assert_array_equal(inputs["masked_weights"], expected)
    assert set(steps.PACKED_MODEL_KEYS) <= set(inputs)


def test_mlm_and_nsp_sums_packed_equal_padded():
    """forward_sums (the MLM steps' loss) over the same tokens, packed and padded."""
    batch = padded_batch()
    batch["nsp_labels"] = (np.arange(len(LENGTHS)) % 2).astype(np.int32)
    batch["example_weights"][4] = 0.0
    model = BertForPreTraining(config(position_embedding="learned"), with_nsp=True)
    params = init(model, batch)
    sums = {}
    for name, rows in (("padded", batch), ("packed", packing.pack_batch(batch))):
        inputs = steps.masked_inputs(rows, jax.random.PRNGKey(0), mask_every_real_token)
        sums[name] = steps.forward_sums(params, model.apply, inputs, with_nsp=True,
                                        deterministic=True)
    real_tokens = sum(LENGTHS) - LENGTHS[4]
    assert float(sums["packed"]["mlm_weight"]) == float(sums["padded"]["mlm_weight"]) == real_tokens
    for key in sums["padded"]:
        assert float(sums["packed"][key]) == pytest.approx(float(sums["padded"][key]), rel=1e-5)


def test_packed_mlm_train_step_refuses_gradient_accumulation():
    batch = padded_batch()
    batch["nsp_labels"] = np.zeros(len(LENGTHS), np.int32)
    packed = packing.pack_batch(batch)
    state = create_train_state(BertForPreTraining(config()), optimizer.make_optimizer(
        "adamw", lr=1e-3, warmup_steps=0, num_steps=10, weight_decay=0.0, b1=0.9, b2=0.999,
        eps=1e-6, clip_norm=1.0)[0], init(BertForPreTraining(config()), batch), mesh=data_mesh())
    with pytest.raises(ValueError, match="gradient accumulation over a packed batch"):
        steps.train_step(state, packed, jax.random.PRNGKey(0), mask_fn=mask_every_real_token,
                         schedule=lambda step: 1e-3, grad_accum_steps=2, with_nsp=True)
