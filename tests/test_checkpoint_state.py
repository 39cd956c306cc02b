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


# ------------------------------------------------------------ damaged checkpoints: fallback

import glob
import json
import os
import subprocess
import sys


def larger_state(seed=0):
    """Arrays above orbax's 1 KiB inline limit, so their bytes live in ocdbt.process_0/d/ as in
    a real run (tiny arrays are inlined into the tree's index)."""
    rng = np.random.default_rng(seed)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(32, 40)), jnp.float32),
                        "bias": jnp.asarray(rng.normal(size=(40,)), jnp.float32)}}
    opt_state = {"mu": jax.tree_util.tree_map(lambda x: x * 0.5, params)}
    return params, opt_state


def save_steps(workdir, steps=(10, 20), keep=3):
    manager = ckpt.open_manager(str(workdir), keep=keep, async_save=False)
    states = {}
    for step in steps:
        params, opt_state = larger_state(step)
        ckpt.save(manager, step, params=params, opt_state=opt_state,
                  meta={"rng": [0, step], "compat": {"model.hidden_size": 40}})
        states[step] = (params, opt_state)
    manager.close()
    return states


def truncate_a_data_file(workdir, step, item="params"):
    files = sorted(glob.glob(str(workdir / "checkpoints" / str(step) / item / "ocdbt.process_0" /
                                 "d" / "*")), key=os.path.getsize)
    big = files[-1]  # the array data (the others hold the index)
    assert os.path.getsize(big) > 1000
    subprocess.run(["truncate", "-s", "100", big], check=True)  # what the issue did
    return big


def test_saves_record_every_file(tmp_path):
    save_steps(tmp_path)
    record = json.loads((tmp_path / "checkpoints" / "20" / ckpt.FILES_RECORD).read_text())
    assert record["step"] == 20
    data = [rel for rel in record["files"] if rel.startswith("params/ocdbt.process_0/d/")]
    assert data and "meta/metadata" in record["files"]
    for rel, (size, digest) in record["files"].items():
        path = tmp_path / "checkpoints" / "20" / rel
        assert path.stat().st_size == size and len(digest) == 64
    assert ckpt.verify_files(str(tmp_path), 20) is None


@pytest.mark.parametrize("with_record", [True, False], ids=["file-record", "orbax-error"])
def test_unreadable_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, with_record):
    states = save_steps(tmp_path)
    big = truncate_a_data_file(tmp_path, 20)
    if not with_record:  # a checkpoint saved before the record existed: orbax's read must tell
        for step in (10, 20):
            os.remove(tmp_path / "checkpoints" / str(step) / ckpt.FILES_RECORD)
    messages = []
    params_like, opt_like = larger_state()
    manager = ckpt.open_manager(str(tmp_path), keep=3, async_save=False)
    restored = ckpt.restore_latest(manager, params_like=params_like, opt_state_like=opt_like,
                                   compat={"model.hidden_size": 40}, log=messages.append)
    assert restored.step == 10 and ckpt.latest_step(manager) == 10
    manager.close()
    np.testing.assert_array_equal(np.asarray(restored.params["dense"]["kernel"]),
                                  np.asarray(states[10][0]["dense"]["kernel"]))
    assert restored.meta["rng"] == [0, 10]
    # the damaged step is moved aside whole, never deleted, with the reason beside it
    (moved,) = glob.glob(str(tmp_path / "checkpoints_abandoned" / "20-*"))
    assert restored.abandoned == [moved]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]
    rel = os.path.relpath(big, tmp_path / "checkpoints" / "20")
    assert os.path.getsize(os.path.join(moved, rel)) == 100
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(f"checkpoint 20 in {tmp_path / 'checkpoints'} cannot be read (")
    assert f"moved to {moved}, trying the previous one" in messages[0]
    if with_record:
        assert f"{rel} has 100 bytes" in messages[0]
    else:
        assert "OUT_OF_RANGE" in messages[0] or "DATA_LOSS" in messages[0]
    assert (open(os.path.join(moved, "REASON.txt")).read()
            .startswith("checkpoint 20 abandoned"))


def test_damaged_optimizer_state_falls_back_too_but_params_alone_still_read(tmp_path):
    save_steps(tmp_path)
    truncate_a_data_file(tmp_path, 20, item="opt_state")
    params_like, opt_like = larger_state()
    manager = ckpt.open_manager(str(tmp_path), keep=3, async_save=False)
    assert ckpt.restore_latest(manager, params_like=params_like, opt_state_like=opt_like,
                               log=lambda m: None).step == 10
    manager.close()


def test_no_readable_checkpoint_left_means_a_fresh_start(tmp_path):
    save_steps(tmp_path, steps=(10,))
    truncate_a_data_file(tmp_path, 10)
    params_like, opt_like = larger_state()
    manager = ckpt.open_manager(str(tmp_path), keep=3, async_save=False)
    assert ckpt.restore_latest(manager, params_like=params_like, opt_state_like=opt_like,
                               log=lambda m: None) is None
    manager.close()
    assert len(os.listdir(tmp_path / "checkpoints_abandoned")) == 1


def test_intact_checkpoint_that_does_not_fit_is_an_error_not_a_fallback(tmp_path):
    save_steps(tmp_path)
    params_like, opt_like = larger_state()
    manager = ckpt.open_manager(str(tmp_path), keep=3, async_save=False)
    with pytest.raises(ckpt.CheckpointError, match="model.hidden_size was 40, now 64"):
        ckpt.restore_latest(manager, params_like=params_like, opt_state_like=opt_like,
                            compat={"model.hidden_size": 64})
    wrong = {"dense": {"kernel": jnp.zeros((32, 41)), "bias": jnp.zeros(41)}}
    with pytest.raises(Exception):
        ckpt.restore_latest(manager, params_like=wrong, opt_state_like={"mu": wrong})
    manager.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    assert not (tmp_path / "checkpoints_abandoned").exists()


def test_restore_params_falls_back_the_same_way(tmp_path):
    states = save_steps(tmp_path)
    truncate_a_data_file(tmp_path, 20)
    messages = []
    params, meta = ckpt.restore_params(str(tmp_path), log=messages.append)
    assert meta["step"] == 10
    np.testing.assert_array_equal(params["dense"]["kernel"], np.asarray(states[10][0]["dense"]["kernel"]))
    assert len(messages) == 1 and "checkpoint 20" in messages[0] and "moved to" in messages[0]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]


def test_restore_params_of_a_running_workdir_skips_without_moving(tmp_path):
    save_steps(tmp_path)
    truncate_a_data_file(tmp_path, 20)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom bertlab.workdir_lock import locked\n"
         "with locked(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.readline()",
         str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        messages = []
        _, meta = ckpt.restore_params(str(tmp_path), log=messages.append)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert meta["step"] == 10
    assert messages[0].endswith("using the previous one")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    # an explicit step that cannot be read is an error naming it
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint 20 in .* cannot be read \("):
        ckpt.restore_params(str(tmp_path), step=20)


def test_trim_metrics_moves_later_records_aside(tmp_path):
    lines = [{"step": 5, "split": "train", "loss": 3.0},
             {"step": 10, "split": "train", "loss": 2.5},
             {"step": 10, "split": "eval", "mlm_loss": 2.6},
             {"step": 15, "split": "train", "loss": 2.2},
             {"step": 20, "split": "eval", "mlm_loss": 2.1}]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 25, "spl'  # cut by a crash
    (tmp_path / "metrics.jsonl").write_text(text)
    (tmp_path / "metrics.abandoned.jsonl").write_text(json.dumps({"step": 99}) + "\n")
    assert ckpt.trim_metrics(str(tmp_path), 10) == 3
    kept = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:3]
    aside = (tmp_path / "metrics.abandoned.jsonl").read_text().splitlines()
    assert [json.loads(l) for l in aside[:3]] == [{"step": 99}, lines[3], lines[4]]
    assert aside[3] == '{"step": 25, "spl'
    assert ckpt.trim_metrics(str(tmp_path), 10) == 0  # nothing more to move
    assert ckpt.trim_metrics(str(tmp_path / "nowhere"), 0) == 0


def test_save_on_a_full_disk_is_one_oserror_naming_the_file(tmp_path, monkeypatch):
    """orbax raises ValueError('RESOURCE_EXHAUSTED: ... [os_error_code='28']'); save turns it into
    OSError(ENOSPC) naming the file and removes the unfinished step directory."""
    import errno

    from bertlab import failures

    save_steps(tmp_path, steps=(10,))
    manager = ckpt.open_manager(str(tmp_path), keep=3, async_save=False)
    partial = tmp_path / "checkpoints" / "20.orbax-checkpoint-tmp"
    data = f"{partial}/params.orbax-checkpoint-tmp/ocdbt.process_0/d/35153a"

    def full_disk(step, **kw):
        partial.mkdir()
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "a/0.0" in OCDBT database at local '
                         f'file "{partial}/": Failed writing: "{data}": Failed to write 83148 '
                         f"bytes to file 8: No space left on device [os_error_code='28']")

    monkeypatch.setattr(manager, "save", full_disk)
    params, opt_state = larger_state()
    with pytest.raises(OSError) as raised:
        ckpt.save(manager, 20, params=params, opt_state=opt_state, meta={})
    manager.close()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == data
    assert failures.one_line(raised.value) == (
        f"{data}: no space left on device while saving checkpoint 20 (free some space or write "
        f"elsewhere)")
    assert not partial.exists() and sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]


def test_file_record_catches_missing_and_changed_files(tmp_path):
    save_steps(tmp_path, steps=(10,))
    step = tmp_path / "checkpoints" / "10"
    meta = step / "meta" / "metadata"
    text = meta.read_text()
    meta.write_text(text.replace("[0, 10]", "[0, 11]"))  # same size, other content
    assert ckpt.verify_files(str(tmp_path), 10) == (
        "meta/metadata has changed since it was saved (sha256 differs)")
    meta.unlink()
    assert ckpt.verify_files(str(tmp_path), 10) == "meta/metadata is missing"
    (step / ckpt.FILES_RECORD).write_text("{not json")
    assert ckpt.verify_files(str(tmp_path), 10).startswith(f"{ckpt.FILES_RECORD} is unreadable")
