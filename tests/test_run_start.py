"""What both training loops do before their first step, on small inputs: every numeric config
key is range-checked before anything is touched (one line naming the key, exit 2, no workdir),
a failed start leaves no empty workdir, the peak FLOP/s is measured once per machine and cached,
multi-host arguments come from the environment, and a fine-tuning workdir refuses seeds added
from other backbone weights."""

from __future__ import annotations

import hashlib
import json
import os

import ml_collections
import numpy as np
import pytest

from bertlab import cli
from bertlab.checkpoints import init_from
from bertlab.config_cli import load_config_file
from bertlab.train import loop, mesh, peak_cache

CONFIGS = {"pretrain": "configs/pretrain.py:quick",
           "finetune": "configs/finetune.py:task=rotten_tomatoes,recipe=quick"}


def numeric_keys(config: ml_collections.ConfigDict, prefix: str = ""):
    """(dotted key, int or float) of every numeric leaf, placeholders (None) included."""
    for name in config.keys():
        kind = config.get_type(name)
        if kind is ml_collections.ConfigDict:
            yield from numeric_keys(config[name], f"{prefix}{name}.")
        elif kind in (int, float):
            yield f"{prefix}{name}", kind


def bad_values(kind):
    """-1 is out of range for every numeric key of both configs (no count, size, rate, seed or
    interval of ours is negative); a float key must also refuse NaN."""
    return ["-1"] + (["nan", "inf"] if kind is float else [])


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_numeric_key_is_range_checked_before_anything_is_touched(command, tmp_path,
                                                                       capsys):
    keys = list(numeric_keys(load_config_file(CONFIGS[command])))
    assert len(keys) > 20 and ("data.batch_size", int) in keys
    workdir = tmp_path / "run"
    for key, kind in keys:
        for value in bad_values(kind) + (["0"] if key == "data.batch_size" else []):
            code = cli.main([command, "--config", CONFIGS[command], "--workdir", str(workdir),
                             f"--config.{key}={value}"])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2, (key, value)
            assert len(err) == 1 and f"error: {key}=" in err[0], (key, value, err)
            assert not workdir.exists(), (key, value)  # nothing read or written


def test_check_numbers_ranges_and_messages():
    config = ml_collections.ConfigDict({"a": {"rate": 0.5, "n": 3, "seeds": (0, 1), "name": "x",
                                              "flag": True, "unset": None}})
    ranges = {"a.rate": loop.Range(0, 1, True, True), "a.n": loop.AT_LEAST_ONE}
    loop.check_numbers(config, ranges)  # all in range; strings, bools and None are not numbers
    for key, value, message in (("rate", 1.0, "a.rate=1.0 must be in (0, 1)"),
                                ("rate", float("nan"), "a.rate=nan must be in (0, 1)"),
                                ("n", 0, "a.n=0 must be >= 1"),
                                ("seeds", (0, -2), "a.seeds=(0, -2) must be >= 0")):
        bad = ml_collections.ConfigDict(config.to_dict())
        bad.a[key] = value
        with pytest.raises(loop.TrainConfigError) as raised:
            loop.check_numbers(bad, ranges)
        assert str(raised.value) == message


def test_a_failed_start_leaves_no_empty_workdir(tmp_path, capsys):
    workdir = tmp_path / "fresh" / "run"
    code = cli.main(["pretrain", "--config", CONFIGS["pretrain"], "--workdir", str(workdir),
                     f"--config.data.corpus={tmp_path / 'missing.txt'}"])
    assert code == 2 and "corpus file not found" in capsys.readouterr().err
    assert not workdir.exists()  # created for the run, removed again when it failed
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        with loop.workdir_session(str(existing), is_main=True):
            raise RuntimeError("a failure")
    assert existing.is_dir()  # a workdir the user made stays


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "run"
    a_file.write_text("x")
    code = cli.main(["pretrain", "--config", CONFIGS["pretrain"], "--workdir", str(a_file),
                     "--config.train.peak_flops=1e9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"bertlab pretrain: error: --workdir {a_file}: is a file, not a "
                                 f"directory; pass a directory (it is created if missing)"]


# ------------------------------------------------------------------------- the peak FLOP/s

def test_peak_flops_is_measured_once_per_machine_and_cached(tmp_path):
    import jax

    env = {peak_cache.ENV: str(tmp_path / "cache")}
    calls = []

    def measure(dtype):
        calls.append(dtype)
        return 1.5e11

    assert peak_cache.peak_flops(0.0, "float32", measure=measure, env=env) == (1.5e11, "measured")
    assert peak_cache.peak_flops(0.0, "float32", measure=measure, env=env) == (1.5e11, "cache")
    assert calls == ["float32"]  # the second launch read the figure back
    table = json.loads((tmp_path / "cache" / "peak_flops.json").read_text())
    device = jax.local_devices()[0]
    assert table == {f"{device.device_kind} | float32 | jax {jax.__version__}": {"flops": 1.5e11}}
    # another dtype is another figure; train.peak_flops wins without measuring
    assert peak_cache.peak_flops(0.0, "bfloat16", measure=lambda d: 3e11, env=env)[1] == "measured"
    assert peak_cache.peak_flops(2e12, "float32", measure=measure, env=env) == (2e12, "config")
    # "off" measures every time and writes nothing; so does an unwritable directory
    off = {peak_cache.ENV: "off"}
    assert peak_cache.peak_flops(0.0, "float32", measure=measure, env=off)[1] == "measured"
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert peak_cache.peak_flops(0.0, "float32", measure=measure,
                                 env={peak_cache.ENV: str(blocked)})[1] == "measured"
    assert len(calls) == 3
    assert peak_cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/bertlab"


def test_tests_never_write_the_real_peak_cache():
    assert peak_cache.cache_dir() is None  # tests/conftest.py: BERTLAB_CACHE_DIR=off


# ----------------------------------------------------------------------------- multi-host

def test_distributed_arguments_come_from_the_environment():
    """jax 0.10.2's initialize() reads only JAX_COORDINATOR_ADDRESS; we pass the other two."""
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "2"}
    assert mesh.distributed_arguments(env) == {"coordinator_address": "10.0.0.1:1234",
                                               "num_processes": 4, "process_id": 2}
    assert mesh.distributed_arguments({}) == {}  # TPU pods, SLURM: jax discovers them
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='two' is not an integer"):
        mesh.distributed_arguments({"JAX_PROCESS_ID": "two"})


# ------------------------------------------------------------------------------ provenance

def test_params_sha256_is_over_paths_dtypes_shapes_and_bytes_in_sorted_order():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.zeros(3, np.float32)
    digest = hashlib.sha256()
    for path, array in (("dense/bias", b), ("dense/kernel", w)):  # sorted by path
        digest.update(path.encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    tree = {"dense": {"kernel": w, "bias": b}}
    assert init_from.params_sha256(tree) == digest.hexdigest()
    changed = {"dense": {"kernel": w + np.float32(2 ** -20), "bias": b}}
    assert init_from.params_sha256(changed) != digest.hexdigest()


def test_seeds_added_from_other_backbone_weights_are_refused(tmp_path):
    from bertlab.models.config import BertConfig
    from bertlab.train import finetune

    def backbone(value, step):
        params = {"embeddings": {"w": np.full((2, 2), value, np.float32)}}
        made = init_from.Backbone(BertConfig(), params, "vocab.txt", True, "pretrain",
                                  "/runs/pretrain", provenance={"step": step})
        return init_from.with_provenance(made)

    first, later = backbone(1.0, 400), backbone(2.0, 800)
    assert first.provenance["step"] == 400 and len(first.provenance["sha256"]) == 64
    finetune.check_provenance(str(tmp_path), first)  # the first run records it
    recorded = json.loads((tmp_path / "init_from.json").read_text())
    assert recorded == {"source": "/runs/pretrain", "kind": "pretrain", "step": 400,
                        "sha256": first.provenance["sha256"]}
    finetune.check_provenance(str(tmp_path), backbone(1.0, 400))  # the same weights: seeds added
    with pytest.raises(loop.TrainConfigError) as raised:
        finetune.check_provenance(str(tmp_path), later)
    message = str(raised.value)
    assert "\n" not in message and "use a new --workdir" in message
    assert f"step 400, weights sha256 {first.provenance['sha256'][:12]}" in message
    assert f"step 800, weights sha256 {later.provenance['sha256'][:12]}" in message


def test_exported_weights_get_the_mode_of_a_normal_new_file(tmp_path):
    """safetensors writes through a private temporary file (0600); an export others read must
    have 0666 less the umask, as any file open() creates."""
    from bertlab.checkpoints import save_bertlab
    from bertlab.models.config import BertConfig

    mask = os.umask(0o022)
    try:
        directory = save_bertlab(tmp_path / "export", BertConfig(vocab_size=10),
                                 {"w": np.zeros(3, np.float32)})
    finally:
        os.umask(mask)
    assert os.stat(directory / "params.safetensors").st_mode & 0o777 == 0o644
