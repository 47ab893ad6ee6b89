"""Events are declared once (backend/jobs/events.py EVENTS): the writer holds every event to its
declaration, readers can ask for some types only, and no code emits a type that is not declared."""

from __future__ import annotations

import re

import pytest

from backend.jobs import events as ev
from backend.jobs.events import EventReader, EventWriter
from backend.paths import PROJECT_ROOT


def test_the_writer_refuses_what_is_not_declared(tmp_path):
    w = EventWriter(tmp_path)
    with pytest.raises(ValueError, match="'stepped' is not declared"):
        w.emit("stepped", step=1)
    with pytest.raises(ValueError, match="missing step"):
        w.emit(ev.PROGRESS, total=3)
    with pytest.raises(ValueError, match="undeclared lossy"):
        w.emit(ev.SAMPLE, path="s.png", prompt="p", seed=1, step=2, lossy=True)
    # Open types take further fields: a metric's numbers, a phase's timings.
    w.emit(ev.METRIC, step=1, loss=0.5, lr_unet=1e-4, grad_norm=2.0)
    w.emit(ev.PHASE, phase="ready", load_unet_s=1.5)
    assert [e["type"] for e in EventReader(tmp_path).read_all()] == [ev.METRIC, ev.PHASE]


def test_readers_can_take_some_types_only(tmp_path):
    w = EventWriter(tmp_path)
    w.emit(ev.STATUS, status="running")
    for step in range(1, 4):
        w.emit(ev.METRIC, step=step, loss=1.0)
        w.emit(ev.PROGRESS, step=step, total=3)
    w.emit(ev.SAMPLE, path="x.png", prompt='a "status" of "type": "status"', seed=1, step=3)
    events, offset = EventReader(tmp_path).read(0, types=frozenset({ev.STATUS, ev.PROGRESS}))
    assert [e["type"] for e in events] == [ev.STATUS] + [ev.PROGRESS] * 3
    assert offset == (tmp_path / ev.EVENTS_FILE).stat().st_size


def test_every_emitted_type_is_declared():
    """A literal type passed to emit(…) anywhere in the code is one of EVENTS."""
    emitted = set()
    for path in [*PROJECT_ROOT.joinpath("backend").rglob("*.py"), *PROJECT_ROOT.joinpath("webui").rglob("*.py")]:
        emitted |= set(re.findall(r"""\bemit\(\s*["']([a-z_]+)["']""", path.read_text(encoding="utf-8")))
    assert emitted and emitted <= set(ev.EVENTS), sorted(emitted - set(ev.EVENTS))
