"""Dynamic masking: exact counts, 80/10/10 statistics, whole words, determinism, one compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertlab.data.pretraining.masking import (continuation_table, mask_tokens, num_predictions_table,
                                  random_non_special_ids)
from bertlab.text.tokenizer import vocab_from_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
V = 1000


def random_batch(batch=1024, length=64, seed=0):
    """[CLS] a [SEP] b [SEP] [PAD]... with random lengths and ordinary ids in [5, V)."""
    rs = np.random.RandomState(seed)
    ids = rs.randint(5, V, (batch, length))
    lengths = rs.randint(5, length + 1, batch)
    cols = np.arange(length)[None, :]
    mask = (cols < lengths[:, None]).astype(np.int32)
    ids[:, 0] = CLS
    ids[np.arange(batch), lengths - 1] = SEP
    ids[np.arange(batch), lengths // 2] = SEP
    ids[np.arange(batch)[::7], 1] = UNK  # a few [UNK]s that must never be chosen
    ids = np.where(mask == 1, ids, PAD)
    return ids.astype(np.int32), mask, lengths


STATIC = ("mask_id", "vocab_size", "special_ids", "rate", "max_predictions", "whole_word")
jitted_mask_tokens = jax.jit(mask_tokens, static_argnames=STATIC)


def run(rng, ids, mask, **kw):
    """mask_tokens as a train step runs it (jitted), with numpy outputs. A special_ids array is
    closed over, since arrays cannot be static arguments."""
    kw = {"mask_id": MASK, "vocab_size": V, "special_ids": SPECIALS, **kw}
    if isinstance(kw["special_ids"], jax.Array):
        specials = kw.pop("special_ids")
        fn = jax.jit(lambda r, i, m: mask_tokens(r, i, m, special_ids=specials, **kw))
        return jax.tree.map(np.asarray, fn(rng, ids, mask))
    return jax.tree.map(np.asarray, jitted_mask_tokens(rng, ids, mask, **kw))


# Tests on random_batch()'s default shapes use these options, so they share one compiled program
# (compiling dominates this file's run time).
COUNTS_CONFIG = {"max_predictions": 10}


def selected_matrix(out, shape):
    sel = np.zeros(shape, bool)
    rows, slots = np.nonzero(out["masked_weights"])
    sel[rows, out["masked_positions"][rows, slots]] = True
    return sel


def test_prediction_counts_follow_python_round():
    table = num_predictions_table(130, 0.15, 20)
    # hand values: 0 tokens still asks for 1; ties go to even as Python round: 1.5 -> 2, 4.5 -> 4
    assert [table[n] for n in (0, 3, 10, 30, 40, 100, 130)] == [1, 1, 2, 4, 6, 15, 20]


def test_counts_positions_labels_and_untouched_tokens():
    ids, mask, lengths = random_batch()
    out = run(jax.random.key(0), ids, mask, **COUNTS_CONFIG)
    specials = np.isin(ids, SPECIALS)
    candidates = (mask == 1) & ~specials
    expected = np.minimum(np.minimum(10, np.maximum(1, np.round(lengths * 0.15))),
                          candidates.sum(1))
    np.testing.assert_array_equal(out["masked_weights"].sum(1), expected)
    weights = out["masked_weights"] == 1
    # weighted slots first, positions ascending, padding slots all zero
    assert np.all(np.sort(~weights, axis=1, kind="stable") == ~weights)
    pos = np.where(weights, out["masked_positions"], np.iinfo(np.int32).max)
    assert np.all(np.diff(pos, axis=1)[weights[:, 1:]] > 0)
    assert np.all(out["masked_positions"][~weights] == 0) and np.all(out["masked_labels"][~weights] == 0)
    np.testing.assert_array_equal(np.take_along_axis(ids, out["masked_positions"], 1)[weights],
                                  out["masked_labels"][weights])
    sel = selected_matrix(out, ids.shape)
    assert not np.any(sel & specials) and not np.any(sel & (mask == 0))
    np.testing.assert_array_equal(out["input_ids"][~sel], ids[~sel])  # specials, padding, rest


def test_rate_and_80_10_10_proportions():
    ids, mask, lengths = random_batch(batch=2048, length=128, seed=1)
    out = run(jax.random.key(1), ids, mask, rate=0.2, max_predictions=128)
    sel = selected_matrix(out, ids.shape)
    real = mask.sum()
    assert abs(sel.sum() / real - 0.2) < 0.005
    n = sel.sum()  # ~35k predictions: 3 standard deviations of a proportion ~ 0.0065
    to_mask = (out["input_ids"] == MASK) & sel
    same = (out["input_ids"] == ids) & sel
    other = sel & ~to_mask & ~same
    assert abs(to_mask.sum() / n - 0.8) < 0.01
    assert abs(same.sum() / n - 0.1) < 0.008  # includes the 1/995 random draws of the same id
    assert abs(other.sum() / n - 0.1) < 0.008
    assert not np.any(np.isin(out["input_ids"][other], SPECIALS))


def test_random_replacements_are_uniform_over_non_special_ids():
    specials = jnp.array([9, 0, 3, 7])  # unsorted, non-contiguous
    draws = np.asarray(random_non_special_ids(jax.random.key(2), (80_000,), 12, jnp.sort(specials)))
    counts = np.bincount(draws, minlength=12)
    assert counts[[0, 3, 7, 9]].sum() == 0
    ordinary = counts[[1, 2, 4, 5, 6, 8, 10, 11]]
    assert np.all(np.abs(ordinary / 10_000 - 1) < 0.05)


def test_special_ids_as_array_match_tuple():
    ids, mask, _ = random_batch()
    a = run(jax.random.key(3), ids, mask, **COUNTS_CONFIG)
    b = run(jax.random.key(3), ids, mask, special_ids=jnp.array([4, 3, 2, 1, 0]), **COUNTS_CONFIG)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_deterministic_in_the_rng():
    ids, mask, _ = random_batch()
    a = run(jax.random.key(4), ids, mask, **COUNTS_CONFIG)
    b = run(jax.random.key(4), ids, mask, **COUNTS_CONFIG)
    c = run(jax.random.key(5), ids, mask, **COUNTS_CONFIG)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["masked_positions"], c["masked_positions"])
    assert not np.array_equal(a["input_ids"], c["input_ids"])


def test_jit_compiles_once():
    run(jax.random.key(0), *random_batch()[:2], **COUNTS_CONFIG)
    compiled = jitted_mask_tokens._cache_size()
    for seed in range(1, 4):  # new rng and new data, same shapes: no new compilation
        ids, mask, _ = random_batch(seed=seed)
        out = jitted_mask_tokens(jax.random.key(seed), ids, mask, mask_id=MASK, vocab_size=V,
                                 special_ids=SPECIALS, **COUNTS_CONFIG)
    assert jitted_mask_tokens._cache_size() == compiled
    assert out["input_ids"].dtype == jnp.int32 and out["masked_weights"].dtype == jnp.float32


def wwm_vocab():
    words = ["the", "un", "##believ", "##able", "cat", "##s", "sat", "re", "##do", "on", "mat"]
    return vocab_from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)


def test_continuation_table():
    table = continuation_table(wwm_vocab())
    assert table.tolist() == [False] * 5 + [False, False, True, True, False, True, False, False,
                                            True, False, False]


def test_whole_word_masks_every_piece_of_a_chosen_word():
    vocab = wwm_vocab()
    rs = np.random.RandomState(6)
    batch, length = 512, 40
    ids = rs.randint(5, len(vocab), (batch, length)).astype(np.int32)
    ids[:, 0] = CLS
    ids[:, 20] = SEP
    ids[:, 21] = vocab.id("##s")  # a continuation right after [SEP] starts its own word
    ids[:, -1] = SEP
    mask = np.ones_like(ids)
    table = continuation_table(vocab)
    out = run(jax.random.key(7), ids, mask, vocab_size=len(vocab), max_predictions=8,
              whole_word=True, continuation_table=jnp.asarray(table))
    sel = selected_matrix(out, ids.shape)
    words_seen = 0
    for b in range(batch):
        t = 1
        while t < length:
            if ids[b, t] in SPECIALS:
                t += 1
                continue
            end = t + 1
            while end < length and table[ids[b, end]] and ids[b, end - 1] not in SPECIALS:
                end += 1
            assert sel[b, t:end].all() or not sel[b, t:end].any(), (b, t, end, ids[b])
            words_seen += end - t > 1
            t = end
    assert words_seen > batch  # the check saw many multi-piece words
    counts = out["masked_weights"].sum(1)
    assert counts.max() <= 6  # round(40 * 0.15) = 6
    assert counts.mean() > 0.97 * 6  # the budget is (nearly) always filled
    assert sel[:, 21].any()  # the lone "##s" after [SEP] can be chosen on its own


def test_whole_word_needs_the_table():
    ids, mask, _ = random_batch(batch=2)
    with pytest.raises(ValueError, match="continuation_table"):
        run(jax.random.key(0), ids, mask, whole_word=True)
