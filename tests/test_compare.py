"""`bertlab compare`: hand-made workdirs of both kinds, tables and plot."""

import json
import os

import pytest

from bertlab.commands import compare as compare_cmd
from bertlab.lab import compare


def _write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if isinstance(value, list):
            f.write("".join(json.dumps(v) + "\n" for v in value))
        else:
            json.dump(value, f)


def _pretrain_run(root, name, lr, loss):
    workdir = os.path.join(root, name)
    _write(os.path.join(workdir, "config.json"),
           {"optimizer": {"lr": lr, "name": "adamw"}, "data": {"prepared": f"/x/{name}"}})
    _write(os.path.join(workdir, "final_metrics.json"),
           {"step": 20, "loss": loss, "eval_mlm_loss": loss + 0.5, "stopped_by": None})
    _write(os.path.join(workdir, "metrics.jsonl"),
           [{"step": 10, "split": "train", "loss": loss + 1}, {"step": 20, "split": "train", "loss": loss},
            {"step": 20, "split": "eval", "mlm_loss": loss + 0.5}])
    return workdir


def test_pretrain_runs_table_differences_and_plot(tmp_path):
    a = _pretrain_run(str(tmp_path), "a", 1e-4, 3.0)
    b = _pretrain_run(str(tmp_path), "b", 5e-4, 2.5)
    plot = str(tmp_path / "c.png")
    text, runs = compare.compare([a, b], plot=plot)
    assert runs[0]["metrics"] == {"step": 20, "loss": 3.0, "eval_mlm_loss": 3.5}
    assert "| a | pretrain | 3.5000 | 3.0000 | 20 |" in text
    # only lr differs (data.prepared is ignored: a path, not a recipe setting)
    assert compare.config_differences(runs) == {"optimizer.lr": [1e-4, 5e-4]}
    assert runs[1]["curves"]["train loss"] == ([10.0, 20.0], [3.5, 2.5])
    assert os.path.getsize(plot) > 1000


def test_finetune_run_reads_summary_and_seed_curves(tmp_path):
    workdir = str(tmp_path / "ft")
    _write(os.path.join(workdir, "config.json"), {"task": "sst2"})
    _write(os.path.join(workdir, "summary.json"), {"metric": "accuracy", "eval": {
        "accuracy": {"median": 0.8, "std": 0.02, "n": 3}}})
    for seed, values in ((0, (0.7, 0.8)), (1, (0.6, 0.9))):
        _write(os.path.join(workdir, f"seed_{seed}", "metrics.jsonl"),
               [{"step": 5 * e, "split": "eval", "epoch": e, "accuracy": v}
                for e, v in enumerate(values, 1)])
    run = compare.read_run(workdir)
    assert run["kind"] == "finetune"
    assert run["metrics"] == {"eval_accuracy": (0.8, 0.02, 3)}
    xs, ys = run["curves"]["eval accuracy"]
    assert xs == [1.0, 2.0] and ys == pytest.approx([0.65, 0.85])
    assert "0.8000 ± 0.0200 (n=3)" in compare.render([run])


def test_command_prints_and_refuses_non_workdirs(tmp_path, capsys):
    a = _pretrain_run(str(tmp_path), "a", 1e-4, 3.0)
    out = str(tmp_path / "cmp.md")
    assert compare_cmd.main([a, "--out", out, "--plot", ""]) == 0
    assert "## Config differences" in open(out).read()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert compare_cmd.main([str(empty), "--plot", ""]) == 2
    assert "is it a bertlab pretrain or finetune workdir?" in capsys.readouterr().err
