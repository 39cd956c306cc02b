"""Per-example outputs (issue 16): `evaluate --out`, `predict --split`, `bertlab submit`.

A randomly initialised tiny classifier is exported with its task pointing at the GLUE fixtures
(tests/fixtures/glue_data: 2-3 rows per file), so every row of every table can be checked by hand
against the fixture files and against the model's own logits. Packed and padded (--no-packing)
tables agree.
"""

import csv
import json
import os

import numpy as np
import pytest

from bertlab import cli, inference
from bertlab.checkpoints import init_from
from bertlab.commands import evaluate as evaluate_cmd
from bertlab.commands import predict as predict_cmd
from bertlab.commands import submit as submit_cmd
from bertlab.data.tasks.registry import TASKS

from conftest import shared_path
from test_inference import tiny_classifier, vocab_file  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("module_compilation_cache")

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "glue_data")


def export(directory, vocab, task: str, data_dir: str = FIXTURES) -> str:
    spec = TASKS[task]
    config, _, params = tiny_classifier(23, spec.num_labels)
    init_from.save_export(str(directory), config=config, params=params, vocab_path=vocab,
                          lower_case=True, spec=spec, extra_layers=0, max_seq_length=16,
                          data={"task": task, "data_dir": data_dir, "eval_split": "dev"},
                          meta={"seed": 0, "epoch": 1})
    return str(directory)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evaluate_out_writes_one_row_per_dev_example(tmp_path, vocab_file, capsys):
    model_dir = export(tmp_path / "model", vocab_file, "sst2")
    out = tmp_path / "dev.csv"
    assert evaluate_cmd.main(["--workdir", model_dir, "--out", str(out)]) == 0
    assert f"2 per-example predictions -> {out}" in capsys.readouterr().out
    rows = read_csv(out)
    # SST-2/dev.tsv: "an unexpected delight <TAB>1", "flat as a pancake <TAB>0" (no index column)
    assert [r["id"] for r in rows] == ["0", "1"]
    assert [r["text"].strip() for r in rows] == ["an unexpected delight", "flat as a pancake"]
    assert [r["gold"] for r in rows] == ["positive", "negative"]
    assert list(rows[0]) == ["id", "text", "gold", "prediction", "prob_negative",
                             "prob_positive", "correct"]
    model = inference.load_finetuned(model_dir)
    split = inference.load_eval_split(model, "dev")
    probabilities = inference.softmax(inference.predict_split(model, split, packed=False))
    for row, p in zip(rows, probabilities):
        assert [float(row["prob_negative"]), float(row["prob_positive"])] == pytest.approx(
            p.tolist(), abs=2e-6)
        assert row["prediction"] == ["negative", "positive"][int(p.argmax())]
        assert row["correct"] == str(int(row["prediction"] == row["gold"]))

    padded = tmp_path / "dev_padded.csv"
    assert evaluate_cmd.main(["--workdir", model_dir, "--out", str(padded), "--no-packing"]) == 0
    for a, b in zip(rows, read_csv(padded)):
        assert float(a["prob_positive"]) == pytest.approx(float(b["prob_positive"]), abs=1e-5)
        assert a["prediction"] == b["prediction"]


def test_predict_scores_an_unlabelled_test_split(tmp_path, vocab_file, capsys):
    model_dir = export(tmp_path / "model", vocab_file, "sst2")
    out = tmp_path / "test.jsonl"
    assert predict_cmd.main(["--workdir", model_dir, "--split", "test", "--out", str(out)]) == 0
    assert "2 predictions" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # SST-2/test.tsv: index 0 "sharp , smart and sad .", index 1 'a dull " thriller .'
    assert [(r["id"], r["text"], r["gold"]) for r in rows] == [
        ("0", "sharp , smart and sad .", ""), ("1", 'a dull " thriller .', "")]
    assert all("correct" not in r for r in rows)  # no gold, no correctness column
    assert all(abs(r["prob_negative"] + r["prob_positive"] - 1) < 2e-6 for r in rows)

    # without --out: the printed table, same labels
    assert predict_cmd.main(["--workdir", model_dir, "--split", "test"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines[0] == "label\tp(negative)\tp(positive)\ttext"
    assert [line.split("\t")[0] for line in lines[1:]] == [r["prediction"] for r in rows]

    assert predict_cmd.main(["--workdir", model_dir, "--task", "mnli", "--split", "test"]) == 2
    assert "does not match the model's task sst2" in capsys.readouterr().err
    assert predict_cmd.main(["--workdir", model_dir, "--task", "sst2"]) == 2
    assert "go with --split" in capsys.readouterr().err


def test_submit_from_an_mnli_workdir_writes_mnli_m_mm_and_ax(tmp_path, vocab_file, capsys):
    mnli = export(tmp_path / "mnli", vocab_file, "mnli")
    sst2 = export(tmp_path / "sst2", vocab_file, "sst2")
    out = tmp_path / "submission"
    written = submit_cmd.write_submission(str(out), {"mnli": mnli, "sst2": sst2},
                                          check_rows=False, log=lambda *_: None)
    assert sorted(os.path.basename(p) for p in written) == ["AX.tsv", "MNLI-m.tsv",
                                                           "MNLI-mm.tsv", "SST-2.tsv"]
    model = inference.load_finetuned(mnli)
    for task, file_name in (("mnli", "MNLI-m.tsv"), ("mnli-mm", "MNLI-mm.tsv"), ("ax", "AX.tsv")):
        lines = (out / file_name).read_text().splitlines()
        assert lines[0] == "index\tprediction"
        split = inference.load_task_split(model, "test", task=task)
        logits = inference.predict_split(model, split, packed=False)
        names = ("entailment", "neutral", "contradiction")
        assert lines[1:] == [f"{i}\t{names[k]}" for i, k in zip(split.ids, logits.argmax(-1))]
    # the fixture files' own indexes: MNLI test_matched has one row (index 0), mismatched two
    assert [l.split("\t")[0] for l in (out / "MNLI-mm.tsv").read_text().splitlines()[1:]] == [
        "0", "1"]
    assert all(l.split("\t")[1] in ("0", "1")
               for l in (out / "SST-2.tsv").read_text().splitlines()[1:])

    # through the cli: a workdir of another task is refused, and rows are checked by default
    assert cli.main(["submit", "--out", str(tmp_path / "x"), f"sst2={mnli}"]) == 2
    assert "fine-tuned on 'mnli', not sst2" in capsys.readouterr().err
    assert cli.main(["submit", "--out", str(tmp_path / "y"), f"sst2={sst2}"]) == 2
    assert "2 prediction rows; the sst2 test set has 1821" in capsys.readouterr().err
    assert cli.main(["submit", "--out", str(tmp_path / "z"), "sst3=x"]) == 2
    assert "sst3" in capsys.readouterr().err


def test_submit_on_the_real_sst2_test_set_passes_the_server_rules(tmp_path, vocab_file, capsys):
    glue = str(shared_path("data", "glue_data"))
    sst2 = export(tmp_path / "sst2", vocab_file, "sst2", data_dir=glue)
    out = tmp_path / "submission"
    assert cli.main(["submit", "--out", str(out), f"sst2={sst2}", "--zip"]) == 0
    lines = (out / "SST-2.tsv").read_text().splitlines()
    assert len(lines) == 1822 and lines[1].split("\t")[0] == "0"
    assert os.path.exists(out / "submission.zip")
