"""Budgets as pure decisions: daemon.engine.budget over built projections, and how both policies and
the verdict use it (no git, no processes)."""

from __future__ import annotations

from daemon.engine import barrier, budget, continuous
from daemon.engine import commands as cmd
from daemon.engine.budget import Limits, Reached
from daemon.engine.verdict import compute_verdict
from engine.history import BASE, History, facts, started
from statemachine import events as ev

HEAD = "c" * 40
COST_5 = Limits(max_cost_usd=5.0)


def paid(
    h: History, todo_id: str, batch: str, phase: int, *, cost: float, seconds: float = 60.0, plan: bool = True
) -> History:
    """The todo's agent ran for ``seconds`` and reported ``cost`` dollars."""
    h.running(todo_id, batch, phase, plan=plan)
    return h.add(
        ev.todo_stream(todo_id),
        ev.AgentFinished(
            todo_id=todo_id,
            attempt=1,
            returncode=0,
            duration=seconds,
            commit=todo_id * 40,
            files=(f"f{todo_id}.py",),
            cost_usd=cost,
        ),
    )


def rejected(h: History, todo_id: str, batch: str, attempt: int = 1) -> History:
    """Verified on ``batch``, rejected, and scheduled for another attempt by the daemon."""
    return h.add(
        ev.todo_stream(todo_id),
        ev.TodoVerifying(todo_id=todo_id, batch=batch),
        ev.TodoRejected(
            todo_id=todo_id,
            batch=batch,
            attempt=attempt,
            command=("pytest",),
            output_tail="1 failed",
            files_reverted=(),
            action="",
        ),
        ev.TodoRetryScheduled(todo_id=todo_id, next_attempt=attempt + 1, reason="broke `pytest`"),
    )


def two_todos() -> History:
    """One phase, one batch of todos 1 and 2; the phase started and its base is green."""
    return History().todo("1").todo("2").plan({1: [["1", "2"]]}).start_phase(1).green("1.v1", 1)


# --- spend ---------------------------------------------------------------------------------------


def test_spend_adds_every_ended_attempt_interrupted_ones_too_and_the_running_agents() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=1.25, seconds=90.0)
    h.running("2", "1.1", 1).add(
        ev.todo_stream("2"),
        ev.AgentInterrupted(todo_id="2", attempt=1, reason="stop", duration=30.0, cost_usd=0.5),
    )
    used = budget.spend(h.projection(), running_seconds=60.0)
    assert used.cost_usd == 1.75
    assert used.agent_minutes == 3.0  # 90 s + 30 s + 60 s still running


def test_no_limit_is_never_reached() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=1e6, seconds=1e6)
    assert budget.reached(h.projection(), Limits(), running_seconds=1e6) is None


def test_the_cost_budget_is_reached_at_its_limit() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=5.0)
    assert budget.reached(h.projection(), COST_5) == Reached(budget="max_cost_usd", limit=5.0, used=5.0)
    assert budget.reached(h.projection(), Limits(max_cost_usd=5.01)) is None


def test_agent_minutes_count_the_agents_still_running() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=0.0, seconds=300.0)
    limits = Limits(max_agent_minutes=10)
    assert budget.reached(h.projection(), limits, running_seconds=299.0) is None
    hit = budget.reached(h.projection(), limits, running_seconds=300.0)
    assert hit == Reached(budget="max_agent_minutes", limit=10, used=10.0)


def test_the_verdict_text_names_the_key_and_the_amounts() -> None:
    assert Reached(budget="max_cost_usd", limit=5, used=5.2).text() == (
        "stopped by [batchd] max_cost_usd: $5.20 of $5.00"
    )
    assert Reached(budget="max_agent_minutes", limit=30, used=31.25).text() == (
        "stopped by [batchd] max_agent_minutes: 31.25 of 30 agent minutes"
    )


# --- the continuous policy -----------------------------------------------------------------------


def test_no_agent_starts_once_the_cost_budget_is_reached_and_it_is_said_once() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=5.2)
    out = continuous.decide(h.projection(), facts(limits=COST_5))
    assert started(out) == []
    assert cmd.RecordBudget(budget="max_cost_usd", limit=5.0, used=5.2) in out
    h.add(ev.RUN_STREAM, ev.RunBudgetReached(budget="max_cost_usd", limit=5.0, used=5.2))
    again = continuous.decide(h.projection(), facts(limits=COST_5))
    assert started(again) == []
    assert not any(isinstance(c, cmd.RecordBudget) for c in again)


def test_without_a_budget_the_same_run_starts_the_next_agent() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=5.2)
    out = continuous.decide(h.projection(), facts())
    assert started(out) == ["2"]
    assert not any(isinstance(c, cmd.RecordBudget | cmd.PutBack) for c in out)


def test_a_limit_raised_by_a_reload_lets_work_go_on() -> None:
    """The budget event stays in the log, but the check is made against the limits in force."""
    h = paid(two_todos(), "1", "1.1", 1, cost=5.2)
    h.add(ev.RUN_STREAM, ev.RunBudgetReached(budget="max_cost_usd", limit=5.0, used=5.2))
    assert started(continuous.decide(h.projection(), facts(limits=Limits(max_cost_usd=10)))) == ["2"]


def test_a_limit_raised_and_reached_again_is_said_again() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=10.5)
    h.add(ev.RUN_STREAM, ev.RunBudgetReached(budget="max_cost_usd", limit=5.0, used=5.2))
    out = continuous.decide(h.projection(), facts(limits=Limits(max_cost_usd=10)))
    assert cmd.RecordBudget(budget="max_cost_usd", limit=10, used=10.5) in out


def test_the_budget_is_not_said_when_it_keeps_nothing_from_starting() -> None:
    h = paid(History().todo("1").plan({1: [["1"]]}).start_phase(1).green("1.v1", 1), "1", "1.1", 1, cost=9)
    out = continuous.decide(h.projection(), facts(limits=COST_5))
    assert not any(isinstance(c, cmd.RecordBudget) for c in out)
    assert cmd.VerifyGroup(key="1.v1", base_sha=BASE, candidates=("1",)) in out


def test_a_planned_todo_the_budget_keeps_from_starting_is_put_back_to_ready() -> None:
    """An interrupted attempt leaves its todo planned: put back, so its phase can end."""
    h = two_todos().running("2", "1.1", 1)
    h.add(ev.todo_stream("2"), ev.AgentInterrupted(todo_id="2", attempt=1, reason="stop", duration=700.0))
    out = continuous.decide(h.projection(), facts(limits=Limits(max_agent_minutes=10)))
    puts = [c for c in out if isinstance(c, cmd.PutBack)]
    assert [c.todo_id for c in puts] == ["2"]
    assert "stopped by [batchd] max_agent_minutes" in puts[0].reason
    assert started(out) == []


def test_the_phase_is_committed_with_what_was_accepted_when_the_rest_waits_for_the_budget() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=6.0).accepted("1.v2", 1, ["1"], head=HEAD)
    assert cmd.CommitPhase(number=1) in continuous.decide(h.projection(), facts(limits=COST_5))
    # Without the budget the phase waits for todo 2, which starts.
    out = continuous.decide(h.projection(), facts())
    assert started(out) == ["2"]
    assert cmd.CommitPhase(number=1) not in out


def test_a_phase_with_nothing_accepted_is_skipped_when_its_todos_wait_for_the_budget() -> None:
    h = History().todo("1").plan({1: [["1"]]}).start_phase(1)
    out = continuous.decide(h.projection(), facts(limits=Limits(max_agent_minutes=1), running_seconds=60))
    assert [type(c) for c in out] == [cmd.RecordBudget, cmd.SkipPhase]


# --- the per-todo cap ----------------------------------------------------------------------------


def test_a_rejected_todo_over_its_cost_cap_is_blocked_instead_of_retried() -> None:
    h = rejected(paid(two_todos(), "1", "1.1", 1, cost=2.5), "1", "1.v1")
    out = continuous.decide(h.projection(), facts(limits=Limits(max_cost_usd_per_todo=2.0)))
    blocks = [c for c in out if isinstance(c, cmd.BlockTodo)]
    assert [c.todo_id for c in blocks] == ["1"]
    assert blocks[0].reason == "its agents cost $2.50, [agent] max_cost_usd_per_todo is $2.00"
    assert started(out) == ["2"]  # the run goes on


def test_a_rejected_todo_under_its_cap_is_retried() -> None:
    h = rejected(paid(two_todos(), "1", "1.1", 1, cost=1.5), "1", "1.v1")
    out = continuous.decide(h.projection(), facts(limits=Limits(max_cost_usd_per_todo=2.0)))
    assert started(out) == ["1", "2"]
    assert not any(isinstance(c, cmd.BlockTodo) for c in out)


def test_a_persons_retry_of_a_todo_over_its_cap_gets_one_more_attempt() -> None:
    h = rejected(paid(two_todos(), "1", "1.1", 1, cost=2.5), "1", "1.v1")
    h.add(
        ev.todo_stream("1"),
        ev.TodoBlocked(todo_id="1", reason="over", action=""),
        ev.TodoRetryScheduled(todo_id="1", next_attempt=3, reason="retry requested", by="person"),
    )
    out = continuous.decide(h.projection(), facts(limits=Limits(max_cost_usd_per_todo=2.0)))
    assert "1" in started(out)


# --- the barrier policy --------------------------------------------------------------------------


def barrier_batch(ids: tuple[str, ...]) -> History:
    """Phase 1's batch 1.1 green and started with ``ids`` (planned)."""
    h = History()
    for t in ids:
        h.todo(t)
    h.plan({1: [list(ids)]}).start_phase(1)
    h.add(
        ev.batch_stream("1.1"),
        ev.BatchVerifyRun(key="1.1", run=0, todo_ids=(), passed=True, baseline=True, sha=BASE),
    )
    for t in ids:
        h.add(ev.todo_stream(t), ev.TodoPlanned(todo_id=t, batch="1.1", phase=1))
    return h.add(ev.batch_stream("1.1"), ev.BatchStarted(key="1.1", base_sha=BASE, todo_ids=ids))


def test_barrier_starts_no_agent_of_the_batch_once_a_budget_is_reached() -> None:
    h = barrier_batch(("1", "2")).running("1", "1.1", 1, plan=False)
    minutes = Limits(max_agent_minutes=1)
    out = barrier.decide(h.projection(), facts(limits=minutes, running_seconds=90))
    assert started(out) == []
    assert (
        cmd.PutBack(
            todo_id="2",
            reason="not started: budget (stopped by [batchd] max_agent_minutes: 1.50 of 1 agent minutes)",
        )
        in out
    )
    assert started(barrier.decide(h.projection(), facts(running_seconds=90))) == ["2"]


def test_barrier_verifies_what_finished_once_the_rest_is_put_back_for_the_budget() -> None:
    h = paid(barrier_batch(("1", "2")), "1", "1.1", 1, cost=6.0, plan=False)
    first = barrier.decide(h.projection(), facts(limits=COST_5))
    assert [type(c) for c in first] == [cmd.RecordBudget, cmd.PutBack]
    reason = "not started: budget"
    h.add(
        ev.todo_stream("2"),
        ev.TodoBlocked(todo_id="2", reason=reason, action=""),
        ev.TodoRetryScheduled(todo_id="2", next_attempt=1, reason=reason),
    )
    h.add(ev.RUN_STREAM, ev.RunBudgetReached(budget="max_cost_usd", limit=5.0, used=6.0))
    out = barrier.decide(h.projection(), facts(limits=COST_5))
    assert out == [cmd.VerifyBatch(key="1.1", base_sha=BASE, candidates=("1",))]


def test_barrier_starts_a_batch_with_nothing_and_no_baseline_while_a_budget_is_reached() -> None:
    h = History().todo("1").plan({1: [["1"]]}).start_phase(1)
    out = barrier.decide(h.projection(), facts(limits=Limits(max_agent_minutes=1), running_seconds=60))
    assert out[-1] == cmd.StartBatch(key="1.1", phase=1, base_sha=BASE, todo_ids=())


def test_barrier_plans_no_retry_batch_while_a_budget_is_reached() -> None:
    h = barrier_batch(("1",))
    paid(h, "1", "1.1", 1, cost=6.0, plan=False)
    rejected(h, "1", "1.1")
    h.add(
        ev.batch_stream("1.1"),
        ev.BatchVerifying(key="1.1", base_sha=BASE, candidates=("1",)),
        ev.BatchVerified(
            key="1.1", head_sha=BASE, accepted=(), rejected=("1",), conflicted=(), failed=(), runs=1
        ),
        ev.BatchDone(key="1.1"),
    )
    assert any(isinstance(c, cmd.PlanRetryBatch) for c in barrier.decide(h.projection(), facts()))
    out = barrier.decide(h.projection(), facts(limits=COST_5))
    assert not any(isinstance(c, cmd.PlanRetryBatch) for c in out)
    assert any(isinstance(c, cmd.SkipPhase) for c in out)


def test_barrier_blocks_a_retry_over_its_cost_cap() -> None:
    h = barrier_batch(("1",))
    paid(h, "1", "1.1", 1, cost=3.0, plan=False)
    rejected(h, "1", "1.1")
    h.add(
        ev.batch_stream("1.1"),
        ev.BatchVerifying(key="1.1", base_sha=BASE, candidates=("1",)),
        ev.BatchVerified(
            key="1.1", head_sha=BASE, accepted=(), rejected=("1",), conflicted=(), failed=(), runs=1
        ),
        ev.BatchDone(key="1.1"),
    )
    out = barrier.decide(h.projection(), facts(limits=Limits(max_cost_usd_per_todo=3.0)))
    assert [type(c) for c in out] == [cmd.BlockTodo]


# --- the verdict ---------------------------------------------------------------------------------


def test_the_verdict_lists_todos_the_budget_kept_waiting_and_names_the_budget() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=5.2)
    hit = Reached(budget="max_cost_usd", limit=5.0, used=5.2)
    verdict = compute_verdict(h.projection(), checks_green=True, detail="", hit=hit)
    assert not verdict.success
    assert ("2", "not started: budget") in verdict.not_complete
    assert verdict.detail == "stopped by [batchd] max_cost_usd: $5.20 of $5.00"


def test_the_verdict_without_a_budget_says_nothing_of_one() -> None:
    h = paid(two_todos(), "1", "1.1", 1, cost=5.2)
    verdict = compute_verdict(h.projection(), checks_green=True, detail="")
    assert ("2", "ready") in verdict.not_complete
    assert verdict.detail == ""
