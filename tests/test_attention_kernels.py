"""attention_kernel="auto" (fused unless attention dropout is active), the fused kernel's use of
bertlab.models.attention_select (mask kinds, the window folded into the bias for cuDNN), and
the remat knob (same gradients, same parameter names, one compile)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from bertlab.checkpoints import names
from bertlab.data import packing
from bertlab.models import (BertConfig, BertForPreTraining, BertForSequenceClassification,
                            BertModel, ConfigError)
from bertlab.models import attention, attention_select, config as config_module, encoder
from test_packing import config, init, packed_kwargs, padded_batch, run


def spy_kernels(monkeypatch) -> list[str]:
    """Records the name of every ATTENTION_KERNELS entry called (one per layer per forward)."""
    called = []
    for name, kernel in list(attention.ATTENTION_KERNELS.items()):
        def spy(*args, _name=name, _kernel=kernel):
            called.append(_name)
            return _kernel(*args)
        monkeypatch.setitem(attention.ATTENTION_KERNELS, name, spy)
    return called


# ------------------------------------------------------------------------------ auto


def test_auto_is_a_valid_kernel_and_remat_names_match_the_policies():
    assert "auto" in config_module.ATTENTION_KERNEL_NAMES
    assert set(encoder.REMAT_POLICIES) | {"none"} == set(config_module.REMAT_NAMES)
    with pytest.raises(ConfigError, match="remat='full' is not one of none, layer, dots"):
        BertConfig(remat="full")
    with pytest.raises(ConfigError, match="attention_kernel='cudnn' is not one of"):
        BertConfig(attention_kernel="cudnn")
    # a config written before the knob existed loads with remat off
    old = {k: v for k, v in config_module.config_to_dict(BertConfig()).items() if k != "remat"}
    assert config_module.config_from_dict(old).remat == "none"


def test_auto_with_attention_dropout_uses_the_explicit_kernel(monkeypatch):
    batch = padded_batch()
    cfg = config(attention_dropout=0.3, attention_kernel="auto")  # hidden_dropout 0
    params = init(BertModel(cfg), batch)
    called = spy_kernels(monkeypatch)
    rngs = {"dropout": jax.random.PRNGKey(7)}
    auto, _ = run(BertModel(cfg), params, batch, deterministic=False, rngs=rngs)
    assert called == ["explicit"] * cfg.num_layers
    explicit_cfg = dataclasses.replace(cfg, attention_kernel="explicit")
    explicit, _ = run(BertModel(explicit_cfg), params, batch, deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(auto, explicit)  # the same kernel, the same dropout mask
    called.clear()
    evaluation, _ = run(BertModel(cfg), params, batch)  # deterministic: dropout off -> fused
    assert called == ["auto"] * cfg.num_layers
    real = batch["attention_mask"].astype(bool)
    # dropout changed the real tokens' outputs (by far more than the kernels' 1e-6)
    assert np.abs(np.asarray(auto)[real] - np.asarray(evaluation)[real]).max() > 1e-2


@pytest.mark.parametrize("knobs", [{}, dict(position_embedding="alibi", local_window=4,
                                           global_every=2, num_layers=3)],
                         ids=["bert", "alibi_window"])
def test_auto_without_attention_dropout_is_the_fused_kernel_while_training(knobs, monkeypatch):
    batch = padded_batch()
    cfg = config(hidden_dropout=0.2, attention_dropout=0.0, attention_kernel="auto", **knobs)
    params = init(BertModel(cfg), batch)
    rngs = {"dropout": jax.random.PRNGKey(3)}
    called = spy_kernels(monkeypatch)
    auto, _ = run(BertModel(cfg), params, batch, deterministic=False, rngs=rngs)
    assert called == ["auto"] * cfg.num_layers
    fused, _ = run(BertModel(dataclasses.replace(cfg, attention_kernel="fused")), params, batch,
                   deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(auto, fused)
    explicit, _ = run(BertModel(dataclasses.replace(cfg, attention_kernel="explicit")), params,
                      batch, deterministic=False, rngs=rngs)
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(auto)[real], np.asarray(explicit)[real], atol=1e-5)


def test_auto_packed_classifier_equals_explicit():
    """Packed rows: block-diagonal bias ("packed") in every layer, the [CLS]-only last layer
    with its (1, 1, K, B*T) bias and an odd number of queries."""
    batch = padded_batch()
    packed = packing.pack_batch(batch)
    cfg = config(attention_kernel="auto")
    model = BertForSequenceClassification(cfg, num_labels=3)
    params = init(model, batch)
    explicit = BertForSequenceClassification(dataclasses.replace(cfg, attention_kernel="explicit"),
                                             num_labels=3)
    outputs = [run(m, params, packed, **packed_kwargs(packed))
               for m in (model, explicit)]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


# ------------------------------------------------------------------------------ fused kernel


def test_bias_kind_names_each_mask_attention_builds():
    mask = jnp.asarray([[1, 1, 0], [1, 1, 1]])
    assert attention.bias_kind(attention.attention_bias(mask)) == "padding"  # (B, 1, 1, T)
    ids = jnp.asarray([[1, 2, 0], [1, 1, 2]])
    assert attention.bias_kind(attention.attention_bias(mask, ids)) == "packed"  # (B, 1, T, T)
    alibi = attention.alibi_bias(attention.position_distance(jnp.arange(3)[None],
                                                             jnp.arange(3)[None]), 2)
    assert attention.bias_kind(attention.attention_bias(mask) + alibi) == "bias"  # (B, N, T, T)


def test_window_folded_into_the_bias_equals_the_native_window(monkeypatch):
    """The cuDNN route (window_in_bias) checked through XLA, which takes either form: on every
    real query the folded window gives local_window_size's numbers."""
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(key, (2, 12, 2, 8)) for key in keys)
    mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [9]]), jnp.int32)  # (B, T)
    bias = attention.attention_bias(mask)
    native = attention.fused_attention(q, k, v, bias, None, half_window=2)
    folded_choice = attention_select.AttentionChoice("xla", "test", full_bias=True,
                                                     window_in_bias=True)
    seen = []
    monkeypatch.setattr(attention, "choose", lambda case: seen.append(case) or folded_choice)
    folded = attention.fused_attention(q, k, v, bias, None, half_window=2)
    assert seen[0].two_sided_window and seen[0].mask == "padding" and not seen[0].has_dropout
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(folded)[real], np.asarray(native)[real], atol=1e-6)
    # and it is a window: query 0 ignores key 5 onwards
    changed = v.at[:, 5:].set(0.0)
    again = attention.fused_attention(q, k, changed, bias, None, half_window=2)
    np.testing.assert_array_equal(np.asarray(again)[:, :3], np.asarray(folded)[:, :3])


# ------------------------------------------------------------------------------ remat


def mlm_batch():
    batch = padded_batch()
    positions = jnp.asarray(np.tile(np.arange(1, 4), (len(batch["token_ids"]), 1)), jnp.int32)
    return batch, positions


def mlm_grads(cfg: BertConfig, params, key):
    batch, positions = mlm_batch()
    model = BertForPreTraining(cfg)

    def loss(p):
        out = model.apply({"params": p}, batch["token_ids"], batch["segment_ids"],
                          batch["attention_mask"], positions, deterministic=False,
                          rngs={"dropout": key})
        logits = out["mlm_logits"].astype(jnp.float32)  # (B, P, V)
        return jax.nn.logsumexp(logits, -1).mean() + out["nsp_logits"].sum()

    return jax.jit(jax.value_and_grad(loss))


@pytest.mark.parametrize("remat", ["layer", "dots"])
def test_remat_gives_the_same_gradients_names_and_one_compile(remat):
    cfg = config(hidden_dropout=0.1, attention_dropout=0.1)
    batch, positions = mlm_batch()
    plain = BertForPreTraining(cfg)
    params = plain.init(jax.random.PRNGKey(0), batch["token_ids"], batch["segment_ids"],
                        batch["attention_mask"], positions)["params"]
    rematted_cfg = dataclasses.replace(cfg, remat=remat)
    rematted = BertForPreTraining(rematted_cfg)
    rematted_params = rematted.init(jax.random.PRNGKey(0), batch["token_ids"],
                                    batch["segment_ids"], batch["attention_mask"],
                                    positions)["params"]
    # same parameter paths and the same seeded values: checkpoints and name tables unchanged
    flat, flat_remat = flatten_dict(params), flatten_dict(rematted_params)
    assert flat.keys() == flat_remat.keys()
    for path in flat:
        np.testing.assert_array_equal(flat[path], flat_remat[path])
    assert (names.expected_shapes(rematted_cfg, "pretraining")
            == names.expected_shapes(cfg, "pretraining"))

    key = jax.random.PRNGKey(5)
    loss, grads = mlm_grads(cfg, params, key)(params)
    step = mlm_grads(rematted_cfg, params, key)
    loss_r, grads_r = step(params)
    step(jax.tree_util.tree_map(lambda x: x * 1.01, params))  # new values, same shapes
    assert step._cache_size() == 1
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for path, g in flatten_dict(grads).items():
        np.testing.assert_allclose(flatten_dict(grads_r)[path], g, atol=1e-6, rtol=1e-6,
                                   err_msg="/".join(path))


def test_remat_classifier_with_num_queries_matches():
    """num_queries is static under remat: the [CLS]-only last layer (num_queries=1) still gives
    the same logits."""
    batch = padded_batch()
    cfg = config()
    model = BertForSequenceClassification(cfg, num_labels=2)
    params = init(model, batch)
    rematted = BertForSequenceClassification(dataclasses.replace(cfg, remat="layer"), num_labels=2)
    out = run(model, params, batch)  # (B, labels): the last layer computes [CLS] alone
    out_r = run(rematted, params, batch)
    np.testing.assert_allclose(out_r, out, atol=1e-6)
