"""The jitted train/eval steps on a tiny BERT: loss definition, learning, accumulation, no retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertlab.train import losses
from bertlab.train import optimizer
from bertlab.train import steps
from bertlab.train import state as train_state
from bertlab.train.mesh import data_mesh, global_batch, replicate
from bertlab.models import BertForPreTraining, BertConfig
from bertlab.text.tokenizer import vocab_from_tokens

B, T, P = 8, 16, 4
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
VOCAB = vocab_from_tokens(TOKENS)


def tiny_config(**overrides):
    values = dict(vocab_size=len(VOCAB), hidden_size=32, num_layers=1, num_heads=2,
                  intermediate_size=64, max_position_embeddings=32, hidden_dropout=0.0,
                  attention_dropout=0.0)
    values.update(overrides)
    return BertConfig(**values)


def fixed_batch(seed=0, with_padding=True):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, len(VOCAB), size=(B, T)).astype(np.int32)
    lengths = rng.integers(T // 2, T + 1, size=B) if with_padding else np.full(B, T)
    attention_mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int32)
    token_ids[:, 0] = VOCAB.cls_id
    token_ids[np.arange(B), lengths - 1] = VOCAB.sep_id
    token_ids = np.where(attention_mask == 1, token_ids, VOCAB.pad_id)
    return {"token_ids": token_ids, "segment_ids": np.zeros((B, T), np.int32),
            "attention_mask": attention_mask, "nsp_labels": rng.integers(0, 2, size=B).astype(np.int32)}


MESH = data_mesh()
MASK_FN = steps.make_mask_fn(VOCAB, rate=0.15, max_predictions=P, whole_word=False)


SCHEDULE_ARGS = dict(lr=1e-2, warmup_steps=0, num_steps=100, weight_decay=0.01, b1=0.9,
                     b2=0.999, eps=1e-6, clip_norm=1.0)


@pytest.fixture(scope="module")
def setup():
    """One model, optimizer and compiled k=1 step (with NSP) shared by every test here."""
    model = BertForPreTraining(tiny_config(), with_nsp=True)
    tx, schedule = optimizer.make_optimizer("adamw", **SCHEDULE_ARGS)
    params = jax.device_get(train_state.init_params(model, jax.random.PRNGKey(0), seq_len=T,
                                                    num_predictions=P, mesh=MESH))
    step_fn = steps.jit_train_step(mask_fn=MASK_FN, schedule=schedule, grad_accum_steps=1,
                                   with_nsp=True, mesh=MESH)

    def fresh_state():
        return train_state.create_train_state(model, tx, replicate(params, MESH), mesh=MESH)

    return {"model": model, "tx": tx, "schedule": schedule, "params": params,
            "step_fn": step_fn, "fresh_state": fresh_state}


@pytest.fixture(scope="module")
def trained(setup):
    """30 steps on one fixed batch (the masking changes every step, the sequences do not)."""
    state, step_fn = setup["fresh_state"](), setup["step_fn"]
    batch = global_batch(fixed_batch(), MESH)
    rng = replicate(jax.random.PRNGKey(1), MESH)
    history = []
    for _ in range(30):
        state, metrics = step_fn(state, batch, rng)
        history.append(jax.device_get(metrics))
    return state, history


def test_loss_falls_on_a_fixed_batch(trained):
    _, history = trained
    first = np.mean([m["mlm_loss"] for m in history[:3]])
    last = np.mean([m["mlm_loss"] for m in history[-3:]])
    assert first > np.log(len(VOCAB)) - 1.0        # starts near uniform over the vocabulary
    assert last < first - 1.0, (first, last)        # and learns these sequences
    assert history[-1]["nsp_accuracy"] == 1.0       # 8 fixed NSP labels are memorised


def test_compiled_once(setup, trained):
    assert setup["step_fn"]._cache_size() == 1


def test_metrics_report_schedule_and_bounded_accuracy(setup, trained):
    state, history = trained
    assert int(state.step) == 30
    for step, m in enumerate(history):
        assert m["learning_rate"] == pytest.approx(float(setup["schedule"](step)), rel=1e-6)
        assert 0.0 <= m["mlm_accuracy"] <= 1.0
        assert m["grad_norm"] > 0
        assert m["loss"] == pytest.approx(m["mlm_loss"] + m["nsp_loss"], rel=1e-6)
    assert history[0]["nsp_loss"] == pytest.approx(np.log(2), abs=0.2)  # a fresh head is unsure


def test_loss_is_the_weighted_mean_over_masked_positions_only(setup):
    """Recompute the step-0 losses by hand: the same masking, the model, a numpy softmax."""
    state = setup["fresh_state"]()
    params = jax.device_get(state.params)
    batch = fixed_batch(seed=3)
    rng = jax.random.PRNGKey(7)
    _, metrics = setup["step_fn"](state, global_batch(batch, MESH), replicate(rng, MESH))

    @jax.jit
    def reference(params, batch, rng):
        mask_rng, _ = jax.random.split(jax.random.fold_in(rng, 0))
        masked = MASK_FN(mask_rng, batch["token_ids"], batch["attention_mask"])
        out = setup["model"].apply({"params": params}, masked["input_ids"], batch["segment_ids"],
                                   batch["attention_mask"], masked["masked_positions"],
                                   deterministic=True)
        return masked, out["mlm_logits"], out["nsp_logits"]

    masked, logits, nsp_logits = jax.device_get(reference(params, batch, rng))

    def log_softmax(x):
        x = np.asarray(x, np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    labels, weights = masked["masked_labels"], masked["masked_weights"]
    assert 0 < weights.sum() < weights.size  # some slots are padding and must not count
    nll = -np.take_along_axis(log_softmax(logits), labels[..., None], -1)[..., 0]
    assert float(metrics["mlm_loss"]) == pytest.approx((nll * weights).sum() / (weights.sum() + 1e-5),
                                                       rel=1e-5)
    correct = (logits.argmax(-1) == labels) * weights
    assert float(metrics["mlm_accuracy"]) == pytest.approx(correct.sum() / weights.sum(), abs=1e-6)
    nsp_nll = -log_softmax(nsp_logits)[np.arange(B), batch["nsp_labels"]]
    assert float(metrics["nsp_loss"]) == pytest.approx(nsp_nll.mean(), rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch(setup):
    batch = global_batch(fixed_batch(seed=5), MESH)
    rng = replicate(jax.random.PRNGKey(2), MESH)
    accumulate4 = steps.jit_train_step(mask_fn=MASK_FN, schedule=setup["schedule"],
                                       grad_accum_steps=4, with_nsp=True, mesh=MESH)
    results = {}
    for k, step_fn in ((1, setup["step_fn"]), (4, accumulate4)):
        state = setup["fresh_state"]()
        for _ in range(2):
            state, metrics = step_fn(state, batch, rng)
        results[k] = (jax.device_get(state.params), jax.device_get(metrics))
    (p1, m1), (p4, m4) = results[1], results[4]
    for name in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "grad_norm"):
        assert m4[name] == pytest.approx(m1[name], rel=1e-5, abs=1e-6), name
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_eval_step_is_repeatable_and_ignores_padding_rows(trained):
    state = trained[0]
    eval_fn = steps.jit_eval_step(mask_fn=MASK_FN, with_nsp=True, mesh=MESH)
    batch = fixed_batch(seed=9)
    batch["example_weights"] = np.ones(B, np.float32)
    rng = replicate(jax.random.PRNGKey(11), MESH)
    first = jax.device_get(eval_fn(state, global_batch(batch, MESH), rng))
    again = jax.device_get(eval_fn(state, global_batch(batch, MESH), rng))
    assert first == again
    # Zero-weight rows (the padding of a last partial batch) count for nothing.
    batch["example_weights"] = np.array([1] * (B // 2) + [0] * (B // 2), np.float32)
    half = jax.device_get(eval_fn(state, global_batch(batch, MESH), rng))
    assert eval_fn._cache_size() == 1
    masked = jax.device_get(jax.jit(MASK_FN)(jax.random.PRNGKey(11), batch["token_ids"],
                                             batch["attention_mask"]))
    assert half["mlm_weight"] == pytest.approx(float(masked["masked_weights"][: B // 2].sum()))
    assert half["nsp_weight"] == B // 2
    metrics = steps.eval_metrics(first)
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["mlm_loss"]), rel=1e-6)
    assert metrics["masked_tokens"] == pytest.approx(first["mlm_weight"])


def test_losses_ignore_zero_weight_slots():
    logits = jnp.array([[[0.0, 0.0], [5.0, -5.0]]])  # (1, 2, 2)
    labels = jnp.array([[0, 1]])
    sums = losses.masked_lm_sums(logits, labels, jnp.array([[1.0, 0.0]]))
    assert float(sums["mlm_loss_sum"]) == pytest.approx(np.log(2), rel=1e-6)
    assert float(sums["mlm_weight"]) == 1.0
    assert float(sums["mlm_correct"]) == 1.0  # argmax of a tie is index 0
