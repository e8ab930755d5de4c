"""The fold's behaviours one by one: streams, counters, problems, queries, snapshots, live machines."""

from __future__ import annotations

import json

import pytest

from statemachine import InvalidTransition, Projection, SnapshotIncompatible
from statemachine import events as ev
from statemachine.tables import Kind
from store import StoredEvent, UnknownEventType
from tests.statemachine.builders import event, number, stored

T = Kind.TODO


def _todo(tid: str, *triggers: str, **last: object) -> list[tuple[str, object]]:
    """Events for todo ``tid``, one per trigger; ``last`` overrides fields of the last one only."""
    out = [(f"todo-{tid}", event(T, t, {"todo_id": tid})) for t in triggers[:-1]]
    return [*out, (f"todo-{tid}", event(T, triggers[-1], {"todo_id": tid}, **last))]


def _fold(pairs: list[tuple[str, object]]) -> Projection:
    pr = Projection()
    pr.apply_all(number(pairs))
    return pr


RUN_TO_FAIL = ("queue", "plan", "start_agent", "spawned", "agent_fail")


def test_message_names_event_seq_stream_and_state() -> None:
    """The error reads like the issue asks: event, seq, stream and state in one sentence."""
    pr = _fold(_todo("273", "queue", "plan", "start_agent"))
    with pytest.raises(
        InvalidTransition,
        match=r"^event todo\.accepted \(seq 41\) cannot apply to stream todo-273 in state running",
    ):
        pr.apply(stored(41, "todo-273", event(T, "accept", {"todo_id": "273"})))


def test_event_on_a_stream_of_another_kind_is_rejected() -> None:
    """A todo event written to a batch stream is an InvalidTransition, not a silent skip."""
    with pytest.raises(InvalidTransition, match="names stream todo-7"):
        _fold([("batch-7", event(T, "queue"))])


def test_event_naming_another_entity_than_its_stream_is_rejected() -> None:
    """The payload's todo id must be the one its stream names."""
    with pytest.raises(InvalidTransition, match="names stream todo-8"):
        _fold([("todo-7", event(T, "queue", {"todo_id": "8"}))])


def test_an_event_applied_twice_is_rejected() -> None:
    """Applying a seq at or below the last applied one raises instead of counting twice."""
    pr = Projection()
    evt = stored(1, "todo-7", event(T, "queue"))
    pr.apply(evt)
    with pytest.raises(InvalidTransition, match="already applied"):
        pr.apply(evt)


def test_a_failed_transition_leaves_no_entity_behind() -> None:
    """A rejected first event does not create the todo."""
    pr = Projection()
    with pytest.raises(InvalidTransition):
        pr.apply(stored(1, "todo-7", event(T, "accept")))
    assert pr.todos == {}


def test_unknown_event_type_raises_unknown_event_type() -> None:
    """A type this batchd never registered is named as unknown."""
    with pytest.raises(UnknownEventType):
        Projection().apply(StoredEvent(1, "todo-7", 1, "todo.teleported", 1, {}, "t", "h"))


def test_old_type_version_without_upcaster_goes_through_the_registry() -> None:
    """A payload of an older version is upcast by the registry (here: none exists, so it is refused)."""
    with pytest.raises(UnknownEventType):
        Projection().apply(StoredEvent(1, "todo-7", 1, "todo.queued", 0, {}, "t", "h"))


def test_failed_attempts_count_and_interrupts_do_not() -> None:
    """agent_fail, reject and conflict use an attempt; an interrupted run does not and keeps its number."""
    pairs = _todo("7", "queue", "plan", "start_agent", "interrupt", "start_agent", "agent_fail")
    pr = _fold(pairs)
    t = pr.todos["7"]
    assert (t.attempt, t.attempts_used, [h.outcome for h in t.history]) == (
        1,
        1,
        ["interrupted", "agent_failed"],
    )


def test_retry_sets_next_attempt_and_repair_and_clears_the_problem() -> None:
    """retry_scheduled moves to the next attempt with the repair text, the failure leaves the status."""
    pr = _fold([*_todo("7", *RUN_TO_FAIL), *_todo("7", "retry", next_attempt=2, repair="fix x", by="daemon")])
    t = pr.todos["7"]
    assert (t.state, t.attempt, t.repair, t.problem, t.attempts_used) == ("ready", 2, "fix x", "", 1)


def test_retry_by_a_person_starts_a_fresh_budget() -> None:
    """A person's retry resets attempts_used (history keeps the old attempts)."""
    pr = _fold([*_todo("7", *RUN_TO_FAIL), *_todo("7", "retry", next_attempt=2, by="person")])
    assert (pr.todos["7"].attempts_used, len(pr.todos["7"].history)) == (0, 1)


def test_rejection_records_command_files_and_action() -> None:
    """A rejected todo shows which command failed, which files were reverted and what to do."""
    steps = ("queue", "plan", "start_agent", "agent_done", "verify")
    rej = event(
        T,
        "reject",
        command=("pytest", "-x"),
        files_reverted=("a.py",),
        action="see log",
        output_tail="E",
        reason="",
    )
    pr = _fold([*_todo("7", *steps), ("todo-7", rej)])
    t = pr.todos["7"]
    assert (t.problem, t.reason, t.files_reverted, t.action) == (
        "rejected",
        "`pytest -x` failed",
        ("a.py",),
        "see log",
    )


def test_agent_runs_add_up_time_and_cost() -> None:
    """Durations and costs of every attempt are summed; a missing cost counts as zero."""
    pairs = [
        *_todo("7", *RUN_TO_FAIL, duration=10.0, cost_usd=0.25, detail="boom"),
        *_todo("7", "retry", next_attempt=2),
        *_todo("7", "plan", "start_agent", "agent_done", duration=5.0, cost_usd=None),
    ]
    t = _fold(pairs).todos["7"]
    assert (t.agent_seconds, t.cost_usd, t.last_duration, t.last_cost_usd) == (15.0, 0.25, 5.0, None)


def test_agent_started_records_when_from_the_log_time() -> None:
    """agent_started_at is the recorded_at of the event, not a clock read by the fold."""
    pr = Projection()
    pr.apply_all(number(_todo("7", "queue", "plan")))
    pr.apply(stored(3, "todo-7", event(T, "start_agent"), at="2026-02-03T04:05:06.000000Z"))
    assert pr.todos["7"].agent_started_at == "2026-02-03T04:05:06.000000Z"


def test_batch_planned_adds_itself_to_its_phase_in_order() -> None:
    """batch.planned appends its key to the phase; a later phase.planned keeps it after its own list."""
    pr = _fold(
        [
            ("batch-1.2", event(Kind.BATCH, "plan", {"key": "1.2"}, phase=1)),
            ("phase-1", event(Kind.PHASE, "plan", {"number": 1}, batches=("1.1",))),
            ("batch-1.1", event(Kind.BATCH, "plan", {"key": "1.1"}, phase=1)),
        ]
    )
    assert pr.phases[1].batches == ("1.1", "1.2")


def test_verify_runs_count_baseline_apart() -> None:
    """Baseline runs and candidate runs are counted separately; a failing run names its command."""
    b = {"key": "1.1"}
    pr = _fold(
        [
            ("batch-1.1", event(Kind.BATCH, "plan", b)),
            ("batch-1.1", event(Kind.BATCH, "verify_run", b, baseline=True, passed=True)),
            ("batch-1.1", event(Kind.BATCH, "verify_run", b, passed=False, command=("make", "test"))),
        ]
    )
    view = pr.batches["1.1"]
    assert (view.runs, view.baseline_runs, view.last_failing_command, pr.verify_runs) == (
        1,
        1,
        ("make", "test"),
        2,
    )


def test_control_requests_stay_pending_until_handled() -> None:
    """control.* requests are listed until a control.handled names their seq."""
    pr = _fold(
        [
            ("control", ev.RetryRequested(todo_id="7")),
            ("control", ev.PauseRequested()),
            ("control", ev.ControlHandled(request_seq=1, outcome="done")),
        ]
    )
    assert [(c.seq, c.type) for c in pr.controls_pending] == [(2, "control.pause")]


def test_control_request_on_another_stream_is_rejected() -> None:
    """Control requests belong on the control stream."""
    with pytest.raises(InvalidTransition, match="belong on stream control"):
        _fold([("run", ev.PauseRequested())])


def test_queries_list_todos_by_state_in_id_order() -> None:
    """todos_in, running_agents and unfinished sort ids numerically."""
    pr = _fold([*_todo("10", "queue", "plan", "start_agent"), *_todo("9", "queue", "plan", "start_agent")])
    assert [t.todo_id for t in pr.running_agents()] == ["9", "10"]


def test_unfinished_leaves_out_complete_and_cancelled() -> None:
    """unfinished() lists blocked or failed todos but not complete or cancelled ones."""
    pr = _fold(
        [*_todo("1", "queue", "complete"), *_todo("2", "queue", "cancel"), *_todo("3", "queue", "block")]
    )
    assert [t.todo_id for t in pr.unfinished()] == ["3"]


def test_current_phase_and_batch_are_the_first_not_done() -> None:
    """current_phase is the lowest phase not done; current_batch its first batch not done."""
    pairs: list[tuple[str, object]] = [
        ("phase-1", event(Kind.PHASE, "plan", {"number": 1}, batches=("1.1", "1.2"))),
        ("phase-2", event(Kind.PHASE, "plan", {"number": 2}, batches=())),
        ("batch-1.1", event(Kind.BATCH, "plan", {"key": "1.1"}, phase=1)),
        ("batch-1.2", event(Kind.BATCH, "plan", {"key": "1.2"}, phase=1)),
    ]
    pairs += [("batch-1.1", event(Kind.BATCH, t, {"key": "1.1"})) for t in ("start", "verified", "done")]
    pr = _fold(pairs)
    assert (pr.current_phase().number, pr.current_batch().key) == (1, "1.2")  # type: ignore[union-attr]


def test_batch_todos_follow_the_batch_order() -> None:
    """batch_todos returns the batch's todos in its own order."""
    pr = _fold(
        [
            *_todo("1", "queue"),
            *_todo("2", "queue"),
            ("batch-1.1", event(Kind.BATCH, "plan", {"key": "1.1"}, todo_ids=("2", "1"))),
        ]
    )
    assert [t.todo_id for t in pr.batch_todos("1.1")] == ["2", "1"]


def test_to_json_round_trips_exactly_through_json_text() -> None:
    """from_json(json.loads(json.dumps(to_json()))) equals the original, tuples and all."""
    pr = _fold(
        [
            *_todo("7", *RUN_TO_FAIL),
            ("control", ev.PauseRequested()),
            ("run", ev.RunStarted(run_id="r", branch="main", base_sha="abc")),
            (
                "run",
                ev.RunCompleted(
                    success=False, checks_green=True, complete=("1",), not_complete=(("7", "blocked"),)
                ),
            ),
        ]
    )
    again = Projection.from_json(json.loads(json.dumps(pr.to_json())))
    assert (again == pr, again.todos["7"].history, again.run.verdict) == (
        True,
        pr.todos["7"].history,
        pr.run.verdict,
    )


def test_snapshot_with_other_fields_is_refused() -> None:
    """A snapshot written with another view layout raises SnapshotIncompatible instead of misreading."""
    data = Projection().to_json()
    data["layout"]["todo"] = [*data["layout"]["todo"], "new_field"]
    with pytest.raises(SnapshotIncompatible):
        Projection.from_json(data)


def test_live_machine_follows_the_fold() -> None:
    """A held live model moves with each applied event."""
    pr = _fold(_todo("7", "queue", dependencies=()))
    assert pr.may("todo-7", "plan")
    pr.apply(stored(2, "todo-7", event(T, "plan")))
    assert (pr.machine("todo-7").state, pr.may("todo-7", "plan"), pr.may("todo-7", "start_agent")) == (
        "planned",
        False,
        True,
    )


def test_live_machine_is_dropped_when_the_todo_completes() -> None:
    """Completing a todo releases its live model, so memory does not grow with finished work."""
    pr = _fold(_todo("7", "queue"))
    pr.machine("todo-7")
    pr.apply(stored(2, "todo-7", event(T, "complete")))
    assert ("todo-7" in pr.live, pr.may("todo-7", "queue"), "todo-7" in pr.live) == (False, True, False)


def test_what_if_fire_does_not_move_the_projection() -> None:
    """fire() on a live model is a what-if: the next look-up snaps it back to the folded state."""
    pr = _fold(_todo("7", "queue"))
    pr.machine("todo-7").fire("plan")
    assert (pr.state_of("todo-7"), pr.machine("todo-7").state) == ("ready", "ready")


def test_stream_of_no_machine_is_a_value_error() -> None:
    """machine() names a bad stream instead of guessing."""
    with pytest.raises(ValueError, match="not the stream"):
        Projection().machine("phase-x")


def test_a_todo_may_be_planned_only_once_its_dependencies_are_accepted() -> None:
    """The `plan` transition's condition asks the projection: 8 depends on 7, which is only ready."""
    pr = _fold([*_todo("7", "queue", dependencies=()), *_todo("8", "queue", dependencies=("007",))])
    assert not pr.may("todo-8", "plan")
    assert pr.may("todo-7", "plan")
    for seq, trigger in enumerate(("plan", "start_agent", "agent_done", "verify", "accept"), start=3):
        pr.apply(stored(seq, "todo-7", event(T, trigger, {"todo_id": "7"})))
    assert pr.may("todo-8", "plan")


def test_a_phase_may_start_and_commit_only_after_the_phases_before_it() -> None:
    """Phase 2 cannot start (nor commit) while phase 1 is not done; the final phase comes last."""
    pairs: list[tuple[str, object]] = [
        ("phase-1", event(Kind.PHASE, "plan", {"number": 1}, final=False)),
        ("phase-2", event(Kind.PHASE, "plan", {"number": 2}, final=False)),
    ]
    pr = _fold(pairs)
    assert pr.may("phase-1", "start")
    assert not pr.may("phase-2", "start")
    seq = 3
    for trigger in ("start", "commit", "committed", "done"):
        pr.apply(stored(seq, "phase-1", event(Kind.PHASE, trigger, {"number": 1})))
        seq += 1
    assert pr.may("phase-2", "start")


def test_the_runs_policy_is_the_one_it_started_or_reopened_with() -> None:
    """A log from before policies existed is a barrier run; a reopened run may take a new policy."""
    old = _fold([("run", ev.RunStarted(run_id="r", branch="main", base_sha="b"))])
    assert old.run.schedule == "barrier"
    pr = _fold([("run", ev.RunStarted(run_id="r", branch="main", base_sha="b", schedule="continuous"))])
    assert pr.run.schedule == "continuous"
    pr.apply(stored(2, "run", ev.RunCompleted(success=True, checks_green=True, complete=())))
    pr.apply(stored(3, "run", ev.RunReopened(reason="new todos: 9")))
    assert pr.run.schedule == "continuous"
    pr.apply(stored(4, "run", ev.RunCompleted(success=True, checks_green=True, complete=())))
    pr.apply(stored(5, "run", ev.RunReopened(reason="new todos: 10", schedule="barrier")))
    assert pr.run.schedule == "barrier"
