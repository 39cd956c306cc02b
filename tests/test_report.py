"""bertlab report on hand-made workdirs: the numbers in results.md are the hand-computed
statistics of the JSON files, missing and unfinished runs are shown, nothing at all is exit 1."""

import json
import pathlib

import pytest

from bertlab.lab import report
from bertlab.lab.study import load_study
from bertlab.commands import report as report_cmd

SPEC = {
    "title": "Hand-made study",
    "description": "Two arms, three seeds.",
    "seeds": [0, 1, 2],
    "stages": [
        {"name": "prep", "per": "study", "argv": ["vocab", "--out", "{workdir}/v.txt"],
         "done": "v.txt"},
        {"name": "ft", "argv": ["finetune", "--workdir", "{workdir}", "--config.seeds={seed}",
                                "--config.init_from={stage:prep}"],
         "done": "summary.json"},
    ],
    "arms": {"a": {}, "b": {"ft": ["--config.optimizer.lr=1e-3"]}},
    "metric": {"name": "dev accuracy", "stage": "ft", "file": "summary.json",
               "path": "eval.accuracy.median", "scale": 100, "unit": "%"},
    "extra_metrics": [{"name": "first value", "stage": "ft", "file": "summary.json",
                       "path": "eval.accuracy.values.0", "scale": 100}],
}


def write_json(path: pathlib.Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def make_study(tmp_path) -> pathlib.Path:
    study_dir = tmp_path / "experiments" / "hand"
    study_dir.mkdir(parents=True)
    (study_dir / "sweep.py").write_text("def get_study():\n    return " + repr(SPEC) + "\n")
    return study_dir


def finish(runs, arm, seed, accuracy, seconds):
    workdir = runs / arm / f"seed_{seed}" / "ft"
    write_json(workdir / "summary.json", {"eval": {"accuracy": {"median": accuracy,
                                                                "values": [accuracy]}}})
    write_json(workdir / "sweep_run.json", {"seconds": seconds, "commit": "abc1234",
                                            "dirty": False, "machine": "test box",
                                            "load_average": seconds / 10})


@pytest.fixture
def hand_study(tmp_path):
    study_dir = make_study(tmp_path)
    runs = tmp_path / "runs" / "hand"
    write_json(runs / "_study/prep/sweep_run.json", {"seconds": 100.0, "commit": "abc1234"})
    (runs / "_study/prep/v.txt").write_text("[PAD]\n")
    for seed, acc, sec in ((0, 0.80, 30.0), (1, 0.82, 40.0), (2, 0.87, 50.0)):
        finish(runs, "a", seed, acc, sec)
    for seed, acc, sec in ((0, 0.81, 20.0), (1, 0.85, 60.0)):
        finish(runs, "b", seed, acc, sec)
    (runs / "b/seed_2/ft").mkdir(parents=True)            # started, never finished
    return study_dir, runs


def cells(text, arm):
    row = next(l for l in text.splitlines() if l.startswith(f"| {arm} |"))
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_report_numbers_are_the_hand_computed_statistics(hand_study, capsys):
    study_dir, runs = hand_study
    assert report_cmd.main([str(study_dir)]) == 0
    printed = capsys.readouterr().out
    text = (study_dir / "results.md").read_text()
    assert cells(printed, "a") == cells(text, "a")
    # a: 80 82 87 -> median 82, mean 83, deviations -3 -1 4: std sqrt(26 / 2) = 3.61
    a = cells(text, "a")
    assert a[:4] == ["a", "3/3", "82.00", "83.00 ± 3.61"]
    low, high = [float(x) for x in a[4].strip("[]").split(",")]
    assert 80 <= low < 83 < high <= 87
    assert a[5:] == ["baseline", "", "82.00", "40 s"]       # wall: median of 30 40 50
    # b: 81 85 (seed 2 unfinished). Paired with a over seeds 0, 1: differences 1, 3 -> mean +2,
    # bootstrap means of {1, 3} are 1, 2, 3 -> CI [1, 3]; |sums| 4 2 2 4 -> p = 2/4
    b = cells(text, "b")
    assert b == ["b", "2/3", "83.00", "83.00 ± 2.83", "[81.00, 85.00]",
                 "+2.00 [+1.00, +3.00] (n=2)", "0.500", "83.00", "40 s"]
    assert "| b | 2 | (unfinished) | (unfinished) | — |" in text
    assert "| a | 1 | 82.00 | 82.00 | 40 s |" in text
    # 100 (study stage) + 30 + 40 + 50 + 20 + 60 seconds
    assert "- Wall time: 5.0 min in all (6 stage runs" in text
    assert "load average at stage starts 2.0–6.0 on " in text       # seconds / 10 above
    assert "Runs made at commit(s) `abc1234`" in text
    assert "bertlab sweep experiments/hand\nbertlab report experiments/hand" in text
    assert ("bertlab finetune --workdir runs/hand/a/seed_0/ft --config.seeds=0 "
            "--config.init_from=runs/hand/_study/prep") in text
    assert "- arm `b`: `--config.optimizer.lr=1e-3`" in text
    assert "0.25 for 3 seeds" in text


def test_one_seed_shows_dashes_and_bad_values_are_missing(tmp_path):
    study_dir = make_study(tmp_path)
    runs = tmp_path / "elsewhere"
    finish(runs, "a", 0, 0.5, 5.0)
    write_json(runs / "b/seed_0/ft/summary.json", {"eval": {"accuracy": {"median": None}}})
    write_json(runs / "b/seed_1/ft/summary.json", {"eval": {}})
    out = tmp_path / "r.md"
    assert report_cmd.main([str(study_dir), "--runs-dir", str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    assert cells(text, "a")[:6] == ["a", "1/3", "50.00", "50.00 ± —", "—", "baseline"]
    assert cells(text, "b")[:7] == ["b", "0/3", "—", "—", "—", "—", "—"]
    assert "| b | 0 | (eval.accuracy.median = None) |" in text
    assert "| b | 1 | (no eval.accuracy.median) |" in text
    assert "| b | 2 | (not run) |" in text
    # commands read relative to the repository root (here tmp_path, the parent of experiments/)
    assert "bertlab report experiments/hand --runs-dir elsewhere\n" in text


def test_no_results_is_exit_1(tmp_path, capsys):
    study_dir = make_study(tmp_path)
    assert report_cmd.main([str(study_dir)]) == 1
    assert "no results yet" in capsys.readouterr().err
    assert not (study_dir / "results.md").exists()


def test_lookup_dotted_paths_and_list_indices():
    data = {"eval": {"accuracy": {"values": [0.1, 0.2]}}, "rows": [{"x": 3}]}
    assert report.lookup(data, "eval.accuracy.values.1") == 0.2
    assert report.lookup(data, "rows.0.x") == 3
    with pytest.raises(KeyError):
        report.lookup(data, "eval.f1")
    with pytest.raises(IndexError):
        report.lookup(data, "rows.2")


def test_extra_columns_print_counts_as_whole_numbers():
    from bertlab.lab.report import fmt_extra
    assert fmt_extra(25793.0) == "25,793"
    assert fmt_extra(250.0) == "250"
    assert fmt_extra(82.0) == "82.00"       # small values keep the metric format
    assert fmt_extra(1060.77) == "1060.77"
    assert fmt_extra(None) == "—"


def test_seed_placeholder_in_a_metric_path_reads_that_seeds_record(tmp_path):
    """A one-seed-per-run fine-tune writes its record under per_seed.<seed>: "{seed}" reaches it."""
    study_dir = make_study(tmp_path)
    runs = tmp_path / "runs" / "hand"
    for seed, epoch in ((0, 2), (1, 3)):
        write_json(runs / "a" / f"seed_{seed}" / "ft" / "summary.json",
                   {"eval": {"accuracy": {"median": 0.5}},
                    "per_seed": {str(seed): {"best_epoch": epoch}}})
    study = load_study(str(study_dir))
    metric = {"stage": "ft", "file": "summary.json", "path": "per_seed.{seed}.best_epoch"}
    assert report.read_metric(study, metric, "a", 0).value == 2.0
    assert report.read_metric(study, metric, "a", 1).value == 3.0
    assert report.read_metric(study, metric, "a", 2).missing == "not run"
    write_json(runs / "a" / "seed_2" / "ft" / "summary.json", {"per_seed": {"0": {}}})
    assert report.read_metric(study, metric, "a", 2).missing == "no per_seed.2.best_epoch"
