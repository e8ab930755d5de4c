"""One batch: baseline, agents, verification, and every todo's fate decided in one transaction.

planned -> (baseline check if its base was never seen green) -> running (agents, at most
``max_parallel`` at once) -> verifying (the verifier in the pool) -> verified + done, with retries
or blocks recorded for the todos that failed, were rejected or lost a conflict.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from daemon.engine import executor, phases
from daemon.engine.runner import Daemon
from daemon.engine.state import accepted_in, dependency_verdict, green_shas, phase_head, phase_members
from daemon.intake.todofile import id_order
from daemon.world import gitops
from daemon.world.agents import repair_text
from daemon.world.checks import CheckResult, CheckRunner
from daemon.world.verify import BatchVerdict, Candidate, VerifyRun, check_baseline, verify_batch
from statemachine import events as ev
from statemachine.tables import BatchState, RunState, TodoState
from statemachine.views import BatchView, PhaseView, TodoView
from store import Append

log = structlog.get_logger(__name__)


# --- batch lifecycle ------------------------------------------------------------------------------------


def advance_batch(d: Daemon, phase: PhaseView, batch: BatchView) -> None:
    if batch.state == BatchState.PLANNED:
        start_batch(d, phase, batch)
    elif batch.state == BatchState.RUNNING:
        run_batch(d, batch)
    elif batch.state == BatchState.VERIFYING:
        verify(d, batch)
    elif batch.state == BatchState.VERIFIED:
        d.emit_one(ev.batch_stream(batch.key), ev.BatchDone(key=batch.key))
    elif batch.state == BatchState.PAUSED:
        rebase = rebase_if_moved(d, phase)
        if rebase:  # a person committed (a fix?): try again from there, no `batchd resume` needed
            d.emit(*rebase, (ev.batch_stream(batch.key), [ev.BatchResumed(key=batch.key, by="daemon")]))


def rebase_if_moved(d: Daemon, phase: PhaseView) -> list[Append | tuple[str, Sequence[object]]]:
    """The phase re-based on the branch's head when that moved on from the phase's base (a person's
    commit on top) before the phase accepted anything; [] otherwise. Once a change is accepted the
    phase stays on its base: its commit must be the tree that was verified."""
    if accepted_in(d.proj, phase):
        return []
    head = gitops.rev_parse(d.root, d.config.batchd.branch)
    if head == phase.base_sha or not gitops.is_ancestor(d.root, phase.base_sha, head):
        return []
    log.info("phase_rebased", phase=phase.number, base=head, previous=phase.base_sha)
    return [
        (
            ev.phase_stream(phase.number),
            [ev.PhaseRebased(number=phase.number, base_sha=head, previous=phase.base_sha)],
        )
    ]


def start_batch(d: Daemon, phase: PhaseView, batch: BatchView) -> None:
    rebase = rebase_if_moved(d, phase)
    if rebase:
        d.emit(*rebase)  # the next step starts the batch from the new base
        return
    base = phase_head(d.proj, phase)
    if base not in green_shas(d.proj):
        baseline(d, batch, base)
        return
    to_run: list[str] = []
    appends: list[Append | tuple[str, Sequence[object]]] = []
    members = set(phase_members(d.proj, phase))
    for todo_id in batch.todo_ids:
        todo = d.proj.todos.get(todo_id)
        if todo is None or todo.state != TodoState.READY:
            continue  # not ready (pending, invalid, missing, done): shown in the status file
        verdict = dependency_verdict(d.proj, todo, members)
        if verdict == "ok":
            to_run.append(todo_id)
        elif verdict != "wait":
            appends.append(
                (
                    ev.todo_stream(todo_id),
                    [
                        ev.TodoBlocked(
                            todo_id=todo_id,
                            reason=verdict,
                            action=f"fix the dependency, then `batchd retry {todo_id}`",
                        )
                    ],
                )
            )
    for todo_id in to_run:
        appends.append(
            (ev.todo_stream(todo_id), [ev.TodoPlanned(todo_id=todo_id, batch=batch.key, phase=phase.number)])
        )
    appends.append(
        (ev.batch_stream(batch.key), [ev.BatchStarted(key=batch.key, base_sha=base, todo_ids=tuple(to_run))])
    )
    d.emit(*appends)


def baseline(d: Daemon, batch: BatchView, base: str) -> None:
    key = f"baseline-{batch.key}"
    if d.has_job(key):
        return
    runner = check_runner(d)

    def work() -> CheckResult:
        return check_baseline(phases.ensure_verify_worktree(d, base), base, runner)

    def done(result: CheckResult) -> None:
        run_event = ev.BatchVerifyRun(
            key=batch.key,
            run=0,
            todo_ids=(),
            passed=result.passed,
            command=tuple(result.failed_command or ()),
            duration=round(result.duration, 3),
            baseline=True,
            sha=base,
        )
        events: list[object] = [run_event]
        if not result.passed:
            events.append(
                ev.BatchPaused(
                    key=batch.key,
                    base_sha=base,
                    command=tuple(result.failed_command or ()),
                    output_tail=result.output_tail[-3000:],
                )
            )
            log.error("baseline_red", batch=batch.key, command=result.failed_command)
        d.emit((ev.batch_stream(batch.key), events))

    d.submit(key, work, done, lambda e: pause_on_error(d, batch.key, base, e))


def pause_on_error(d: Daemon, key: str, base: str, error: BaseException) -> None:
    d.emit_one(
        ev.batch_stream(key),
        ev.BatchPaused(
            key=key, base_sha=base, command=("batchd",), output_tail=f"{type(error).__name__}: {error}"
        ),
    )


def check_runner(d: Daemon) -> CheckRunner:
    return CheckRunner(
        d.config.verify.commands,
        timeout=d.config.verify.timeout,
        retries=d.config.verify.retries,
        sandbox=d.verify_sandbox,
        readable=[d.root],
    )


def run_batch(d: Daemon, batch: BatchView) -> None:
    members = [t for t in d.proj.todos.values() if t.batch == batch.key]
    waiting = sorted((t.todo_id for t in members if t.state == TodoState.PLANNED), key=id_order)
    if not d.stopping and d.proj.run.state == RunState.RUNNING:
        for todo_id in waiting:
            if executor.running_count(d) >= d.config.batchd.max_parallel:
                break
            if executor.settling(d, todo_id):
                continue
            executor.launch(d, todo_id, batch.key, batch.base_sha)
    if any(t.state in (TodoState.PLANNED, TodoState.RUNNING) for t in members):
        return
    done = [t.todo_id for t in members if t.state == TodoState.AGENT_DONE]
    # Todos already verifying belong in again: a batch paused by a failed verification and then
    # resumed starts over with the same candidates, or their work would be stranded.
    again = [t.todo_id for t in members if t.state == TodoState.VERIFYING]
    candidates = sorted(done + again, key=id_order)
    if not candidates:
        finish_batch(d, batch, None)
        return
    d.emit(
        *[(ev.todo_stream(t), [ev.TodoVerifying(todo_id=t, batch=batch.key)]) for t in done],
        (
            ev.batch_stream(batch.key),
            [ev.BatchVerifying(key=batch.key, base_sha=batch.base_sha, candidates=tuple(candidates))],
        ),
    )
    verify(d, d.proj.batches[batch.key])


def verify(d: Daemon, batch: BatchView) -> None:
    key = f"verify-{batch.key}"
    if d.has_job(key):
        return
    members = [t for t in d.proj.todos.values() if t.batch == batch.key and t.state == TodoState.VERIFYING]
    candidates = [
        Candidate(todo_id=t.todo_id, sha=t.agent_commit, files=tuple(t.agent_files), test_edits=t.test_edits)
        for t in members
    ]
    runner = check_runner(d)
    base = batch.base_sha
    counter = [batch.runs]

    def on_run(run: VerifyRun) -> None:
        counter[0] += 1
        result = run.result
        d.inbox.put(
            [
                (
                    ev.batch_stream(batch.key),
                    [
                        ev.BatchVerifyRun(
                            key=batch.key,
                            run=counter[0],
                            todo_ids=tuple(run.todo_ids),
                            passed=result.passed,
                            command=tuple(result.failed_command or ()),
                            duration=round(result.duration, 3),
                        )
                    ],
                )
            ]
        )

    def work() -> BatchVerdict:
        return verify_batch(
            phases.ensure_verify_worktree(d, base),
            base,
            candidates,
            runner,
            strategy=d.config.verify.strategy,
            conflicts=d.config.verify.conflicts,
            integrity=d.config.verify.test_integrity,
            on_run=on_run,
        )

    d.submit(
        key,
        work,
        lambda v: finish_batch(d, d.proj.batches[batch.key], v),
        lambda e: pause_on_error(d, batch.key, base, e),
    )


def finish_batch(d: Daemon, batch: BatchView, verdict: BatchVerdict | None) -> None:
    """Record every todo's fate and the batch's verdict in one transaction, with retries decided."""
    d.drain_inbox()  # verify-run progress events first, so run numbers stay in order
    batch = d.proj.batches[batch.key]
    members = [t for t in d.proj.todos.values() if t.batch == batch.key]
    appends: list[Append | tuple[str, Sequence[object]]] = []
    accepted: list[str] = []
    rejected: list[str] = []
    conflicted: list[str] = []
    failed: list[str] = []
    max_attempts = d.config.batchd.max_attempts
    for todo in sorted(members, key=lambda t: id_order(t.todo_id)):
        stream = ev.todo_stream(todo.todo_id)
        events: list[object] = []
        if todo.state == TodoState.AGENT_FAILED:
            failed.append(todo.todo_id)
            events += retry_or_block(d, todo, f"agent {todo.reason or 'failed'}", "", max_attempts)
        elif todo.state == TodoState.VERIFYING and verdict is not None:
            accepted_shas = dict(verdict.accepted)
            if todo.todo_id in accepted_shas:
                accepted.append(todo.todo_id)
                events.append(
                    ev.TodoAccepted(
                        todo_id=todo.todo_id,
                        batch=batch.key,
                        commit=accepted_shas[todo.todo_id],
                        review=verdict.review.get(todo.todo_id, ""),
                    )
                )
            elif todo.todo_id in verdict.rejected:
                rej = verdict.rejected[todo.todo_id]
                rejected.append(todo.todo_id)
                command = tuple(rej.command or ())
                reason = rej.reason or f"broke `{' '.join(command)}`"
                events.append(
                    ev.TodoRejected(
                        todo_id=todo.todo_id,
                        batch=batch.key,
                        attempt=todo.attempt,
                        command=command,
                        output_tail=rej.output_tail[-3000:],
                        files_reverted=tuple(rej.files),
                        action="its change was left out; it is retried with the failure in its prompt"
                        if d.config.verify.repair and todo.attempt < max_attempts
                        else "fix by hand or `batchd retry`",
                        reason=rej.reason,
                    )
                )
                repair = ""
                if d.config.verify.repair:
                    repair = repair_text(command, rej.output_tail[-2000:])
                    if rej.reason:
                        repair = f"Your change {rej.reason}. Make it pass the tests as they are.\n{repair}"
                events += retry_or_block(d, todo, reason, repair, max_attempts)
            elif todo.todo_id in verdict.conflicted:
                con = verdict.conflicted[todo.todo_id]
                conflicted.append(todo.todo_id)
                events.append(
                    ev.TodoConflicted(
                        todo_id=todo.todo_id,
                        batch=batch.key,
                        attempt=todo.attempt,
                        winner=con.winner,
                        files=tuple(con.files),
                    )
                )
                events += retry_or_block(
                    d, todo, f"lost a conflict with #{con.winner} on {', '.join(con.files)}", "", max_attempts
                )
        if events:
            appends.append((stream, events))
    head = verdict.head_sha if verdict is not None else batch.base_sha
    runs = verdict.runs if verdict is not None else 0
    appends.append(
        (
            ev.batch_stream(batch.key),
            [
                ev.BatchVerified(
                    key=batch.key,
                    head_sha=head,
                    accepted=tuple(accepted),
                    rejected=tuple(rejected),
                    conflicted=tuple(conflicted),
                    failed=tuple(failed),
                    runs=runs,
                ),
                ev.BatchDone(key=batch.key),
            ],
        )
    )
    d.emit(*appends)
    log.info(
        "batch_verified",
        batch=batch.key,
        accepted=accepted,
        rejected=rejected,
        conflicted=conflicted,
        failed=failed,
        runs=runs,
    )


def retry_or_block(d: Daemon, todo: TodoView, reason: str, repair: str, max_attempts: int) -> list[object]:
    # attempts_used already counts an agent failure (its event is applied); a rejection or a
    # conflict is being recorded in this same transaction, so it is one more.
    used = todo.attempts_used + (0 if todo.state == TodoState.AGENT_FAILED else 1)
    if used < max_attempts:
        return [
            ev.TodoRetryScheduled(
                todo_id=todo.todo_id, next_attempt=todo.attempt + 1, reason=reason, repair=repair
            )
        ]
    return [
        ev.TodoBlocked(
            todo_id=todo.todo_id,
            reason=f"attempts exhausted ({used}/{max_attempts}): {reason}",
            action=f"fix by hand, or `batchd retry {todo.todo_id}` for another attempt",
        )
    ]
