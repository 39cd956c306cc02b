"""Parity with transformers 4.57's Flax BERT and with a real checkpoint (all-MiniLM-L6-v2).

Reference weights reach our model only through our importer (save_pretrained -> load_hf), so
these tests also cover the name table. Every parameter is perturbed away from its init (LayerNorm
ones, zero biases), so a wrongly mapped bias or LayerNorm cannot hide.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from bertlab.checkpoints.hf import load_hf  # noqa: E402
from bertlab.models import (BertForPreTraining, BertForSequenceClassification,  # noqa: E402
                            BertModel, mean_pool)

TOLERANCE = 1e-5

# Three shapes, the first deliberately odd: head size 16, intermediate not a multiple of H.
HF_CONFIGS = {
    "odd": dict(vocab_size=211, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=100, max_position_embeddings=40, hidden_act="gelu"),
    "gelu_tanh_3_segments": dict(vocab_size=97, hidden_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, intermediate_size=128,
                                 max_position_embeddings=32, type_vocab_size=3,
                                 hidden_act="gelu_new", layer_norm_eps=1e-7),
    "relu_untied": dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=16, hidden_act="relu",
                        tie_word_embeddings=False),
}


def hf_config(name: str):
    return transformers.BertConfig(**HF_CONFIGS[name])


def random_params(shapes, seed: int):
    """N(0, 0.1) everywhere, LayerNorm scales 1 + N(0, 0.1): no bias or LayerNorm at its init value,
    so a wrongly mapped one cannot hide."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        noise = rng.normal(0, 0.1, leaf.shape).astype(np.float32)
        return noise + 1 if path[-1].key == "scale" else noise

    return jax.tree_util.tree_map_with_path(draw, shapes)


def padded_pairs(vocab_size: int, type_vocab: int = 2):
    """Batch of 3, T=10: a full pair, a shorter pair, and a short single sentence + padding."""
    lengths, splits = [10, 7, 4], [6, 3, 4]
    rng = np.random.default_rng(0)
    ids = np.zeros((3, 10), np.int32)
    segments = np.zeros((3, 10), np.int32)
    mask = np.zeros((3, 10), np.int32)
    for row, (length, split) in enumerate(zip(lengths, splits)):
        ids[row, :length] = rng.integers(1, vocab_size, length)
        segments[row, split:length] = type_vocab - 1
        mask[row, :length] = 1
    masked_positions = np.array([[1, 5, 9], [0, 2, 6], [3, 1, 1]], np.int32)
    return ids, segments, mask, masked_positions


def saved_hf_flax(model_class, config, directory, seed=0):
    """A transformers Flax model with random weights, saved (flax_model.msgpack) to directory.

    Returns `(ids, segments, mask) -> outputs` of the reference, and its params.
    Params are drawn from shapes (eval_shape), skipping transformers' slow eager init.
    """
    model = model_class(config, _do_init=False)
    dummy = jnp.ones((1, 2), jnp.int32)
    shapes = jax.eval_shape(model.module.init, jax.random.PRNGKey(0), dummy, dummy, dummy, dummy, None)
    params = random_params(shapes["params"], seed)
    model.save_pretrained(directory, params=params)
    def forward(ids, segments, mask):
        return model.module.apply({"params": params}, ids, mask, segments, None, None)

    return forward, params


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_pretraining_matches_flax_bert(name, tmp_path):
    config = hf_config(name)
    reference, hf_params = saved_hf_flax(transformers.FlaxBertForPreTraining, config, tmp_path)
    ids, segments, mask, positions = padded_pairs(config.vocab_size, config.type_vocab_size)
    expected = reference(ids, segments, mask)
    expected_hidden = transformers.FlaxBertModel(config, _do_init=False).module.apply(
        {"params": hf_params["bert"]}, ids, mask, segments, None, None)

    ours_config, params = load_hf(tmp_path, model="pretraining")
    assert ours_config.tie_embeddings == config.tie_word_embeddings
    model = BertForPreTraining(ours_config)
    out = model.apply({"params": params}, ids, segments, mask, positions)

    gathered = np.take_along_axis(np.asarray(expected.prediction_logits), positions[:, :, None], axis=1)
    assert out["mlm_logits"].shape == (3, 3, config.vocab_size)
    assert out["mlm_logits"].dtype == np.float32
    np.testing.assert_allclose(out["mlm_logits"], gathered, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(out["nsp_logits"], expected.seq_relationship_logits, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(out["sequence_output"], expected_hidden.last_hidden_state,
                               atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(out["pooled_output"], expected_hidden.pooler_output, atol=TOLERANCE, rtol=0)

    everywhere = model.apply({"params": params}, ids, segments, mask)
    np.testing.assert_allclose(everywhere["mlm_logits"], expected.prediction_logits, atol=TOLERANCE, rtol=0)


def test_base_model_matches_flax_bert_without_prefix(tmp_path):
    """FlaxBertModel saves its tree without the "bert" level; model='bert' returns BertModel's."""
    config = hf_config("odd")
    reference, _ = saved_hf_flax(transformers.FlaxBertModel, config, tmp_path, seed=3)
    ids, segments, mask, _ = padded_pairs(config.vocab_size)
    expected = reference(ids, segments, mask)
    ours_config, params = load_hf(tmp_path, model="bert")
    assert "embeddings" in params and "bert" not in params
    sequence, pooled = BertModel(ours_config).apply({"params": params}, ids, segments, mask)
    np.testing.assert_allclose(sequence, expected.last_hidden_state, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(pooled, expected.pooler_output, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("num_labels", [3, 1])
def test_classification_matches_flax_bert(num_labels, tmp_path):
    config = hf_config("odd")
    config.num_labels = num_labels
    reference, _ = saved_hf_flax(transformers.FlaxBertForSequenceClassification, config, tmp_path, seed=5)
    ids, segments, mask, _ = padded_pairs(config.vocab_size)
    expected = reference(ids, segments, mask).logits
    ours_config, params = load_hf(tmp_path, model="classification")
    model = BertForSequenceClassification(ours_config, num_labels=num_labels)
    logits = model.apply({"params": params}, ids, segments, mask)
    assert logits.shape == (3, num_labels) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=TOLERANCE, rtol=0)


def test_fused_attention_kernel_matches_explicit(tmp_path):
    """attention_kernel="fused" (jax.nn.dot_product_attention) gives the explicit kernel's numbers.

    Same shapes as the "odd" parity case, so the eager op cache is reused.
    """
    import dataclasses

    saved_hf_flax(transformers.FlaxBertModel, hf_config("odd"), tmp_path, seed=7)
    config, params = load_hf(tmp_path, model="bert")
    ids, segments, mask, _ = padded_pairs(config.vocab_size)
    explicit = BertModel(config).apply({"params": params}, ids, segments, mask)[0]
    fused_model = BertModel(dataclasses.replace(config, attention_kernel="fused"))
    fused = fused_model.apply({"params": params}, ids, segments, mask)[0]
    np.testing.assert_allclose(fused, explicit, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ the real checkpoint

PARAPHRASE = ("A man is playing a guitar on stage.", "Someone performs music with a guitar.")
UNRELATED = "The stock market fell sharply on Tuesday."


def minilm_batch(directory):
    """Tokenised by our tokenizer; [CLS] a [SEP] and [CLS] a [SEP] b [SEP] rows, right-padded."""
    from bertlab.text.tokenizer import Tokenizer, load_vocab

    vocab = load_vocab(directory / "vocab.txt")
    tokenizer = Tokenizer(vocab, lower_case=True)
    rows = [([PARAPHRASE[0]], None), ([PARAPHRASE[1]], None), ([UNRELATED], None),
            ([PARAPHRASE[0]], UNRELATED)]
    encoded = []
    for (first,), second in rows:
        ids = [vocab.cls_id] + tokenizer.encode(first) + [vocab.sep_id]
        segments = [0] * len(ids)
        if second is not None:
            extra = tokenizer.encode(second) + [vocab.sep_id]
            ids, segments = ids + extra, segments + [1] * len(extra)
        encoded.append((ids, segments))
    width = max(len(ids) for ids, _ in encoded)
    ids = np.full((len(rows), width), vocab.pad_id, np.int32)
    segments = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, (row_ids, row_segments) in enumerate(encoded):
        ids[row, :len(row_ids)], segments[row, :len(row_ids)], mask[row, :len(row_ids)] = \
            row_ids, row_segments, 1
    return ids, segments, mask


def test_minilm_matches_transformers_and_ranks_paraphrases(minilm_dir):
    torch = pytest.importorskip("torch")
    config, params = load_hf(minilm_dir, model="bert")
    assert (config.num_layers, config.hidden_size, config.num_heads) == (6, 384, 12)
    ids, segments, mask = minilm_batch(minilm_dir)
    sequence, pooled = jax.jit(BertModel(config).apply)({"params": params}, ids, segments, mask)

    reference = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids, dtype=torch.long),
                             token_type_ids=torch.tensor(segments, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long))
    real = mask.astype(bool)  # padded rows' hidden states are unused; compare real tokens
    np.testing.assert_allclose(np.asarray(sequence)[real], expected.last_hidden_state.numpy()[real],
                               atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(pooled, expected.pooler_output.numpy(), atol=TOLERANCE, rtol=0)

    embeddings = np.asarray(mean_pool(sequence, mask))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    paraphrase, unrelated = unit[0] @ unit[1], unit[0] @ unit[2]
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)


def test_minilm_has_no_heads_and_says_so(minilm_dir):
    from bertlab.checkpoints.names import CheckpointError

    with pytest.raises(CheckpointError, match=r"missing .*cls\.predictions\.bias"):
        load_hf(minilm_dir, model="pretraining")
    assert json.loads((minilm_dir / "config.json").read_text())["architectures"] == ["BertModel"]
