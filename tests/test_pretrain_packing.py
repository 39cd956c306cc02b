"""Packed pretraining (data.packing): per-example masking in packed rows, stacked packed
micro-batches in the MLM train step, the planned row buckets, and the loop end to end (packed
equals padded with dropout off; kill-and-resume stays exact)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertlab import cli
from bertlab.data import packing
from bertlab.data.pretraining import packed
from bertlab.data.pretraining.masking import (continuation_table, mask_tokens,
                                              prediction_counts)
from bertlab.models import BertConfig, BertForPreTraining
from bertlab.text.vocab import vocab_from_tokens
from bertlab.train import optimizer, steps
from bertlab.train.mesh import data_mesh
from bertlab.train.metric_writer import read_metrics
from bertlab.train.state import create_train_state
from conftest import prepared_overrides, write_random_corpus

pytestmark = pytest.mark.usefixtures("module_compilation_cache")

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
V = 500


def short_examples(count, length, seed, low=3, high=None):
    """Padded rows [CLS] a [SEP] b [SEP] [PAD]...: mostly short, a few full, some [UNK]s."""
    rs = np.random.RandomState(seed)
    lengths = rs.randint(low, (high or length) + 1, count)
    lengths[::9] = length  # some full rows, as pretraining has
    ids = rs.randint(5, V, (count, length)).astype(np.int32)
    ids[:, 0] = CLS
    ids[np.arange(count), lengths - 1] = SEP
    ids[np.arange(count), np.maximum(lengths // 2, 1)] = SEP
    ids[::5, 1] = UNK
    cols = np.arange(length)[None, :]
    mask = (cols < lengths[:, None]).astype(np.int32)
    return {"token_ids": np.where(mask == 1, ids, PAD).astype(np.int32),
            "segment_ids": ((cols > lengths[:, None] // 2) & (mask == 1)).astype(np.int32),
            "attention_mask": mask, "nsp_labels": (np.arange(count) % 2).astype(np.int32)}, lengths


def mask(rng, batch, **kw):
    kw = {"mask_id": MASK, "vocab_size": V, "special_ids": SPECIALS, **kw}
    return jax.tree.map(np.asarray, mask_tokens(rng, batch["token_ids"], batch["attention_mask"],
                                                **kw))


def mask_packed(rng, rows, count, **kw):
    return mask(rng, rows, example_ids=rows["example_ids"], positions=rows["positions"],
                num_draw_rows=count, **kw)


def pack(batch, lengths, rate, max_predictions):
    """pack_batch with the pretraining packer's limit: a row's predictions fit in P."""
    return packing.pack_batch(batch, costs=prediction_counts(lengths, rate, max_predictions),
                              max_cost=max_predictions)


def selected(out, shape):
    """(B, T) bool: the positions the masking predicts."""
    sel = np.zeros(shape, bool)
    rows, slots = np.nonzero(out["masked_weights"])
    sel[rows, out["masked_positions"][rows, slots]] = True
    return sel


def unpack(rows, values, count, length):
    """A packed (R, T) array back to the padded layout (count, length) by (slot, offset)."""
    out = np.zeros((count, length), values.dtype)
    real = rows["example_ids"] > 0
    out[rows["example_ids"][real] - 1, rows["positions"][real]] = values[real]
    return out


# --------------------------------------------------------------------------------------------
# Masking per example.
# --------------------------------------------------------------------------------------------

def test_prediction_counts_and_the_packers_second_capacity_by_hand():
    np.testing.assert_array_equal(prediction_counts([3, 30, 128, 10], 0.15, 20), [1, 4, 19, 2])
    # tokens alone would put all four in one row of 32; predictions 3 + 1 + 1 + 1 > P = 5
    lengths, costs = [20, 4, 4, 4], [3, 1, 1, 1]
    assert packing.first_fit_decreasing(lengths, 32) == [[0, 1, 2, 3]]
    assert packing.first_fit_decreasing(lengths, 32, costs=costs, max_cost=5) == [[0, 1, 2], [3]]
    assert packing.rows_needed(lengths, 32, costs=costs, max_cost=6) == 1


@pytest.mark.parametrize("whole_word", [False, True])
def test_packed_masking_is_the_padded_masking_per_example(whole_word):
    """Every example of a packed row gets the padded rule's count, the same tokens and the same
    replacements as in the padded batch; specials and padding are never chosen."""
    count, length = 96, 32
    batch, lengths = short_examples(count, length, seed=1)
    table = np.zeros(V, bool)
    table[5::4] = True  # every 4th ordinary id is a ## continuation
    kw = dict(rate=0.2, max_predictions=5, whole_word=whole_word,
              continuation_table=jnp.asarray(table) if whole_word else None)
    rows = pack(batch, lengths, 0.2, 5)
    assert len(rows["token_ids"]) < 0.8 * count  # several examples per row
    padded = mask(jax.random.key(3), batch, **kw)
    out = mask_packed(jax.random.key(3), rows, count, **kw)
    assert out["masked_positions"].shape[1] == 5  # P slots per row, as padded

    sel_padded = selected(padded, (count, length))
    sel_packed = unpack(rows, selected(out, rows["token_ids"].shape), count, length)
    np.testing.assert_array_equal(sel_packed, sel_padded)
    np.testing.assert_array_equal(unpack(rows, out["input_ids"], count, length),
                                  np.where(batch["attention_mask"] == 1, padded["input_ids"], 0))
    candidates = (batch["attention_mask"] == 1) & ~np.isin(batch["token_ids"], SPECIALS)
    assert not (sel_packed & ~candidates).any()
    want = np.minimum(np.minimum(5, np.maximum(1, np.round(lengths * 0.2))), candidates.sum(1))
    if whole_word:  # whole words may leave a slot of the budget unfilled, never overfill it
        assert (sel_packed.sum(1) <= want).all() and sel_packed.sum() > 0.9 * want.sum()
    else:
        np.testing.assert_array_equal(sel_packed.sum(1), want)
    # labels are the original tokens at the predicted positions
    w = out["masked_weights"] == 1
    np.testing.assert_array_equal(
        np.take_along_axis(rows["token_ids"], out["masked_positions"], 1)[w],
        out["masked_labels"][w])


def test_whole_words_never_cross_an_example_in_a_packed_row():
    """Two examples without [CLS]/[SEP] between them: a ## piece that opens the second example
    starts its own word, so it is chosen without the previous example's last word."""
    vocab = vocab_from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "##c"])
    table = jnp.asarray(continuation_table(vocab))
    rows = {"token_ids": np.array([[5, 6, 7, 7, 5, 0]], np.int32),  # a b ##c | ##c a | pad
            "attention_mask": np.array([[1, 1, 1, 1, 1, 0]], np.int32),
            "example_ids": np.array([[1, 1, 1, 2, 2, 0]], np.int32),
            "positions": np.array([[0, 1, 2, 0, 1, 0]], np.int32)}
    both = 0
    for seed in range(40):
        out = mask(jax.random.key(seed), rows, mask_id=4, vocab_size=8, special_ids=(0, 1, 2, 3, 4),
                   rate=0.4, max_predictions=2, whole_word=True, continuation_table=table,
                   example_ids=rows["example_ids"], positions=rows["positions"],
                   num_draw_rows=2)
        sel = selected(out, (1, 6))[0]
        assert sel[1] == sel[2]  # "b ##c" together
        assert sel[:3].sum() <= 2 and sel[3:5].sum() == 1  # round(0.4 x 2) = 1 for example 2
        both += bool(sel[3]) and not sel[2]
    assert both  # the leading ##c was chosen on its own


def test_per_example_rate_and_80_10_10_split_in_packed_rows():
    count, length = 3000, 64
    batch, lengths = short_examples(count, length, seed=2, low=5, high=24)
    rows = pack(batch, lengths, 0.2, 13)
    assert len(rows["token_ids"]) < 0.5 * count
    out = mask_packed(jax.random.key(5), rows, count, rate=0.2, max_predictions=13)
    sel = selected(out, rows["token_ids"].shape)
    per_example = np.bincount(rows["example_ids"][sel], minlength=count + 1)[1:]
    np.testing.assert_array_equal(per_example, np.maximum(1, np.round(lengths * 0.2)))
    real = rows["attention_mask"].sum()
    assert abs(sel.sum() / real - 0.2) < 0.01
    n = sel.sum()
    to_mask = sel & (out["input_ids"] == MASK)
    same = sel & (out["input_ids"] == rows["token_ids"])
    other = sel & ~to_mask & ~same
    assert abs(to_mask.sum() / n - 0.8) < 0.012
    assert abs(same.sum() / n - 0.1) < 0.01
    assert abs(other.sum() / n - 0.1) < 0.01
    assert not np.isin(out["input_ids"][other], SPECIALS).any()
    np.testing.assert_array_equal(out["input_ids"][~sel], rows["token_ids"][~sel])


# --------------------------------------------------------------------------------------------
# The MLM train step on stacked packed micro-batches.
# --------------------------------------------------------------------------------------------

def test_stacked_packed_micro_batches_give_the_padded_update():
    """grad_accum_steps=2: padded rows j*2+i -> micro-batch i, vs each micro-batch packed on its
    own and stacked; dropout off: the same losses, accuracy and parameters."""
    vocab = vocab_from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                              [f"w{i}" for i in range(V - 5)])
    batch, _ = short_examples(16, 32, seed=4)
    model = BertForPreTraining(BertConfig(vocab_size=V, hidden_size=32, num_layers=2,
                                          num_heads=4, intermediate_size=48,
                                          max_position_embeddings=32, hidden_dropout=0.0,
                                          attention_dropout=0.0), with_nsp=True)
    params = model.init(jax.random.PRNGKey(0), batch["token_ids"], batch["segment_ids"],
                        batch["attention_mask"])["params"]
    tx, schedule = optimizer.make_optimizer("adamw", lr=1e-3, warmup_steps=0, num_steps=10,
                                            weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                            clip_norm=1.0)
    mask_fn = steps.make_mask_fn(vocab, rate=0.2, max_predictions=6, whole_word=False)
    spec = packed.PackSpec(row_length=32, rate=0.2, max_predictions=6)
    micro = packed.update_micro_batches(np.arange(16), 2)
    take = lambda idx: {key: value[idx] for key, value in batch.items()}
    stacked, stats = packed.pack_update(take, micro, 2, (4, 8), spec)
    assert stacked["token_ids"].shape[::2] == (2, 32) and stacked["cls_index"].shape == (2, 8)
    assert stats["real_tokens"] == batch["attention_mask"].sum()
    results = {}
    for name, rows in (("padded", batch), ("packed", stacked)):
        state = create_train_state(model, tx, params, mesh=data_mesh())
        state, metrics = steps.train_step(state, jax.tree.map(jnp.asarray, rows),
                                          jax.random.PRNGKey(1), mask_fn=mask_fn,
                                          schedule=schedule, grad_accum_steps=2, with_nsp=True)
        results[name] = (jax.device_get(metrics), jax.device_get(state.params))
    for key in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "grad_norm"):
        assert results["packed"][0][key] == pytest.approx(results["padded"][0][key], rel=1e-5,
                                                          abs=1e-6), key
    for a, b in zip(jax.tree_util.tree_leaves(results["packed"][1]),
                    jax.tree_util.tree_leaves(results["padded"][1])):
        np.testing.assert_allclose(a, b, atol=1e-5)


class Lengths:
    """A stand-in for ShardedExamples in the planner: only lengths_of is read."""

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)

    def __len__(self):
        return len(self.lengths)

    def lengths_of(self, indices):
        return self.lengths[indices]


def test_planned_buckets_split_over_the_devices_and_always_fit():
    lengths = np.where(np.arange(4096) % 4 == 0, 9, 32)  # a quarter short
    spec = packed.PackSpec(row_length=32, rate=0.15, max_predictions=5, multiple=8)
    buckets = packed.plan_buckets(Lengths(lengths), batch_size=128, micro_batches=2, seed=0,
                                  spec=spec, max_programs=2)
    assert all(b % 8 == 0 for b in buckets) and buckets[-1] == 64  # K of a micro-batch fits all
    assert buckets[0] < 64  # the sample needs less: ~48 full rows + 16 short ones 3 a row
    assert packed.needed_rows(np.array([32] * 48 + [9] * 16), spec) == 56


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_doc_corpus(tmp_path_factory):
    """Many short paragraphs (blank-line documents): their ends leave short examples to pack."""
    words = "the of and to in a is that for it as was with be by on not he this are".split()
    return write_random_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", words, seed=1,
                               documents=120, sentences=(1, 3), words_per_sentence=(3, 14))


def pretrain(workdir, *overrides):
    return cli.main(["pretrain", "--config", "configs/pretrain.py:quick", "--workdir",
                     str(workdir), "--config.model.hidden_dropout=0",
                     "--config.model.attention_dropout=0", "--config.optimizer.grad_accum_steps=2",
                     "--config.train.peak_flops=1e11", *overrides])


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory, short_doc_corpus):
    workdir = tmp_path_factory.mktemp("packed")
    assert pretrain(workdir, f"--config.data.corpus={short_doc_corpus}") == 0
    return workdir


def test_packed_pretraining_equals_padded(packed_run, tmp_path):
    padded = tmp_path / "padded"
    assert pretrain(padded, *prepared_overrides(packed_run), "--config.data.packing=False") == 0
    ours = read_metrics(str(packed_run / "metrics.jsonl"))
    theirs = read_metrics(str(padded / "metrics.jsonl"))
    assert sorted(ours["train"]) == sorted(theirs["train"]) == [5, 10, 15, 20]
    for step in ours["train"]:
        for key in ("loss", "mlm_accuracy", "grad_norm"):
            assert ours["train"][step][key] == pytest.approx(theirs["train"][step][key],
                                                             rel=1e-5, abs=1e-6), (step, key)
        assert 0.5 < ours["train"][step]["packing_efficiency"] <= 1.0
        assert "packing_efficiency" not in theirs["train"][step]
        assert ours["train"][step]["real_tokens_per_second"] > 0
    for step in ours["eval"]:
        assert ours["eval"][step]["mlm_loss"] == pytest.approx(theirs["eval"][step]["mlm_loss"],
                                                               rel=1e-5)
        assert ours["eval"][step]["masked_tokens"] == theirs["eval"][step]["masked_tokens"]
        assert 0.5 < ours["eval"][step]["packing_efficiency"] <= 1.0
    # the data leaves padding to save: packed efficiency above the padded share of real tokens
    config = json.loads((packed_run / "config.json").read_text())
    assert config["data"]["packing"] is True


def test_packed_resume_is_exact(packed_run, tmp_path):
    """10 steps (stop_after) + resume == 20 straight, bit for bit, with packing on."""
    workdir = tmp_path / "resumed"
    assert pretrain(workdir, *prepared_overrides(packed_run), "--config.train.stop_after=10") == 0
    assert pretrain(workdir, *prepared_overrides(packed_run)) == 0
    ours = read_metrics(str(workdir / "metrics.jsonl"))
    reference = read_metrics(str(packed_run / "metrics.jsonl"))
    for step in (5, 10, 15, 20):
        for key in ("loss", "mlm_accuracy", "grad_norm", "packing_efficiency"):
            assert ours["train"][step][key] == reference["train"][step][key], (step, key)
    assert ours["eval"][20]["mlm_loss"] == reference["eval"][20]["mlm_loss"]
