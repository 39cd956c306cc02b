"""orbax training-state checkpoints on a dummy state: bitwise round trip, keep-last-N, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertlab.train import optimizer
from bertlab.checkpoints import training_state as ckpt


def dummy_state():
    params = {"dense": {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32),
                        "bias": jnp.zeros(4)},
              "LayerNorm": {"scale": jnp.ones(4)}}
    tx, _ = optimizer.make_optimizer("bert_adam", lr=0.1, warmup_steps=1, num_steps=10,
                                     weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6, clip_norm=1.0)
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), params)
    for _ in range(2):
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state


def test_round_trip_is_bitwise_and_keeps_the_last_n(tmp_path):
    params, opt_state = dummy_state()
    manager = ckpt.open_manager(str(tmp_path), keep=2, async_save=False)
    meta = {"rng": [0, 42], "data": {"epoch": 1, "position": 16}, "compat": {"model.hidden_size": 4}}
    for step in (10, 20, 30):
        ckpt.save(manager, step, params=params, opt_state=opt_state, meta=meta)
    assert sorted(manager.all_steps()) == [20, 30]  # keep_checkpoints=2
    assert ckpt.latest_step(manager) == 30
    assert ckpt.read_meta(manager, 30) == {**meta, "step": 30}
    got_params, got_opt, got_meta = ckpt.restore(manager, 30, params_like=params,
                                                 opt_state_like=opt_state)
    manager.close()
    assert got_meta["data"] == {"epoch": 1, "position": 16}
    assert jax.tree_util.tree_structure(got_opt) == jax.tree_util.tree_structure(opt_state)
    for a, b in zip(jax.tree_util.tree_leaves((params, opt_state)),
                    jax.tree_util.tree_leaves((got_params, got_opt))):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    # Params alone, with no optimizer and no target (what fine-tuning does).
    host_params, meta2 = ckpt.restore_params(str(tmp_path))
    assert meta2["step"] == 30
    np.testing.assert_array_equal(host_params["dense"]["kernel"], np.asarray(params["dense"]["kernel"]))


def test_restore_params_errors_name_the_directory(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoints/ directory"):
        ckpt.restore_params(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="no finished checkpoint"):
        ckpt.restore_params(str(tmp_path))


def test_check_compatible_names_the_differing_key():
    saved = {"model.hidden_size": 128, "vocab_sha256": "abc", "optimizer.name": "adamw"}
    ckpt.check_compatible(saved, dict(saved), where="w/checkpoints")
    with pytest.raises(ckpt.CheckpointError,
                       match=r"w/checkpoints .* model.hidden_size was 128, now 256"):
        ckpt.check_compatible(saved, {**saved, "model.hidden_size": 256}, where="w/checkpoints")
    with pytest.raises(ckpt.CheckpointError, match="optimizer.name was 'adamw', now 'bert_adam'"):
        ckpt.check_compatible(saved, {**saved, "optimizer.name": "bert_adam"}, where="w")


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="keep_checkpoints"):
        ckpt.open_manager(str(tmp_path), keep=0)
