"""Start-up of a fine-tuning run (issue 14, item 6): every planned program is compiled ahead of
time, in the background, exactly once (the first real call reuses it), with the same results as
compiling on first use; and the phase profile that measures it (BERTLAB_PROFILE_STARTUP)."""

import json
import logging
import time

import jax
import numpy as np
import pytest

from bertlab.train import finetune, programs, startup_profile

from finetune_tables import quick_config, read_jsonl, write_table

SIZES = (("train", 64), ("dev", 48), ("test", 32))  # 8 steps of 8 per epoch: seconds

MODULE_IMPORTED = time.time()


@pytest.fixture
def log_compiles(caplog):
    """jax's compile log on, process-wide: `jax.log_compiles()` is thread-local, and the
    programs compile on background threads."""
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    caplog.set_level(logging.WARNING)
    yield caplog
    jax.config.update("jax_log_compiles", previous)


def compile_counts(records) -> dict[str, int]:
    """How many XLA compilations of each jitted step jax logged."""
    counts: dict[str, int] = {}
    for record in records:
        message = record.getMessage()
        if message.startswith("Finished XLA compilation of jit("):
            name = message.split("jit(", 1)[1].split(")", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture
def captured_ahead(monkeypatch):
    """The AheadOfTime of every run started while the fixture is active, and its Prepared."""
    runs = []
    original = finetune.start_compiles

    def spy(prepared, training, seed):
        ahead = original(prepared, training, seed)
        runs.append((prepared, training, seed, ahead))
        return ahead

    monkeypatch.setattr(finetune, "start_compiles", spy)
    return runs


def planned_keys(prepared, training, seed) -> tuple[set, set]:
    """The train and eval program keys this seed's run needs, from its plans."""
    plan = finetune.plan_seed_packing(prepared, seed)
    if plan is None:
        train = {("train", "padded")}
    else:
        train = {("train", f"R={rows}") for rows in plan.buckets}
    evals = set()
    for encoded in (prepared.eval, prepared.test):
        if encoded is not None:
            evals |= set(finetune.eval_program_keys(prepared, training, encoded))
    return train, evals


@pytest.mark.parametrize("packing", [True, False])
def test_each_planned_program_is_compiled_once_ahead_of_time(tmp_path, log_compiles,
                                                             captured_ahead, packing):
    data = write_table(tmp_path / "data", "single", SIZES)
    config = quick_config(data, **{"train.epochs": 2, "data.packing": packing})
    finetune.train_and_evaluate(config, str(tmp_path / "run"))
    (prepared, training, seed, ahead), = captured_ahead
    train_keys, eval_keys = planned_keys(prepared, training, seed)
    # every program the run needs was submitted, and compiled before the run ended
    assert set(ahead.keys()) == train_keys | eval_keys
    assert sorted(map(str, ahead.compiled)) == sorted(map(str, train_keys | eval_keys))
    # ... and none was compiled a second time by its first real call
    counts = compile_counts(log_compiles.records)
    assert counts.get("classify_train_step") == len(train_keys), counts
    assert counts.get("classify_eval_step") == len(eval_keys), counts
    if packing:  # the synthetic texts are short: a packed batch needs fewer rows than B
        plan = finetune.plan_seed_packing(prepared, seed)
        assert max(plan.buckets) < config.data.batch_size


def test_precompiled_run_equals_compiling_on_first_use(tmp_path, monkeypatch):
    """Same metrics to the last bit, same predictions: compiling ahead changes when, not what."""
    data = write_table(tmp_path / "data", "single", SIZES)
    config = quick_config(data, **{"train.epochs": 2})
    monkeypatch.setenv(programs.ENV, "off")
    finetune.train_and_evaluate(config, str(tmp_path / "on_first_use"))
    monkeypatch.delenv(programs.ENV)
    finetune.train_and_evaluate(config, str(tmp_path / "ahead"))
    lines = lambda run: [{k: v for k, v in record.items() if k != "time"} for record in
                         read_jsonl(tmp_path / run / "seed_0" / "metrics.jsonl")]
    assert lines("on_first_use") == lines("ahead")
    assert any(record["split"] == "eval" for record in lines("ahead"))
    logits = lambda run: np.load(tmp_path / run / "seed_0" / finetune.EVAL_LOGITS_FILE)
    np.testing.assert_array_equal(logits("on_first_use"), logits("ahead"))


def test_backbone_weights_keep_their_shapes_and_dtypes_and_a_finished_rerun_compiles_nothing(
        tmp_path, log_compiles, captured_ahead):
    """Fine-tuning from a saved export (init_from), two seeds: the abstract state the programs
    are compiled for has the backbone's real leaves, so the first step reuses the program; the
    second seed starts from the same backbone although the first one's steps donated theirs
    (it failed with "Buffer has been deleted or donated" before make_init_fn copied it)."""
    data = write_table(tmp_path / "data", "single", SIZES)
    first = tmp_path / "first"
    finetune.train_and_evaluate(quick_config(data), str(first))
    config = quick_config(data, **{"model.from_scratch": False, "train.seeds": (0, 1),
                                   "model.init_from": str(first / "seed_0" / "model")})
    log_compiles.clear()
    finetune.train_and_evaluate(config, str(tmp_path / "second"))
    prepared, training, seed, ahead = captured_ahead[-1]
    assert prepared.backbone.params is not None
    train_keys, eval_keys = planned_keys(prepared, training, seed)
    counts = compile_counts(log_compiles.records)
    assert counts.get("classify_train_step") == len(train_keys), counts
    assert counts.get("classify_eval_step") == len(eval_keys), counts
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    # a rerun of a finished workdir finds seed 0 done: no programs compiled, no probe
    runs = len(captured_ahead)
    finetune.train_and_evaluate(quick_config(data), str(first))
    assert len(captured_ahead) == runs


def test_phase_marks_give_wall_and_cpu_from_launch(tmp_path, monkeypatch):
    path = tmp_path / "phases.jsonl"
    monkeypatch.setenv(startup_profile.ENV, str(path))
    startup_profile.mark("first", rows=5)
    sum(i * i for i in range(200_000))  # some CPU between the marks
    startup_profile.mark("second")
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert (first["phase"], first["rows"], second["phase"]) == ("first", 5, "second")
    assert 0 < first["wall"] <= second["wall"]  # seconds since the process was launched
    assert second["seconds"] == pytest.approx(second["wall"] - first["wall"], abs=2e-4)
    assert second["cpu_seconds"] > 0 and second["cpu"] >= first["cpu"]
    monkeypatch.setenv(startup_profile.ENV, "")
    startup_profile.mark("third")  # off: nothing written
    assert len(path.read_text().splitlines()) == 2


def test_launch_time_is_before_anything_this_process_did():
    """The process start (from /proc), not the first mark: the interpreter's start-up counts."""
    launched = startup_profile.launch_time()
    assert launched <= MODULE_IMPORTED <= time.time()
    assert time.time() - launched < 24 * 3600
