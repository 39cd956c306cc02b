"""The GLUE server's submission rules, checked against the real test files in ../shared."""

import os
import zipfile

import numpy as np
import pytest

from bertlab.data.tasks import glue_submission as sub
from bertlab.data.tasks.registry import load_task

GLUE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue_data")
needs_glue = pytest.mark.skipif(not os.path.isdir(GLUE), reason="../shared/data/glue_data absent")


def test_table_names_every_task_and_file_once():
    assert [e.file_name for e in sub.SUBMISSION_FILES] == [
        "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
        "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"]
    assert sub.allowed_labels("qnli") == ("entailment", "not_entailment")
    assert sub.allowed_labels("mnli-mm") == ("entailment", "neutral", "contradiction")
    assert sub.allowed_labels("ax") == ("entailment", "neutral", "contradiction")
    assert sub.allowed_labels("cola") == ("0", "1") and sub.allowed_labels("wnli") == ("0", "1")
    assert sub.allowed_labels("stsb") is None


def test_prediction_strings_map_class_ids_to_raw_labels():
    logits = np.array([[2.0, 1.0], [0.0, 3.0]])
    assert sub.prediction_strings("rte", logits) == ["entailment", "not_entailment"]
    assert sub.prediction_strings("mrpc", logits) == ["0", "1"]
    assert sub.prediction_strings("mnli", np.eye(3)[[2, 0, 1]]) == [
        "contradiction", "entailment", "neutral"]
    # STS-B: column 0 is the score, clipped to the 0-5 scale, 3 decimals
    assert sub.prediction_strings("stsb", np.array([[5.6], [-0.2], [2.34567]])) == [
        "5.000", "0.000", "2.346"]
    with pytest.raises(sub.SubmissionError, match="do not match its 3 labels"):
        sub.prediction_strings("mnli", logits)


def test_check_rejects_what_the_server_rejects(tmp_path):
    ok = ["index\tprediction", "0\tentailment", "1\tnot_entailment"]
    sub.check_lines("rte", ok, "RTE.tsv", check_rows=False)
    with pytest.raises(sub.SubmissionError, match="RTE.tsv:1: header"):
        sub.check_lines("rte", ["id\tlabel"] + ok[1:], "RTE.tsv", check_rows=False)
    with pytest.raises(sub.SubmissionError, match="RTE.tsv:3: label 'neutral'"):
        sub.check_lines("rte", ok[:2] + ["1\tneutral"], "RTE.tsv", check_rows=False)
    with pytest.raises(sub.SubmissionError, match="index '0' repeats"):
        sub.check_lines("rte", ok[:2] + ["0\tentailment"], "RTE.tsv", check_rows=False)
    with pytest.raises(sub.SubmissionError, match="2 prediction rows; the rte test set has 3000"):
        sub.check_lines("rte", ok, "RTE.tsv")
    with pytest.raises(sub.SubmissionError, match="outside"):
        sub.check_lines("stsb", ["index\tprediction", "0\t5.5"], "STS-B.tsv", check_rows=False)
    # a failed check writes nothing
    with pytest.raises(sub.SubmissionError):
        sub.write_task_file(str(tmp_path), "rte", ["0"], ["maybe"])
    assert not os.listdir(tmp_path)


@needs_glue
@pytest.mark.parametrize("task", ["cola", "sst2", "mrpc", "stsb", "qnli", "rte", "wnli", "ax"])
def test_files_from_the_real_test_sets_pass_and_zip(tmp_path, task):
    """Row counts and ids come from the test files in ../shared: the table's counts are theirs."""
    spec, split = load_task(task, GLUE, "test")
    assert not split.is_labelled
    assert len(split) == sub.BY_TASK[task].rows
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(split), spec.num_labels))
    path = sub.write_task_file(str(tmp_path), task, split.ids, sub.prediction_strings(task, logits))
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == list(split.ids)
    assert sub.check_submission(str(tmp_path), tasks=[task]) == [path]
    archive = sub.zip_submission(str(tmp_path))
    assert zipfile.ZipFile(archive).namelist() == [sub.BY_TASK[task].file_name]
