"""A real log written by a demo run, kept as a fixture: this batchd must read every old log.

``tests/fixtures/logs/demo-run-v1.db`` was recorded by `batchd demo` (schema 1, every event at
version 1). If an event class or the fold changes incompatibly, these tests fail: add an upcaster
(store/registry.py) instead of editing the fixture.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from statemachine.projection import replay
from store import EventLog

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "demo-run-v1.db"


@pytest.fixture
def log_copy(tmp_path: Path) -> Path:
    target = tmp_path / "events.db"
    shutil.copyfile(FIXTURE, target)
    return target


def test_recorded_demo_log_verifies(log_copy: Path) -> None:
    """The recorded log's hash chain is intact."""
    with EventLog(log_copy) as log:
        assert log.verify().ok


def test_recorded_demo_log_replays_to_the_demo_outcome(log_copy: Path) -> None:
    """Replaying the recorded log gives 26 complete todos, 267 and 282 blocked, 5 phases pushed."""
    with EventLog(log_copy) as log:
        proj = replay(log, use_snapshot=False)
    states = {t: str(v.state) for t, v in proj.todos.items()}
    assert sorted(t for t, s in states.items() if s == "blocked") == ["267", "282"]
    assert sum(1 for s in states.values() if s == "complete") == 26
    assert all(p.pushed_sha for p in proj.phases.values())
    assert proj.run.verdict is not None and not proj.run.verdict.success


def test_recorded_demo_log_snapshot_plus_tail_equals_replay_from_zero(log_copy: Path) -> None:
    """The snapshot stored in the recorded log, plus its tail, equals replay from zero."""
    with EventLog(log_copy) as log:
        assert replay(log, use_snapshot=True) == replay(log, use_snapshot=False)


def test_tampered_copy_of_the_recorded_log_names_the_event(log_copy: Path) -> None:
    """Changing one recorded payload (a verdict rewritten to success) is caught at that event."""
    with EventLog(log_copy) as log:
        completed = next(e for e in log.read() if e.type == "run.completed")
    with sqlite3.connect(log_copy) as raw:
        raw.execute(
            "UPDATE batchd_events SET payload = replace(payload, '\"success\":false', '\"success\":true') "
            "WHERE seq = ?",
            (completed.seq,),
        )
    with EventLog(log_copy) as log:
        assert log.verify().first_bad_seq == completed.seq
