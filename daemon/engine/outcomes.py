"""An exited agent's outcome: its change collected into one commit (in the pool), then recorded as
``todo.agent_finished`` or ``todo.agent_failed`` on the main thread.

Whatever goes wrong while collecting fails that attempt with the reason; it never stops the daemon.
The agent's change comes in through one door (:mod:`daemon.world.collect`), under the policy of what
this todo's agent may change (:func:`policy_for`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.engine import carrying
from daemon.engine.runner import Daemon
from daemon.exceptions import BatchdError, printable
from daemon.intake.todofile import MAX_TODO_BYTES
from daemon.world import agentproc, agentresult, agents, collect, homeguard, safefs, testinfra
from daemon.world.faults import raise_at
from statemachine import events as ev
from statemachine.tables import TodoState

log = structlog.get_logger(__name__)

SUMMARY_KEYS = (
    "type",
    "subtype",
    "is_error",
    "num_turns",
    "session_id",
    "duration_ms",
    "total_cost_usd",
    "simulated",  # the demo's scripted agent: its cost is made up, and shown so
)


def message(error: BaseException) -> str:
    text = error.message if isinstance(error, BatchdError) else f"{type(error).__name__}: {error}"
    return printable(text)


def fail(
    d: Daemon,
    todo_id: str,
    attempt: int,
    reason: str,
    detail: str,
    *,
    rc: int | None = None,
    duration: float = 0.0,
    cost: float | None = None,
    tail: str = "",
    session: str | None = None,
) -> None:
    d.emit_one(
        ev.todo_stream(todo_id),
        ev.AgentFailed(
            todo_id=todo_id,
            attempt=attempt,
            reason=reason,
            detail=printable(detail),
            returncode=rc,
            duration=duration,
            cost_usd=cost,
            log_tail=printable(tail[-2000:]),
            session_id=session if session is not None and agents.valid_session_id(session) else "",
        ),
    )
    log.warning("agent_failed", todo_id=todo_id, attempt=attempt, reason=reason, detail=printable(detail))


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What the pool found of an exited agent: its outcome, and its change or why there is none."""

    outcome: agentresult.AgentOutcome
    change: collect.Change | None = None
    reason: str = ""  # the failure code when the attempt failed
    detail: str = ""
    put_back: tuple[str, ...] = ()  # agent settings in its home it changed, put back
    recovery: str = ""  # how a crashed daemon's agent was taken over (AdoptedProcess), "" if ours


def collect_exited(d: Daemon, todo_id: str, proc: agentproc.AgentProcess) -> None:
    """Read the exited agent's outcome and collect its change in the pool (a large workspace takes
    seconds: the loop, the watchdog and the other agents go on meanwhile); the result is recorded on
    the main thread. Whatever fails in there fails this attempt, never the daemon."""
    todo = d.proj.todos[todo_id]
    attempt, token = todo.attempt, todo.token  # the token is new on every start, the attempt is not
    root = d.root
    max_log = d.config.agent.max_log_bytes
    policy = policy_for(d, todo_id)
    workspace, base, branch, title = d.root / todo.worktree, todo.base_sha, todo.branch, todo.title
    shown = d.proj.shown(todo_id)  # the id as its file name writes it (leading zeros kept)
    home = d.home_snapshots.pop(todo_id, None)

    def work() -> Result:
        result = dataclasses.replace(read_and_collect(), recovery=proc.recovery)
        put_back = tuple(homeguard.restore(home)) if home is not None else ()
        return dataclasses.replace(result, put_back=put_back) if put_back else result

    def read_and_collect() -> Result:
        agentproc.cap_log(proc.log_path, max_log)
        outcome = agentresult.finish(proc)
        if not outcome.ok:
            return Result(outcome=outcome, reason=exit_reason(outcome), detail=outcome.reason)
        return collect_change(
            root, workspace, base, outcome, shown=shown, attempt=attempt, title=title, branch=branch,
            policy=policy,
        )  # fmt: skip

    def done(result: Result) -> None:
        with d.step(todo_id, "agent_outcome"):
            record_outcome(d, todo_id, token, result)

    def failed(error: BaseException) -> None:
        current = d.proj.todos[todo_id]
        if current.state == TodoState.RUNNING and current.token == token:
            fail(d, todo_id, attempt, "collect", f"could not read the agent's outcome: {message(error)}")

    d.submit(f"collect-{todo_id}", work, done, failed)


def exit_reason(outcome: agentresult.AgentOutcome) -> str:
    """The failure code of an agent that did not succeed."""
    return "timeout" if outcome.timed_out else ("is_error" if outcome.is_error else "exit")


def collect_change(
    root: Path,
    workspace: Path,
    base: str,
    outcome: agentresult.AgentOutcome,
    *,
    shown: str,
    attempt: int,
    title: str,
    branch: str,
    policy: collect.Policy,
) -> Result:
    """The one door an agent's change comes in by, for an agent of this host or a worker's: what
    ``workspace`` holds on ``base``, as one commit with batchd's trailers, under ``policy``."""
    try:
        raise_at("collect")
        collected = collect.collect(
            root,
            workspace,
            base,
            message=f"batchd: todo {shown} attempt {attempt} - {title}",
            trailers={"Batchd-Todo": shown, "Batchd-Attempt": str(attempt)},
            branch=branch,
            policy=policy,
        )
    except collect.CollectFailed as e:
        return Result(outcome=outcome, reason=e.reason, detail=e.render())
    except Exception as e:
        log.exception("collect_crashed", workspace=str(workspace), attempt=attempt)
        return Result(
            outcome=outcome, reason="collect", detail=f"could not collect the agent's change: {message(e)}"
        )
    if collected.change is None:
        detail = "the agent exited 0 but changed nothing"
        if collected.dropped:
            detail += " it may change (dropped: " + "; ".join(collected.dropped) + ")"
        return Result(outcome=outcome, reason="no_change", detail=detail)
    return Result(outcome=outcome, change=collected.change)


def record_outcome(d: Daemon, todo_id: str, token: str, result: Result) -> None:
    todo = d.proj.todos[todo_id]
    attempt = todo.attempt
    outcome = result.outcome
    if todo.state != TodoState.RUNNING or todo.token != token:
        return  # cancelled or interrupted meanwhile (and maybe started again: another token)
    if d.stopping and outcome.rc < 0 and not outcome.timed_out:
        return  # killed by our own stop: recorded as interrupted
    change = result.change
    if change is None:
        fail(
            d,
            todo_id,
            attempt,
            result.reason,
            result.detail
            + ("; put back: " + "; ".join(result.put_back) if result.put_back else "")
            + (f" ({RECOVERED[result.recovery]})" if result.recovery in RECOVERED else ""),
            rc=outcome.rc,
            duration=outcome.duration,
            cost=outcome.cost_usd,
            tail=outcome.log_tail,
            session=outcome.session_id,
        )
        return
    # Only a session id that looks like one is kept (the summary's too: old logs' projection reads it
    # there); anything else means the next repair starts afresh.
    session = outcome.session_id if agents.valid_session_id(outcome.session_id) else None
    summary = plain_summary(outcome.summary)
    if session is None:
        summary.pop("session_id", None)
    d.emit_one(
        ev.todo_stream(todo_id),
        ev.AgentFinished(
            todo_id=todo_id,
            attempt=attempt,
            returncode=outcome.rc,
            duration=round(outcome.duration, 3),
            commit=change.sha,
            files=change.files,
            cost_usd=outcome.cost_usd,
            summary=summary,
            dropped=(*change.dropped, *result.put_back),
            warnings=change.warnings,
            test_edits=change.test_edits,
            note=change.note,
            agent_head=change.agent_head,
            agent_commits=change.agent_commits,
            session_id=session or "",
            recovered=bool(result.recovery),
        ),
    )
    log.info(
        "agent_finished",
        todo_id=todo_id,
        attempt=attempt,
        commit=change.sha[:10],
        files=len(change.files),
        dropped=len(change.dropped),
        recovered=result.recovery or None,
    )


# How an agent of a crashed daemon was collected (the recovery case), as its outcome's detail says it.
RECOVERED = {
    "adopted": "a crashed daemon's agent, taken over while it ran",
    "exited": "it ended while batchd was down; collected after the restart",
    "committed": "killed with the daemon after committing its work; collected after the restart",
}


def plain_summary(summary: dict[str, object] | None) -> dict[str, object]:
    """The agent's result object as the log keeps it: the known keys, plain values, short texts."""
    kept: dict[str, object] = {}
    for key in SUMMARY_KEYS:
        value = (summary or {}).get(key)
        if (
            isinstance(value, bool)
            or (isinstance(value, int) and abs(value) < 2**53)
            or (isinstance(value, float) and math.isfinite(value))
        ):
            kept[key] = value
        elif isinstance(value, str):
            kept[key] = printable(value[:500])
    return kept


def policy_for(d: Daemon, todo_id: str) -> collect.Policy:
    """What this todo's agent may change, from the configuration and what the run did so far."""
    todo = d.proj.todos[todo_id]
    config = d.config
    protected: dict[str, str] = {}

    def add(path: Path | None, why: str, *, folder: bool = False) -> None:
        if path is None:
            return
        try:
            rel = safefs.relative_to(d.root, path)
        except ValueError:
            return  # outside the repository: no agent can change it through its change
        protected[rel + "/" if folder else rel] = why

    add(config.path, "batchd's configuration")
    add(config.plan_path, "the plan")
    add(d.root / config.agent.prompt_file if config.agent.prompt_file else None, "the agents' prompt")
    add(config.todos_path, "the todos folder: batchd renames todo files itself", folder=True)
    add(config.status_path, "the status file, written by batchd")
    add(d.ws.state_dir, "batchd's own folder", folder=True)
    earlier: dict[str, str] = {}
    for other in d.proj.todos.values():
        if other.todo_id != todo_id and other.state in (TodoState.ACCEPTED, TodoState.COMPLETE):
            earlier.update(dict.fromkeys(other.agent_files, other.todo_id))
    placed = d.placed.get(todo_id)
    return collect.Policy(
        protected=protected,
        own_todo=todo.path,
        own_todo_text=placed if placed is not None else _placed(d, todo.path),
        todos_dir=safefs.relative_to(d.root, config.todos_path),
        protect=config.agent.protect,
        test_globs=config.verify.protect_tests,
        test_infra=testinfra.patterns(d.root, config.verify.commands),
        max_change_bytes=config.agent.max_change_bytes,
        earlier=earlier,
        run_base=d.proj.run.base_sha,
        markers=carrying.marker_files(d, todo_id),
    )


def _placed(d: Daemon, rel: str) -> bytes:
    """The todo file as the person has it now: what batchd wrote into the workspace."""
    try:
        return safefs.read_bytes(d.root, rel, limit=MAX_TODO_BYTES + 1) or b""
    except safefs.LinkRefused:
        return b""
