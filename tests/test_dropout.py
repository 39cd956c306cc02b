"""bertlab.models.dropout: hashed keep masks (dropout_impl="hash") and flax's ("threefry").

The hash against a plain-Python reference written from its definition; the mask's statistics
(keep rate inside a binomial bound, no correlation between sites, seeds or neighbours); the
arithmetic of nn.Dropout; "threefry" equal to the code before the knob, bit for bit; train
steps with both; 8 CPU devices equal to one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab.models import (BertConfig, BertForPreTraining, BertForSequenceClassification,
                            ConfigError, attention, bert, embedding, encoder)
from bertlab.models import config as config_module
from bertlab.models import dropout
from bertlab.models.config import config_from_dict
from bertlab.models.dropout import HashedDropout, dropout_layer, hashed_bits, lowbias32
from bertlab.train import mesh as mesh_lib
from bertlab.train import optimizer, steps
from bertlab.train import state as train_state
from bertlab.text.tokenizer import vocab_from_tokens
from conftest import run_on_forced_cpu_devices

M32 = 0xFFFFFFFF


def lowbias32_reference(x: int) -> int:
    """The mixer in plain Python integers, from its definition."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def mask_of(rng, shape, rate):
    """The keep mask HashedDropout draws from `rng` when it is passed explicitly."""
    seed = jax.random.bits(rng, (2,), jnp.uint32)
    return np.asarray(hashed_bits(seed, shape) >= jnp.uint32(dropout.keep_threshold(rate)))


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


# ------------------------------------------------------------------------ the config knob


def test_dropout_impl_knob_defaults_to_hash_and_names_its_values():
    assert BertConfig().dropout_impl == "hash"
    assert config_module.DROPOUT_IMPL_NAMES == dropout.DROPOUT_IMPL_NAMES == ("hash", "threefry")
    with pytest.raises(ConfigError, match=r"BertConfig.dropout_impl='philox' is not one of "
                                          r"hash, threefry"):
        BertConfig(dropout_impl="philox")
    # A config.json saved before the key existed loads as the new default.
    old = {k: v for k, v in config_module.config_to_dict(BertConfig()).items()
           if k != "dropout_impl"}
    assert config_from_dict(old).dropout_impl == "hash"
    with pytest.raises(ValueError, match="dropout_impl='x' is not one of hash, threefry"):
        dropout_layer(0.1, "x")


# ------------------------------------------------------------------------------- the hash


def test_lowbias32_matches_its_definition_and_is_a_bijection_on_2_20_counters():
    xs = [0, 1, 2, 0x12345678, 0x80000000, M32, 0x9E3779B9]
    got = np.asarray(lowbias32(jnp.asarray(xs, jnp.uint32)))
    assert [int(v) for v in got] == [lowbias32_reference(x) for x in xs]
    counters = jnp.arange(2 ** 20, dtype=jnp.uint32)
    assert np.unique(np.asarray(lowbias32(counters))).size == 2 ** 20
    bits = np.asarray(hashed_bits(jnp.asarray([7, 11], jnp.uint32), (2 ** 20,)))
    assert np.unique(bits).size == 2 ** 20  # one array: no two elements share their bits


def test_hashed_bits_are_the_keyed_hash_of_the_flat_index():
    seed = (0xDEADBEEF, 0x01234567)
    shape = (3, 5, 7)
    got = np.asarray(hashed_bits(jnp.asarray(seed, jnp.uint32), shape)).ravel()
    want = [lowbias32_reference(lowbias32_reference((i + seed[0]) & M32) ^ seed[1])
            for i in range(3 * 5 * 7)]
    assert [int(v) for v in got] == want


def test_arrays_beyond_2_32_elements_get_a_second_word(monkeypatch):
    """The bound scaled down to 2^6 so the split can be checked on 128 elements: the trailing
    dimensions (8 x 4 = 32 <= 64) make the low word, the leading one the high word, and every
    element keeps its own (lo, hi) pair, so no stream repeats within the array."""
    monkeypatch.setattr(dropout, "_TWO_32", 2 ** 6)
    lo, hi = dropout.position_words((4, 8, 4))
    flat = np.arange(128).reshape(4, 8, 4)
    np.testing.assert_array_equal(np.asarray(hi), flat // 32)
    np.testing.assert_array_equal(np.asarray(lo), flat % 32)
    assert dropout.position_words((2, 32))[1] is None  # 64 elements: one word is enough
    bits = np.asarray(hashed_bits(jnp.asarray([3, 9], jnp.uint32), (4, 8, 4)))
    assert np.unique(bits).size == 128
    # the high word keys the second round: the blocks are not copies of each other
    assert not np.array_equal(bits[0], bits[1])
    with pytest.raises(ValueError, match="more than 2\\^32 elements"):
        dropout.position_words((65,))
    with pytest.raises(ValueError, match="more than 2\\^32 elements"):
        dropout.position_words((9, 9, 64))  # leading 81 > 64 too


# ---------------------------------------------------------------------- the mask and output


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.02])
def test_keep_rate_is_within_a_binomial_bound(rate):
    n = 1024 * 1024
    kept = int(mask_of(jax.random.PRNGKey(3), (256, 4096), rate).sum())
    sigma = (n * rate * (1 - rate)) ** 0.5
    assert abs(kept - n * (1 - rate)) < 5 * sigma, (kept, n * (1 - rate), sigma)
    assert dropout.keep_threshold(rate) == round(rate * 2 ** 32)


def test_output_is_x_times_mask_over_keep_probability_as_flax():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 32))
    rng = jax.random.PRNGKey(5)
    out = HashedDropout(0.1).apply({}, x, deterministic=False, rng=rng)
    keep = mask_of(rng, x.shape, 0.1)
    # flax's arithmetic (inputs / keep_prob where kept) exactly, and the quotient to 1 ulp
    np.testing.assert_array_equal(out, jnp.where(keep, x / (1.0 - 0.1), 0.0))
    np.testing.assert_allclose(out, np.where(keep, np.asarray(x) / np.float32(0.9), 0.0),
                               rtol=2e-7, atol=0)
    assert 0.85 < keep.mean() < 0.95
    # bfloat16 stays bfloat16, with the same mask (the bits do not depend on the dtype)
    half = HashedDropout(0.1).apply({}, x.astype(jnp.bfloat16), deterministic=False, rng=rng)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(half) != 0, keep & (np.asarray(x) != 0))


def test_broadcast_dims_share_one_mask_row():
    x = jnp.ones((3, 64))
    out = np.asarray(HashedDropout(0.5, broadcast_dims=(0,)).apply(
        {}, x, deterministic=False, rng=jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    assert set(np.unique(out)) == {0.0, 2.0}


def test_rate_zero_or_deterministic_is_the_identity_and_draws_no_rng():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 8))
    # no `dropout` rng given: make_rng would raise if it were called
    np.testing.assert_array_equal(HashedDropout(0.0).apply({}, x, deterministic=False), x)
    np.testing.assert_array_equal(HashedDropout(0.3).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(HashedDropout(0.3, deterministic=True).apply({}, x), x)
    ones = HashedDropout(1.0).apply({}, x, deterministic=False, rng=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(ones, jnp.zeros_like(x))


class TwoSites(nn.Module):
    """Two dropout sites in one module, as two layers of the model."""

    impl: str = "hash"
    rate: float = 0.5

    @nn.compact
    def __call__(self, x):
        first = dropout_layer(self.rate, self.impl)(x, deterministic=False)
        second = dropout_layer(self.rate, self.impl)(x, deterministic=False)
        return first, second


def test_same_rng_same_mask_other_rng_or_site_uncorrelated():
    x = jnp.ones((512, 512))
    n = x.size
    a1, b1 = TwoSites().apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)})
    a2, b2 = TwoSites().apply({}, x, rngs={"dropout": jax.random.PRNGKey(0)})
    a3, _ = TwoSites().apply({}, x, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    bound = 5 / n ** 0.5  # 5 standard errors of a correlation between independent masks
    for other in (b1, a3):  # another site, another rng
        assert abs(correlation(a1 != 0, other != 0)) < bound
    # neighbours within one mask: along rows and along columns
    keep = np.asarray(a1 != 0)
    assert abs(correlation(keep[:, 1:], keep[:, :-1])) < bound
    assert abs(correlation(keep[1:], keep[:-1])) < bound


def test_seeds_one_position_apart_do_not_give_shifted_copies():
    """With only the first word added before one round, seed s0 + 1 would give the s0 stream
    shifted by one element. The second keyed round removes that: same s1 -> exact shift (the
    construction), another s1 -> uncorrelated."""
    n = 2 ** 18
    base = np.asarray(hashed_bits(jnp.asarray([100, 7], jnp.uint32), (n,)))
    same_key = np.asarray(hashed_bits(jnp.asarray([101, 7], jnp.uint32), (n,)))
    other_key = np.asarray(hashed_bits(jnp.asarray([101, 8], jnp.uint32), (n,)))
    np.testing.assert_array_equal(same_key[:-1], base[1:])
    threshold = dropout.keep_threshold(0.5)
    assert abs(correlation(other_key[:-1] >= threshold, base[1:] >= threshold)) < 5 / n ** 0.5


def test_bits_are_uniform_over_the_top_byte():
    """A chi-square over the 256 values of the top byte (what the threshold compares first)."""
    bits = np.asarray(hashed_bits(jnp.asarray([1, 2], jnp.uint32), (2 ** 20,)))
    counts = np.bincount(bits >> 24, minlength=256)
    expected = bits.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 350  # 255 degrees of freedom: mean 255, sd 22.6; 350 is ~4.2 sd


# --------------------------------------------------------------- "threefry" is the old code


def test_threefry_impl_is_flax_dropout_at_one_site():
    class Flax(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dropout(0.5)(x, deterministic=False), nn.Dropout(0.5)(x, deterministic=False)

    x = jax.random.normal(jax.random.PRNGKey(0), (16, 16))
    rngs = {"dropout": jax.random.PRNGKey(4)}
    ours = TwoSites(impl="threefry").apply({}, x, rngs=rngs)
    theirs = Flax().apply({}, x, rngs=rngs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def plain_flax_dropout(monkeypatch):
    """Every call site as it was before the knob: nn.Dropout(rate[, deterministic])."""
    old = lambda rate, impl, *, deterministic=None: nn.Dropout(rate, deterministic=deterministic)
    for module in (embedding, attention, encoder, bert):
        monkeypatch.setattr(module, "dropout_layer", old)


SMALL = dict(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
             max_position_embeddings=16)


def small_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, (3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, -4:] = 0
    return ids, np.zeros_like(ids), mask


def classify(config, params, rng, *, deterministic=False):
    ids, segments, mask = small_batch()
    return BertForSequenceClassification(config, num_labels=3).apply(
        {"params": params}, ids, segments, mask, deterministic=deterministic,
        rngs={"dropout": rng})


def test_threefry_model_equals_the_model_before_the_knob(monkeypatch):
    config = BertConfig(**SMALL, dropout_impl="threefry", hidden_dropout=0.3,
                        attention_dropout=0.3)
    ids, segments, mask = small_batch()
    params = BertForSequenceClassification(config, num_labels=3).init(
        jax.random.PRNGKey(0), ids, segments, mask)["params"]
    rng = jax.random.PRNGKey(9)
    threefry = classify(config, params, rng)
    hashed = classify(BertConfig(**SMALL, hidden_dropout=0.3, attention_dropout=0.3), params, rng)
    plain_flax_dropout(monkeypatch)
    before = classify(config, params, rng)
    np.testing.assert_array_equal(threefry, before)
    assert not np.allclose(hashed, before)  # the hash draws other masks
    evaluation = classify(config, params, rng, deterministic=True)
    assert not np.allclose(evaluation, before)


# ---------------------------------------------------------------------------- train steps

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]
VOCAB = vocab_from_tokens(TOKENS)
MESH = mesh_lib.data_mesh()


ONE_LAYER = {**SMALL, "num_layers": 1}


def pretrain_losses(configs: dict) -> dict:
    """{name: (loss, the same step's loss again)} of one MLM + NSP step per BertConfig, from the
    same parameters, batch and rng."""
    rng = np.random.default_rng(1)
    ids = rng.integers(5, len(VOCAB), (4, 12)).astype(np.int32)
    ids[:, 0], ids[:, -1] = VOCAB.cls_id, VOCAB.sep_id
    batch = mesh_lib.global_batch({"token_ids": ids, "segment_ids": np.zeros_like(ids),
                                   "attention_mask": np.ones_like(ids),
                                   "nsp_labels": np.array([0, 1, 0, 1], np.int32)}, MESH)
    mask_fn = steps.make_mask_fn(VOCAB, rate=0.15, max_predictions=3, whole_word=False)
    tx, schedule = optimizer.make_optimizer("adamw", lr=1e-3, warmup_steps=0, num_steps=10,
                                            weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                            clip_norm=1.0)
    step = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule, grad_accum_steps=1,
                                with_nsp=True, mesh=MESH)
    params = jax.device_get(train_state.init_params(  # on the host: the step donates its state
        BertForPreTraining(BertConfig(**ONE_LAYER), with_nsp=True), jax.random.PRNGKey(0),
        seq_len=12, num_predictions=3, mesh=MESH))
    out = {}
    for name, config in configs.items():
        model = BertForPreTraining(config, with_nsp=True)
        out[name] = tuple(
            float(step(train_state.create_train_state(model, tx, mesh_lib.replicate(params, MESH),
                                                      mesh=MESH),
                       batch, jax.random.PRNGKey(2))[1]["loss"])
            for _ in range(2))
    return out


def test_pretraining_step_differs_between_impls_only_through_the_masks():
    """rate 0: no mask, the impl cannot matter (the fine-tune test below checks both impls at
    rate 0); rate 0.2: each impl's loss is repeatable (exact resume) and they differ."""
    losses = pretrain_losses({
        "off": BertConfig(**ONE_LAYER, hidden_dropout=0.0, attention_dropout=0.0),
        "hash": BertConfig(**ONE_LAYER, hidden_dropout=0.2, attention_dropout=0.2),
        "threefry": BertConfig(**ONE_LAYER, hidden_dropout=0.2, attention_dropout=0.2,
                               dropout_impl="threefry")})
    for name, (first, again) in losses.items():
        assert np.isfinite(first) and first == again, name  # deterministic in the rng
    assert len({losses[name][0] for name in ("off", "hash", "threefry")}) == 3
    # the masks move the loss by a dropout-sized amount, not to another scale
    for name in ("hash", "threefry"):
        assert abs(losses[name][0] - losses["off"][0]) < 0.2 * losses["off"][0]


def test_finetune_step_loss_is_the_model_loss_under_its_own_masks():
    """The classification step's loss for each impl equals the loss recomputed by hand from the
    model with that impl and the step's dropout rng; at rate 0 the impls agree exactly."""
    ids, segments, mask = small_batch()
    labels = np.array([0, 2, 1], np.int32)
    batch = {"token_ids": ids, "segment_ids": segments, "attention_mask": mask, "labels": labels,
             "example_weights": np.ones(3, np.float32)}
    step = steps.jit_classify_train_step(schedule=lambda s: 0.1, regression=False, frozen=(),
                                         mesh=MESH)
    model = BertForSequenceClassification(BertConfig(**ONE_LAYER), num_labels=3)
    params = jax.device_get(model.init(jax.random.PRNGKey(0), ids, segments, mask)["params"])
    # (on the host: the step donates each state's device copy)
    rng = jax.random.PRNGKey(3)
    losses = {}
    for rate in (0.0, 0.2):
        for impl in ("hash", "threefry"):
            config = BertConfig(**ONE_LAYER, hidden_dropout=rate, attention_dropout=rate,
                                dropout_impl=impl)
            model = BertForSequenceClassification(config, num_labels=3)
            state = train_state.create_train_state(model, optax.sgd(0.1),
                                                   mesh_lib.replicate(params, MESH), mesh=MESH)
            _, metrics = step(state, mesh_lib.global_batch(batch, MESH), rng)
            logits = classify(config, params, jax.random.fold_in(rng, 0))  # step 0's rng
            by_hand = -np.mean(np.take_along_axis(jax.nn.log_softmax(logits), labels[:, None],
                                                  axis=1))
            assert float(metrics["loss"]) == pytest.approx(float(by_hand), rel=1e-5)
            losses[rate, impl] = float(metrics["loss"])
    assert losses[0.0, "hash"] == losses[0.0, "threefry"]
    assert losses[0.2, "hash"] != losses[0.2, "threefry"]


# ---------------------------------------------------------------------- 8 devices == 1

EIGHT_DEVICES = r'''
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from bertlab.models import BertConfig, BertForSequenceClassification
from bertlab.models.dropout import HashedDropout
from bertlab.train import mesh as mesh_lib
assert jax.device_count() == 8
mesh = mesh_lib.data_mesh()
x = jax.random.normal(jax.random.PRNGKey(0), (16, 12, 40))
drop = jax.jit(lambda x, key: HashedDropout(0.3).apply({}, x, deterministic=False, rng=key))
key = jax.random.PRNGKey(5)
one = np.asarray(drop(jax.device_put(x, jax.devices()[0]), key))
eight = drop(jax.device_put(x, NamedSharding(mesh, P(mesh.axis_names[0]))), key)
assert len(eight.sharding.device_set) == 8
np.testing.assert_array_equal(np.asarray(eight), one)
config = BertConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=48,
                    max_position_embeddings=16)
model = BertForSequenceClassification(config, num_labels=2)
ids = np.random.default_rng(0).integers(5, 50, (16, 12)).astype(np.int32)
params = model.init(jax.random.PRNGKey(0), ids, ids * 0, ids * 0 + 1)["params"]
apply = jax.jit(lambda p, b, k: model.apply({"params": p}, b["ids"], b["ids"] * 0, b["ids"] * 0 + 1,
                                            deterministic=False, rngs={"dropout": k}))
one = np.asarray(apply(params, {"ids": jax.device_put(ids, jax.devices()[0])}, key))
eight = apply(mesh_lib.replicate(params, mesh), mesh_lib.global_batch({"ids": ids}, mesh), key)
np.testing.assert_allclose(np.asarray(eight), one, rtol=1e-5, atol=1e-6)
print("OK")
'''


def test_eight_devices_draw_the_one_device_masks():
    assert run_on_forced_cpu_devices(EIGHT_DEVICES, 8).startswith("OK")
