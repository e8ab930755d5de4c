"""The run's verdict (``run.completed``): what became of every todo the run counts, and of the push.

Recorded once the final check is done. Each todo that is not complete is named with what it is
(blocked, rejected, invalid, cancelled, pending, or ``no todo file`` for a planned id no file has);
a todo whose file a person deleted or renamed away is listed as removed and no longer counts.

A run budget that kept todos from starting (:mod:`daemon.engine.budget`) makes the verdict a
failure that says so: those todos are listed as ``not started: budget`` and the detail names the
budget ("stopped by [batchd] max_cost_usd: $5.20 of $5.00"). Todos that arrive after such a verdict
while the budget still holds are added to it (an amendment, as below), so a later ``run --once``
does not end on an old success as if they were done.

Only the latest push counts: a later phase's push carries the earlier phases' commits. When a phase
commit is still to come after the verdict (the phase that carries the verdict in its status file),
its push decides: the verdict is recorded assuming it goes out, and amended (``run.reopened`` +
``run.completed`` again) if it does not, or if a push the verdict counted as failed was superseded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from daemon.engine import budget
from daemon.engine.state import unplanned_ready
from daemon.intake.todofile import id_order
from statemachine import economy
from statemachine import events as ev
from statemachine.projection import Projection
from statemachine.tables import BatchState, PhaseState, RunState, TodoState
from statemachine.views import RunVerdict, TodoView

if TYPE_CHECKING:  # the status file's module uses this one, and the daemon's uses that
    from daemon.config import Config
    from daemon.engine.runner import Daemon

log = structlog.get_logger(__name__)

NO_FILE = "no todo file"
EXHAUSTED = "attempts exhausted"  # how batches.retry_or_block says a todo is blocked for good


def counted_ids(proj: Projection) -> set[str]:
    """Every todo a batch was planned with (a pending one too) and every todo that was queued."""
    planned = {t for b in proj.batches.values() for t in (*b.planned_ids, *b.todo_ids)}
    return planned | {
        t.todo_id for t in proj.todos.values() if t.state not in (TodoState.PENDING, TodoState.NEW)
    }


def budget_limits(config: Config) -> budget.Limits:
    """The budgets of the configuration in force (a reload changes them: see :mod:`budget`)."""
    return budget.Limits(
        max_cost_usd=config.batchd.max_cost_usd,
        max_agent_minutes=config.batchd.max_agent_minutes,
        max_cost_usd_per_todo=config.agent.max_cost_usd_per_todo,
    )


def running_seconds(d: Daemon) -> float:
    """How long the run's agents in flight have run, added up: a process's own clock, or for one
    being prepared or collected (no process in hand, its end not recorded yet) the time since its
    start was recorded, so a budget never looks further from reached than it is."""
    now = datetime.now(UTC)
    total = 0.0
    for todo in d.proj.todos.values():
        if todo.state != TodoState.RUNNING:
            continue
        proc = d.agents.get(todo.todo_id)
        if proc is not None:
            total += proc.elapsed
        else:
            total += economy.running_seconds(todo, now)
    return total


def budget_hit(d: Daemon) -> budget.Reached | None:
    """The run budget that keeps new agents from starting now, if one is reached."""
    limits = budget_limits(d.config)
    if limits.max_cost_usd <= 0 and limits.max_agent_minutes <= 0:
        return None  # asked many times a tick: no clock read, no sum, when there is no run budget
    return budget.reached(d.proj, limits, running_seconds(d))


def kind_of(todo: TodoView, held: bool = False) -> str:
    """What a todo that is not complete is: its state, or for one blocked when its attempts ran out,
    how they ended (``rejected``: verification kept its change out; ``agent failed``; ``conflicted``);
    ``not started: budget`` for one a run budget keeps waiting (``held``)."""
    if held and todo.state in budget.WAITING:
        return budget.NOT_STARTED
    if todo.state == TodoState.BLOCKED and todo.history and todo.reason.startswith(EXHAUSTED):
        return todo.history[-1].outcome.replace("_", " ")
    if todo.state == TodoState.BLOCKED and budget.CAP_KEY in todo.reason:
        return f"blocked: {budget.CAP_KEY}"
    return str(todo.state).replace("_", " ")


def with_budget(detail: str, stopped: str) -> str:
    """The verdict's detail with the budget that stopped the run first ("" adds nothing)."""
    if not stopped or stopped in detail:
        return detail
    return f"{stopped}; {detail}" if detail else stopped


def push_problem(proj: Projection) -> str:
    """Why the latest phase push did not go out ("" when it did, or nothing was pushed)."""
    ordered = sorted(proj.phases.values(), key=lambda p: p.number)
    pushes = [p for p in ordered if p.pushed_sha or p.push_failed_reason]
    if not pushes or pushes[-1].pushed_sha:
        return ""
    return f"phase {pushes[-1].number} was not pushed: {pushes[-1].push_failed_reason}"


def succeeded(proj: Projection, *, checks_green: bool, not_complete: Sequence[object], unpushed: str) -> bool:
    """The seed's criteria: checks green, every counted todo complete, every batch done, pushed."""
    batches_done = all(b.state == BatchState.DONE for b in proj.batches.values())
    return checks_green and not not_complete and batches_done and not unpushed


def compute_verdict(
    proj: Projection,
    *,
    checks_green: bool,
    detail: str,
    commit_to_come: bool = False,
    hit: budget.Reached | None = None,
) -> ev.RunCompleted:
    """The verdict now; ``commit_to_come``: a phase commit follows (its accepted todos count as
    complete, and its push decides the push part: see :func:`amend_verdict`); ``hit``: the run
    budget reached, which the todos still waiting for an agent are listed under."""
    complete: list[str] = []
    not_complete: list[tuple[str, str]] = []
    removed: list[str] = []
    for todo_id in sorted(counted_ids(proj), key=id_order):
        todo = proj.todos.get(todo_id)
        if todo is None:
            not_complete.append((todo_id, NO_FILE))
        elif todo.state == TodoState.COMPLETE or (commit_to_come and todo.state == TodoState.ACCEPTED):
            complete.append(todo_id)
        elif todo.problem == "removed":
            removed.append(todo_id)
        else:
            not_complete.append((todo_id, kind_of(todo, held=hit is not None)))
    unpushed = "" if commit_to_come else push_problem(proj)
    if hit is not None and any(kind == budget.NOT_STARTED for _, kind in not_complete):
        detail = with_budget(detail, hit.text())
    return ev.RunCompleted(
        success=succeeded(proj, checks_green=checks_green, not_complete=not_complete, unpushed=unpushed),
        checks_green=checks_green,
        complete=tuple(complete),
        not_complete=tuple(not_complete),
        removed=tuple(removed),
        detail=detail,
        unpushed=unpushed,
    )


def as_view(verdict: ev.RunCompleted) -> RunVerdict:
    return RunVerdict(
        verdict.success,
        verdict.checks_green,
        verdict.complete,
        verdict.not_complete,
        verdict.removed,
        verdict.detail,
        verdict.unpushed,
    )


def record_verdict(d: Daemon, *, checks_green: bool, detail: str, commit_to_come: bool = False) -> None:
    """``run.completed`` (see :func:`compute_verdict`)."""
    if d.proj.run.state != RunState.RUNNING:
        return
    verdict = compute_verdict(
        d.proj, checks_green=checks_green, detail=detail, commit_to_come=commit_to_come, hit=budget_hit(d)
    )
    d.emit_one(ev.RUN_STREAM, verdict)
    log.info(
        "run_completed",
        success=verdict.success,
        complete=len(verdict.complete),
        not_complete=dict(verdict.not_complete),
        removed=list(verdict.removed),
        unpushed=verdict.unpushed,
    )


def amend_verdict(d: Daemon) -> None:
    """A completed run's verdict as it now is, once every phase is done: the last push went out or
    failed after the verdict was recorded, or a person removed the file of a todo it counted (mid-run
    or between runs). Recorded as ``run.reopened`` + ``run.completed`` when it changed."""
    run = d.proj.run
    verdict = run.verdict
    if run.state != RunState.COMPLETED or verdict is None:
        return
    if any(p.state != PhaseState.DONE for p in d.proj.phases.values()):
        return
    unpushed = push_problem(d.proj)
    gone = {t for t, _ in verdict.not_complete if t in d.proj.todos and d.proj.todos[t].problem == "removed"}
    hit = budget_hit(d)
    listed = {t for t, _ in verdict.not_complete}
    # Dropped since, kept from starting by the budget (nothing plans them while it holds).
    held = [t for t in unplanned_ready(d.proj) if t not in listed] if hit is not None else []
    if unpushed == verdict.unpushed and not gone and not held:
        return
    not_complete = tuple(pair for pair in verdict.not_complete if pair[0] not in gone)
    not_complete += tuple((t, budget.NOT_STARTED) for t in sorted(held, key=id_order))
    detail = with_budget(verdict.detail, hit.text()) if held and hit is not None else verdict.detail
    amended = ev.RunCompleted(
        success=succeeded(
            d.proj, checks_green=verdict.checks_green, not_complete=not_complete, unpushed=unpushed
        ),
        checks_green=verdict.checks_green,
        complete=verdict.complete,
        not_complete=not_complete,
        removed=tuple(sorted({*verdict.removed, *gone}, key=id_order)),
        detail=detail,
        unpushed=unpushed,
    )
    if gone:
        why = f"the files of todos {', '.join(sorted(gone, key=id_order))} were removed"
    elif held:
        why = f"todos {', '.join(d.proj.shown(t) for t in held)} wait for the budget"
    else:
        why = "the last push failed" if unpushed else "the last push went out"
    d.emit_one(ev.RUN_STREAM, ev.RunReopened(reason=why), amended)
    log.info("run_verdict_amended", success=amended.success, unpushed=unpushed, reason=why)
