"""The coordinator's side of workers: hand an agent to one, watch its lease, take its outcome back.

An attempt goes to a worker when this daemon's own slots (``[batchd] local_slots``) are taken and a
live worker has a free one. ``todo.agent_started`` is written as for a local agent (with no argv:
the worker builds the command from its clone's configuration); a job pushes the base to the remote
(``refs/batchd/base/<run>/<n>``) and then ``agent.queued`` opens the claim (see
:mod:`statemachine.dispatch`). Each tick, for every claim whose todo still wants it:

- reported: a job fetches the worker's refs, checks that they hold what the report says, puts the
  change into a fresh workspace here and takes it through the same door (:func:`outcomes.collect_change`,
  under this repository's policy) as a local agent's, then records the outcome and releases the claim;
- claimed, with no append on its stream for a lease (timed by this process's clock, never by a
  worker's): ``agent.lease_expired`` at the version seen, with the todo's uncounted interruption,
  in one transaction. A worker's late renewal or report then meets a ConcurrencyError;
- given up by its worker (it stopped): the todo is interrupted, and runs again;
- queued for a lease while no worker is alive: released and interrupted (it may run here next).

A claim whose todo no longer wants it (cancelled, interrupted, started again) is released, so a
worker still running it stops.
"""

from __future__ import annotations

import base64
import contextlib
import threading

import structlog

from daemon.engine import outcomes, pruning
from daemon.engine.runner import Daemon
from daemon.exceptions import BatchdError, printable
from daemon.intake.todofile import MAX_TODO_BYTES
from daemon.world import agentresult, agentspace, exchange, rebase, safefs
from daemon.world.gitops import out
from statemachine import dispatch as dp
from statemachine import events as ev
from statemachine.tables import TodoState
from statemachine.views import TodoView
from store import Append
from store.exceptions import ConcurrencyError
from store.records import seconds_since

log = structlog.get_logger(__name__)

ACTIVE = frozenset({dp.QUEUED, dp.CLAIMED, dp.REPORTED, dp.EXPIRED})
HOLDING = frozenset({dp.QUEUED, dp.CLAIMED})  # the attempt takes a worker's slot
_BASE_PUSHES = threading.Lock()  # one push of a base at a time (the jobs run in the daemon's pool)


# --- what the scheduler asks ---------------------------------------------------------------------


def live_workers(d: Daemon) -> list[dp.WorkerView]:
    """Workers that are up and were heard from within a lease, or three of their heartbeats when
    those are further apart (timed by this process's clock, never by a worker's)."""
    now = d.clock()
    lease = d.config.batchd.lease_seconds
    return [
        w
        for w in d.proj.dispatch.workers.values()
        if w.state == "up"
        and now - _moved(d, dp.worker_stream(w.name), w.stream_version, now) <= max(lease, 3 * w.every)
    ]


def capacity(d: Daemon) -> int:
    """Agents at once: this daemon's own slots plus every live worker's, plus the attempts whose
    worker reported (their change is being taken here: the worker's slot is free again). Workers
    need a remote to exchange changes through: without one, ``max_parallel`` here alone."""
    if d.pinned is None:
        return d.config.batchd.max_parallel
    taking = sum(1 for t in _running(d) if _claim_state(d, t) == dp.REPORTED)
    return d.config.batchd.own_slots + sum(w.slots for w in live_workers(d)) + taking


def is_remote(d: Daemon, todo: TodoView) -> bool:
    """The todo's running attempt is (being) handed to a worker."""
    return todo.todo_id in d.queueing or _claim_state(d, todo) in ACTIVE


def wants_worker(d: Daemon) -> bool:
    """The next agent goes to a worker: this daemon's slots are taken and a worker has one free
    (a slot is a worker's from the attempt's hand-out to its report)."""
    if d.pinned is None:
        return False
    running = _running(d)
    remote = sum(1 for t in running if is_remote(d, t))
    if len(running) - remote < d.config.batchd.own_slots:
        return False
    out = sum(1 for t in running if t.todo_id in d.queueing or _claim_state(d, t) in HOLDING)
    return sum(w.slots for w in live_workers(d)) > out


def _running(d: Daemon) -> list[TodoView]:
    return [t for t in d.proj.todos.values() if t.state == TodoState.RUNNING]


def _claim_state(d: Daemon, todo: TodoView) -> str:
    """The state of the claim of the todo's running attempt ("" when it has none)."""
    claim = d.proj.dispatch.claims.get(todo.token)
    return claim.state if claim is not None and claim.todo_id == todo.todo_id else ""


def waiting(d: Daemon) -> str:
    """Why nothing can start, for the status: "" unless every agent is meant for a worker and none is up."""
    if d.pinned is not None and d.config.batchd.own_slots == 0 and not live_workers(d):
        return "local_slots = 0 and no worker is up: start one with `batchd worker`"
    return ""


def note_waiting(d: Daemon) -> None:
    """Say once in the daemon's log when nothing can start for want of a worker, and when one is back."""
    text = waiting(d)
    if text and not d.waiting_note:
        log.warning("waiting_for_workers", detail=text)
    elif d.waiting_note and not text:
        log.info("workers_up", workers=[w.name for w in live_workers(d)])
    d.waiting_note = text


# --- handing an attempt out ------------------------------------------------------------------------


def queue(d: Daemon, todo_id: str, failure_text: str) -> None:
    """Push the attempt's base for workers (a job), then open its claim with ``agent.queued``."""
    todo = d.proj.todos[todo_id]
    token, attempt, base = todo.token, todo.attempt, todo.base_sha
    pinned = d.pinned
    assert pinned is not None  # wants_worker() said so
    # Pushed unless a push of it by this process is done: the remote may have lost it (pruned at
    # the end of a run that reopened, or by a person; a push of what it holds sends no objects), and
    # another attempt's push of it may still be under way (this claim must not name a ref a worker
    # cannot fetch yet: it pushes too, after that one).
    pushed = base in d.pushed_bases
    ref = (
        d.base_refs.get(base)
        or d.proj.dispatch.bases.get(base)
        or dp.base_ref(d.proj.run.run_id or "run", len({*d.proj.dispatch.bases, *d.base_refs}) + 1)
    )
    d.base_refs[base] = ref
    d.queueing.add(todo_id)
    root, rel = d.root, todo.path
    header = f"--- batchd: todo {d.proj.shown(todo_id)} attempt {attempt}, handed to a worker ---\n"
    log_rel = todo.log_path

    def work() -> bytes:
        safefs.append_text(root, log_rel, header)
        text = safefs.read_bytes(root, rel, limit=MAX_TODO_BYTES + 1)
        if text is None:
            raise BatchdError(f"its todo file {rel} is gone", hint="it is cancelled by the next scan")
        if not pushed:
            with _BASE_PUSHES:
                exchange.push_refs(root, pinned, {ref: base})
        return text

    def done(text: bytes) -> None:
        d.queueing.discard(todo_id)
        if not pushed:
            d.pushed_bases.add(base)
            d.pruned_bases.discard(ref)  # on the remote again: pruned again when the run completes
        current = d.proj.todos[todo_id]
        if current.state != TodoState.RUNNING or current.token != token:
            return
        d.placed[todo_id] = text
        queued = dp.AgentQueued(
            token=token,
            todo_id=todo_id,
            attempt=attempt,
            shown=d.proj.shown(todo_id),
            title=current.title,
            todo_path=rel,
            todo_b64=_b64(text),
            base_sha=base,
            base_ref=ref,
            branch=current.branch,
            lease=d.config.batchd.lease_seconds,
            repair=current.repair,
            failure_text=failure_text,
        )
        d.emit(Append(dp.claim_stream(token), [queued], 0))
        log.info("agent_queued", todo_id=todo_id, attempt=attempt, base_ref=ref)

    def failed(error: BaseException) -> None:
        d.queueing.discard(todo_id)  # the base keeps its ref name: the next attempt on it pushes it again
        current = d.proj.todos[todo_id]
        if current.state == TodoState.RUNNING and current.token == token:
            why = f"could not hand the agent to a worker: {outcomes.message(error)}"
            d.emit_one(
                ev.todo_stream(todo_id),
                ev.AgentInterrupted(todo_id=todo_id, attempt=attempt, reason=why, duration=0.0),
            )

    d.submit(f"prepare-{todo_id}", work, done, failed)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- each tick -------------------------------------------------------------------------------------


def tick(d: Daemon) -> None:
    """Look after every claim of this log that is not over (see the module docstring); the refs
    taken are pruned (:mod:`daemon.engine.pruning`)."""
    pruning.tick(d)
    note_waiting(d)
    now = d.clock()
    for claim in [c for c in d.proj.dispatch.claims.values() if c.state in ACTIVE]:
        todo = d.proj.todos.get(claim.todo_id)
        wanted = todo is not None and todo.state == TodoState.RUNNING and todo.token == claim.token
        try:
            _look_after(d, claim, todo if wanted else None, now)
        except ConcurrencyError:
            d.sync()  # a worker appended first: decided again on the next tick with what it wrote


def _look_after(d: Daemon, claim: dp.ClaimView, todo: TodoView | None, now: float) -> None:
    stream = dp.claim_stream(claim.token)
    if claim.state == dp.EXPIRED:
        if todo is not None:  # its worker gave it up (it stopped): run it again
            d.emit(_interrupted(claim, f"worker {claim.worker} gave the agent up ({claim.end_reason})"))
        return
    if todo is None:
        why = "the todo no longer wants it (cancelled, changed or stopped)"
        d.emit(Append(stream, [dp.AgentReleased(token=claim.token, reason=why)], claim.version))
        return
    if claim.state == dp.REPORTED:
        take_report(d, claim)
        return
    idle = now - _moved(d, stream, claim.version, now)
    if claim.state == dp.CLAIMED and idle > claim.lease:
        why = f"worker {claim.worker} was not heard from for {idle:.0f}s (lease {claim.lease:g}s)"
        expired = dp.LeaseExpired(token=claim.token, worker=claim.worker, reason=why)
        d.emit(Append(stream, [expired], claim.version), _interrupted(claim, why))
        log.warning("lease_expired", todo_id=claim.todo_id, worker=claim.worker, idle=round(idle, 1))
    elif claim.state == dp.QUEUED and idle > claim.lease and not live_workers(d):
        why = f"no worker took it within {claim.lease:g}s"
        released = dp.AgentReleased(token=claim.token, reason=why)
        d.emit(Append(stream, [released], claim.version), _interrupted(claim, why))


def _moved(d: Daemon, stream: str, version: int, now: float) -> float:
    """When ``stream`` last moved as this process saw it (a stream first seen counts as moving now:
    a restarted coordinator gives every worker a whole lease)."""
    seen = d.seen.get(stream)
    if seen is None or seen[0] != version:
        d.seen[stream] = (version, now)
        return now
    return seen[1]


def _interrupted(claim: dp.ClaimView, why: str) -> tuple[str, list[object]]:
    return (
        ev.todo_stream(claim.todo_id),
        [
            ev.AgentInterrupted(
                todo_id=claim.todo_id,
                attempt=claim.attempt,
                reason=printable(why),
                # From its queueing, stamped by this host's clock: agent.claimed is stamped by the
                # worker's, which may be hours off (the budget counts this time).
                duration=round(seconds_since(claim.queued_at), 3),
            )
        ],
    )


# --- a worker's outcome ------------------------------------------------------------------------------


def take_report(d: Daemon, claim: dp.ClaimView) -> None:
    """Fetch, check and collect a worker's reported attempt (a job), then record it and release the claim."""
    todo = d.proj.todos[claim.todo_id]
    todo_id, token, attempt = todo.todo_id, todo.token, todo.attempt
    report = dict(claim.report)
    pinned = d.pinned
    root, base, branch, title = d.root, todo.base_sha, todo.branch, todo.title
    workspace, log_rel = d.root / todo.worktree, todo.log_path
    shown = d.proj.shown(todo_id)
    policy = outcomes.policy_for(d, todo_id)
    max_log = d.config.agent.max_log_bytes
    version = claim.version
    # Only the claim's own refs are fetched (and pruned later): a report naming others (a base
    # other claims still need, say) is not the worker's to name.
    change_ref, log_ref = pruning.claim_refs(claim)
    said = {change_ref: str(report.get("ref", "")), log_ref: str(report.get("log_ref", ""))}
    refs = [want for want, named in said.items() if named]
    wrong = [printable(named) for want, named in said.items() if named and named != want]

    def work() -> outcomes.Result:
        outcome = _outcome(report)
        if pinned is None:
            return outcomes.Result(outcome=outcome, reason="exchange", detail="this daemon has no remote")
        if wrong:
            detail = f"the report names {', '.join(wrong)}, not its claim's refs"
            return outcomes.Result(outcome=outcome, reason="exchange", detail=detail)
        try:
            fetched = exchange.fetch_refs(root, pinned, refs) if refs else {}
        except exchange.ExchangeError as e:
            return outcomes.Result(outcome=outcome, reason="exchange", detail=e.render())
        if log_ref in fetched:
            data = exchange.read_log(root, fetched[log_ref], limit=max_log)
            with contextlib.suppress(OSError, BatchdError):
                safefs.append_bytes(root, log_rel, data)
        if not report.get("ok"):
            reason = str(report.get("reason") or "exit")
            detail = f"{report.get('detail', '')} (on worker {claim.worker})"
            return outcomes.Result(outcome=outcome, reason=reason, detail=detail)
        problem = _exchange_problem(d, fetched.get(change_ref, ""), report, base)
        if problem:
            return outcomes.Result(outcome=outcome, reason="exchange", detail=problem)
        commit = str(report["commit"])
        carried = rebase.carry(root, commit, base)  # onto its own parent: the change exactly
        files = {} if policy.own_todo in carried.files else {policy.own_todo: policy.own_todo_text}
        agentspace.create(root, workspace, branch=branch, base_sha=base, files=files, carried=carried)
        return outcomes.collect_change(
            root, workspace, base, outcome, shown=shown, attempt=attempt, title=title, branch=branch,
            policy=policy,
        )  # fmt: skip

    def done(result: outcomes.Result) -> None:
        with d.step(todo_id, "agent_outcome"):
            outcomes.record_outcome(d, todo_id, token, result)
            _release(d, token, version, "its outcome is recorded")
        d.taken_refs.extend(refs)

    def failed(error: BaseException) -> None:
        current = d.proj.todos[todo_id]
        if current.state == TodoState.RUNNING and current.token == token:
            detail = f"could not take the worker's outcome: {outcomes.message(error)}"
            outcomes.fail(d, todo_id, attempt, "exchange", detail)
        _release(d, token, version, "its outcome could not be taken")
        d.taken_refs.extend(refs)

    d.submit(f"collect-{todo_id}", work, done, failed)


def _release(d: Daemon, token: str, version: int, why: str) -> None:
    with contextlib.suppress(ConcurrencyError):
        d.emit(Append(dp.claim_stream(token), [dp.AgentReleased(token=token, reason=why)], version))


def _exchange_problem(d: Daemon, fetched: str, report: dict[str, object], base: str) -> str:
    """Why the fetched change is not the one reported, on the attempt's base ("" when it is)."""
    commit = str(report.get("commit", ""))
    if not fetched or fetched != commit:
        return (
            f"the remote's {printable(str(report.get('ref', '')))} holds {fetched[:10] or 'nothing'}, "
            f"not the reported {printable(commit[:10])} (another run of the attempt pushed over it?)"
        )
    parents = out(d.root, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    if parents != [base]:
        return f"the worker's commit {commit[:10]} is not one commit on the attempt's base {base[:10]}"
    return ""


def _outcome(report: dict[str, object]) -> agentresult.AgentOutcome:
    """The worker's report as the outcome the engine records (its numbers, its log's tail)."""
    reason = str(report.get("reason", ""))
    rc = report.get("returncode")
    cost = report.get("cost_usd")
    summary = report.get("summary")
    return agentresult.AgentOutcome(
        rc=int(rc) if isinstance(rc, int) else (0 if report.get("ok") else 1),
        duration=float(report.get("duration", 0.0) or 0.0),  # type: ignore[arg-type]
        timed_out=reason == "timeout",
        summary=dict(summary) if isinstance(summary, dict) else None,
        is_error=reason == "is_error",
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        num_turns=None,
        session_id=str(report.get("session_id", "")) or None,
        log_tail=str(report.get("log_tail", "")),
    )
