"""metrics.jsonl, the record every plot, report and resume reads: what a line holds, how a
resume's repeated steps and a line cut by a crash are read back."""

import json

from bertlab.train.metric_writer import METRICS_FILE, MetricWriter, read_metrics


def test_lines_hold_step_split_and_scalars_and_non_finite_values_as_strings(tmp_path):
    writer = MetricWriter(str(tmp_path), total_steps=10, progress=False)
    writer.write(2, "train", {"loss": 1.5, "grad_norm": float("inf")})
    writer.write(2, "eval", {"mlm_loss": float("nan")})
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in lines] == [(2, "train"), (2, "eval")]
    assert lines[0]["loss"] == 1.5 and lines[0]["grad_norm"] == "inf"
    assert lines[1]["mlm_loss"] == "nan" and isinstance(lines[0]["time"], float)
    assert (tmp_path / "tensorboard").is_dir()


def test_a_resume_appends_and_the_last_line_of_a_step_wins(tmp_path):
    first = MetricWriter(str(tmp_path), total_steps=10, progress=False)
    first.write(4, "train", {"loss": 3.0})
    first.write(6, "train", {"loss": 2.0})  # after the last checkpoint: redone on resume
    first.close()
    resumed = MetricWriter(str(tmp_path), total_steps=10, initial_step=4, progress=False)
    resumed.write(6, "train", {"loss": 2.5})
    resumed.close()
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 8, "split": "tr')  # a crash mid-line
    metrics = read_metrics(str(tmp_path / METRICS_FILE))
    assert sorted(metrics["train"]) == [4, 6] and metrics["train"][6]["loss"] == 2.5
    assert read_metrics(str(tmp_path / "absent.jsonl")) == {}


def test_a_disabled_writer_writes_nothing(tmp_path, capsys):
    writer = MetricWriter(str(tmp_path), total_steps=10, enabled=False)
    writer.write(1, "train", {"loss": 1.0})
    writer.message("not shown")
    writer.progress(1, loss="1.0")
    writer.close()
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out == ""


def test_files_open_at_the_first_record(tmp_path):
    """A start that records nothing (a rerun of a finished run) leaves no empty events file."""
    writer = MetricWriter(str(tmp_path), total_steps=10, progress=False)
    writer.message("nothing recorded")
    writer.close()
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / METRICS_FILE).exists()


def test_a_full_disk_names_the_metrics_file(tmp_path):
    import errno

    import pytest

    class FullDisk:
        def write(self, text):  # what a plain file write on a full disk raises: no filename
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    writer = MetricWriter(str(tmp_path), total_steps=10, progress=False)
    writer._file = FullDisk()
    with pytest.raises(OSError) as raised:
        writer.write(1, "train", {"loss": 1.0})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / METRICS_FILE)
    writer.close()


def events_in_order(directory):
    """(file name, Event) of every record of the events files, in the order TensorBoard reads
    them (files by name). TFRecord framing: u64 length, u32 crc, payload, u32 crc."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    for name in sorted(p.name for p in directory.iterdir()):
        data = (directory / name).read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            out.append((name, Event.FromString(data[offset + 12:offset + 12 + length])))
            offset += 12 + length + 4
    return out


def as_tensorboard_shows(events):
    """{tag: {step: value}} after TensorBoard's restart rule (event_accumulator, file_version 2):
    a SessionLog START at step p drops every event read so far with a step >= p."""
    from tensorboardX.proto.event_pb2 import SessionLog

    points = []
    for _, event in events:
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            points = [point for point in points if point[1] < event.step]
        for value in event.summary.value:
            points.append((value.tag, event.step, round(value.simple_value, 6)))
    shown = {}
    for tag, step, value in points:
        shown.setdefault(tag, {})[step] = value
    return shown


def test_a_resume_purges_the_abandoned_steps_from_tensorboard(tmp_path):
    """Resumed from the checkpoint at step 20, the earlier start's steps 30 and its eval at 30
    are hidden as trim_metrics moves their metrics.jsonl lines aside; steps <= 20 stay. The
    second start opens a second file even within the same second (no truncation)."""
    from tensorboardX.proto.event_pb2 import SessionLog

    first = MetricWriter(str(tmp_path), total_steps=40, progress=False)
    for step, loss in ((10, 3.0), (20, 2.0), (30, 1.5)):
        first.write(step, "train", {"loss": loss})
    first.write(20, "eval", {"mlm_loss": 2.2})
    first.write(30, "eval", {"mlm_loss": 1.9})
    first.close()
    resumed = MetricWriter(str(tmp_path), total_steps=40, initial_step=20, progress=False)
    resumed.write(30, "train", {"loss": 1.75})
    resumed.write(40, "train", {"loss": 1.25})
    resumed.close()
    events = events_in_order(tmp_path / "tensorboard")
    files = sorted({name for name, _ in events})
    assert len(files) == 2 and files[1].endswith(".start0001")
    starts = [(name, event.step) for name, event in events
              if event.HasField("session_log") and event.session_log.status == SessionLog.START]
    assert starts == [(files[1], 21)]
    assert as_tensorboard_shows(events) == {
        "train/loss": {10: 3.0, 20: 2.0, 30: 1.75, 40: 1.25}, "eval/mlm_loss": {20: 2.2}}
