"""Weight-decay masks, and `bert_adam` against a numpy transcription of the original update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab.train import optimizer

PARAMS = {
    "bert": {
        "embeddings": {"word_embeddings": {"embedding": np.ones((5, 3), np.float32)},
                       "LayerNorm": {"scale": np.ones(3, np.float32), "bias": np.ones(3, np.float32)}},
        "encoder": {"layer_0": {"attention": {"query": {"kernel": np.ones((3, 3), np.float32),
                                                        "bias": np.ones(3, np.float32)}},
                                "output_layer_norm": {"scale": np.ones(3, np.float32)}}},
    },
    "mlm": {"transform": {"kernel": np.ones((3, 3), np.float32)}, "output_bias": np.ones(5, np.float32)},
}


def test_weight_decay_mask_excludes_layernorm_and_biases():
    mask = optimizer.weight_decay_mask(PARAMS)
    flat = {optimizer.param_path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat == {
        "bert/embeddings/word_embeddings/embedding": True,
        "bert/embeddings/LayerNorm/scale": False,
        "bert/embeddings/LayerNorm/bias": False,
        "bert/encoder/layer_0/attention/query/kernel": True,
        "bert/encoder/layer_0/attention/query/bias": False,
        "bert/encoder/layer_0/output_layer_norm/scale": False,
        "mlm/transform/kernel": True,
        "mlm/output_bias": False,
    }


@pytest.mark.parametrize("name", ["adamw", "bert_adam"])
def test_zero_gradient_decays_only_masked_parameters(name):
    # With zero gradients Adam's direction is 0, so the whole update is -lr * wd * param, masked.
    tx, schedule = optimizer.make_optimizer(name, lr=0.1, warmup_steps=0, num_steps=10,
                                            weight_decay=0.5, b1=0.9, b2=0.999, eps=1e-6, clip_norm=1.0)
    params = jax.tree_util.tree_map(jnp.asarray, PARAMS)
    state = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, state, params)
    lr0 = float(schedule(0))
    assert lr0 == pytest.approx(0.1)
    assert np.allclose(updates["bert"]["encoder"]["layer_0"]["attention"]["query"]["kernel"], -0.05)
    assert np.allclose(updates["bert"]["embeddings"]["word_embeddings"]["embedding"], -0.05)
    assert np.allclose(updates["bert"]["embeddings"]["LayerNorm"]["scale"], 0.0)
    assert np.allclose(updates["bert"]["encoder"]["layer_0"]["attention"]["query"]["bias"], 0.0)
    assert np.allclose(updates["mlm"]["output_bias"], 0.0)


def original_bert_adam(params, grads_per_step, *, lr, warmup, total, wd, b1, b2, eps, clip):
    """google-research/bert optimization.py, transcribed to numpy (dict of arrays)."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    params = {k: p.copy() for k, p in params.items()}
    for step, grads in enumerate(grads_per_step):
        lr_t = lr * (1.0 - min(step, total) / total)                  # polynomial_decay, power 1
        if step < warmup:
            lr_t = lr * step / warmup                                  # warm-up replaces it
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        grads = {k: g * clip / max(norm, clip) for k, g in grads.items()}  # tf.clip_by_global_norm
        for k in params:
            m[k] = b1 * m[k] + (1.0 - b1) * grads[k]
            v[k] = b2 * v[k] + (1.0 - b2) * grads[k] ** 2
            update = m[k] / (np.sqrt(v[k]) + eps)
            if not ("LayerNorm" in k or "bias" in k):
                update += wd * params[k]
            params[k] = params[k] - lr_t * update
    return params


def test_bert_adam_matches_the_original_update():
    rng = np.random.default_rng(0)
    params = {"dense/kernel": rng.normal(size=(4, 3)).astype(np.float32),
              "dense/bias": rng.normal(size=3).astype(np.float32),
              "LayerNorm/scale": rng.normal(size=3).astype(np.float32)}
    # Steps with large gradients (clipped) and small ones (not clipped).
    grads = [{k: (rng.normal(size=p.shape) * s).astype(np.float32) for k, p in params.items()}
             for s in (3.0, 0.01, 0.2, 5.0, 0.05)]
    hp = dict(lr=0.1, warmup=2, total=6, wd=0.01, b1=0.9, b2=0.999, eps=1e-6, clip=1.0)
    expected = original_bert_adam(params, grads, **hp)

    nested = lambda flat: {"dense": {"kernel": flat["dense/kernel"], "bias": flat["dense/bias"]},
                           "LayerNorm": {"scale": flat["LayerNorm/scale"]}}
    tx, _ = optimizer.make_optimizer("bert_adam", lr=hp["lr"], warmup_steps=hp["warmup"],
                                     num_steps=hp["total"], weight_decay=hp["wd"], b1=hp["b1"],
                                     b2=hp["b2"], eps=hp["eps"], clip_norm=hp["clip"])
    p = jax.tree_util.tree_map(jnp.asarray, nested(params))
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update(nested(g), state, p)
        p = optax.apply_updates(p, updates)
    got = nested(expected)
    for path, value in jax.tree_util.tree_leaves_with_path(p):
        ref = got
        for key in path:
            ref = ref[key.key]
        np.testing.assert_allclose(np.asarray(value), ref, rtol=1e-5, atol=1e-6,
                                   err_msg=optimizer.param_path_name(path))
    # And the update really did something beyond the lr-0 first step.
    assert not np.allclose(np.asarray(p["dense"]["kernel"]), params["dense/kernel"])


def test_bert_adam_differs_from_bias_corrected_adam():
    # One step after warm-up: the raw moments m = 0.1 g, v = 0.001 g^2 give |update| ~ 3.16,
    # while bias-corrected Adam gives ~1.
    g = {"w": jnp.full((2,), 0.5)}
    p = {"w": jnp.zeros((2,))}
    kw = dict(lr=1.0, warmup_steps=0, num_steps=10, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-6,
              clip_norm=0.0)
    ours, _ = optimizer.make_optimizer("bert_adam", **kw)
    adamw, _ = optimizer.make_optimizer("adamw", **kw)
    u1, _ = ours.update(g, ours.init(p), p)
    u2, _ = adamw.update(g, adamw.init(p), p)
    np.testing.assert_allclose(u1["w"], -0.1 / np.sqrt(0.001) / (1 + 1e-6 / np.sqrt(0.001) / 0.5),
                               rtol=1e-5)
    np.testing.assert_allclose(u2["w"], -1.0, rtol=1e-5)


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="optimizer.name.*sgd"):
        optimizer.make_optimizer("sgd", lr=1.0, warmup_steps=0, num_steps=1, weight_decay=0,
                                 b1=0.9, b2=0.9, eps=1e-6, clip_norm=0)
