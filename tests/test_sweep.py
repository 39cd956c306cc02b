"""Sweeps: study validation (bertlab.lab.study), expansion into runs (bertlab.lab.plan), dry-run
text and resumable running (bertlab.lab.runner), and the example study end to end (4 tiny
fine-tunes as subprocesses, then its report)."""

import json
import os
import pathlib
import re
import sys

import numpy as np
import pytest

from bertlab.lab.plan import plan
from bertlab.lab.runner import sweep
from bertlab.lab.study import load_study, parse_study
from bertlab.commands import sweep as sweep_cmd

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "experiments" / "example_sweep"


def base_spec(**overrides):
    spec = {
        "title": "t",
        "seeds": [0, 1],
        "stages": [
            {"name": "vocab", "per": "study", "argv": ["vocab", "--out", "{workdir}/v.txt"],
             "done": "v.txt"},
            {"name": "pretrain", "argv": ["pretrain", "--workdir", "{workdir}",
                                          "--config.train.seed={seed}"],
             "done": "final_metrics.json"},
            {"name": "finetune", "argv": ["finetune", "--workdir", "{workdir}",
                                          "--config.init_from={stage:pretrain}"],
             "done": "summary.json"},
        ],
        "arms": {"a": {}, "b": {"pretrain": ["--config.data.mask_rate=0.3"]}},
        "metric": {"name": "acc", "stage": "finetune", "file": "summary.json",
                   "path": "eval.accuracy.median"},
    }
    spec.update(overrides)
    return spec


def parse(spec, tmp_path, runs_dir=None):
    path = tmp_path / "experiments" / "study" / "sweep.py"
    return parse_study(spec, str(path), runs_dir=runs_dir)


# ---------------------------------------------------------------- validation


def stage(name, argv=("vocab",), per="seed", done="x"):
    return {"name": name, "per": per, "argv": list(argv), "done": done}


@pytest.mark.parametrize("overrides, key, fragment", [
    ({"colour": 1}, "colour", "unknown key"),
    ({"stages": [{"name": "s", "done": "x"}]}, "stages[0].argv", "missing"),
    ({"stages": [{"name": "s", "argv": ["vocab"]}]}, "stages[0].done", "missing"),
    ({"stages": [stage("s"), stage("s")]}, "stages[1].name", "duplicate"),
    ({"arms": {"a": {"pretrian": ["--x=1"]}}}, "arms.a.pretrian", "unknown stage"),
    ({"arms": {"a": {"vocab": ["--x=1"]}}}, "arms.a.vocab", "per='study'"),
    ({"arms": [("a", {}), ("a", {})]}, "arms.a", "duplicate arm name"),
    ({"baseline": "c"}, "baseline", "'c' is not an arm"),
    ({"grid": {"pretrain": {"--config.x": [1, 2]}}}, "grid", "either arms or grid"),
    ({"stages": [stage("p", ["pretrain", "{stage:f}"]), stage("f")]},
     "stages[0] (p).argv", "does not run before"),
    ({"stages": [stage("p", ["pretrain", "{stage:nope}"])]}, "stages[0] (p).argv", "unknown stage"),
    ({"stages": [stage("p", ["pretrain", "{seeed}"])]}, "stages[0] (p).argv",
     "unknown placeholder {seeed}"),
    ({"stages": [stage("p", ["vocab", "{seed}"], per="arm")]}, "stages[0] (p).argv",
     "{seed} is undefined in a per='arm' stage"),
    ({"stages": [stage("p"), stage("q", ["vocab", "{stage:p}"], per="study")]},
     "stages[1] (q).argv", "finer"),
    ({"metric": {"name": "m", "stage": "nope", "file": "f", "path": "p"}}, "metric.stage",
     "unknown stage"),
    ({"seeds": [0, 0]}, "seeds", "repeats"),
    ({"arms": {"a/b": {}}}, "arms", "'a/b'"),
    ({"arms": {"_study": {}}}, "arms", "'_study'"),
])
def test_validation_errors_name_file_and_key(tmp_path, overrides, key, fragment):
    spec = base_spec(**overrides)
    if "stages" in overrides and "arms" not in overrides:
        spec["arms"] = {"a": {}}
    if "stages" in overrides and "metric" not in overrides:
        spec["metric"] = {**spec["metric"], "stage": spec["stages"][0]["name"]}
    with pytest.raises(ValueError) as info:
        parse(spec, tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "experiments" / "study" / "sweep.py") + ": " + key)
    assert fragment in message


def test_load_study_accepts_directory_or_file_and_reports_import_errors(tmp_path):
    study_dir = tmp_path / "experiments" / "s"
    study_dir.mkdir(parents=True)
    (study_dir / "sweep.py").write_text("def get_study():\n    return " + repr(base_spec()) + "\n")
    by_dir = load_study(str(study_dir))
    by_file = load_study(str(study_dir / "sweep.py"))
    assert by_dir == by_file
    assert by_dir.root == str(tmp_path)               # the parent of experiments/
    assert by_dir.runs_dir == str(tmp_path / "runs" / "s")
    (study_dir / "sweep.py").write_text("def get_study(:\n")
    with pytest.raises(ValueError, match=r"sweep\.py: importing the study failed: SyntaxError"):
        load_study(str(study_dir))


# ---------------------------------------------------------------- expansion


def test_plan_expands_levels_placeholders_and_arm_extras(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTLAB_SHARED", str(tmp_path / "shared"))
    study = parse(base_spec(), tmp_path)
    runs = plan(study)
    # vocab once, then per (arm, seed): pretrain, finetune
    assert [(r.arm, r.seed, r.stage.name) for r in runs] == [
        (None, None, "vocab"), ("a", 0, "pretrain"), ("a", 0, "finetune"),
        ("a", 1, "pretrain"), ("a", 1, "finetune"),
        ("b", 0, "pretrain"), ("b", 0, "finetune"), ("b", 1, "pretrain"), ("b", 1, "finetune")]
    assert runs[0].command == "bertlab vocab --out runs/study/_study/vocab/v.txt"
    assert runs[7].command == ("bertlab pretrain --workdir runs/study/b/seed_1/pretrain "
                               "--config.train.seed=1 --config.data.mask_rate=0.3")
    assert runs[8].command == ("bertlab finetune --workdir runs/study/b/seed_1/finetune "
                               "--config.init_from=runs/study/b/seed_1/pretrain")
    assert runs[8].done_path == str(tmp_path / "runs/study/b/seed_1/finetune/summary.json")
    # a subset; study-level stages still come first
    subset = plan(study, arms=["b"], seeds=[1])
    assert [(r.arm, r.seed, r.stage.name) for r in subset] == [
        (None, None, "vocab"), ("b", 1, "pretrain"), ("b", 1, "finetune")]
    with pytest.raises(ValueError, match="unknown arm 'c'"):
        plan(study, arms=["c"])
    with pytest.raises(ValueError, match="seed 5 is not in"):
        plan(study, seeds=[5])


def test_grid_arm_names_and_argv(tmp_path):
    spec = base_spec(grid={"pretrain": {"--config.data.mask_rate": [0.15, 0.3],
                                        "--config.model.pre_ln": [False, True]}})
    del spec["arms"]
    study = parse(spec, tmp_path)
    assert list(study.arms) == ["mask_rate=0.15,pre_ln=False", "mask_rate=0.15,pre_ln=True",
                                "mask_rate=0.3,pre_ln=False", "mask_rate=0.3,pre_ln=True"]
    assert study.arms["mask_rate=0.3,pre_ln=True"] == {
        "pretrain": ("--config.data.mask_rate=0.3", "--config.model.pre_ln=True")}
    assert study.baseline == "mask_rate=0.15,pre_ln=False"


def test_shared_and_runs_placeholders_and_quoting(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTLAB_SHARED", raising=False)
    spec = base_spec(stages=[stage("s", ["vocab", "--corpus", "{shared}/data/a b.txt",
                                         "--out", "{runs}/x", "{study}", "{arm}"])],
                     arms={"a": {}}, metric={"name": "m", "stage": "s", "file": "f", "path": "p"})
    run, = plan(parse(spec, tmp_path), seeds=[0])
    assert run.command == ("bertlab vocab --corpus '../shared/data/a b.txt' --out runs/study/x "
                           "experiments/study a")


# ---------------------------------------------------------------- running (fast: `bertlab vocab`)


def write_study(tmp_path, spec) -> pathlib.Path:
    study_dir = tmp_path / "experiments" / "quick"
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "sweep.py").write_text("def get_study():\n    return " + repr(spec) + "\n")
    return study_dir


def vocab_spec(corpus, bad_arm_argv=None):
    size = ["--size", "40"]
    return {
        "title": "vocab study", "seeds": [0, 1],
        "stages": [
            {"name": "v1", "per": "study", "done": "vocab.txt",
             "argv": ["vocab", "--corpus", corpus, *size, "--out", "{workdir}/vocab.txt"]},
            {"name": "v2", "done": "vocab.txt",
             "argv": ["vocab", "--corpus", "{stage:v1}/vocab.txt", *size,
                      "--out", "{workdir}/vocab.txt"]},
        ],
        "arms": {"good": {}, "bad": {"v2": bad_arm_argv or []}},
        "metric": {"name": "m", "stage": "v2", "file": "vocab.txt", "path": "x"},
    }


def test_sweep_runs_skips_done_and_stops_or_keeps_going_on_failure(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\n")
    study_dir = write_study(tmp_path, vocab_spec(str(corpus), ["--no-such-flag"]))
    runs = tmp_path / "runs"
    code = sweep_cmd.main([str(study_dir), "--runs-dir", str(runs)])
    out = capsys.readouterr().out
    assert code == 1
    assert "[1/5] arm=* seed=* stage=v1 (running)" in out
    assert re.search(r"\[3/5\] arm=good seed=1 stage=v2 \(finished in [0-9.]+ s\)", out)
    assert "[4/5] arm=bad seed=0 stage=v2 FAILED (exit code 2); log: " in out
    assert "sweep stopped: arm=bad seed=0 stage=v2 failed" in out
    assert "[5/5]" not in out
    record = json.loads((runs / "good/seed_1/v2/sweep_run.json").read_text())
    assert record["returncode"] == 0 and record["argv"][0] == "vocab"
    assert record["command"].startswith("bertlab vocab --corpus ")
    assert set(record) >= {"start", "end", "seconds", "commit", "dirty"}
    assert "no-such-flag" in (runs / "bad/seed_0/v2/sweep.log").read_text()

    # keep going: the failed arm's runs fail again, everything done is skipped
    code = sweep_cmd.main([str(study_dir), "--runs-dir", str(runs), "--keep-going"])
    out = capsys.readouterr().out
    assert code == 1
    assert [line for line in out.splitlines() if line.startswith("[")] == [
        "[1/5] arm=* seed=* stage=v1 (skipped: done)",
        "[2/5] arm=good seed=0 stage=v2 (skipped: done)",
        "[3/5] arm=good seed=1 stage=v2 (skipped: done)",
        "[4/5] arm=bad seed=0 stage=v2 (running)",
        "[4/5] arm=bad seed=0 stage=v2 FAILED (exit code 2); log: "
        + str(runs / "bad/seed_0/v2/sweep.log"),
        "[5/5] arm=bad seed=1 stage=v2 (running)",
        "[5/5] arm=bad seed=1 stage=v2 FAILED (exit code 2); log: "
        + str(runs / "bad/seed_1/v2/sweep.log")]
    # the failed attempt before is kept in the record
    record = json.loads((runs / "bad/seed_0/v2/sweep_run.json").read_text())
    assert record["returncode"] == 2 and record["previous"][0]["returncode"] == 2


def test_keep_going_skips_runs_that_need_a_failed_stage(tmp_path, capsys):
    spec = vocab_spec(str(tmp_path / "missing.txt"))
    study_dir = write_study(tmp_path, spec)
    code = sweep_cmd.main([str(study_dir), "--runs-dir", str(tmp_path / "r"), "--keep-going",
                           "--arms", "good"])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[")]
    assert code == 1
    assert lines[1].startswith("[1/3] arm=* seed=* stage=v1 FAILED")
    assert lines[2] == ("[2/3] arm=good seed=0 stage=v2 "
                        "(skipped: v1 failed for arm=* seed=* stage=v1)")


def test_bad_study_is_a_usage_error(tmp_path, capsys):
    assert sweep_cmd.main([str(tmp_path / "nowhere")]) == 2
    assert "no such study file" in capsys.readouterr().err


# ---------------------------------------------------------------- the example study, end to end


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """The example study's 4 fine-tunes, run once for this module. Compilation dominates these
    runs: a shared persistent XLA cache lets seed 1 reuse seed 0's programs (the arms differ in
    lr, a constant in the compiled step), and XLA's cheapest optimisation level compiles faster."""
    runs = tmp_path_factory.mktemp("example_runs")
    cache = tmp_path_factory.mktemp("xla_cache")
    env = {"JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                         + " --xla_backend_optimization_level=0").strip()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        study = load_study(str(EXAMPLE), runs_dir=str(runs))
        lines = []
        code = sweep(study, plan(study), out=lines.append, echo=lambda data: None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return runs, code, lines


def test_example_dry_run_prints_pasteable_commands(capsys):
    assert sweep_cmd.main([str(EXAMPLE), "--dry-run", "--runs-dir", "runs/x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "# [1/4] arm=lr=1e-3 seed=0 stage=finetune (to run)"
    assert lines[2] == ("bertlab finetune --config "
                        "configs/finetune.py:task=rotten_tomatoes,recipe=quick "
                        "--workdir runs/x/lr=1e-3/seed_0/finetune --config.train.seed=0 "
                        "--config.optimizer.lr=1e-3")
    assert len(lines) == 9


def test_dry_run_into_a_closed_pipe_stops_quietly():
    """`bertlab sweep --dry-run | head -1`: the reader has gone when the commands are written;
    the command ends with the shell's SIGPIPE status and no traceback."""
    import subprocess
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left
    try:
        writer = subprocess.run([sys.executable, "-m", "bertlab", "sweep", str(EXAMPLE),
                                 "--dry-run", "--runs-dir", "runs/x"], stdout=write_end,
                                stderr=subprocess.PIPE, cwd=REPO, text=True)
    finally:
        os.close(write_end)
    assert writer.returncode == 141, writer.stderr
    assert "Traceback" not in writer.stderr and "BrokenPipe" not in writer.stderr, writer.stderr


def test_example_sweep_runs_then_skips_and_reports(example_runs, tmp_path, capsys):
    runs, code, lines = example_runs
    assert code == 0, lines
    assert sum("finished in" in line for line in lines) == 4
    for arm in ("lr=1e-3", "lr=3e-3"):
        for seed in (0, 1):
            record = json.loads((runs / arm / f"seed_{seed}/finetune/sweep_run.json").read_text())
            assert record["returncode"] == 0 and record["seconds"] > 0
            assert f"--config.train.seed={seed}" in record["argv"]

    # a second sweep starts nothing
    assert sweep_cmd.main([str(EXAMPLE), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.count("(skipped: done)") == 4 and "running" not in out

    # the report's numbers are the statistics of the runs' summary.json files
    from bertlab.commands import report as report_cmd

    out_path = tmp_path / "results.md"
    assert report_cmd.main([str(EXAMPLE), "--runs-dir", str(runs), "--out", str(out_path)]) == 0
    text = out_path.read_text()
    summaries = {(arm, s): json.loads((runs / arm / f"seed_{s}/finetune/summary.json").read_text())
                 for arm in ("lr=1e-3", "lr=3e-3") for s in (0, 1)}
    loss = {arm: [100 * summaries[arm, s]["eval"]["loss"]["median"] for s in (0, 1)]
            for arm in ("lr=1e-3", "lr=3e-3")}
    row = next(l for l in text.splitlines() if l.startswith("| lr=1e-3 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    values = np.array(loss["lr=1e-3"])
    assert cells[1] == "2/2"
    assert cells[2] == f"{np.median(values):.2f}"
    assert cells[3] == f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
    diff = values - np.array(loss["lr=3e-3"])
    assert cells[5].startswith(f"{diff.mean():+.2f}")
    # two seeds: the sign-flip p over 4 patterns, 0.5 if both differences have one sign, else 1
    assert cells[6] == f"{0.5 if diff[0] * diff[1] > 0 else 1.0:.3f}"
    accuracy = [100 * summaries["lr=1e-3", s]["eval"]["accuracy"]["median"] for s in (0, 1)]
    assert cells[7] == f"{np.median(accuracy):.2f}"
    baseline_row = next(l for l in text.splitlines() if l.startswith("| lr=3e-3 |"))
    assert "baseline" in baseline_row
    assert "bertlab sweep experiments/example_sweep" in text
