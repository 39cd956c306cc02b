"""The recipe knobs of issue 17 (biases, norms, ALiBi, scaled sinusoidal positions, embedding
norm, sliding-window attention, SwiGLU, padded vocabulary, the transform pooler): numerics by
hand, packed == padded for each, fused == explicit, a save/restore round trip through the
bertlab export, one compile for several train steps, and the FLOP count of a windowed config."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from bertlab.checkpoints import training_state
from bertlab.checkpoints.bertlab_format import load_bertlab, save_bertlab
from bertlab.data import packing
from bertlab.data.pretraining.masking import mask_tokens
from bertlab.models import (BertConfig, BertForPreTraining, BertForSequenceClassification,
                            BertModel, ConfigError, flops_per_token)
from bertlab.models import attention, embedding, encoder
from bertlab.models.config import config_from_dict, config_to_dict
from bertlab.train import optimizer, steps
from bertlab.train.mesh import data_mesh, replicated
from bertlab.train.state import create_train_state
from test_packing import LENGTHS, config, init, packed_kwargs, padded_batch, run, token_pairs

# Every knob of issue 17 switched away from BERT at once (cramming / ModernBERT-like).
EXOTIC = dict(pre_ln=True, norm="rmsnorm", norm_bias=False, attention_bias=False, mlp_bias=False,
              head_bias=False, decoder_bias=False, activation="swiglu",
              position_embedding="rotary", rotary_theta=1000.0, local_rotary_theta=50.0,
              local_window=4, global_every=2, num_layers=3, vocab_pad_multiple=16,
              first_layer_attention_norm=False, pooler="transform", head_activation="relu",
              type_vocab_size=0)


def leaves(params) -> set[str]:
    return {"/".join(path) for path in flatten_dict(params)}


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("overrides, message", [
    ({"norm": "batchnorm"}, "BertConfig.norm='batchnorm' is not one of layernorm, rmsnorm"),
    ({"norm": "rmsnorm"}, "norm='rmsnorm' has no shift: set norm_bias=False"),
    ({"local_window": 3, "global_every": 2}, "local_window=3 must be even"),
    ({"local_window": 8}, "local_window=8 with global_every=1"),
    ({"global_every": 3}, "local_window=0 with global_every=3"),
    ({"vocab_pad_multiple": 0}, "vocab_pad_multiple must be a positive integer"),
    ({"attention_bias": "no"}, "attention_bias must be True or False"),
    ({"first_layer_attention_norm": False}, "first_layer_attention_norm=False is a pre-LN knob"),
    ({"local_rotary_theta": 100.0}, "local_rotary_theta is a rotary knob"),
    ({"local_rotary_theta": 100.0, "position_embedding": "rotary"}, "local_window=0 makes every"),
    ({"pooler": "max"}, "pooler='max' is not one of tanh, transform"),
    ({"classifier_pooling": "max"}, "classifier_pooling='max' is not one of cls, mean"),
    ({"head_activation": "geglu"}, "head_activation='geglu' is not one of gelu, gelu_tanh, relu"),
    ({"type_vocab_size": -1}, "type_vocab_size must be a non-negative integer"),
])
def test_knob_errors_name_the_field_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        BertConfig(**overrides)
    assert "\n" not in str(error.value)


def test_defaults_are_bert():
    base = BertConfig()
    assert (base.norm, base.norm_bias, base.attention_bias, base.mlp_bias, base.head_bias,
            base.decoder_bias, base.embedding_norm, base.local_window, base.global_every,
            base.vocab_pad_multiple, base.pooler, base.classifier_pooling) == (
        "layernorm", True, True, True, True, True, True, 0, 1, 1, "tanh", "cls")
    assert base.padded_vocab_size == 30522 and all(base.is_global_layer(i) for i in range(12))
    padded = BertConfig(vocab_size=30522, vocab_pad_multiple=64)
    assert padded.padded_vocab_size == 30528  # 477 * 64


# ------------------------------------------------------------------------------ numerics


def test_alibi_slopes_by_hand():
    # 8 heads: 2^(-8/8 * k), k = 1..8 (Press et al. 2022).
    np.testing.assert_allclose(attention.alibi_slopes(8), [2.0 ** -k for k in range(1, 9)])
    # 12 heads: the 8 above, then every other slope of 16 heads (2^(-k/2), k = 1, 3, 5, 7).
    np.testing.assert_allclose(attention.alibi_slopes(12), [2.0 ** -k for k in range(1, 9)]
                               + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5], rtol=1e-6)


def test_alibi_bias_by_hand():
    distance = attention.position_distance(jnp.array([[0, 1, 2]]), jnp.array([[0, 1, 2]]))
    bias = attention.alibi_bias(distance, num_heads=2)  # slopes 2^-4, 2^-8
    assert bias.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(bias[0, 0], -np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]) / 16)
    np.testing.assert_allclose(bias[0, 1], -np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]) / 256)


def test_rmsnorm_on_a_hand_made_vector():
    cfg = BertConfig(hidden_size=4, num_heads=1, norm="rmsnorm", norm_bias=False,
                     layer_norm_eps=1e-6)
    norm = embedding.layer_norm(cfg, "LayerNorm")
    x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    params = norm.init(jax.random.PRNGKey(0), x)["params"]
    assert set(params) == {"scale"}
    scale = jnp.array([1.0, 0.5, 2.0, -1.0])
    out = norm.apply({"params": {"scale": scale}}, x)
    rms = math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6)  # sqrt(7.5 + eps); no mean is subtracted
    np.testing.assert_allclose(out[0], np.array([1, 2, 3, 4]) / rms * np.array(scale), rtol=1e-6)
    biasless = embedding.layer_norm(dataclasses.replace(cfg, norm="layernorm"), "LayerNorm")
    assert set(biasless.init(jax.random.PRNGKey(0), x)["params"]) == {"scale"}


def test_sliding_window_mask_on_a_tiny_case():
    distance = attention.position_distance(jnp.arange(5)[None], jnp.arange(5)[None])
    keep = np.asarray(attention.window_bias(distance, half_window=1)[0, 0]) == 0.0
    # window 2 = one key on each side: W + 1 = 3 keys per query, fewer at the edges.
    np.testing.assert_array_equal(keep, [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0],
                                         [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    cfg = BertConfig(num_layers=4, local_window=128, global_every=3)  # ModernBERT's pattern
    assert [cfg.is_global_layer(i) for i in range(4)] == [True, False, False, True]


@pytest.mark.parametrize("kernel", ["explicit", "fused"])
def test_a_local_layer_sees_only_its_window(kernel):
    """Perturbing a token outside the window leaves a query's output alone on a local layer;
    inside the window, or on a global layer, it changes it."""
    cfg = config(local_window=2, global_every=2, attention_kernel=kernel)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, cfg.hidden_size))
    bias = attention.attention_bias(jnp.ones((1, 6), jnp.int32))
    local = attention.SelfAttention(cfg, layer_index=1)
    params = local.init(jax.random.PRNGKey(1), x, bias)
    out = local.apply(params, x, bias)
    far = x.at[0, 4].add(1.0)  # 4 positions from query 0, 1 from query 3
    changed = np.abs(np.asarray(local.apply(params, far, bias) - out)).max(axis=-1)[0]
    np.testing.assert_array_equal(changed > 1e-6, [0, 0, 0, 1, 1, 1])
    global_layer = attention.SelfAttention(cfg, layer_index=0)
    moved = global_layer.apply(params, far, bias) - global_layer.apply(params, x, bias)
    assert (np.abs(np.asarray(moved)).max(axis=-1)[0] > 1e-6).all()


def test_swiglu_is_silu_of_xw_times_xv():
    x = jnp.array([1.0, -1.0, 2.0, 3.0])  # value [1, -1], gate [2, 3]
    silu = lambda v: v / (1 + math.exp(-v))
    np.testing.assert_allclose(encoder.ACTIVATIONS["swiglu"](x), [silu(1) * 2, silu(-1) * 3],
                               rtol=1e-6)
    cfg = config(activation="swiglu", mlp_bias=False)
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 3, cfg.hidden_size))
    layer = encoder.Intermediate(cfg)
    params = layer.init(jax.random.PRNGKey(1), h)["params"]
    kernel = np.asarray(params["dense"]["kernel"])  # (H, 2I): [W | V], no bias
    assert set(params["dense"]) == {"kernel"} and kernel.shape == (32, 96)
    w, v = kernel[:, :48], kernel[:, 48:]
    xw, xv = np.asarray(h) @ w, np.asarray(h) @ v
    np.testing.assert_allclose(layer.apply({"params": params}, h), xw / (1 + np.exp(-xw)) * xv,
                               atol=1e-5)


def test_scaled_sinusoidal_is_the_table_times_a_learned_scalar():
    cfg = config(position_embedding="scaled_sinusoidal", embedding_norm=False, type_vocab_size=0)
    ids = jnp.array([[5, 6, 7]])
    module = embedding.Embeddings(cfg)
    params = module.init(jax.random.PRNGKey(0), ids, ids * 0)["params"]
    assert set(params) == {"word_embeddings", "position_scale"}  # no segments, no norm
    np.testing.assert_allclose(params["position_scale"], [1 / math.sqrt(32)])  # cramming's init
    words = np.asarray(params["word_embeddings"]["embedding"])[[5, 6, 7]]
    table = embedding.sinusoidal_table(cfg.max_position_embeddings, 32)[:3]
    params = {**params, "position_scale": jnp.array([0.5])}
    np.testing.assert_allclose(module.apply({"params": params}, ids, ids * 0)[0],
                               words + 0.5 * table, atol=1e-6)


def test_padded_vocabulary_rows_are_never_predicted():
    """vocab 40 padded to 64: the tables have 64 rows and the logits are those of the 40-row
    model made of the same numbers (so losses and accuracies are unchanged)."""
    batch = padded_batch()
    padded_model = BertForPreTraining(config(vocab_pad_multiple=64), with_nsp=False)
    params = init(padded_model, batch)
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (64, 32)
    assert params["cls"]["predictions"]["output_bias"].shape == (64,)
    cut = jax.tree_util.tree_map(lambda a: a, params)
    cut["bert"]["embeddings"]["word_embeddings"]["embedding"] = \
        params["bert"]["embeddings"]["word_embeddings"]["embedding"][:40]
    cut["cls"]["predictions"]["output_bias"] = params["cls"]["predictions"]["output_bias"][:40]
    padded = run(padded_model, params, batch)["mlm_logits"]
    plain = run(BertForPreTraining(config(), with_nsp=False), cut, batch)["mlm_logits"]
    assert padded.shape == plain.shape == (len(LENGTHS), 16, 40)
    np.testing.assert_allclose(padded, plain, atol=1e-5)


def test_biasless_and_rmsnorm_trees_have_no_bias_leaves():
    batch = padded_batch()
    batch["segment_ids"][:] = 0
    cfg = config(**EXOTIC)
    params = init(BertForPreTraining(cfg, with_nsp=False), batch)
    names = leaves(params)
    assert not [n for n in names if n.endswith("bias")]
    assert "bert/encoder/layer_0/attention/LayerNorm/scale" not in names  # first layer: no norm
    assert "bert/encoder/layer_1/attention/LayerNorm/scale" in names
    assert "bert/pooler/LayerNorm/scale" in names  # the transform pooler
    assert not [n for n in names if "token_type" in n or "position_embeddings" in n]
    assert params["bert"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"].shape == (32, 96)
    assert params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == (48, 32)


def test_without_head_transform_the_decoder_reads_the_encoder_output():
    batch = padded_batch()
    cfg = config(pre_ln=True, head_transform=False, decoder_bias=False)
    model = BertForPreTraining(cfg, with_nsp=False)
    params = init(model, batch)
    assert "cls" not in params  # tied, no transform, no output bias: the head has no weights
    out = run(model, params, batch)
    table = np.asarray(params["bert"]["embeddings"]["word_embeddings"]["embedding"])  # (V, H)
    np.testing.assert_allclose(out["mlm_logits"], np.asarray(out["sequence_output"]) @ table.T,
                               atol=1e-5)
    dense = dataclasses.replace(cfg, head_transform=True)
    assert flops_per_token(dense, 16, training=False) - flops_per_token(cfg, 16, training=False) \
        == 2 * 32 * 32  # the transform's dense layer per predicted token


def test_mean_pooling_reads_the_mean_of_real_tokens():
    batch = padded_batch()
    cfg = config(classifier_pooling="mean")
    model = BertModel(cfg)
    params = init(model, batch)
    sequence, pooled = run(model, params, batch)
    mask = batch["attention_mask"][:, :, None]
    mean = (np.asarray(sequence) * mask).sum(1) / mask.sum(1)
    dense = params["pooler"]["dense"]
    np.testing.assert_allclose(pooled, np.tanh(mean @ np.asarray(dense["kernel"])
                                               + np.asarray(dense["bias"])), atol=1e-5)
    with pytest.raises(ValueError, match="mean"):
        run(model, params, batch, num_queries=1)


# ------------------------------------------------------------------------ packed == padded


KNOBS = {
    "alibi": dict(position_embedding="alibi"),
    "window": dict(local_window=4, global_every=2),
    "window_fused": dict(local_window=4, global_every=2, attention_kernel="fused"),
    "alibi_window_fused": dict(position_embedding="alibi", local_window=2, global_every=2,
                               attention_kernel="fused"),
    "scaled_sinusoidal_no_embedding_norm": dict(position_embedding="scaled_sinusoidal",
                                                embedding_norm=False),
    "biasless_rmsnorm_swiglu_padded_vocab": dict(
        pre_ln=True, norm="rmsnorm", norm_bias=False, attention_bias=False, mlp_bias=False,
        head_bias=False, activation="swiglu", vocab_pad_multiple=64),
    "modernbert_like_mean_pooling": dict(EXOTIC, classifier_pooling="mean", num_layers=2),
}


@pytest.mark.parametrize("name", list(KNOBS))
def test_each_knob_packed_equals_padded(name):
    batch = padded_batch()
    knobs = KNOBS[name]
    if knobs.get("type_vocab_size") == 0:
        batch["segment_ids"][:] = 0
    cfg = config(**knobs)
    packed = packing.pack_batch(batch)
    classifier = BertForSequenceClassification(cfg, num_labels=3)
    params = init(classifier, batch)
    np.testing.assert_allclose(run(classifier, params, packed, **packed_kwargs(packed)),
                               run(classifier, params, batch), atol=1e-5, rtol=1e-5)
    backbone = BertModel(cfg)
    sequence, _ = run(backbone, params["bert"], batch)
    packed_sequence, _ = run(backbone, params["bert"], packed, **packed_kwargs(packed))
    for slot, j, row, column in token_pairs(packed, LENGTHS):
        np.testing.assert_allclose(packed_sequence[row, column], sequence[slot, j], atol=1e-5)


@pytest.mark.parametrize("knobs", [dict(local_window=4, global_every=2),
                                   dict(position_embedding="alibi", local_window=2,
                                        global_every=3, num_layers=3)],
                         ids=["window", "alibi_window"])
def test_fused_kernel_equals_explicit(knobs):
    batch = padded_batch()
    explicit = BertModel(config(**knobs))
    params = init(explicit, batch)
    fused = BertModel(config(**knobs, attention_kernel="fused"))
    mask = batch["attention_mask"][:, :, None]
    for out_e, out_f in zip(run(explicit, params, batch), run(fused, params, batch)):
        out_e, out_f = np.asarray(out_e), np.asarray(out_f)
        if out_e.ndim == 3:  # compare real tokens only
            out_e, out_f = out_e * mask, out_f * mask
        np.testing.assert_allclose(out_f, out_e, atol=1e-5)


@pytest.mark.parametrize("kernel", ["explicit", "fused"])
def test_bfloat16_knobs_stay_close_to_float32(kernel):
    batch = padded_batch()
    knobs = dict(position_embedding="alibi", local_window=4, global_every=2, norm="rmsnorm",
                 norm_bias=False, activation="swiglu", pre_ln=True, attention_kernel=kernel)
    full = BertModel(config(**knobs))
    params = init(full, batch)
    sequence, _ = run(full, params, batch)
    half, _ = run(BertModel(config(**knobs, dtype="bfloat16")), params, batch)
    assert half.dtype == jnp.bfloat16
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.float32(half)[real], np.asarray(sequence)[real], atol=0.05,
                               rtol=0.02)


# ------------------------------------------------------------------ save, restore, compile


def test_exotic_combination_round_trips_through_the_bertlab_export(tmp_path):
    batch = padded_batch()
    batch["segment_ids"][:] = 0
    cfg = config(**EXOTIC, classifier_pooling="mean")
    model = BertForSequenceClassification(cfg, num_labels=2)
    params = init(model, batch)
    save_bertlab(tmp_path / "export", cfg, params)
    loaded_config, loaded_params, _ = load_bertlab(tmp_path / "export")
    assert loaded_config == cfg
    assert leaves(loaded_params) == leaves(params)
    np.testing.assert_array_equal(run(model, loaded_params, batch), run(model, params, batch))


@pytest.mark.parametrize("knob", [dict(norm_bias=False), dict(local_window=4, global_every=2),
                                  dict(vocab_pad_multiple=8), dict(type_vocab_size=0)],
                         ids=lambda knob: next(iter(knob)))
def test_hf_bert_export_refuses_the_recipe_knobs(knob):
    from bertlab.checkpoints import hf

    with pytest.raises(ConfigError, match=f"cannot export to HuggingFace BERT: .*{next(iter(knob))}="):
        hf.config_to_hf(BertConfig(**knob))


def test_train_steps_compile_once_learn_and_checkpoint(tmp_path):
    """Four MLM updates of the exotic combination: one compilation, a finite falling loss; then
    the training checkpoint (orbax) restores the same parameters and config."""
    cfg = config(**dict(EXOTIC, num_layers=2, hidden_dropout=0.1))
    model = BertForPreTraining(cfg, with_nsp=False)
    batch = padded_batch()
    batch["segment_ids"][:] = 0
    params = init(model, batch)
    tx, schedule = optimizer.make_optimizer("adamw", lr=3e-3, warmup_steps=0, num_steps=10,
                                            weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                            clip_norm=1.0)
    mask_fn = functools.partial(mask_tokens, mask_id=4, vocab_size=40, special_ids=(0, 2, 3, 4),
                                rate=0.3, max_predictions=6)
    step = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule, grad_accum_steps=1,
                                with_nsp=False, mesh=data_mesh())
    mesh = data_mesh()
    params = jax.device_put(params, replicated(mesh))  # as the loops' init_params places them
    state = create_train_state(model, tx, params, mesh=mesh)
    rows = {k: batch[k] for k in ("token_ids", "segment_ids", "attention_mask", "example_weights")}
    rows["nsp_labels"] = np.zeros(len(LENGTHS), np.int32)  # read, unused without NSP
    first = None
    for index in range(4):
        state, metrics = step(state, rows, jax.random.PRNGKey(0))  # same masks: loss must fall
        loss = float(metrics["mlm_loss"])
        assert math.isfinite(loss)
        first = loss if first is None else first
    assert step._cache_size() == 1
    assert loss < first

    manager = training_state.open_manager(str(tmp_path), async_save=False)
    training_state.save(manager, 4, params=state.params, opt_state=state.opt_state,
                        meta={"model": config_to_dict(cfg)})
    manager.close()
    restored, meta = training_state.restore_params(str(tmp_path))
    assert config_from_dict(meta["model"]) == cfg
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)),
                                 jax.tree_util.tree_leaves_with_path(restored)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_flops_per_token_with_a_window_by_hand():
    cfg = BertConfig(vocab_size=10, hidden_size=4, num_layers=3, num_heads=1, intermediate_size=8,
                     local_window=2, global_every=3, activation="swiglu", vocab_pad_multiple=16)
    # T = 8. Layer 0 global: 8 keys; layers 1, 2 local: W + 1 = 3 keys per query.
    # per layer without attention: qkv 2*4*12 = 96, out 2*4*4 = 32, ffn in 2*4*16 = 128
    # (gated: 2I wide), ffn out 2*8*4 = 64 -> 320; attention 2 * (2 * keys * 4).
    layers = (320 + 16 * 8) + 2 * (320 + 16 * 3)
    head = 2 * 4 * 4 + 2 * 4 * 16  # transform + decoder over the padded vocabulary (16 rows)
    assert flops_per_token(cfg, seq_len=8, training=False) == layers + head == 1344
    assert flops_per_token(cfg, seq_len=8) == 3 * 1344
    # A window wider than the sequence costs what global attention costs.
    assert flops_per_token(cfg, seq_len=2, training=False) == \
        flops_per_token(dataclasses.replace(cfg, local_window=0, global_every=1), seq_len=2,
                        training=False)
