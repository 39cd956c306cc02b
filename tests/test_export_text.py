"""`bertlab export-text`: a task's texts as a corpus, one document per example."""

from bertlab import cli
from bertlab.commands.export_text import document_lines, one_line
from bertlab.data.pretraining.corpus import iter_documents, resolve_corpus


def _imdb_folder(root):
    """A hand-made aclImdb/ with two train reviews per class and one test review."""
    reviews = {"train/neg/3_1.txt": "Dull.<br /><br />Avoid it.",
               "train/pos/3_9.txt": "Great fun\r\nfor all.",
               "train/neg/10_2.txt": "Bad acting.",
               "train/pos/7_10.txt": "A masterpiece.",
               "test/pos/0_8.txt": "Loved it.",
               "test/neg/1_3.txt": "Meh."}
    for name, text in reviews.items():
        path = root / "aclImdb" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_one_line_joins_line_breaks_with_one_space():
    assert one_line("a\r\n\r\n  b\nc \u2028 d") == "a b c d"
    assert one_line("  kept <br /> tags  ") == "kept <br /> tags"


def test_document_lines_single_and_pairs_skip_empty():
    assert list(document_lines(["x y", "", "z"])) == ["x y", "", "z", ""]
    assert list(document_lines(["q1", "q2"], ["a1", ""])) == ["q1", "a1", "", "q2", ""]


def test_export_imdb_train_is_one_document_per_review_in_loader_order(tmp_path, capsys):
    data = _imdb_folder(tmp_path / "data")
    out = tmp_path / "corpus" / "train.txt"
    code = cli.main(["export-text", "--task", "imdb", "--data-dir", str(data), "--split", "train",
                     "--output", str(out)])
    assert code == 0
    assert "wrote 4 documents" in capsys.readouterr().out
    # The loader's order: review number, negative before positive; <br /> kept as written.
    assert out.read_text(encoding="utf-8") == (
        "Dull.<br /><br />Avoid it.\n\nGreat fun for all.\n\nA masterpiece.\n\nBad acting.\n\n")
    docs = list(iter_documents(resolve_corpus([str(out)])))
    assert docs == [["Dull.<br /><br />Avoid it."], ["Great fun for all."], ["A masterpiece."],
                    ["Bad acting."]]
    assert not list(out.parent.glob("*.tmp*"))


def test_export_two_splits_in_order_and_bad_split_fails(tmp_path, capsys):
    data = _imdb_folder(tmp_path / "data")
    out = tmp_path / "all.txt"
    assert cli.main(["export-text", "--task", "imdb", "--data-dir", str(data), "--split", "test",
                     "train", "--limit", "1", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "Loved it.\n\nDull.<br /><br />Avoid it.\n\n"
    assert cli.main(["export-text", "--task", "imdb", "--data-dir", str(data), "--split", "dev",
                     "--output", str(tmp_path / "x.txt")]) == 2
    assert "split 'dev'" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
