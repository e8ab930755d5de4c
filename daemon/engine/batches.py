"""A batch's jobs and verdicts, for every policy: its baseline, its verification in the pool, and
every todo's fate decided in one transaction (accepted, rejected, conflicted, retried or blocked).

Every check runs under the flake policy of the log so far (:func:`flake_policy`: the measured rates,
and the tests whose failures blame nobody), and every verify run's record says how each command
fared on its tree (:func:`verify_run`): what the flake model learns from on the next fold."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import structlog

from daemon.engine import phases, retrytext
from daemon.engine.flaketext import broke_text
from daemon.engine.runner import Daemon
from daemon.engine.verdict import EXHAUSTED
from daemon.exceptions import BatchdError
from daemon.intake.todofile import id_order
from daemon.world import safefs
from daemon.world.agents import repair_text
from daemon.world.checks import CheckResult, CheckRunner, FlakePolicy
from daemon.world.verify import (
    BatchVerdict,
    Candidate,
    Conflict,
    Rejection,
    SetupFailed,
    VerifyRun,
    check_baseline,
    verify_batch,
)
from statemachine import events as ev
from statemachine.flakes import command_key
from statemachine.tables import TodoState
from statemachine.views import BatchView, TodoView
from store import Append

log = structlog.get_logger(__name__)


# --- batch lifecycle ------------------------------------------------------------------------------------


def baseline(d: Daemon, batch: BatchView, base: str) -> None:
    key = f"baseline-{batch.key}"
    if d.has_job(key):
        return
    # A base red on named tests goes on only when asked to (see [verify] red_base).
    runner = check_runner(d, batch, base=d.config.verify.red_base == "continue")

    def work() -> CheckResult:
        return check_baseline(phases.ensure_verify_worktree(d, base), base, runner)

    def done(result: CheckResult) -> None:
        run_event = verify_run(batch.key, 0, (), result, baseline=True, sha=base)
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


def check_runner(d: Daemon, batch: BatchView | None = None, *, base: bool = False) -> CheckRunner:
    """The verify commands as ``batch`` is checked (None: the final check, a push's re-check), with
    the flake policy of the log so far (see :func:`flake_policy`); ``base``: its baseline."""
    policy = flake_policy(d, batch, base=base)
    return CheckRunner(
        d.config.verify.commands,
        timeout=d.config.verify.timeout,
        retries=d.config.verify.retries,
        sandbox=d.verify_sandbox,
        readable=[d.root],
        setup=d.config.verify.setup,
        dependencies_from=d.root,
        policy=policy,
        # Re-runs at once need copies of the tree; one at a time they run in the verify worktree.
        spares=phases.spare_trees(d) if policy.parallel > 1 else None,
    )


def flake_policy(d: Daemon, batch: BatchView | None, *, base: bool = False) -> FlakePolicy:
    """How red runs are confirmed now: each command's rate as measured from the log (the prior until
    then), and the tests whose failures blame nobody: quarantined ones and those that failed on this
    batch's base in its baseline runs (a failure the base has too is not the candidates'), at once;
    those red on the newest verified head (``known_red``: its baseline or its accepting run saw them
    fail), once a re-run confirms them (``FlakePolicy.red_on_head``). ``base``: the baseline itself,
    where tests a complete report names in every confirming run are red on the base (recorded, not
    a reason to stop: see ``FlakePolicy.base``)."""
    v = d.config.verify
    excused = set(d.proj.flakes.quarantined())
    # Only failures seen on the base this batch is verified on: a batch moved onto a newer head that
    # had no baseline of its own does not excuse what an older base failed.
    if batch is not None and batch.base_failures_sha == batch.base_sha:
        excused |= set(batch.base_failures)
    return FlakePolicy(
        rates=d.proj.flakes.rates(v.flake_rate),
        trials={key: c.trials for key, c in d.proj.flakes.commands.items()},
        prior=v.flake_rate,
        false_blame=v.false_blame,
        max_reruns=v.retries,
        excused=frozenset(excused),
        # Red on the head may be a flake that hit its run: excused once confirmed (FlakePolicy).
        red_on_head=frozenset(d.proj.known_red) - excused,
        junit=v.junit,
        parallel=v.parallel,
        base=base,
    )


def carried_red(verdict: BatchVerdict) -> tuple[tuple[str, str], ...]:
    """The tests failing on the verdict's new head: those its accepting run showed red in every run,
    and those it excused (quarantined, red or flaky on the base). A todo built on that head is not
    to blame for them: on the next trees they excuse a run only once it is confirmed red
    (``FlakePolicy.red_on_head``), so one that merely flaked is seen to pass and drops out, while
    one a change really broke is blamed on nobody after it (the change before was excused for it)."""
    return tuple(dict.fromkeys((*verdict.known_red, *verdict.head_excused)))


def verify_run(
    key: str,
    run: int,
    todo_ids: Sequence[str],
    result: CheckResult,
    *,
    baseline: bool = False,
    sha: str = "",
) -> ev.BatchVerifyRun:
    """A verify run's record, with how each command fared on the tree (what the flake model learns
    from): its runs and red runs, whether a red run was a flake, what confirmed a red, and the tests."""
    tries = tuple((command_key(t.command), t.runs, t.reds) for t in result.tries)
    return ev.BatchVerifyRun(
        key=key,
        run=run,
        todo_ids=tuple(todo_ids),
        passed=result.passed,
        command=tuple(result.failed_command or ()),
        duration=round(result.duration, 3),
        baseline=baseline,
        sha=sha,
        tries=tries,
        flaked=result.flaky,
        confirmed=result.confirmed,
        failed_tests=result.failed_tests,
        flaky_tests=tuple((command_key(t.command), test) for t in result.tries for test in t.flaky_tests),
        excused=tuple((command_key(t.command), test) for t in result.tries for test in t.excused),
        # The failing command's reading when red, else the last one read (a flake's red run).
        # How the failing command's output was read (a red tree), else the last command that was read.
        evidence=(result.tries[-1].evidence if not result.passed and result.tries else "")
        or next((t.evidence for t in reversed(result.tries) if t.evidence), ""),
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
    runner = check_runner(d, batch)
    base = batch.base_sha
    counter = [batch.runs]

    def on_run(run: VerifyRun) -> None:
        counter[0] += 1
        event = verify_run(batch.key, counter[0], run.todo_ids, run.result)
        d.inbox.put([(ev.batch_stream(batch.key), [event])])

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
    for todo in sorted(members, key=lambda t: id_order(t.todo_id)):
        stream = ev.todo_stream(todo.todo_id)
        events: list[object] = []
        if todo.state == TodoState.AGENT_FAILED:
            failed.append(todo.todo_id)
            events += after_failure(d, todo)
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
                        resolved=tuple(verdict.resolved.get(todo.todo_id, ())),
                    )
                )
            elif todo.todo_id in verdict.rejected:
                rejected.append(todo.todo_id)
                events += rejection(d, todo, batch.key, verdict.rejected[todo.todo_id])
            elif todo.todo_id in verdict.conflicted:
                conflicted.append(todo.todo_id)
                events += conflict(d, todo, batch.key, verdict.conflicted[todo.todo_id])
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
                    known_red=carried_red(verdict) if verdict is not None else (),
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


def rejection(d: Daemon, todo: TodoView, batch: str, rej: Rejection) -> list[object]:
    """A rejected todo's record, then its repair attempt (or its block). With ``[agent] resume`` the
    repair starts from its own change, rebased onto the new head, and continues its agent's session:
    it fixes what it did instead of doing it again."""
    max_attempts = d.config.batchd.max_attempts
    command = tuple(rej.command or ())
    keep_verify_output(d, todo.todo_id, todo.attempt, command, rej)
    reason = rej.reason or broke_text(command, rej.confirmed, rej.failed_tests)
    repairing = d.config.verify.repair
    # attempts_used does not count this rejection yet: it is recorded in this same transaction.
    retried = repairing and todo.attempts_used + 1 < max_attempts
    events: list[object] = [
        ev.TodoRejected(
            todo_id=todo.todo_id,
            batch=batch,
            attempt=todo.attempt,
            command=command,
            output_tail=rej.output_tail[-3000:],
            files_reverted=tuple(rej.files),
            action="its change was left out; it is retried with the failure in its prompt"
            if retried
            else "fix by hand or `batchd retry`",
            reason=reason,
            confirmed=rej.confirmed,
            failed_tests=rej.failed_tests,
        )
    ]
    repair = ""
    carry = session = ""
    if repairing:
        repair = repair_text(command, rej.output_tail[-2000:])
        if rej.reason:
            repair = f"Your change {rej.reason}. Make it pass the tests as they are.\n{repair}"
        if d.config.agent.resume and todo.agent_commit:
            carry, session = todo.agent_commit, todo.last_session_id
            repair = retrytext.own_change(repair)
    events += retry_or_block(
        d, todo, reason, repair, max_attempts, mode="repair", carry=carry, session_id=session
    )
    return events


def conflict(d: Daemon, todo: TodoView, batch: str, con: Conflict) -> list[object]:
    """A todo whose change lost a conflict: recorded, then tried again on the new head without
    spending one of its attempts (a conflict is nobody's fault), at most ``max_conflict_retries``
    times. ``conflicts = "merge"``: the next attempt resolves, starting from its own change rebased
    onto the new head with git's conflict markers; ``"redo"``/``"strict"``: it starts afresh."""
    mode = d.config.verify.conflicts
    resolution = "resolve" if mode == "merge" else mode
    files = tuple(con.files)
    winner = d.proj.shown(con.winner) if con.winner else ""
    events: list[object] = [
        ev.TodoConflicted(
            todo_id=todo.todo_id,
            batch=batch,
            attempt=todo.attempt,
            winner=con.winner,
            files=files,
            resolution=resolution,
        )
    ]
    against = f"#{winner}" if winner else "an earlier change"
    reason = f"lost a conflict with {against} on {', '.join(files)}"
    used = todo.conflicts_used + 1  # this conflict is recorded in the same transaction
    limit = d.config.batchd.max_conflict_retries
    if used > limit:
        events.append(
            ev.TodoBlocked(
                todo_id=todo.todo_id,
                reason=f"{EXHAUSTED} (conflicts {used}, max_conflict_retries = {limit}): {reason}",
                action=f"merge it by hand, raise [batchd] max_conflict_retries, or "
                f"`batchd retry {d.proj.shown(todo.todo_id)}` for another attempt",
            )
        )
        log.warning("conflict_retries_exhausted", todo_id=todo.todo_id, conflicts=used, limit=limit)
        return events
    retry = ev.TodoRetryScheduled(
        todo_id=todo.todo_id, next_attempt=todo.attempt + 1, reason=reason, mode="redo"
    )
    if resolution == "resolve" and todo.agent_commit:
        retry = dataclasses.replace(
            retry,
            mode="resolve",
            carry=todo.agent_commit,
            session_id=todo.last_session_id if d.config.agent.resume else "",
            repair=retrytext.resolve(winner, files),
        )
    events.append(retry)
    return events


def after_failure(d: Daemon, todo: TodoView) -> list[object]:
    """A failed agent's next attempt (or its block). An attempt that started from an earlier change
    (a resolve or a repair) that failed starts from that same change again: its own work was not
    collected, and the earlier work must not be lost with it."""
    reason = f"agent {todo.reason or 'failed'}"
    if not todo.carry:
        return retry_or_block(d, todo, reason, "", d.config.batchd.max_attempts, mode="redo")
    repair = retrytext.failed_again(todo.reason or "failed", todo.repair)
    return retry_or_block(
        d,
        todo,
        reason,
        repair,
        d.config.batchd.max_attempts,
        mode=todo.retry_mode or "repair",
        carry=todo.carry,
        session_id=todo.last_session_id if d.config.agent.resume else "",
    )


def retry_or_block(
    d: Daemon,
    todo: TodoView,
    reason: str,
    repair: str,
    max_attempts: int,
    *,
    mode: str = "redo",
    carry: str = "",
    session_id: str = "",
) -> list[object]:
    """The next attempt of a failed or rejected todo (``mode``, and what it starts from), or its
    block once ``max_attempts`` are used."""
    # attempts_used already counts an agent failure (its event is applied); a rejection is being
    # recorded in this same transaction, so it is one more.
    used = todo.attempts_used + (0 if todo.state == TodoState.AGENT_FAILED else 1)
    if used < max_attempts:
        return [
            ev.TodoRetryScheduled(
                todo_id=todo.todo_id,
                next_attempt=todo.attempt + 1,
                reason=reason,
                repair=repair,
                mode=mode,
                carry=carry,
                session_id=session_id,
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
