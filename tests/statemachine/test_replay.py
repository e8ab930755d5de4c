"""Rebuilding from a real SQLite log: from zero, from a snapshot, up to a seq or a moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from statemachine import Projection, replay, save_snapshot
from statemachine import events as ev
from statemachine.projection import snapshot_matches_replay
from statemachine.tables import Kind
from store import EventLog
from tests.statemachine.builders import event, write

T = Kind.TODO
LIFE = ("queue", "plan", "start_agent", "spawned", "agent_done", "verify", "accept", "complete")


def _life(tid: str) -> list[tuple[str, object]]:
    return [(f"todo-{tid}", event(T, t, {"todo_id": tid})) for t in LIFE]


def _log(path: Path, pairs: list[tuple[str, object]]) -> EventLog:
    log = EventLog(path / "events.db")
    write(log, pairs)
    return log


def test_replay_equals_folding_the_rows_read(tmp_path: Path) -> None:
    """replay() from zero is the fold of every row of the log."""
    with _log(tmp_path, _life("1") + _life("2")) as log:
        folded = Projection()
        folded.apply_all(log.read())
        assert replay(log, use_snapshot=False) == folded


def test_snapshot_plus_tail_equals_replay_from_zero(tmp_path: Path) -> None:
    """A snapshot saved mid-log plus the events after it gives the same state as replay from zero."""
    with _log(tmp_path, _life("1")) as log:
        save_snapshot(log, replay(log))
        write(log, _life("2"))
        assert replay(log) == replay(log, use_snapshot=False)


def test_restart_reads_only_the_tail(tmp_path: Path) -> None:
    """With a snapshot at the end, replay starts from it (its last seq is the snapshot's)."""
    with _log(tmp_path, _life("1")) as log:
        pr = replay(log)
        save_snapshot(log, pr)
        snap = log.load_snapshot("projection")
        assert snap is not None and snap.seq == pr.last_seq == log.last_seq()


def test_until_older_than_the_snapshot_replays_from_zero(tmp_path: Path) -> None:
    """replay(until=k) with a later snapshot equals the fold of the first k events."""
    with _log(tmp_path, _life("1") + _life("2")) as log:
        save_snapshot(log, replay(log))
        prefix = Projection()
        prefix.apply_all(list(log.read())[:5])
        assert replay(log, until=5) == prefix


def test_at_gives_the_state_at_that_moment(tmp_path: Path) -> None:
    """replay(at=t) folds only the events recorded no later than t."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    with EventLog(tmp_path / "events.db", clock=lambda: now[0]) as log:
        write(log, _life("1")[:3])
        now[0] += timedelta(hours=1)
        write(log, _life("1")[3:])
        save_snapshot(log, replay(log))
        assert replay(log, at=now[0] - timedelta(minutes=1)).todos["1"].state == "running"


def test_snapshot_from_another_log_is_ignored(tmp_path: Path) -> None:
    """A snapshot whose last event hash differs from the log's at that seq is not used."""
    with _log(tmp_path / "a", _life("1")) as other:
        foreign = replay(other)
    with _log(tmp_path / "b", _life("2")) as log:
        save_snapshot(log, foreign)
        with capture_logs() as logs:
            pr = replay(log)
        assert (list(pr.todos), logs[0]["event"]) == (["2"], "snapshot_ignored")


def test_incompatible_snapshot_is_ignored_with_a_warning(tmp_path: Path) -> None:
    """A snapshot of another layout is skipped (replay from zero) and the reason is logged."""
    with _log(tmp_path, _life("1")) as log:
        data = replay(log).to_json()
        data["layout"]["todo"].append("surprise")
        log.save_snapshot("projection", data["last_seq"], data)
        with capture_logs() as logs:
            pr = replay(log)
        assert (pr == replay(log, use_snapshot=False), logs[0]["log_level"]) == (True, "warning")


def test_replay_writes_nothing(tmp_path: Path) -> None:
    """Rebuilding fires no side effects: the log and its snapshots are unchanged."""
    with _log(tmp_path, _life("1")) as log:
        before = (log.last_seq(), log.load_snapshot("projection"))
        replay(log)
        assert (log.last_seq(), log.load_snapshot("projection")) == before


def _flaky_runs() -> list[tuple[str, object]]:
    """A batch whose verify runs teach the flake model (a flake of `pytest -q`, and a flaky test)."""
    runs = [
        ev.BatchVerifyRun(
            key="1.1",
            run=i,
            todo_ids=(),
            passed=True,
            tries=(("pytest -q", 2, 1),),
            flaky_tests=(("pytest -q", "t::flaky"),),
        )
        for i in range(3)
    ]
    planned = ev.BatchPlanned(key="1.1", phase=1, todo_ids=())
    return [("batch-1.1", planned), *(("batch-1.1", r) for r in runs)]


def test_snapshot_with_flakes_passes_the_full_audit(tmp_path: Path) -> None:
    """A snapshot holding a flake model, stored and read back, is exactly what replay from zero gives."""
    with _log(tmp_path, _flaky_runs()) as log:
        save_snapshot(log, replay(log))
        report = snapshot_matches_replay(log, log.verify())
    assert (report.ok, report.problem) == (True, "")


def test_audit_compares_the_snapshots_flake_model_with_replay(tmp_path: Path) -> None:
    """A snapshot whose flake counts were edited (its hash recomputed) fails the full audit."""
    with _log(tmp_path, _flaky_runs()) as log:
        data = replay(log).to_json()
        data["flakes"]["pytest -q"]["flakes"] = 0.0
        log.save_snapshot("projection", data["last_seq"], data)
        report = snapshot_matches_replay(log, log.verify())
    assert (report.ok, report.first_bad_seq) == (False, data["last_seq"])


def test_snapshot_of_the_format_before_flakes_is_rebuilt_by_replay(tmp_path: Path) -> None:
    """A format-1 snapshot (written before the flake model) is skipped: replay from zero learns the flakes."""
    with _log(tmp_path, _flaky_runs()) as log:
        data = replay(log).to_json()
        data["format"] = 1
        del data["flakes"]
        log.save_snapshot("projection", data["last_seq"], data)
        with capture_logs() as logs:
            pr = replay(log)
        full = replay(log, use_snapshot=False)
    assert (pr == full, pr.flakes.quarantined(), logs[0]["event"]) == (
        True,
        {("pytest -q", "t::flaky"): pytest.approx(0.5)},
        "snapshot_ignored",
    )
