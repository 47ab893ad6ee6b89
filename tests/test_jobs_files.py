"""Atomic files, events, log tail and control requests (no worker processes)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from backend.errors import JobError
from backend.files import atomic_write_json, read_json
from backend.jobs import control
from backend.jobs.events import EventReader, EventWriter, last_lines, read_log_tail, tail_events
from backend.jobs.registry import (
    create_job,
    list_jobs,
    load_config,
    load_job,
    new_job_id,
    save_job,
)
from backend.paths import open_workspace


@pytest.fixture
def paths(tmp_path):
    return open_workspace(tmp_path / "ws")


def test_event_reader_leaves_a_partial_last_line_for_later(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t": 1, "type": "a"}\nnot json\n{"t": 2, "type": "b"}\n{"t": 3, "ty')
    events, offset = EventReader(tmp_path).read(0)
    assert [e["type"] for e in events] == ["a", "b"]  # the malformed line is skipped
    assert offset == path.read_bytes().index(b'{"t": 3')
    assert EventReader(tmp_path).read(offset) == ([], offset)  # still partial: nothing, same offset
    with open(path, "ab") as fh:
        fh.write(b'pe": "c"}\n')
    events, offset2 = EventReader(tmp_path).read(offset)
    assert [e["type"] for e in events] == ["c"]
    assert offset2 == path.stat().st_size


def test_event_writer_appends_lines_with_time_and_type(tmp_path):
    w = EventWriter(tmp_path)
    first = w.emit("progress", step=1, total=2)
    w.emit("metric", step=1, loss=float("nan"))
    events, _ = EventReader(tmp_path).read()
    assert events[0] == first and first["type"] == "progress" and isinstance(first["t"], float)
    assert events[1]["type"] == "metric" and events[1]["loss"] != events[1]["loss"]  # NaN survives
    assert [e["type"] for e in tail_events(tmp_path, max_bytes=100)] == ["metric"]


def test_log_tail_from_offset_and_last_lines(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)) + "partial")
    text, offset = read_log_tail(log, 0, max_bytes=100)
    assert text.endswith("line 999\n") and "line 0\n" not in text and text.startswith("line 9")
    assert read_log_tail(log, offset) == ("", offset)
    with open(log, "a") as fh:
        fh.write(" done\n")
    assert read_log_tail(log, offset)[0] == "partial done\n"
    assert last_lines(log, 3) == ["line 998", "line 999", "partial done"]
    assert last_lines(tmp_path / "missing.log") == []


def test_atomic_write_keeps_the_old_job_json_when_the_write_fails(paths, monkeypatch):
    d = create_job(paths, "selftest", {"steps": 3}, "keep me")
    before = (d / "job.json").read_bytes()
    rec = load_job(d)
    rec.extra["bad"] = object()  # not JSON-serializable
    with pytest.raises(TypeError):
        save_job(d, rec)
    assert (d / "job.json").read_bytes() == before

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    rec.extra = {"fine": 1}
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        save_job(d, rec)
    monkeypatch.undo()
    assert (d / "job.json").read_bytes() == before
    assert load_job(d).status == "queued"
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind


def test_read_json_default_for_missing_or_broken(tmp_path):
    assert read_json(tmp_path / "nope.json", default={"a": 1}) == {"a": 1}
    (tmp_path / "bad.json").write_text("{")
    assert read_json(tmp_path / "bad.json") is None
    atomic_write_json(tmp_path / "ok.json", {"x": [1, 2]})
    assert read_json(tmp_path / "ok.json") == {"x": [1, 2]}


def test_create_job_makes_the_folder_contract(paths):
    d = create_job(paths, "selftest", {"steps": 3, "nested": {"a": "b"}}, "My LoRA!", group="cmp1")
    assert d.parent == paths.jobs and d.name.endswith("-my-lora")
    for sub in ("samples", "checkpoints", "output"):
        assert (d / sub).is_dir()
    assert (d / "events.jsonl").read_bytes() == b""
    assert load_config(d) == {"steps": 3, "nested": {"a": "b"}}
    rec = load_job(d)
    assert (rec.kind, rec.status, rec.group, rec.workspace) == ("selftest", "queued", "cmp1", str(paths.root))
    assert json.loads((d / "job.json").read_text())["id"] == d.name


def test_job_ids_are_readable_and_unique(paths):
    now = 1795800000.0
    a = create_job(paths, "selftest", {}, "same name", now=now)
    b = create_job(paths, "selftest", {}, "same name", now=now)
    c = create_job(paths, "selftest", {}, "same name", now=now)
    assert b.name == a.name + "-2" and c.name == a.name + "-3"
    assert new_job_id("Ünïcode & spaces", now).split("-", 2)[2] == "unicode-spaces"
    assert [r.id for r in list_jobs(paths)] == [a.name, b.name, c.name]


def test_control_requests_act_once_even_in_a_new_reader(paths):
    d = create_job(paths, "selftest", {}, "ctl")
    reader = control.ControlReader(d)
    assert reader.take() == set()
    control.request(d, "save_now")
    control.request(d, "stop")
    assert reader.take() == {"save_now", "stop"}
    assert reader.take() == set()
    assert control.ControlReader(d).take() == set()  # a resumed worker does not redo them
    control.request(d, "sample_now")
    assert control.ControlReader(d).take() == {"sample_now"}
    assert control.pending(d) == []
    control.clear(d)
    assert not (d / "control.json").exists()
    with pytest.raises(JobError, match="accepted: stop, save_now, sample_now"):
        control.request(d, "explode")


def test_last_event_finds_the_latest_of_a_type_beyond_the_first_small_read(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("progress", step=7, total=9)
    for i in range(400):  # about 30 kB of other events after it
        w.emit("metric", step=i, loss=0.123456789, lr=0.0001, note="x" * 20)
    with open(tmp_path / "events.jsonl", "ab") as fh:
        fh.write(b'{"t": 1, "type": "progress", "st')  # being written: not taken
    from backend.jobs.events import last_event

    assert last_event(tmp_path, "progress")["step"] == 7
    assert last_event(tmp_path, "metric")["step"] == 399
    assert last_event(tmp_path, "sample") is None
    assert last_event(tmp_path / "missing", "progress") is None
