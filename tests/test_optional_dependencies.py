"""tensorflow is an optional extra (`bertlab[tf]`): without it, reading a Google checkpoint is a
one-line error that names the extra, and nothing else in the package needs it."""

import json
import subprocess
import sys

import pytest

from bertlab.checkpoints import CheckpointError
from bertlab.commands import convert


@pytest.fixture
def google_dir_without_tensorflow(tmp_path, monkeypatch):
    """A directory that find_checkpoint accepts, in a process where `import tensorflow` fails
    (a None entry in sys.modules makes the import raise ImportError, as if it were absent)."""
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"")
    (tmp_path / "bert_config.json").write_text(json.dumps({
        "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16}))
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    return tmp_path


def test_google_checkpoint_without_tensorflow_names_the_extra(google_dir_without_tensorflow):
    from bertlab.checkpoints.google import load_google

    with pytest.raises(CheckpointError) as info:
        load_google(google_dir_without_tensorflow)
    message = str(info.value)
    assert message.startswith(str(google_dir_without_tensorflow / "bert_model.ckpt") + ": ")
    assert "needs tensorflow" in message and "pip install 'bertlab[tf]'" in message
    assert "\n" not in message


def test_convert_without_tensorflow_is_one_line_and_exit_2(google_dir_without_tensorflow,
                                                            tmp_path, capsys):
    code = convert.main(["--from", "google", str(google_dir_without_tensorflow),
                         "--to", "bertlab", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("bertlab convert: ") and err.endswith("pip install 'bertlab[tf]'")
    assert len(err.splitlines()) == 1


def test_tokenizers_and_lab_import_no_tensorflow():
    code = ("import sys, bertlab.text.tokenizer, bertlab.text.fast, bertlab.text.learn, "
            "bertlab.checkpoints.google, bertlab.lab.report\n"
            "bertlab.text.tokenizer.Tokenizer(bertlab.text.tokenizer.vocab_from_tokens("
            "['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a'])).encode_batch(['a b'] * 3)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tensorflow_text')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
