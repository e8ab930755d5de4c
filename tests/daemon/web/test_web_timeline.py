"""The timeline fold (daemon.web.timeline), pure: hand-made log rows in, bars, runs and markers out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.web.timeline import Bar, Timeline
from store import StoredEvent
from store.eventlog import format_time

BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T0 = BASE.timestamp()


class Log:
    """Builds rows as the store reads them back: seq in order, ``at`` seconds after BASE."""

    def __init__(self) -> None:
        self.seq = 0
        self.timeline = Timeline()

    def row(self, type_: str, at: float, **payload: Any) -> StoredEvent:
        self.seq += 1
        recorded = format_time(BASE + timedelta(seconds=at))
        return StoredEvent(self.seq, "s", 1, type_, 1, payload, recorded, "")

    def add(self, type_: str, at: float, **payload: Any) -> Log:
        self.timeline.apply(self.row(type_, at, **payload))
        return self

    def start(self, todo: str, at: float, attempt: int = 1, batch: str = "1.1") -> Log:
        return self.add("todo.agent_started", at, todo_id=todo, attempt=attempt, batch=batch)

    def finish(self, todo: str, at: float, attempt: int = 1, duration: float = 1.0) -> Log:
        return self.add("todo.agent_finished", at, todo_id=todo, attempt=attempt, duration=duration)

    def bar(self, todo: str, attempt: int = 1) -> Bar:
        (found,) = [b for b in self.timeline.bars if b.todo_id == todo and b.attempt == attempt]
        return found


@pytest.fixture
def log() -> Log:
    return Log().add("batch.planned", 0, key="1.1", phase=1, todo_ids=["1", "2", "3"])


def test_an_attempt_is_one_bar_from_its_start_to_its_agents_end(log: Log) -> None:
    """A bar spans agent_started to agent_finished (the agent's time in its slot), as recorded."""
    log.start("1", 10).finish("1", 25, duration=12.5)
    bar = log.bar("1")
    assert (bar.start - T0, bar.end is not None and bar.end - T0) == (10, 25)
    assert (bar.outcome, bar.agent_time) == ("waiting", 12.5)


def test_each_attempt_takes_the_lowest_slot_free_when_it_starts(log: Log) -> None:
    """Slots are not recorded: the same log always gives the same rows, lowest free slot first."""
    log.start("1", 0).start("2", 1).finish("1", 5).start("3", 6)
    log.finish("2", 7).start("4", 8, batch="x").start("5", 9, batch="x")
    slots = {b.todo_id: b.slot for b in log.timeline.bars}
    assert slots == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 2}
    assert log.timeline.slots == 3


def test_an_accepted_verdict_colours_the_attempt_that_waited_for_it(log: Log) -> None:
    """todo.accepted names no attempt: it is the newest one, once its agent is done."""
    log.start("1", 0).finish("1", 3).add("todo.accepted", 9, todo_id="1", batch="1.v1", commit="c")
    bar = log.bar("1")
    assert (bar.outcome, bar.verdict_at and bar.verdict_at - T0) == ("accepted", 9)
    assert bar.end is not None and bar.end - T0 == 3  # the verdict colours the bar, not its length


def test_a_rejected_attempt_carries_its_rejection_reason(log: Log) -> None:
    """Hovering a rejected bar says why it was rejected."""
    log.start("1", 0).finish("1", 3)
    log.add(
        "todo.rejected",
        5,
        todo_id="1",
        batch="1.v1",
        attempt=1,
        command=["t"],
        output_tail="",
        files_reverted=[],
        action="retry",
        reason="broke `make test`: test_x",
    )
    assert (log.bar("1").outcome, log.bar("1").reason) == ("rejected", "broke `make test`: test_x")


def test_a_conflicted_attempt_names_its_winner_as_its_file_writes_it(log: Log) -> None:
    """The conflict's winner is shown by the id its file name writes (``#0002``)."""
    fields = {"priority": "p2", "digest": "d"}
    log.add("todo.queued", 0, todo_id="2", path="todos/0002-ready-p2-x.md", title="x", **fields)
    log.start("1", 0).finish("1", 3)
    log.add("todo.conflicted", 4, todo_id="1", batch="1.v1", attempt=1, winner="2", files=["a"])
    assert (log.bar("1").outcome, log.bar("1").reason) == ("conflicted", "lost a conflict to #0002")


def test_a_failed_agent_ends_its_bar_with_the_failure_detail(log: Log) -> None:
    """agent_failed ends the bar as failed, with the reason and its detail; its slot is free."""
    log.start("1", 0).add(
        "todo.agent_failed",
        4,
        todo_id="1",
        attempt=1,
        reason="timeout",
        detail="timed out after 2s",
        duration=2.0,
    )
    log.start("2", 5)
    assert (log.bar("1").outcome, log.bar("1").reason) == ("failed", "timeout: timed out after 2s")
    assert log.bar("2").slot == 0


def test_a_verdict_for_another_attempt_is_ignored(log: Log) -> None:
    """A rejection of attempt 1 arriving while attempt 2 waits does not colour attempt 2."""
    log.start("1", 0, attempt=2).finish("1", 3, attempt=2)
    log.add(
        "todo.rejected",
        4,
        todo_id="1",
        batch="1.v1",
        attempt=1,
        command=[],
        output_tail="",
        files_reverted=[],
        action="retry",
    )
    assert log.bar("1", 2).outcome == "waiting"


def test_an_interrupted_attempt_is_grey_and_frees_its_slot(log: Log) -> None:
    """The daemon stopped while the agent ran: the bar ends as interrupted, with the reason."""
    log.start("1", 0).add("todo.agent_interrupted", 2, todo_id="1", attempt=1, reason="daemon stopped")
    log.start("2", 3)
    assert (log.bar("1").outcome, log.bar("1").reason) == ("interrupted", "daemon stopped")
    assert log.bar("2").slot == 0


def test_a_new_attempt_ends_an_earlier_one_that_never_got_an_outcome(log: Log) -> None:
    """A crash that left no outcome: the lost attempt ends (interrupted) where the next one starts."""
    log.start("1", 0).start("1", 7, attempt=2)
    lost = log.bar("1", 1)
    assert (lost.outcome, lost.end is not None and lost.end - T0) == ("interrupted", 7)
    assert log.bar("1", 2).slot == 0


def test_a_running_attempt_has_no_end_in_the_fold(log: Log) -> None:
    """The fold is pure: an agent at work is open until an event ends it."""
    log.start("1", 0)
    assert (log.bar("1").outcome, log.bar("1").end) == ("running", None)


def test_the_view_ends_running_bars_at_the_time_it_is_drawn(log: Log) -> None:
    """A running bar grows to ``now`` (the caller's clock), in a copy: the fold is untouched."""
    log.start("1", 0).start("2", 4).finish("2", 6)
    (bar,) = [b for b in log.timeline.view(now=T0 + 30).bars if b.todo_id == "1"]
    assert (bar.outcome, bar.end and bar.end - T0) == ("running", 30)
    assert log.bar("1").end is None


def test_without_now_running_bars_end_at_the_last_event(log: Log) -> None:
    """The report draws with no clock: an agent at work ends where the log ends."""
    log.start("1", 0).start("2", 4).finish("2", 6)
    (bar,) = [b for b in log.timeline.view().bars if b.todo_id == "1"]
    assert bar.end is not None and bar.end - T0 == 6


def test_a_now_before_the_last_event_does_not_shorten_running_bars(log: Log) -> None:
    """A clock behind the log (another machine's) never draws a bar shorter than the log says."""
    log.start("1", 0).start("2", 4).finish("2", 6)
    view = log.timeline.view(now=T0 + 2)
    assert max(b.end or 0 for b in view.bars) - T0 == 6


def test_a_cancelled_running_attempt_ends_where_it_was_cancelled(log: Log) -> None:
    """Cancelling a todo while its agent runs ends the bar (cancelled) and frees its slot."""
    log.start("1", 0).add("todo.cancelled", 3, todo_id="1", reason="not wanted").start("2", 4)
    assert (log.bar("1").outcome, log.bar("1").reason) == ("cancelled", "not wanted")
    assert log.bar("2").slot == 0


def test_a_verify_run_began_its_duration_before_it_was_recorded(log: Log) -> None:
    """batch.verify_run is written at its end: the bar covers recorded_at - duration to recorded_at."""
    log.add("batch.verify_run", 20, key="1.1", run=1, todo_ids=["1", "2"], passed=False, duration=5.0)
    (run,) = log.timeline.verify_runs
    assert (run.start - T0, run.end - T0, run.passed, run.baseline, run.todos) == (15, 20, False, False, 2)


def test_a_baseline_verify_run_is_marked_as_such(log: Log) -> None:
    """Runs of the batch's base (no change) are told apart from candidate runs."""
    log.add("batch.verify_run", 2, key="1.1", run=0, todo_ids=[], passed=True, duration=1.0, baseline=True)
    assert log.timeline.verify_runs[0].baseline


def test_overlapping_verify_runs_take_lanes_of_their_own(log: Log) -> None:
    """Two trees verified at once are drawn on two verify rows, not over each other."""
    log.add("batch.verify_run", 10, key="1.1", run=1, todo_ids=[], passed=True, duration=4.0)
    log.add("batch.verify_run", 11, key="1.1", run=2, todo_ids=[], passed=True, duration=4.0)
    log.add("batch.verify_run", 20, key="1.1", run=3, todo_ids=[], passed=True, duration=4.0)
    assert [r.lane for r in log.timeline.verify_runs] == [0, 1, 0]


def test_phase_commits_pushes_and_push_failures_are_markers(log: Log) -> None:
    """Each phase.committed, phase.pushed and phase.push_failed is a marker at its time."""
    log.add("phase.committed", 5, number=1, commits=["a"], head_sha="abc123")
    log.add("phase.push_failed", 6, number=1, sha="abc123", attempts=1, reason="rejected: non-fast-forward")
    log.add("phase.pushed", 8, number=1, sha="abc123", attempts=2, branch="main")
    marks = [(m.kind, m.phase, m.at - T0, m.sha, m.detail) for m in log.timeline.markers]
    assert marks == [
        ("committed", 1, 5, "abc123", ""),
        ("push_failed", 1, 6, "abc123", "rejected: non-fast-forward"),
        ("pushed", 1, 8, "abc123", "to main"),
    ]


def test_a_phase_spans_from_started_to_done(log: Log) -> None:
    """Zooming to a phase needs when it started and ended, and its title."""
    log.add("phase.planned", 0, number=1, title="Security", commit_message="m", batches=["1.1"])
    log.add("phase.started", 1, number=1, base_sha="b").add("phase.done", 9, number=1)
    span = log.timeline.phases[1]
    assert (span.title, span.start and span.start - T0, span.end and span.end - T0) == ("Security", 1, 9)


def two_phases(log: Log) -> Log:
    log.add("batch.planned", 0, key="2.1", phase=2, todo_ids=["3"])
    log.add("batch.planned", 0, key="2.v1", phase=2, todo_ids=[])
    log.add("phase.started", 1, number=1, base_sha="b").add("phase.started", 20, number=2, base_sha="c")
    log.start("1", 2).start("3", 3, batch="2.1").finish("1", 5).finish("3", 30)
    log.add("batch.verify_run", 40, key="2.v1", run=1, todo_ids=["3"], passed=True, duration=2.0)
    log.add("phase.committed", 10, number=1, commits=["a"], head_sha="a")
    return log.add("phase.committed", 42, number=2, commits=["b"], head_sha="b")


def test_a_phase_view_holds_only_that_phases_items(log: Log) -> None:
    """view(phase=N): its bars (by their batch's phase), its verify runs and markers, nothing else."""
    view = two_phases(log).timeline.view(phase=2)
    assert [b.todo_id for b in view.bars] == ["3"]
    assert [r.key for r in view.verify_runs] == ["2.v1"]
    assert [m.phase for m in view.markers] == [2]


def test_a_phase_view_covers_its_items_even_those_before_the_phase_started(log: Log) -> None:
    """Agents of a phase may run before it starts (continuous scheduling): the window includes them."""
    view = two_phases(log).timeline.view(phase=2)
    assert (view.t0 - T0, view.t1 - T0) == (3, 42)


def test_the_whole_view_holds_every_phase(log: Log) -> None:
    """With no phase, every bar and marker is drawn, and every phase is listed for zooming."""
    view = two_phases(log).timeline.view()
    assert (len(view.bars), len(view.markers), view.all_phases) == (2, 2, (1, 2))


def test_an_attempt_of_an_unplanned_batch_takes_its_todos_phase(log: Log) -> None:
    """When the batch is unknown, todo.planned says which phase an attempt belongs to."""
    log.add("todo.planned", 0, todo_id="7", batch="9.9", phase=3).start("7", 1, batch="9.9")
    assert [b.todo_id for b in log.timeline.view(phase=3).bars] == ["7"]


def test_a_view_is_a_copy_that_later_events_do_not_change(log: Log) -> None:
    """A page lays a view out after releasing the model's lock: the follower must not move it."""
    log.start("1", 0)
    view = log.timeline.view(now=T0 + 1)
    log.finish("1", 5).add("todo.accepted", 6, todo_id="1", batch="1.v1", commit="c")
    assert (view.bars[0].outcome, view.bars[0].end and view.bars[0].end - T0) == ("running", 1)


def test_titles_come_from_the_todos_file_with_its_written_id(log: Log) -> None:
    """Bars show the title and the id as the file name writes it, the latest update winning."""
    fields = {"priority": "p2", "digest": "d"}
    log.add("todo.recorded", 0, todo_id="282", path="todos/0282-pending-p2-a.md", title="old", **fields)
    log.add("todo.updated", 1, todo_id="282", path="todos/0282-ready-p2-a.md", title="new", **fields)
    log.start("282", 2)
    assert log.timeline.view().titles["282"] == ("0282", "new")


def test_outcomes_with_no_start_are_ignored(log: Log) -> None:
    """An attempt whose start is not in the log (a trimmed or edited log) draws nothing, and no error."""
    log.finish("1", 3).add("todo.agent_failed", 4, todo_id="2", attempt=1, reason="exit", detail="")
    log.add("todo.accepted", 5, todo_id="1", batch="1.v1", commit="c")
    log.add(
        "todo.rejected",
        5,
        todo_id="3",
        batch="1.v1",
        attempt=1,
        command=[],
        output_tail="",
        files_reverted=[],
        action="retry",
    )
    assert log.timeline.bars == []


def test_unknown_and_malformed_events_are_ignored(log: Log) -> None:
    """An event type it does not draw, or a payload missing a field, leaves the picture as it was."""
    log.add("todo.frobbed", 1, todo_id="1").add("todo.agent_started", 2, attempt="x", batch="1.1")
    log.add("batch.verify_run", 4, key="1.1", duration="long", passed=True)
    log.add("phase.committed", 5, head_sha="a")
    assert (log.timeline.bars, log.timeline.verify_runs, log.timeline.markers) == ([], [], [])


def test_a_start_recorded_twice_is_one_bar(log: Log) -> None:
    """The same (todo, attempt) started twice keeps the first bar (and one slot)."""
    log.start("1", 0).start("1", 1)
    assert [(b.start - T0, b.slot) for b in log.timeline.bars] == [(0, 0)]
