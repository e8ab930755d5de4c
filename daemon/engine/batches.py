"""A batch's jobs and verdicts, for every policy: its baseline, its verification in the pool, and
every todo's fate decided in one transaction (accepted, rejected, conflicted, retried or blocked)."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from daemon.engine import phases
from daemon.engine.runner import Daemon
from daemon.engine.verdict import EXHAUSTED
from daemon.exceptions import BatchdError
from daemon.intake.todofile import id_order
from daemon.world import safefs
from daemon.world.agents import repair_text
from daemon.world.checks import CheckResult, CheckRunner
from daemon.world.verify import (
    BatchVerdict,
    Candidate,
    Rejection,
    SetupFailed,
    VerifyRun,
    check_baseline,
    verify_batch,
)
from statemachine import events as ev
from statemachine.tables import TodoState
from statemachine.views import BatchView, TodoView
from store import Append

log = structlog.get_logger(__name__)


# --- batch lifecycle ------------------------------------------------------------------------------------


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
    if isinstance(error, SetupFailed):  # the machine's fault, not a todo's: said as it is
        command, tail = error.command, f"{error.message}\n{error.output_tail}"[-3000:]
    else:
        command, tail = ("batchd",), f"{type(error).__name__}: {error}"
    paused = ev.BatchPaused(key=key, base_sha=base, command=command, output_tail=tail)
    d.emit_one(ev.batch_stream(key), paused)


def check_runner(d: Daemon) -> CheckRunner:
    return CheckRunner(
        d.config.verify.commands,
        timeout=d.config.verify.timeout,
        retries=d.config.verify.retries,
        sandbox=d.verify_sandbox,
        readable=[d.root],
        setup=d.config.verify.setup,
        dependencies_from=d.root,
    )


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
                keep_verify_output(d, todo.todo_id, todo.attempt, command, rej)
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
                todo_id=todo.todo_id,
                next_attempt=todo.attempt + 1,
                reason=reason,
                repair=repair,
                # glue (helper "resume"; helper "conflicts" owns this): a repair continues the session
                session_id=todo.last_session_id if repair and d.config.agent.resume else "",
            )
        ]
    return [
        ev.TodoBlocked(
            todo_id=todo.todo_id,
            reason=f"{EXHAUSTED} ({used}/{max_attempts}): {reason}",
            action=f"fix by hand, or `batchd retry {d.proj.shown(todo.todo_id)}` for another attempt",
        )
    ]


def keep_verify_output(
    d: Daemon, todo_id: str, attempt: int, command: tuple[str, ...], rej: Rejection
) -> None:
    """The whole output of the check that rejected the attempt, for `batchd logs ID --verify` (the
    event keeps only its end). Losing it costs a person the detail, never the run: a failed write
    is logged and the run goes on."""
    rel = d.ws.verify_log(todo_id, attempt).relative_to(d.root)
    text = f"$ {' '.join(command)}\n{rej.output}" + ("" if rej.output.endswith("\n") else "\n")
    try:
        safefs.write_text(d.root, rel, text + f"[exit {rej.returncode}]\n")
    except (OSError, BatchdError) as e:
        log.warning("verify_output_not_kept", todo_id=todo_id, attempt=attempt, error=str(e))
