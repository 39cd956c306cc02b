"""The model's pieces and knobs, against hand-computed values and properties."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from bertlab.models import (VARIANTS, BertConfig, BertForPreTraining, BertForSequenceClassification,
                            BertModel, ConfigError, count_params, flops_per_token, mean_pool,
                            variant_config)
from bertlab.models import attention, config as config_module, embedding, encoder

SMALL = BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                   max_position_embeddings=16)


def batch(vocab_size=50, seq_len=8):
    """Two rows; the second has 3 padding positions."""
    ids = np.array(np.random.default_rng(0).integers(1, vocab_size, (2, seq_len)), np.int32)
    mask = np.ones((2, seq_len), np.int32)
    mask[1, -3:] = 0
    ids[1, -3:] = 0
    segments = np.zeros_like(ids)
    segments[:, seq_len // 2:] = 1
    return ids, segments, mask


def init(module, *inputs, seed=0):
    return module.init(jax.random.PRNGKey(seed), *inputs)["params"]


def apply(module, params, *inputs, **kwargs):
    """Eager on purpose: for models this small, compiling each one costs more CPU than running it."""
    return module.apply({"params": params}, *inputs, **kwargs)


def paths(params) -> dict[str, tuple]:
    return {"/".join(k): v.shape for k, v in flatten_dict(params).items()}


# ------------------------------------------------------------------------------ config


def test_variants_follow_the_released_recipe():
    expected = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512),
                "base": (12, 768), "large": (24, 1024)}
    assert {n: (v["num_layers"], v["hidden_size"]) for n, v in VARIANTS.items()} == expected
    for name, (_, hidden) in expected.items():
        config = variant_config(name)
        assert (config.num_heads, config.intermediate_size, config.head_dim) == (hidden // 64, 4 * hidden, 64)
    assert variant_config("base") == BertConfig()  # the defaults are BERT-base
    assert variant_config("tiny", pre_ln=True).pre_ln


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="valid variants: tiny, mini, small, medium, base, large"):
        variant_config("huge")
    with pytest.raises(ConfigError, match=r"unknown BertConfig field\(s\) hiden_size.*valid fields: vocab_size"):
        variant_config("tiny", hiden_size=3)
    with pytest.raises(ConfigError, match="activation='swish' is not one of gelu, gelu_tanh, relu, geglu"):
        BertConfig(activation="swish")
    with pytest.raises(ConfigError, match="hidden_size=100 is not divisible by num_heads=3"):
        BertConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ConfigError, match="must be even"):
        BertConfig(hidden_size=30, num_heads=2, position_embedding="rotary")


def test_knob_names_match_the_functions_behind_them():
    assert set(encoder.ACTIVATIONS) == set(config_module.ACTIVATION_NAMES)
    assert set(embedding.POSITION_TABLES) == set(config_module.POSITION_EMBEDDING_NAMES)
    assert set(attention.QK_POSITION_TRANSFORMS) == set(config_module.POSITION_EMBEDDING_NAMES)
    assert set(attention.ATTENTION_KERNELS) == set(config_module.ATTENTION_KERNEL_NAMES)


def test_count_params_matches_transformers_bert_for_pretraining_at_base():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):  # shapes only, no 440 MB allocation
        reference = transformers.BertForPreTraining(transformers.BertConfig())
    expected = sum(p.numel() for p in reference.parameters())
    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(BertForPreTraining(variant_config("base")).init, jax.random.PRNGKey(0),
                            ids, ids, ids)
    assert count_params(shapes) == expected == 110_106_428


def test_flops_per_token_by_hand():
    config = BertConfig(vocab_size=10, hidden_size=4, num_layers=1, num_heads=1, intermediate_size=8)
    # per layer: qkv 2*4*12=96, scores 2*2*4=16, values 16, out 2*4*4=32, ffn 2*4*8 + 2*8*4 = 128
    layer = 96 + 16 + 16 + 32 + 128
    head = 2 * 4 * 4 + 2 * 4 * 10  # transform + decoder = 112 per predicted position
    assert flops_per_token(config, seq_len=2, training=False) == layer + head == 400
    assert flops_per_token(config, seq_len=2) == 3 * 400
    assert flops_per_token(config, seq_len=2, num_predictions=1, training=False) == layer + head / 2
    gated = dataclasses.replace(config, activation="geglu")  # input projection twice as wide
    assert flops_per_token(gated, seq_len=2, training=False) == 400 + 2 * 4 * 8


# ------------------------------------------------------------------------------ pieces


def test_initializer_is_tf_truncated_normal_without_rescaling():
    draws = np.asarray(embedding.bert_initializer(0.02)(jax.random.PRNGKey(0), (1000, 500)))
    assert np.abs(draws).max() <= 2 * 0.02
    # std of N(0, 1) cut at +-2 is 0.8796; tf.truncated_normal_initializer does not correct it
    assert draws.std() == pytest.approx(0.02 * 0.87962566, rel=0.01)
    params = init(BertModel(SMALL), *batch())
    table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    assert 0 < np.abs(table).max() <= 0.04
    layer = params["encoder"]["layer_0"]
    assert np.all(np.asarray(layer["attention"]["self"]["query"]["bias"]) == 0)
    assert np.all(np.asarray(layer["output"]["LayerNorm"]["scale"]) == 1)
    assert np.all(np.asarray(layer["output"]["LayerNorm"]["bias"]) == 0)


def test_activations_by_hand():
    x = jnp.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(encoder.ACTIVATIONS["gelu"](x), [-0.15865525, 0.0, 0.8413447], atol=1e-6)
    np.testing.assert_allclose(encoder.ACTIVATIONS["gelu_tanh"](x), [-0.15880801, 0.0, 0.841192], atol=1e-6)
    np.testing.assert_allclose(encoder.ACTIVATIONS["relu"](x), [0.0, 0.0, 1.0])
    gated = encoder.ACTIVATIONS["geglu"](jnp.array([1.0, -1.0, 2.0, 3.0]))  # value [1, -1], gate [2, 3]
    np.testing.assert_allclose(gated, [0.8413447 * 2, -0.15865525 * 3], atol=1e-6)


def test_sinusoidal_table_by_hand():
    table = embedding.sinusoidal_table(3, 4)
    np.testing.assert_allclose(table[0], [0, 1, 0, 1])
    np.testing.assert_allclose(table[2], [math.sin(2), math.cos(2), math.sin(2 / 100), math.cos(2 / 100)],
                               rtol=1e-6)
    assert embedding.sinusoidal_table(5, 7).shape == (5, 7)  # odd width: last column is a sine


def test_rotary_preserves_norms_and_sees_only_relative_positions():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 2, 8))  # (B, T, N, D)
    angles = attention.rotary_angles(6, 8)
    rotated = attention.rotate(x, angles)
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(rotated[:, 0], x[:, 0], atol=1e-7)  # position 0 is not rotated
    # the same q and k vectors placed at (1, 3) and at (3, 5): equal dot products (offset 2)
    q, k = x[0, 0, 0], x[0, 1, 0]
    placed = jnp.zeros((1, 6, 1, 8)).at[0, 1, 0].set(q).at[0, 3, 0].set(k)
    shifted = jnp.zeros((1, 6, 1, 8)).at[0, 3, 0].set(q).at[0, 5, 0].set(k)
    a, b = attention.rotate(placed, angles), attention.rotate(shifted, angles)
    assert float(a[0, 1, 0] @ a[0, 3, 0]) == pytest.approx(float(b[0, 3, 0] @ b[0, 5, 0]), rel=1e-5)
    assert float(a[0, 1, 0] @ a[0, 3, 0]) != pytest.approx(float(q @ k), rel=1e-3)


def test_attention_bias_is_zero_for_tokens_and_large_negative_for_padding():
    bias = attention.attention_bias(jnp.array([[1, 1, 0]]))
    assert bias.shape == (1, 1, 1, 3) and bias.dtype == jnp.float32
    np.testing.assert_array_equal(bias[0, 0, 0], [0, 0, attention.MASKED_SCORE])


def test_padding_cannot_leak_into_real_tokens():
    ids, segments, mask = batch()
    model = BertModel(SMALL)
    params = init(model, ids, segments, mask)
    sequence, pooled = apply(model, params, ids, segments, mask)
    other_padding = ids.copy()
    other_padding[1, -3:] = 7
    sequence2, pooled2 = apply(model, params, other_padding, segments, mask)
    np.testing.assert_allclose(sequence[1, :5], sequence2[1, :5], atol=1e-6)
    np.testing.assert_allclose(pooled, pooled2, atol=1e-6)


def test_dropout_uses_the_dropout_rng_only_when_training():
    ids, segments, mask = batch()
    model = BertForSequenceClassification(SMALL, num_labels=2)
    params = init(model, ids, segments, mask)
    evaluation = apply(model, params, ids, segments, mask)
    np.testing.assert_array_equal(evaluation, apply(model, params, ids, segments, mask))
    first, second = (apply(model, params, ids, segments, mask, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(seed)}) for seed in (1, 2))
    assert not np.allclose(first, second) and not np.allclose(first, evaluation)


# ------------------------------------------------------------------------------ knobs


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu", "geglu"])
def test_activation_knob_builds_with_expected_shapes(activation):
    config = dataclasses.replace(SMALL, activation=activation, num_layers=1)
    ids, segments, mask = batch()
    params = init(BertModel(config), ids, segments, mask)
    width = 96 if activation == "geglu" else 48
    shapes = paths(params)
    assert shapes["encoder/layer_0/intermediate/dense/kernel"] == (32, width)
    assert shapes["encoder/layer_0/output/dense/kernel"] == (48, 32)
    sequence, _ = apply(BertModel(config), params, ids, segments, mask)
    assert sequence.shape == (2, 8, 32) and np.all(np.isfinite(sequence))


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rotary", "none"])
def test_position_knob(position):
    """Only `none` is blind to order: moving tokens around just moves their outputs."""
    config = dataclasses.replace(SMALL, position_embedding=position, num_layers=1)
    ids, segments, mask = np.array([[5, 6, 7, 8]], np.int32), np.zeros((1, 4), np.int32), np.ones((1, 4), np.int32)
    model = BertModel(config)
    params = init(model, ids, segments, mask)
    has_table = "embeddings/position_embeddings/embedding" in paths(params)
    assert has_table == (position == "learned")
    permutation = np.array([0, 2, 3, 1])
    out = apply(model, params, ids, segments, mask)[0]
    permuted = apply(model, params, ids[:, permutation], segments, mask)[0]
    blind = np.allclose(out[:, permutation], permuted, atol=1e-5)
    assert blind == (position == "none")


def test_sinusoidal_knob_adds_the_fixed_table():
    config = dataclasses.replace(SMALL, position_embedding="sinusoidal", num_layers=1)
    ids, segments, mask = batch()
    params = init(BertModel(config), ids, segments, mask)
    embed = embedding.Embeddings(config)
    out = apply(embed, params["embeddings"], ids, segments)
    e = params["embeddings"]
    summed = (np.asarray(e["word_embeddings"]["embedding"])[ids]
              + np.asarray(e["token_type_embeddings"]["embedding"])[segments]
              + embedding.sinusoidal_table(16, 32)[:8])
    mean, var = summed.mean(-1, keepdims=True), summed.var(-1, keepdims=True)
    np.testing.assert_allclose(out, (summed - mean) / np.sqrt(var + 1e-12), atol=1e-5)


def test_pre_ln_is_a_residual_stream_with_a_final_layer_norm():
    config = dataclasses.replace(SMALL, pre_ln=True)
    ids, segments, mask = batch()
    model = BertModel(config)
    params = init(model, ids, segments, mask)
    shapes = paths(params)
    for name in ("encoder/layer_1/attention/LayerNorm/scale", "encoder/layer_1/intermediate/LayerNorm/scale",
                 "encoder/LayerNorm/scale"):
        assert shapes[name] == (32,)
    assert not any("output/LayerNorm" in name for name in shapes)
    # zero every sub-layer's output projection: each layer is then the identity, and the
    # encoder output is the final LayerNorm of the embeddings
    flat = flatten_dict(params)
    zeroed = {k: (jnp.zeros_like(v) if "output" in k and "dense" in k else v) for k, v in flat.items()}
    from flax.traverse_util import unflatten_dict
    zeroed = unflatten_dict(zeroed)
    sequence, _ = apply(model, zeroed, ids, segments, mask)
    embedded = apply(embedding.Embeddings(config), params["embeddings"], ids, segments)
    final = embedding.layer_norm(config, "LayerNorm").apply(
        {"params": params["encoder"]["LayerNorm"]}, embedded)
    np.testing.assert_allclose(sequence, final, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_mlm_decoder_tied_or_untied(tie):
    config = dataclasses.replace(SMALL, tie_embeddings=tie, num_layers=1)
    ids, segments, mask = batch()
    positions = np.array([[1, 2], [0, 4]], np.int32)
    model = BertForPreTraining(config)
    params = init(model, ids, segments, mask, positions)
    shapes = paths(params)
    assert ("cls/predictions/decoder/kernel" in shapes) == (not tie)
    out = apply(model, params, ids, segments, mask, positions)
    # by hand: gather, transform, then against the decoder matrix, plus the output bias
    head = params["cls"]["predictions"]
    gathered = np.take_along_axis(np.asarray(out["sequence_output"]), positions[:, :, None], axis=1)
    from bertlab.models.heads import HeadTransform
    transformed = apply(HeadTransform(config), head["transform"], gathered)
    decoder = (params["bert"]["embeddings"]["word_embeddings"]["embedding"].T if tie
               else head["decoder"]["kernel"])  # (H, V)
    np.testing.assert_allclose(out["mlm_logits"], transformed @ decoder + head["output_bias"], atol=1e-5)
    # NSP reads the pooled output through the (2, H) TF-layout weights
    nsp = params["cls"]["seq_relationship"]
    assert nsp["output_weights"].shape == (2, 32)
    np.testing.assert_allclose(out["nsp_logits"], out["pooled_output"] @ nsp["output_weights"].T
                               + nsp["output_bias"], atol=1e-5)


def test_without_nsp_there_is_no_nsp_head():
    ids, segments, mask = batch()
    model = BertForPreTraining(SMALL, with_nsp=False)
    params = init(model, ids, segments, mask)
    assert set(params["cls"]) == {"predictions"}
    out = apply(model, params, ids, segments, mask)
    assert out["nsp_logits"] is None and out["mlm_logits"].shape == (2, 8, 50)


def test_classifier_extra_layers_are_fresh_blocks_on_top():
    ids, segments, mask = batch()
    model = BertForSequenceClassification(SMALL, num_labels=3, extra_layers=1)
    params = init(model, ids, segments, mask)
    assert set(params) == {"bert", "head_encoder", "head_pooler", "classifier"}
    assert set(params["head_encoder"]) == {"layer_0"}
    assert apply(model, params, ids, segments, mask).shape == (2, 3)
    plain = BertForSequenceClassification(SMALL, num_labels=1)
    plain_params = init(plain, ids, segments, mask)
    _, pooled = apply(BertModel(SMALL), plain_params["bert"], ids, segments, mask)
    head = plain_params["classifier"]
    np.testing.assert_allclose(apply(plain, plain_params, ids, segments, mask),
                               pooled @ head["kernel"] + head["bias"], atol=1e-6)


def test_bfloat16_compute_stays_close_to_float32():
    """Same float32 params, bfloat16 matmuls. Stated tolerance: 0.05 absolute on the
    LayerNorm-scale sequence output (measured 0.023: bfloat16 keeps ~3 significant digits) and
    2 % of the largest logit on MLM logits (measured 0.6 %); logits still come back float32."""
    ids, segments, mask = batch()
    model32 = BertForPreTraining(SMALL)
    params = init(model32, ids, segments, mask)
    model16 = BertForPreTraining(dataclasses.replace(SMALL, dtype="bfloat16"))
    out32 = apply(model32, params, ids, segments, mask)
    out16 = apply(model16, params, ids, segments, mask)
    assert out16["sequence_output"].dtype == jnp.bfloat16
    assert out16["mlm_logits"].dtype == out16["nsp_logits"].dtype == jnp.float32
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda p: p.dtype == jnp.float32, params))
    real = mask.astype(bool)
    diff = np.abs(np.asarray(out16["sequence_output"], np.float32) - out32["sequence_output"])[real]
    assert diff.max() < 0.05
    largest = np.abs(out32["mlm_logits"]).max()
    assert np.abs(out16["mlm_logits"] - out32["mlm_logits"]).max() < 0.02 * largest


def test_sequences_longer_than_the_position_table_are_refused():
    ids = np.zeros((1, 17), np.int32)
    with pytest.raises(ValueError, match="input length 17 exceeds max_position_embeddings=16"):
        init(BertModel(SMALL), ids, ids, ids + 1)


def test_mean_pool_by_hand():
    sequence = jnp.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                          [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = jnp.array([[1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(mean_pool(sequence, mask), [[2.0, 3.0], [0.0, 0.0]])


@pytest.mark.parametrize("knobs", [{}, {"pre_ln": True, "position_embedding": "rotary"}],
                         ids=["post_ln", "pre_ln_rotary"])
@pytest.mark.parametrize("fused_qkv", [True, False])
def test_num_queries_1_skips_rows_without_changing_cls(knobs, fused_qkv, monkeypatch):
    """The classifier's shortcut: a last layer that attends from [CLS] alone gives [CLS]'s row
    and the pooled vector of the full encoder (same parameters, with either QKV layout)."""
    monkeypatch.setattr(attention, "FUSED_QKV", fused_qkv)
    config = dataclasses.replace(SMALL, **knobs)
    ids, segments, mask = batch()
    model = BertModel(config)
    params = init(model, ids, segments, mask)
    full_seq, full_pooled = apply(model, params, ids, segments, mask)
    cls_seq, cls_pooled = apply(model, params, ids, segments, mask, num_queries=1)
    assert cls_seq.shape == (2, 1, config.hidden_size)
    np.testing.assert_allclose(cls_seq[:, 0], full_seq[:, 0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(cls_pooled, full_pooled, atol=1e-6, rtol=0)
    classifier = BertForSequenceClassification(config, num_labels=3)
    head = init(classifier, ids, segments, mask)
    logits = apply(classifier, head, ids, segments, mask)
    pooled = apply(model, head["bert"], ids, segments, mask)[1]
    expected = pooled @ head["classifier"]["kernel"] + head["classifier"]["bias"]
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_fused_qkv_declares_the_same_parameters_as_three_dense_layers(monkeypatch):
    """Same tree and the same seeded values: checkpoints and old seeds are unaffected."""
    ids, segments, mask = batch()
    fused = init(BertModel(SMALL), ids, segments, mask)
    monkeypatch.setattr(attention, "FUSED_QKV", False)
    three = init(BertModel(SMALL), ids, segments, mask)
    flat_fused, flat_three = flatten_dict(fused, sep="/"), flatten_dict(three, sep="/")
    assert flat_fused.keys() == flat_three.keys()
    for name in flat_three:
        np.testing.assert_array_equal(flat_fused[name], flat_three[name])
