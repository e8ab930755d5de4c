"""The shell around the policies: observe the world, then carry out each command a policy returned.

Every command is carried out here and nowhere else, as intent event -> effect -> outcome event:
agents and verification run as jobs whose results come back as events on the main thread. A
command whose premise no longer holds when its turn comes (the todo was cancelled by a person a
moment ago, say) is skipped: the next decision sees the new state.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from daemon.engine import batches, dispatching, executor, phases, pushes, requests
from daemon.engine import commands as cmd
from daemon.engine.continuous import Facts
from daemon.engine.runner import Daemon
from daemon.engine.state import accepted_in, current_phase, phase_head
from daemon.engine.verdict import budget_limits, running_seconds
from daemon.world import gitops
from statemachine import events as ev
from statemachine.ids import id_order
from statemachine.tables import BatchState, PhaseState, TodoState
from statemachine.views import PhaseView
from store import Append

log = structlog.get_logger(__name__)


def observe(d: Daemon) -> Facts:
    """What the policy needs of the world now; git is asked only when the answer can matter."""
    proj = d.proj
    phase = current_phase(proj)
    head, moved_on = "", False
    if phase is not None and not phase.final and phase.state in (PhaseState.PENDING, PhaseState.RUNNING):
        if phase.state == PhaseState.PENDING or not accepted_in(proj, phase):
            head = gitops.rev_parse(d.root, d.config.batchd.branch)
        if head and phase.state == PhaseState.RUNNING and phase.base_sha and head != phase.base_sha:
            moved_on = gitops.is_ancestor(d.root, phase.base_sha, head)
    return Facts(
        max_parallel=dispatching.capacity(d),
        branch_head=head,
        moved_on=moved_on,
        busy=frozenset(d.jobs),
        settling=frozenset(t for t in proj.todos if executor.settling(d, t)),
        accepting=not d.stopping,
        limits=budget_limits(d.config),
        running_seconds=running_seconds(d),
    )


def execute(d: Daemon, commands: Sequence[cmd.Command]) -> None:
    """Carry out ``commands`` in order."""
    for command in commands:
        with d.step(getattr(command, "todo_id", ""), type(command).__name__):
            _one(d, command)


def _one(d: Daemon, c: cmd.Command) -> None:
    proj = d.proj
    match c:
        case cmd.StartPhase():
            d.emit_one(ev.phase_stream(c.number), ev.PhaseStarted(number=c.number, base_sha=c.base_sha))
        case cmd.RebasePhase():
            appends: list[Append | tuple[str, Sequence[object]]] = [
                (
                    ev.phase_stream(c.number),
                    [ev.PhaseRebased(number=c.number, base_sha=c.base_sha, previous=c.previous)],
                )
            ]
            if c.resume:
                appends.append((ev.batch_stream(c.resume), [ev.BatchResumed(key=c.resume, by="daemon")]))
            d.emit(*appends)
            log.info("phase_rebased", phase=c.number, base=c.base_sha, previous=c.previous)
        case cmd.StartAgent():
            todo = proj.todos.get(c.todo_id)
            if todo is None or todo.state not in (TodoState.READY, TodoState.PLANNED):
                return
            if todo.state == TodoState.READY:
                d.emit_one(
                    ev.todo_stream(c.todo_id), ev.TodoPlanned(todo_id=c.todo_id, batch=c.batch, phase=c.phase)
                )
            executor.launch(d, c.todo_id, c.batch, c.base_sha)
        case cmd.SettleFailure():
            todo = proj.todos.get(c.todo_id)
            if todo is not None and todo.state == TodoState.AGENT_FAILED:
                d.emit((ev.todo_stream(c.todo_id), batches.after_failure(d, todo)))
        case cmd.BlockTodo():
            if proj.may(ev.todo_stream(c.todo_id), "block"):
                d.emit_one(
                    ev.todo_stream(c.todo_id),
                    ev.TodoBlocked(todo_id=c.todo_id, reason=c.reason, action=c.action),
                )
        case cmd.RecordBudget():
            if proj.may(ev.RUN_STREAM, "budget"):
                d.emit_one(ev.RUN_STREAM, ev.RunBudgetReached(budget=c.budget, limit=c.limit, used=c.used))
                log.warning("run_budget_reached", budget=c.budget, limit=c.limit, used=round(c.used, 4))
        case cmd.PutBack():
            put_back(d, c)
        case cmd.OpenGroup():
            d.emit_one(ev.batch_stream(c.key), ev.BatchPlanned(key=c.key, phase=c.phase, todo_ids=()))
        case cmd.Baseline():
            batches.baseline(d, proj.batches[c.key], c.base_sha)
        case cmd.VerifyGroup():
            verify_group(d, c)
        case cmd.ResumeVerify():
            batches.verify(d, proj.batches[c.key])
        case cmd.CommitPhase():
            phase = proj.phases[c.number]
            d.emit(*close_batches(d, phase))
            phases.start_commit(d, d.proj.phases[c.number])
        case cmd.SkipPhase():
            phase = proj.phases[c.number]
            d.emit(
                *close_batches(d, phase),
                (ev.phase_stream(c.number), [ev.PhaseSkipped(number=c.number, reason=c.reason)]),
            )
            log.info("phase_skipped", phase=c.number, reason=c.reason)
        case cmd.MakeCommit():
            phases.commit(d, proj.phases[c.number])
        case cmd.Land():
            phases.land(d, proj.phases[c.number])
        case cmd.Push():
            pushes.push(d, proj.phases[c.number])
        case cmd.FinishPhase():
            phases.finish(d, proj.phases[c.number])
        case cmd.OpenRequest():
            requests.open_request(d, c)
        case cmd.StartBatch():
            d.emit(
                *[
                    (ev.todo_stream(t), [ev.TodoPlanned(todo_id=t, batch=c.key, phase=c.phase)])
                    for t in c.todo_ids
                ],
                (
                    ev.batch_stream(c.key),
                    [ev.BatchStarted(key=c.key, base_sha=c.base_sha, todo_ids=c.todo_ids)],
                ),
            )
        case cmd.VerifyBatch():
            fresh = [t for t in c.candidates if proj.todos[t].state == TodoState.AGENT_DONE]
            d.emit(
                *[(ev.todo_stream(t), [ev.TodoVerifying(todo_id=t, batch=c.key)]) for t in fresh],
                (
                    ev.batch_stream(c.key),
                    [ev.BatchVerifying(key=c.key, base_sha=c.base_sha, candidates=c.candidates)],
                ),
            )
            batches.verify(d, d.proj.batches[c.key])
        case cmd.FinishBatch():
            batches.finish_batch(d, proj.batches[c.key], None)
        case cmd.CloseBatch():
            d.emit_one(ev.batch_stream(c.key), ev.BatchDone(key=c.key))
        case cmd.PlanRetryBatch():
            d.emit_one(
                ev.batch_stream(c.key),
                ev.BatchPlanned(key=c.key, phase=c.phase, todo_ids=c.todo_ids, retry_of=c.retry_of),
            )


def put_back(d: Daemon, c: cmd.PutBack) -> None:
    """Planned -> ready, as the log can say it: blocked by the budget and at once scheduled again,
    the same attempt (nothing ran), with what the next attempt was to start from (a carried change,
    a session to resume, the repair text) kept. The two are one transaction."""
    todo = d.proj.todos.get(c.todo_id)
    if todo is None or todo.state != TodoState.PLANNED or executor.settling(d, c.todo_id):
        return
    shown = d.proj.shown(c.todo_id)
    d.emit(
        (
            ev.todo_stream(c.todo_id),
            [
                ev.TodoBlocked(
                    todo_id=c.todo_id, reason=c.reason, action=f"raise the budget, or `batchd cancel {shown}`"
                ),
                ev.TodoRetryScheduled(
                    todo_id=c.todo_id,
                    next_attempt=todo.attempt,
                    reason=c.reason,
                    repair=todo.repair,
                    carry=todo.carry,
                    session_id=todo.session_id,
                    mode=todo.retry_mode,
                ),
            ],
        )
    )
    log.info("todo_put_back", todo_id=c.todo_id, reason=c.reason)


def verify_group(d: Daemon, c: cmd.VerifyGroup) -> None:
    """The group takes its candidates and verifies them on its base, in one transaction (those it
    was verifying before a pause are taken again as they are)."""
    fresh = [t for t in c.candidates if d.proj.todos[t].state == TodoState.AGENT_DONE]
    again = [
        t
        for t in c.candidates
        if d.proj.todos[t].state == TodoState.VERIFYING and d.proj.todos[t].batch == c.key
    ]
    ready = sorted([*fresh, *again], key=id_order)
    if not ready:
        return
    d.emit(
        *[(ev.todo_stream(t), [ev.TodoVerifying(todo_id=t, batch=c.key)]) for t in fresh],
        (
            ev.batch_stream(c.key),
            [
                ev.BatchStarted(key=c.key, base_sha=c.base_sha, todo_ids=tuple(ready)),
                ev.BatchVerifying(key=c.key, base_sha=c.base_sha, candidates=tuple(ready)),
            ],
        ),
    )
    batches.verify(d, d.proj.batches[c.key])


def close_batches(d: Daemon, phase: PhaseView) -> list[Append | tuple[str, Sequence[object]]]:
    """The batches of a settled phase still open, marked done: the plan's (under the continuous policy
    their todos ran as slots came free and were verified in groups, which hold the verdicts) and a
    group opened for a baseline that nothing came to."""
    head = phase_head(d.proj, phase)
    out: list[Append | tuple[str, Sequence[object]]] = []
    for key in phase.batches:
        batch = d.proj.batches[key]
        if batch.state == BatchState.DONE:
            continue
        events: list[object] = []
        if batch.state == BatchState.PLANNED:
            ids = batch.planned_ids or batch.todo_ids
            events.append(ev.BatchStarted(key=key, base_sha=phase.base_sha, todo_ids=ids))
        if batch.state in (BatchState.PLANNED, BatchState.RUNNING):
            events.append(
                ev.BatchVerified(
                    key=key, head_sha=head, accepted=(), rejected=(), conflicted=(), failed=(), runs=0
                )
            )
        events.append(ev.BatchDone(key=key))
        out.append((ev.batch_stream(key), events))
    return out
