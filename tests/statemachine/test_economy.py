"""The accounting of agent time and cost (statemachine.economy), from projections folded from events."""

from __future__ import annotations

from datetime import datetime, timedelta

from statemachine import Projection
from statemachine.economy import (
    budget_text,
    cost_text,
    ratio_text,
    run_economy,
    summary_text,
    todo_economy,
)
from statemachine.tables import Kind
from tests.statemachine.builders import AT, event, number

T = Kind.TODO
START = ("queue", "plan", "start_agent")
FINISHED = (*START, "agent_done")


def _todo(tid: str, *triggers: str, **last: object) -> list[tuple[str, object]]:
    """Events for todo ``tid``, one per trigger; ``last`` overrides fields of the last one only."""
    out = [(f"todo-{tid}", event(T, t, {"todo_id": tid})) for t in triggers[:-1]]
    return [*out, (f"todo-{tid}", event(T, triggers[-1], {"todo_id": tid}, **last))]


def _agent(
    tid: str, seconds: float, cost: float | None = None, **summary: object
) -> list[tuple[str, object]]:
    return _todo(tid, "agent_done", duration=seconds, cost_usd=cost, summary=summary)


def _fold(*groups: list[tuple[str, object]]) -> Projection:
    pr = Projection()
    pr.apply_all(number([pair for group in groups for pair in group]))
    return pr


def _retry(tid: str, attempt: int, **fields: object) -> list[tuple[str, object]]:
    """Back to ready for ``attempt`` (from scratch unless ``fields`` say ``carry``), and started
    (with the carried change in its workspace when there is one)."""
    carried = str(fields.get("carry", ""))
    return [*_rescheduled(tid, attempt, **fields), *_todo(tid, "plan", "start_agent", carried=carried)]


def _rescheduled(tid: str, attempt: int, **fields: object) -> list[tuple[str, object]]:
    plain: dict[str, object] = {"carry": "", "session_id": "", "mode": "", "by": "daemon", "repair": ""}
    return _todo(tid, "retry", next_attempt=attempt, **{**plain, **fields})


def test_an_accepted_attempt_is_useful() -> None:
    pr = _fold(_todo("1", *START), _agent("1", 120.0, 0.5), _todo("1", "verify", "accept"))
    e = todo_economy(pr.todos["1"])
    assert (e.minutes, e.useful_minutes, e.failed_minutes, e.wasted_minutes, e.cost_usd) == (
        2.0,
        2.0,
        0.0,
        0.0,
        0.5,
    )


def test_a_rejected_attempt_redone_from_scratch_is_failed() -> None:
    pr = _fold(
        _todo("1", *START),
        _agent("1", 60.0),
        _todo("1", "verify", "reject"),
        _retry("1", 2),
        _agent("1", 30.0),
        _todo("1", "verify", "accept"),
    )
    e = todo_economy(pr.todos["1"])
    assert (e.failed_minutes, e.useful_minutes, e.count("failed"), e.count("useful")) == (1.0, 0.5, 1, 1)


def test_a_rejected_attempt_carried_into_its_repair_is_still_failed() -> None:
    """A rejection is failed (issue 13's classes), even when its repair goes on from its change."""
    pr = _fold(
        _todo("1", *START),
        _agent("1", 60.0),
        _todo("1", "verify", "reject"),
        _retry("1", 2, carry="abc", mode="repair"),
        _agent("1", 30.0),
        _todo("1", "verify", "accept"),
    )
    assert pr.todos["1"].history[0].kept  # the repair's workspace started from it
    e = todo_economy(pr.todos["1"])
    assert (e.useful_minutes, e.failed_minutes, e.wasted_minutes) == (0.5, 1.0, 0.0)


def test_a_carry_that_could_not_be_made_leaves_the_conflict_wasted() -> None:
    """The retry asked for a carry, but the attempt started from scratch (``carried`` empty): the
    conflicted attempt's work was thrown away after all."""
    pr = _fold(
        _todo("1", *START),
        _agent("1", 60.0),
        _todo("1", "verify", "conflict", files=("a.py",), winner="0", resolution="resolve"),
        _rescheduled("1", 2, carry="abc", mode="resolve"),
        _todo("1", "plan", "start_agent", carried=""),
        _agent("1", 30.0),
        _todo("1", "verify", "accept"),
    )
    e = todo_economy(pr.todos["1"])
    assert (e.useful_minutes, e.wasted_minutes) == (0.5, 1.0)


def test_a_conflict_redone_from_scratch_is_wasted() -> None:
    pr = _fold(
        _todo("1", *START),
        _agent("1", 90.0),
        _todo("1", "verify", "conflict", files=("a.py",), winner="0"),
        _retry("1", 2, mode="redo"),
        _agent("1", 60.0),
        _todo("1", "verify", "accept"),
    )
    e = todo_economy(pr.todos["1"])
    assert (e.wasted_minutes, e.useful_minutes) == (1.5, 1.0)
    assert [(a.outcome, a.kind) for a in e.attempts] == [("conflicted", "wasted"), ("accepted", "useful")]


def test_a_conflict_resolved_from_its_own_change_is_useful() -> None:
    pr = _fold(
        _todo("1", *START),
        _agent("1", 90.0),
        _todo("1", "verify", "conflict", files=("a.py",), winner="0"),
        _retry("1", 2, carry="abc", mode="resolve"),
        _agent("1", 30.0),
        _todo("1", "verify", "accept"),
    )
    assert todo_economy(pr.todos["1"]).wasted_minutes == 0.0


def test_an_interrupted_attempt_is_wasted() -> None:
    pr = _fold(_todo("1", *START, "interrupt", duration=45.0), _todo("1", "start_agent"), _agent("1", 15.0))
    e = todo_economy(pr.todos["1"])
    assert (e.wasted_minutes, e.pending_minutes) == (0.75, 0.25)


def test_an_agent_failure_is_failed() -> None:
    pr = _fold(_todo("1", *START, "agent_fail", duration=30.0, cost_usd=0.1, detail="boom"))
    e = todo_economy(pr.todos["1"])
    assert (e.failed_minutes, e.cost_usd) == (0.5, 0.1)


def test_a_finished_change_dropped_before_verification_is_wasted() -> None:
    """Its file was edited after its agent finished: the change is never judged, the time is spent."""
    pr = _fold(_todo("1", *START), _agent("1", 60.0), _rescheduled("1", 2))
    e = todo_economy(pr.todos["1"])
    assert [(a.outcome, a.kind) for a in e.attempts] == [("discarded", "wasted")]
    assert e.wasted_minutes == 1.0


def test_a_running_agent_counts_its_time_so_far_when_given_the_clock() -> None:
    pr = _fold(_todo("1", *START))
    now = datetime.fromisoformat(AT) + timedelta(minutes=3)
    assert todo_economy(pr.todos["1"], now=now).pending_minutes == 3.0
    assert todo_economy(pr.todos["1"]).minutes == 0.0


def test_the_classes_add_up_to_all_agent_time() -> None:
    pr = _fold(
        _todo("1", *START, "interrupt", duration=10.0),
        _todo("1", "start_agent"),
        _agent("1", 20.0),
        _todo("1", "verify", "reject"),
        _retry("1", 2),
        _agent("1", 30.0),
        _todo("1", "verify", "conflict", files=("a.py",), winner="0"),
        _retry("1", 3),
        _agent("1", 40.0),
    )
    t = pr.todos["1"]
    e = todo_economy(t)
    parts = e.useful_minutes + e.failed_minutes + e.wasted_minutes + e.pending_minutes
    assert (round(parts * 60, 6), round(e.minutes * 60, 6)) == (t.agent_seconds, t.agent_seconds)


def test_the_waste_ratio_is_wasted_over_useful_minutes() -> None:
    pr = _fold(
        _todo("1", *START),
        _agent("1", 120.0),
        _todo("1", "verify", "accept"),
        _todo("2", *START, "interrupt", duration=30.0),
    )
    run = run_economy(pr)
    assert (run.useful_minutes, run.wasted_minutes, run.waste_ratio) == (2.0, 0.5, 0.25)
    assert dict(run.attempts) == {"useful": 1, "failed": 0, "wasted": 1, "pending": 0}


def test_no_waste_ratio_before_anything_was_useful() -> None:
    pr = _fold(_todo("2", *START, "interrupt", duration=30.0))
    assert run_economy(pr).waste_ratio is None
    assert ratio_text(None) == "— (nothing useful yet)"


def test_no_cost_when_no_agent_reported_one() -> None:
    pr = _fold(_todo("1", *START), _agent("1", 60.0), _todo("1", "verify", "accept"))
    assert run_economy(pr).cost_usd is None


def test_a_scripted_agents_cost_is_simulated_for_the_todo_and_the_run() -> None:
    pr = _fold(
        _todo("1", *START),
        _agent("1", 60.0, 1.03, simulated=True),
        _todo("2", *START),
        _agent("2", 60.0, 0.5),
    )
    run = run_economy(pr)
    assert (run.todos["1"].simulated, run.todos["2"].simulated, run.simulated) == (True, False, True)
    assert cost_text(run.cost_usd, run.simulated) == "$1.53 (simulated: the demo's scripted agent)"


def test_a_simulated_flag_that_is_not_true_is_not_believed() -> None:
    """Only a JSON ``true`` says simulated (an agent printing ``"yes"`` is not read as true)."""
    pr = _fold(_todo("1", *START), _agent("1", 60.0, 1.0, simulated="yes"))
    assert run_economy(pr).simulated is False


def test_a_real_cost_reads_as_dollars() -> None:
    assert (cost_text(1.031, False), cost_text(None, False), cost_text(0.2, True, short=True)) == (
        "$1.03",
        "—",
        "$0.20 (simulated)",
    )


def test_the_summary_line_names_each_class_and_the_ratio() -> None:
    pr = _fold(
        _todo("1", *START),
        _agent("1", 120.0),
        _todo("1", "verify", "accept"),
        _todo("2", *START, "interrupt", duration=30.0),
    )
    assert summary_text(run_economy(pr)) == (
        "2m 30s: useful 2m 00s, failed 0.0s, wasted 30.0s (waste ratio 25.0%)"
    )


def test_the_budget_that_stopped_the_run_is_named_with_its_unit() -> None:
    assert budget_text("max_agent_minutes", "31.50 of 30 agent minutes") == (
        "[batchd] max_agent_minutes reached (31.50 of 30 agent minutes): no new agent starts"
    )
    assert budget_text("", "") == ""


def test_the_run_budget_event_is_shown_from_the_projection() -> None:
    pr = _fold(
        [
            ("run", event(Kind.RUN, "start")),
            ("run", event(Kind.RUN, "budget", budget="max_cost_usd", limit=5.0, used=5.2)),
        ]
    )
    assert budget_text(pr.run.budget, pr.run.budget_detail) == (
        "[batchd] max_cost_usd reached ($5.20 of $5.00): no new agent starts"
    )


def test_a_negative_cost_does_not_lower_the_runs_total() -> None:
    pr = _fold(_todo("1", *START), _agent("1", 60.0, 1.0), _todo("2", *START), _agent("2", 60.0, -5.0))
    assert run_economy(pr).cost_usd == 1.0


def test_a_failed_resolve_that_hands_on_the_same_change_is_not_useful() -> None:
    """The retry after a failed resolve carries the change the resolve was given, not the failed
    attempt's own work: that attempt stays failed."""
    pr = _fold(
        _todo("1", *START),
        _agent("1", 60.0),
        _todo("1", "verify", "conflict", files=("a.py",), winner="0"),
        _retry("1", 2, carry="abc", mode="resolve"),
        _todo("1", "agent_fail", reason="exit", detail="", duration=30.0),
        _rescheduled("1", 3, carry="abc", mode="resolve"),
    )
    e = todo_economy(pr.todos["1"])
    assert (e.useful_minutes, e.failed_minutes) == (1.0, 0.5)


def test_a_budget_raised_by_a_reload_is_no_longer_said_to_stop_agents() -> None:
    """After run.budget_reached, an agent that starts (the limit was raised) clears it."""
    pr = _fold(
        [
            ("run", event(Kind.RUN, "start")),
            ("run", event(Kind.RUN, "budget", budget="max_cost_usd", limit=5.0, used=5.2)),
        ],
        _todo("1", *START),
    )
    assert (pr.run.budget, budget_text(pr.run.budget, pr.run.budget_detail)) == ("", "")
