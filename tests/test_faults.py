"""Faults and bad input, each ending in a one-line error (exit 2) or a documented recovery.

One test (or a pointer to one elsewhere) per fault class of the README's "Reliability" table
(which also says what bertlab promises for each):

| fault | where it is tested |
|---|---|
| two processes on one workdir / --out | test_second_process_is_refused_naming_the_holder, test_create_data_refuses_a_locked_out_dir, (loop) test_pretraining_on_a_locked_workdir_is_refused_before_any_work, (slow, loop) test_second_pretraining_on_a_running_workdir_is_refused |
| a lock holder killed (SIGKILL) | test_lock_of_a_killed_process_is_taken_over_with_a_notice |
| --workdir / --out is a regular file | test_workdir_that_is_a_file_is_one_line |
| a truncated or changed file in the latest checkpoint | test_checkpoint_state.py: test_unreadable_latest_checkpoint_falls_back_to_the_newest_good_one, test_restore_params_falls_back_the_same_way, test_file_record_catches_missing_and_changed_files; (slow, loop) test_pretraining_resumes_past_a_truncated_checkpoint |
| an intact checkpoint that does not fit | test_checkpoint_state.py::test_intact_checkpoint_that_does_not_fit_is_an_error_not_a_fallback |
| metrics of abandoned steps | test_checkpoint_state.py::test_trim_metrics_moves_later_records_aside |
| disk full: shards, a checkpoint | test_create_data_on_a_full_disk_names_the_file, test_create_data_on_a_real_full_disk, test_checkpoint_save_on_a_real_full_disk, test_checkpoint_state.py::test_save_on_a_full_disk_is_one_oserror_naming_the_file |
| read-only or unwritable path | test_create_data_on_a_read_only_path_is_one_line, test_read_only_and_unwritable_errors_are_one_line |
| truncated weights in `bertlab convert` | test_checkpoints.py::test_truncated_weights_are_one_line_naming_the_file |
| non-UTF-8 input | test_undecodable_file_is_named_by_the_cli, test_task_loaders.py::test_table_not_utf8_names_the_file_and_line |
| empty / missing label cell, missing column | test_task_loaders.py: test_table_empty_label_is_an_error_naming_file_line_and_column, test_table_empty_label_rows_dropped_with_skip_unlabelled, test_table_test_file_with_an_empty_label_column_reads_unlabelled, test_table_missing_column_is_reported_at_the_header |
| a bug (not the user's) | test_cli_one_line_for_os_errors_and_traceback_for_bugs (traceback kept; BERTLAB_DEBUG=1 shows every traceback) |
| a finished run's results on a failed resume | test_run_files_keep_a_finished_run_until_the_new_one_finishes |
| out-of-range config values, a failed start's empty workdir | test_run_start.py: test_every_numeric_key_is_range_checked_before_anything_is_touched, test_a_failed_start_leaves_no_empty_workdir |
| resume with another train.num_steps, a finished rerun | test_pretrain.py: test_another_num_steps_on_resume_is_refused_unless_extend, test_a_finished_rerun_writes_nothing |
| seeds added from another backbone | test_run_start.py::test_seeds_added_from_other_backbone_weights_are_refused |
| multi-process data parallelism, uneven shards | test_multiprocess.py |
| held before this suite: config keys and types | test_config_cli.py, test_pretrain.py::test_bad_config_is_one_line_and_exit_2 |
| held before: resume after a signal, NaN stop, incompatible resume | test_pretrain.py: test_resume_is_exact, test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint, test_incompatible_resume_fails_and_keeps_everything |
| held before: GLUE/CSV/JSONL rows with file:line | test_glue.py (test_wrong_column_count_names_file_and_line, ...), test_task_loaders.py::test_table_row_errors_name_file_and_line |
| held before: create-data refusing to overwrite | test_pretraining_data.py::test_cli_end_to_end |
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from bertlab import cli, failures, workdir_lock
from bertlab.commands import create_data

PYTHON = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLDER = textwrap.dedent("""
    import sys
    from bertlab.workdir_lock import locked
    with locked(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()  # holds the lock until the test closes our stdin (or kills us)
""")


@contextlib.contextmanager
def lock_holder(directory):
    """A second process that holds the lock of `directory` until the block ends (or is killed)."""
    process = subprocess.Popen([PYTHON, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        if process.poll() is None:
            process.stdin.close()  # a clean exit: the lock is released and its record emptied
        process.wait(timeout=30)
        process.stdout.close()


# ---------------------------------------------------------------------------------- the lock

def test_second_process_is_refused_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    with lock_holder(workdir) as holder:
        with pytest.raises(workdir_lock.WorkdirLocked) as refused:
            with workdir_lock.locked(str(workdir)):
                pass
        message = str(refused.value)
        assert "\n" not in message
        assert f"PID {holder.pid} on host {socket.gethostname()}" in message
        assert f"kill {holder.pid}" in message and "another --workdir" in message
        # the record names the holder's command line
        assert json.loads((workdir / ".bertlab.lock").read_text())["pid"] == holder.pid
        # a process that is not the main one of a multi-host run locks nothing
        with workdir_lock.locked(str(workdir), is_main=False) as path:
            assert path == str(workdir)
    # once the holder ended, the lock is free and its record gone
    notices = []
    with workdir_lock.locked(str(workdir), notice=notices.append):
        record = json.loads((workdir / ".bertlab.lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with workdir_lock.locked(str(workdir)):  # re-entrant in one process
            pass
        assert json.loads((workdir / ".bertlab.lock").read_text())["pid"] == os.getpid()
    assert (workdir / ".bertlab.lock").read_text() == ""
    assert notices == []  # a cleanly released lock is no news


def test_lock_of_a_killed_process_is_taken_over_with_a_notice(tmp_path):
    workdir = tmp_path / "run"
    with lock_holder(workdir) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        dead = holder.pid
    notices = []
    with workdir_lock.locked(str(workdir), notice=notices.append):
        pass
    assert len(notices) == 1
    assert f"taking over the lock left by PID {dead} on host {socket.gethostname()}" in notices[0]
    assert "no longer running" in notices[0]


def test_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(workdir_lock.WorkdirError, match=r"is a file, not a directory"):
        workdir_lock.ensure_directory(str(a_file))
    with pytest.raises(workdir_lock.WorkdirError, match=r"notes.txt is a file, not a directory"):
        workdir_lock.ensure_directory(str(a_file / "run"))
    # the generic mapping of the cli: makedirs' FileExistsError names the path
    try:
        os.makedirs(a_file)
    except FileExistsError as e:
        assert failures.one_line(e) == f"{a_file}: file exists (it is a file, not a directory)"


# ------------------------------------------------------------------------- bertlab create-data

@pytest.fixture
def corpus_and_vocab(tmp_path):
    words = [f"w{n}" for n in range(300)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words))
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(" ".join(rng.choice(words, 12)) for _ in range(5))
                                  for _ in range(40)) + "\n")
    return str(corpus), str(vocab)


def create_data_args(corpus, vocab, out):
    return ["--corpus", corpus, "--vocab", vocab, "--out", str(out), "--max-seq-length", "16",
            "--uncased", "--no-progress", "--examples-per-shard", "64"]


def test_create_data_refuses_a_locked_out_dir(tmp_path, corpus_and_vocab, capsys):
    out = tmp_path / "data"
    with lock_holder(out) as holder:
        assert create_data.main(create_data_args(*corpus_and_vocab, out)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"bertlab create-data: error: {out} is in use "
                                                   f"by PID {holder.pid} on host")
        assert not (out / "meta.json").exists()
    assert create_data.main(create_data_args(*corpus_and_vocab, out)) == 0
    assert (out / "meta.json").exists()


def test_create_data_on_a_full_disk_names_the_file(tmp_path, corpus_and_vocab, capsys,
                                                   monkeypatch):
    """np.save on a full disk says '59894 requested and 51136 written' and nothing else: the
    shard writer names the file and the cause. Simulated by a short write (and on a real 64 KiB
    tmpfs below, where mounting is allowed)."""
    from bertlab.data.pretraining import shards

    real_save = np.save

    def short_write(path, array):
        if str(path).endswith("tokens.npy"):
            raise OSError(f"{array.nbytes} requested and 10 written")
        real_save(path, array)

    monkeypatch.setattr(shards.np, "save", short_write)
    monkeypatch.setattr(failures.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=0))
    out = tmp_path / "data"
    assert create_data.main(create_data_args(*corpus_and_vocab, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bertlab create-data: error: ") and "tokens.npy: no space left on " \
        "device (free some space or write elsewhere)" in err[0]
    assert not out.exists()  # the staging directory and the new --out are gone


@contextlib.contextmanager
def small_tmpfs(path, size="64k", read_only=False):
    """A tiny tmpfs at `path` (root only); skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_create_data_on_a_real_full_disk(tmp_path, corpus_and_vocab, capsys):
    with small_tmpfs(tmp_path / "disk", size="64k") as disk:
        big = ["--examples-per-shard", "100000"]
        corpus, vocab = corpus_and_vocab
        with open(corpus, "a") as f:  # enough text for shards larger than the disk
            for i in range(40):
                f.write("\n" + "\n".join(" ".join(f"w{(i * 7 + j * 13 + k) % 300}"
                                                   for k in range(14)) for j in range(60)) + "\n")
        code = cli.main(["create-data"] + create_data_args(corpus, vocab, disk / "data") + big)
        err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"bertlab create-data: error: {disk / 'data'}")
    assert "no space left on device" in err[0]


def test_create_data_on_a_read_only_path_is_one_line(tmp_path, corpus_and_vocab, capsys):
    with small_tmpfs(tmp_path / "ro", read_only=True) as disk:
        code = cli.main(["create-data"] + create_data_args(*corpus_and_vocab, disk / "data"))
        err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"bertlab create-data: error: {disk / 'data'}: read-only file system (the "
                   f"filesystem is mounted read-only; write elsewhere)"]


def test_read_only_and_unwritable_errors_are_one_line():
    assert failures.one_line(OSError(errno.EROFS, "Read-only file system", "/x/y")) == \
        "/x/y: read-only file system (the filesystem is mounted read-only; write elsewhere)"
    assert failures.one_line(PermissionError(errno.EACCES, "Permission denied", "/x")) == \
        "/x: permission denied (write elsewhere or fix the permissions)"
    assert failures.one_line(RuntimeError("a bug")) is None  # bugs keep their traceback


def test_checkpoint_save_on_a_real_full_disk(tmp_path):
    """orbax's RESOURCE_EXHAUSTED on a real 1 MiB tmpfs: one OSError naming the file, the earlier
    checkpoint intact and readable, orbax's partial step directory gone."""
    import jax.numpy as jnp

    from bertlab.checkpoints import training_state as ckpt

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(200, 200)), jnp.float32)}  # 160 KB, incompressible
    opt_state = {"mu": params["w"] * 0.5, "nu": params["w"] * 0.25}
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        manager = ckpt.open_manager(str(disk / "run"), keep=5, async_save=False)
        ckpt.save(manager, 10, params=params, opt_state=opt_state, meta={})
        with pytest.raises(OSError) as raised:
            for step in (20, 30, 40):
                ckpt.save(manager, step, params=params, opt_state=opt_state, meta={})
        manager.close()
        message = failures.one_line(raised.value)
        assert raised.value.errno == errno.ENOSPC and str(disk / "run" / "checkpoints") in message
        assert "no space left on device while saving checkpoint" in message and "\n" not in message
        assert not [n for n in os.listdir(disk / "run" / "checkpoints") if "tmp" in n]
        assert ckpt.verify_files(str(disk / "run"), 10) is None
        restored, meta = ckpt.restore_params(str(disk / "run"), step=10)
        np.testing.assert_array_equal(restored["w"], np.asarray(params["w"]))


# ------------------------------------------------------------------ the cli's generic mapping

def fake_command(monkeypatch, main):
    """Registers `bertlab fake` whose main() is `main`."""
    module = types.ModuleType("bertlab.commands.fake")
    module.main = main
    monkeypatch.setitem(sys.modules, "bertlab.commands.fake", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", "a test command")


def test_undecodable_file_is_named_by_the_cli(tmp_path, monkeypatch, capsys):
    """A reader that opens a file strictly as UTF-8 (predict, evaluate) raises a
    UnicodeDecodeError that names no file; the cli finds the file being read and names it."""
    latin = tmp_path / "reviews.txt"
    latin.write_bytes("fine\ncaf\u00e9 au lait\n".encode("latin-1"))

    def read_lines(lines):
        return [line.strip() for line in lines]

    def main(argv):
        with open(argv[0], encoding="utf-8") as f:
            return len(read_lines(f))

    fake_command(monkeypatch, main)
    monkeypatch.delenv("BERTLAB_DEBUG", raising=False)
    assert cli.main(["fake", str(latin)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bertlab fake: error: {latin}: not valid UTF-8 text (byte 0xe9: invalid "
                   f"continuation byte); convert the file to UTF-8 (e.g. iconv -f latin1 "
                   f"-t utf-8)"]
    monkeypatch.setenv("BERTLAB_DEBUG", "1")  # the traceback, for a bug report
    with pytest.raises(UnicodeDecodeError):
        cli.main(["fake", str(latin)])


def test_cli_one_line_for_os_errors_and_traceback_for_bugs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BERTLAB_DEBUG", raising=False)
    target = tmp_path / "out.bin"

    def full(argv):
        with open(target, "wb") as f:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))

    fake_command(monkeypatch, full)
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"bertlab fake: error: {target}: no space left on device (free some space or write "
        f"elsewhere)")

    def bug(argv):
        return {}["missing"]

    fake_command(monkeypatch, bug)
    with pytest.raises(KeyError):
        cli.main(["fake"])


# ------------------------------------------------------- nothing finished is lost by a resume

def test_run_files_keep_a_finished_run_until_the_new_one_finishes(tmp_path):
    from bertlab import run_files

    w = str(tmp_path)
    first = {"train": {"num_steps": 20}}
    run_files.record_start(w, first)
    assert json.loads((tmp_path / "config.json").read_text()) == first
    run_files.record_finish(w, {"step": 20, "loss": 2.0})
    # a resume to 40 steps that then fails (NaN, full disk): the finished run's files stay
    second = {"train": {"num_steps": 40}}
    assert run_files.record_start(w, second) == str(tmp_path / "config.pending.json")
    assert json.loads((tmp_path / "config.json").read_text()) == first
    assert json.loads((tmp_path / "final_metrics.json").read_text())["step"] == 20
    # ... and when it does finish, the new files replace them, the old ones kept beside
    run_files.record_finish(w, {"step": 40, "loss": 1.5})
    assert json.loads((tmp_path / "config.json").read_text()) == second
    assert json.loads((tmp_path / "config.previous.json").read_text()) == first
    assert json.loads((tmp_path / "final_metrics.json").read_text())["step"] == 40
    assert json.loads((tmp_path / "final_metrics.previous.json").read_text())["step"] == 20
    assert not (tmp_path / "config.pending.json").exists()
    # an unfinished run (crashed, preempted) has no results to protect: config.json at once
    other = tmp_path / "other"
    other.mkdir()
    run_files.record_start(str(other), first)
    run_files.record_start(str(other), second)
    assert json.loads((other / "config.json").read_text()) == second
    assert json.loads((other / "config.previous.json").read_text()) == first
    # processes other than the main one write nothing
    run_files.record_start(str(tmp_path / "nowhere"), first, is_main=False)
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------- through the real pretraining loop (slow)
# The shared training skeleton (bertlab.train.loop.workdir_session) takes the workdir lock and
# resumes through training_state.restore_latest + trim_metrics.

def write_corpus(path):
    from test_multiprocess import write_corpus as write

    return write(path)


def pretrain(workdir, *overrides):
    return cli.main(["pretrain", "--config", "configs/pretrain.py:quick", "--workdir",
                     str(workdir), "--config.train.peak_flops=1e12", *overrides])


def test_pretraining_on_a_locked_workdir_is_refused_before_any_work(tmp_path, capsys):
    """The short version of the slow test below: refused at once, nothing built or written."""
    workdir = tmp_path / "run"
    with lock_holder(workdir) as holder:
        assert pretrain(workdir, f"--config.data.corpus={tmp_path / 'unread.txt'}") == 2
        err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is in use by PID {holder.pid}" in err[0]
    assert sorted(os.listdir(workdir)) == [".bertlab.lock"]  # no vocabulary, no data


@pytest.mark.slow
def test_pretraining_resumes_past_a_truncated_checkpoint(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    workdir = tmp_path / "run"
    assert pretrain(workdir, f"--config.data.corpus={corpus}") == 0  # checkpoints 10 and 20
    straight = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    data = sorted((workdir / "checkpoints" / "20" / "params" / "ocdbt.process_0" / "d").iterdir(),
                  key=lambda p: p.stat().st_size)[-1]
    subprocess.run(["truncate", "-s", "100", str(data)], check=True)
    capsys.readouterr()
    assert pretrain(workdir, f"--config.data.corpus={corpus}", "--config.train.num_steps=20") == 0
    err = capsys.readouterr().err
    assert "checkpoint 20 in" in err and "cannot be read" in err and "moved to" in err
    assert len(os.listdir(workdir / "checkpoints_abandoned")) == 1
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["split"], r["step"]) for r in records]
    assert len(steps) == len(set(steps))  # no step twice: the abandoned ones went aside
    aside = (workdir / "metrics.abandoned.jsonl").read_text().splitlines()
    assert {json.loads(line)["step"] for line in aside} == {15, 20}
    for before, after in zip(straight, records):  # redone bit for bit from checkpoint 10
        assert before["step"] == after["step"]
        if "loss" in before:
            assert before["loss"] == after["loss"]


@pytest.mark.slow
def test_second_pretraining_on_a_running_workdir_is_refused(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    workdir = tmp_path / "run"
    assert pretrain(workdir, f"--config.data.corpus={corpus}", "--config.train.num_steps=2") == 0
    capsys.readouterr()
    with lock_holder(workdir) as holder:
        assert pretrain(workdir, f"--config.data.corpus={corpus}") == 2
        err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is in use by PID {holder.pid}" in err[0]
    assert json.loads((workdir / "final_metrics.json").read_text())["step"] == 2  # untouched
