"""GLUE loaders: every task from hand-written fixtures in the official layout, the real files in
../shared when present (official row counts), and errors that name file and line."""

import pathlib

import numpy as np
import pytest

from bertlab.data.tasks import glue
from bertlab.data.tasks.registry import NLI_LABELS, TASKS, load_task
from conftest import shared_path

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "glue_data"


def load(task, split, data_dir=FIXTURES, **options):
    return load_task(task, str(data_dir), split, **options)


# ---------------------------------------------------------------- fixtures, one test per format


def test_cola_headerless_train_and_headed_test():
    spec, train = load("cola", "train")
    assert spec.metric == "matthews" and spec.label_names == ("unacceptable", "acceptable")
    assert train.texts == ["The kettle boiled over.", "Boiled the kettle over the.",
                           "Nobody expected the rain to stop."]
    assert train.text_pairs is None and train.ids is None
    assert train.labels.tolist() == [1, 0, 1] and train.labels.dtype == np.int32
    _, dev = load("cola", "dev")  # the official dev.tsv has no final newline
    assert dev.labels.tolist() == [1, 0] and dev.texts[1] == "She gave the book him to."
    _, test = load("cola", "test")
    assert test.texts == ["The lamp flickered twice.", "Lamp the twice flickered."]
    assert test.labels.tolist() == [-1, -1] and test.ids == ["0", "1"] and not test.is_labelled


def test_sst2_keeps_raw_text_and_quotes_are_plain_characters():
    _, train = load("sst2", "train")
    assert train.texts[0] == "a warm , funny little film "
    assert train.labels.tolist() == [1, 0, 0]
    _, test = load("sst2", "test")
    assert test.texts[1] == 'a dull " thriller .' and test.ids == ["0", "1"]


def test_mrpc_header_with_bom():
    spec, train = load("mrpc", "train")
    assert spec.label_names == ("not_equivalent", "equivalent")
    assert train.texts[0] == "The firm raised its forecast ."
    assert train.text_pairs[0] == "The company lifted its outlook ."
    assert train.labels.tolist() == [1, 0]
    _, dev = load("mrpc", "dev")
    assert dev.texts[0] == 'He said " no comment .'  # an unbalanced quote, not a quoted field
    _, test = load("mrpc", "test")
    assert test.ids == ["0"] and test.text_pairs == ["Earnings rose twofold ."]


def test_stsb_scores_are_float_regression_targets():
    spec, train = load("stsb", "train")
    assert spec.num_labels == 1 and spec.label_names == ()
    assert train.labels.dtype == np.float32
    np.testing.assert_allclose(train.labels, [4.8, 0.0, 2.6], rtol=1e-6)
    assert train.texts[2] == "I agree with you." and train.text_pairs[2] == "I partly agree."
    assert train.ids == ["0", "1", "2"]
    _, test = load("stsb", "test")
    assert test.labels.dtype == np.float32 and test.labels.tolist() == [-1.0]


def test_qqp_skips_and_counts_rows_broken_by_a_newline():
    _, train = load("qqp", "train")
    assert train.ids == ["0", "1", "3"]
    assert train.labels.tolist() == [1, 0, 1]
    assert train.dropped == 2  # both halves of the broken question
    assert train.text_pairs[2] == "Is drinking coffee unhealthy?"
    _, test = load("qqp", "test")
    assert test.ids == ["0"] and test.texts == ["Can cats swim?"] and test.dropped == 0


def test_mnli_matched_and_mismatched_splits():
    spec, train = load("mnli", "train")
    assert spec.label_names == NLI_LABELS == ("entailment", "neutral", "contradiction")
    assert train.labels.tolist() == [0, 1, 2]
    assert train.texts[2] == 'I never watch "reality shows.'  # a quote that never closes
    _, dev = load("mnli", "dev")  # 'dev' of mnli is dev_matched
    assert dev.labels.tolist() == [0, 2]
    assert dev.text_pairs == ["The boy went home.", "Prices fell."]
    _, dev_m = load("mnli", "dev_matched")
    assert dev_m.texts == dev.texts
    _, dev_mm = load("mnli", "dev_mismatched")
    assert dev_mm.labels.tolist() == [0, 1, 2]
    spec_mm, dev_mm2 = load("mnli-mm", "dev")
    assert spec_mm.name == "mnli-mm" and dev_mm2.texts == dev_mm.texts
    _, test_mm = load("MNLI-mm", "test")
    assert len(test_mm) == 2 and test_mm.labels.tolist() == [-1, -1] and test_mm.ids == ["0", "1"]
    _, test_m = load("mnli", "test_matched")
    assert test_m.texts == ["The plan was approved."]


@pytest.mark.parametrize("task,labels", [("qnli", [0, 1]), ("rte", [0, 1]), ("wnli", [1, 0])])
def test_string_and_integer_labelled_pair_tasks(task, labels):
    spec, train = load(task, "train")
    assert train.labels.tolist() == labels and spec.num_labels == 2
    assert train.ids == ["0", "1"] and len(train.text_pairs) == 2
    _, test = load(task, "test")
    assert test.labels.tolist() == [-1] and test.ids == ["0"]


def test_wnli_label_names_follow_the_integers():
    spec, train = load("wnli", "train")
    assert spec.label_names[train.labels[0]] == "entailment"


def test_diagnostic_set():
    spec, ax = load("ax", "test")
    assert spec.label_names == NLI_LABELS and spec.metric == "matthews"
    assert ax.texts[0] == "The cat sat on the mat." and ax.labels.tolist() == [-1, -1]


def test_task_folder_itself_is_accepted_and_aliases_resolve():
    _, from_task_folder = load("SST-2", "dev", data_dir=FIXTURES / "SST-2")
    _, from_glue_data = load("sst2", "dev")
    assert from_task_folder.texts == from_glue_data.texts


def test_limit_counts_kept_rows():
    _, train = load("qqp", "train", limit=2)
    assert train.ids == ["0", "1"]


def test_every_glue_layout_agrees_with_the_task_table():
    for task, layout in glue.LAYOUTS.items():
        spec = TASKS[task]
        if layout.label_values is None:
            assert spec.num_labels == 1
        else:
            assert len(layout.label_values) == spec.num_labels
        assert len(layout.text_columns) == len(spec.text_fields)


# ---------------------------------------------------------------- errors name file and line


def write(tmp_path, task_dir, name, text):
    folder = tmp_path / task_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return str(folder / name)


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "RTE", "train.tsv",
                 "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\tentailment\n")
    with pytest.raises(glue.GlueFormatError, match=r"RTE/train\.tsv:3: expected 4 .*found 3"):
        load("rte", "train", data_dir=tmp_path)


def test_bad_label_names_file_line_and_allowed_values(tmp_path):
    path = write(tmp_path, "SST-2", "dev.tsv", "sentence\tlabel\ngood\t1\nbad\tneg\n")
    with pytest.raises(glue.GlueFormatError) as err:
        load("sst2", "dev", data_dir=tmp_path)
    assert f"{path}:3" in str(err.value) and "'neg'" in str(err.value) and "('0', '1')" in str(
        err.value)


def test_cola_bad_label_in_headerless_file(tmp_path):
    write(tmp_path, "CoLA", "train.tsv", "gj04\t1\t\tFine.\ngj04\t2\t\tNot a label.\n")
    with pytest.raises(glue.GlueFormatError, match=r"CoLA/train\.tsv:2: label '2'"):
        load("cola", "train", data_dir=tmp_path)


def test_stsb_score_must_be_a_number_in_range(tmp_path):
    header = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
              "\tscore\n")
    write(tmp_path, "STS-B", "dev.tsv", header + "0\tg\tf\ty\t0\tn\tn\ta\tb\tfive\n")
    with pytest.raises(glue.GlueFormatError, match=r"dev\.tsv:2: score 'five'"):
        load("stsb", "dev", data_dir=tmp_path)
    write(tmp_path, "STS-B", "dev.tsv", header + "0\tg\tf\ty\t0\tn\tn\ta\tb\t7.5\n")
    with pytest.raises(glue.GlueFormatError, match=r"dev\.tsv:2: score 7\.5 .*outside"):
        load("stsb", "dev", data_dir=tmp_path)


def test_header_of_another_task_is_refused(tmp_path):
    write(tmp_path, "QNLI", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(glue.GlueFormatError, match=r"header \(line 1\) has no column 'question'"):
        load("qnli", "dev", data_dir=tmp_path)


def test_qqp_bad_label_is_still_an_error(tmp_path):
    write(tmp_path, "QQP", "dev.tsv",
          "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\ta?\tb?\tyes\n")
    with pytest.raises(glue.GlueFormatError, match=r"QQP/dev\.tsv:2: label 'yes'"):
        load("qqp", "dev", data_dir=tmp_path)


def test_missing_file_and_unknown_split_and_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="CoLA/train.tsv"):
        load("cola", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="its splits: train, dev, test"):
        load("cola", "validation")
    with pytest.raises(TypeError, match="does not take option.*replace_br.*its options: limit"):
        load("cola", "train", replace_br=True)
    with pytest.raises(KeyError, match="unknown task 'colaa'"):
        load("colaa", "train")


# ---------------------------------------------------------------- the real GLUE files

OFFICIAL_ROWS = {
    "cola": (8551, 1043, 1063), "sst2": (67349, 872, 1821), "mrpc": (3668, 408, 1725),
    "stsb": (5749, 1500, 1379), "rte": (2490, 277, 3000), "wnli": (635, 71, 146),
    "qnli": (None, 5463, 5463),  # the shared copy has no QNLI train
}


@pytest.mark.parametrize("task", sorted(OFFICIAL_ROWS))
def test_real_glue_row_counts(task):
    glue_data = shared_path("data", "glue_data")
    spec = TASKS[task]
    for split, expected in zip(("train", "dev", "test"), OFFICIAL_ROWS[task]):
        if expected is None:
            continue
        _, rows = load(task, split, data_dir=glue_data)
        assert len(rows) == expected, (task, split)
        assert rows.dropped == 0
        assert (rows.text_pairs is not None) == spec.is_pair
        if split == "test":
            assert not rows.is_labelled and len(rows.ids) == expected
        elif spec.is_regression:
            assert 0.0 <= rows.labels.min() and rows.labels.max() <= 5.0
        else:
            assert set(np.unique(rows.labels)) == set(range(spec.num_labels))


def test_real_glue_known_class_counts():
    glue_data = shared_path("data", "glue_data")
    _, cola = load("cola", "train", data_dir=glue_data)
    assert np.bincount(cola.labels).tolist() == [2528, 6023]
    _, mrpc = load("mrpc", "dev", data_dir=glue_data)
    assert np.bincount(mrpc.labels).tolist() == [129, 279]
    assert mrpc.texts[0].startswith("He said the foodservice pie business")  # BOM stripped
    _, ax = load("ax", "test", data_dir=glue_data)
    assert len(ax) == 1104


def test_sts_benchmark_original_files_have_test_scores(tmp_path):
    """stsb's sts-* splits read the STS Benchmark's own headerless files, rows of 7 columns or 9
    (two source attributions appended), the score in the fifth."""
    write(tmp_path, "STS-B/original", "sts-test.tsv",
          "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\t"
          "A girl is brushing her hair.\n"
          "main-forums\tanswer-answer\t2016\t0008\t3\tIn the US, it depends.\tIt depends.\t"
          "StackExchange: a\tStackExchange: b\n")
    spec, test = load("stsb", "sts-test", data_dir=tmp_path)
    assert spec.num_labels == 1 and test.is_labelled
    assert test.texts == ["A girl is styling her hair.", "In the US, it depends."]
    assert test.text_pairs == ["A girl is brushing her hair.", "It depends."]
    assert test.labels.tolist() == [2.5, 3.0] and test.ids == ["0024", "0008"]
    write(tmp_path, "STS-B/original", "sts-dev.tsv", "g\tf\t2012\t0001\t4.0\tonly one sentence\n")
    with pytest.raises(glue.GlueFormatError,
                       match=r"original/sts-dev\.tsv:1: expected 7 tab-separated columns.*found 6"):
        load("stsb", "sts-dev", data_dir=tmp_path)


def test_real_sts_benchmark_test_is_glue_test_with_scores():
    glue_data = shared_path("data", "glue_data")
    _, labelled = load("stsb", "sts-test", data_dir=glue_data)
    _, glue_test = load("stsb", "test", data_dir=glue_data)
    assert len(labelled) == 1379 and not glue_test.is_labelled
    # the same pairs in the same order (GLUE's copy trims a few trailing spaces); the scores are new
    same = sum(a.strip() == b.strip() and c.strip() == d.strip() for a, b, c, d in
               zip(labelled.texts, glue_test.texts, labelled.text_pairs, glue_test.text_pairs))
    assert same == 1379
    assert labelled.labels[0] == 2.5 and 0.0 <= labelled.labels.min() <= labelled.labels.max() <= 5
