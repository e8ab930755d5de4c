"""Agents: prepare a workspace, start the agent, watch it, and turn its exit into an outcome event.

intent (``todo.agent_started``) -> workspace + setup (a job) -> spawn (``todo.agent_spawned``) ->
poll -> collect its change into one commit -> outcome (``todo.agent_finished`` / ``todo.agent_failed``).

An agent is untrusted: it works in a repository of its own (:mod:`daemon.world.agentspace`), under the
sandbox where there is one (:mod:`daemon.world.sandbox`), and its change comes in through one door
(:mod:`daemon.world.collect`). Whatever goes wrong while collecting fails that attempt with the reason;
it never stops the daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.engine import carrying
from daemon.engine.runner import Daemon
from daemon.exceptions import AgentError, BatchdError, printable
from daemon.intake.todofile import MAX_TODO_BYTES
from daemon.world import (
    agentproc,
    agentresult,
    agents,
    agentspace,
    collect,
    deps,
    gitops,
    homeguard,
    safefs,
    testinfra,
)
from daemon.world.faults import raise_at
from statemachine import events as ev
from statemachine.tables import TodoState
from statemachine.views import TodoView
from store.eventlog import parse_time

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


def branch_for(todo_id: str, attempt: int) -> str:
    return f"batchd/todo-{todo_id}-a{attempt}"


def running_count(d: Daemon) -> int:
    return sum(1 for t in d.proj.todos.values() if t.state == TodoState.RUNNING)


def settling(d: Daemon, todo_id: str) -> bool:
    """The todo's last agent exited and its outcome is still being read: it must not start again
    before that is done (its workspace is being collected)."""
    return any(d.has_job(f"{job}-{todo_id}") for job in ("prepare", "collect")) or todo_id in d.agents


def launch(d: Daemon, todo_id: str, batch_key: str, base_sha: str) -> None:
    """Record the intent, then prepare the workspace in the pool; the agent starts when it is ready.

    The failure file (why the last attempt was not accepted) is written first. A repair whose
    retry names a session the agent can continue resumes it, with the failure as its prompt."""
    todo = d.proj.todos[todo_id]
    attempt = todo.attempt
    workspace = d.ws.workspace(todo_id)
    log_path = d.ws.agent_log(todo_id, attempt)
    todo_file = workspace / todo.path  # its own copy: the person's checkout is not the agent's to edit
    failure_file = write_failure_file(d, todo_id, attempt)
    repair, carried = todo.repair, bool(todo.carry)
    if carried and not gitops.has_commit(d.root, todo.carry):
        # prepare() starts it afresh then: the prompt must not say its change is in the workspace.
        carried = False
        repair += (
            "\nbatchd could not carry your earlier change into this workspace (its commit is gone): "
            "the workspace is the plain base, so do the work again."
        )
    session = agents.resume_session(d.config.agent, todo.session_id)
    if todo.session_id and not session:
        log.info("agent_not_resumed", todo_id=todo_id, attempt=attempt, why=_why_fresh(d))
    if session:
        prompt = agents.resume_prompt(
            repair or f"Attempt {attempt - 1} was not accepted; see {failure_file}.",
            todo_id=d.proj.shown(todo_id),
            todo_path=todo_file,
            verify_commands=d.config.verify.commands,
            carried=carried,
        )
    else:
        prompt = agents.render_prompt(
            agents.load_template(d.config.agent, d.root),
            todo_id=todo_id,
            todo_path=todo_file,
            title=todo.title,
            verify_commands=d.config.verify.commands,
            worktree=workspace,
            repair=repair,
        )
    argv = agents.build_argv(
        d.config.agent,
        prompt=prompt,
        todo_path=todo_file,
        todo_id=todo_id,
        worktree=workspace,
        failure_file=failure_file,
        session_id=session,
    )
    d.emit_one(
        ev.todo_stream(todo_id),
        ev.AgentStarted(
            todo_id=todo_id,
            attempt=attempt,
            batch=batch_key,
            worktree=str(workspace.relative_to(d.root)),
            branch=branch_for(todo_id, attempt),
            base_sha=base_sha,
            log_path=str(log_path.relative_to(d.root)),
            argv=tuple(argv),
            token=uuid.uuid4().hex,
        ),
    )
    prepare(d, todo_id, argv)


def _why_fresh(d: Daemon) -> str:
    if not d.config.agent.resume:
        return "[agent] resume is off"
    if not d.config.agent.resume_template:
        return "the agent has no resume command"
    return "its session id does not look like one"


MAX_FAILURE_BYTES = 1 << 20  # the failure file keeps the end of a longer check output


def write_failure_file(d: Daemon, todo_id: str, attempt: int) -> Path:
    """Write why the attempt before ``attempt`` was not accepted (empty on a first attempt) where
    the agent may read it: the failing command and its whole output (as ``batchd logs ID --verify``
    keeps it) for a rejection, the reason and the repair text for anything else. Losing it costs
    the agent the detail, never the run."""
    path = d.ws.failure_file(todo_id, attempt)
    todo = d.proj.todos[todo_id]
    last = next((r for r in reversed(todo.history) if r.outcome != "interrupted"), None)
    text = ""
    if last is not None and last.outcome != "accepted" and last.attempt < attempt:
        verify_log = d.ws.verify_log(todo_id, last.attempt)
        output = agentproc.tail_bytes(verify_log, MAX_FAILURE_BYTES) if last.outcome == "rejected" else ""
        with contextlib.suppress(OSError):
            if output and verify_log.stat().st_size > MAX_FAILURE_BYTES:
                output = "[batchd: the start of the output was dropped]\n" + output.partition("\n")[2]
        text = agents.failure_text(
            attempt=last.attempt, outcome=last.outcome, reason=last.reason, verify_output=output,
            repair=todo.repair,
        )  # fmt: skip
    try:
        safefs.write_text(d.root, path.relative_to(d.root), text)
    except (OSError, BatchdError) as e:
        log.warning("failure_file_not_written", todo_id=todo_id, attempt=attempt, error=str(e))
    return path


def prepare(d: Daemon, todo_id: str, argv: list[str]) -> None:
    """Create a fresh workspace and run the set-up commands (in the pool), then spawn the agent."""
    todo = d.proj.todos[todo_id]
    attempt = todo.attempt
    workspace = d.root / todo.worktree
    log_path = d.root / todo.log_path
    exit_path = d.ws.exit_record(todo_id, attempt)
    base_sha = todo.base_sha
    branch = todo.branch
    env = agents.agent_env(
        d.config.agent,
        todo_id=todo_id,
        todo_path=workspace / todo.path,
        attempt=attempt,
        worktree=workspace,
        token=todo.token,
        failure_file=d.ws.failure_file(todo_id, attempt),  # written by launch()
    )
    env = deps.with_python_paths(env, d.root, workspace)  # its tests import its own code
    setup = d.config.agent.setup
    timeout = d.config.agent.timeout
    sandbox = d.sandbox
    root = d.root
    shown = d.proj.shown(todo_id)
    carry_commit = todo.carry

    def work() -> agentresult.SetupResult | None:
        header = f"--- batchd: todo {shown} attempt {attempt}, workspace {workspace} ---\n"
        # Appended, not truncated: an attempt re-run after an interruption keeps the first run's output.
        safefs.append_text(root, log_path.relative_to(root), header)
        text = safefs.read_bytes(root, todo.path, limit=MAX_TODO_BYTES + 1)
        if text is None:
            raise AgentError(f"its todo file {todo.path} is gone", hint="it is cancelled by the next scan")
        carried = carrying.carried_change(root, todo_id, carry_commit, base_sha, log_path)
        d.markers[todo_id] = carried.conflicts if carried is not None else ()
        agentspace.create(
            root, workspace, branch=branch, base_sha=base_sha, files={todo.path: text}, carried=carried
        )
        deps.place(root, workspace)  # the person's node_modules / .venv, read-only, before setup
        d.placed[todo_id] = text
        exit_path.parent.mkdir(parents=True, exist_ok=True)
        if setup:
            return agentresult.run_setup(
                setup,
                cwd=workspace,
                log_path=log_path,
                timeout=timeout,
                env=env,
                sandbox=sandbox,
                readable=[root],
            )
        return None

    token = todo.token

    def done(result: agentresult.SetupResult | None) -> None:
        current = d.proj.todos[todo_id]
        if current.state != TodoState.RUNNING or current.token != token:
            return  # cancelled or interrupted meanwhile
        if result is not None and not result.ok:
            fail(
                d,
                todo_id,
                attempt,
                "setup",
                f"set-up command {result.failed_command} failed (rc {result.rc})",
                rc=result.rc,
                tail=result.log_tail,
            )
            return
        if d.stopping:
            return  # will be recorded as interrupted by the stop
        homes = d.sandbox.writable if d.sandbox.active else (Path.home(),)
        d.home_snapshots[todo_id] = homeguard.take(homeguard.steering_paths(Path.home(), homes))
        try:
            proc = agentproc.start_agent(
                argv,
                cwd=workspace,
                log_path=log_path,
                env=env,
                sandbox=d.sandbox,
                exit_path=exit_path,
                readable=[root],
            )
        except (OSError, BatchdError) as e:
            fail(d, todo_id, attempt, "start", f"agent could not start: {e}")
            return
        d.agents[todo_id] = proc
        agentproc.on_exit(proc.pid, d.wake)  # its slot is taken again at once, not at the next tick
        d.emit_one(
            ev.todo_stream(todo_id),
            ev.AgentSpawned(
                todo_id=todo_id,
                attempt=attempt,
                pid=proc.pid,
                pgid=proc.pgid,
                start_ticks=proc.start_ticks,
                exit_path=str(exit_path.relative_to(root)),
            ),
        )
        log.info("agent_started", todo_id=todo_id, attempt=attempt, pid=proc.pid, sandbox=d.sandbox.kind)

    def failed(error: BaseException) -> None:
        current = d.proj.todos[todo_id]
        if current.state != TodoState.RUNNING or current.token != token:
            return  # cancelled or interrupted meanwhile: nothing of this attempt to record
        fail(d, todo_id, attempt, "setup", f"could not prepare the workspace: {_message(error)}")

    d.submit(f"prepare-{todo_id}", work, done, failed)


def _message(error: BaseException) -> str:
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


def poll(d: Daemon, now: float) -> None:
    """Collect every agent that exited (looked at first), then enforce timeouts on the rest."""
    for todo_id, proc in list(d.agents.items()):
        if proc.poll() is None:
            agentproc.enforce_timeout(proc, d.config.agent.timeout, now)
            agentproc.cap_log(proc.log_path, d.config.agent.max_log_bytes)
            continue
        del d.agents[todo_id]
        with d.step(todo_id, "agent_exit"):
            raise_at("agent_exit")
            collect_exited(d, todo_id, proc)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Collected:
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

    def work() -> _Collected:
        result = dataclasses.replace(read_and_collect(), recovery=proc.recovery)
        put_back = tuple(homeguard.restore(home)) if home is not None else ()
        return dataclasses.replace(result, put_back=put_back) if put_back else result

    def read_and_collect() -> _Collected:
        agentproc.cap_log(proc.log_path, max_log)
        outcome = agentresult.finish(proc)
        if not outcome.ok:
            reason = "timeout" if outcome.timed_out else ("is_error" if outcome.is_error else "exit")
            return _Collected(outcome=outcome, reason=reason, detail=outcome.reason)
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
            return _Collected(outcome=outcome, reason=e.reason, detail=e.render())
        except Exception as e:
            log.exception("collect_crashed", todo_id=todo_id, attempt=attempt)
            return _Collected(
                outcome=outcome,
                reason="collect",
                detail=f"could not collect the agent's change: {_message(e)}",
            )
        if collected.change is None:
            detail = "the agent exited 0 but changed nothing"
            if collected.dropped:
                detail += " it may change (dropped: " + "; ".join(collected.dropped) + ")"
            return _Collected(outcome=outcome, reason="no_change", detail=detail)
        return _Collected(outcome=outcome, change=collected.change)

    def done(result: _Collected) -> None:
        with d.step(todo_id, "agent_outcome"):
            record_outcome(d, todo_id, token, result)

    def failed(error: BaseException) -> None:
        current = d.proj.todos[todo_id]
        if current.state == TodoState.RUNNING and current.token == token:
            fail(d, todo_id, attempt, "collect", f"could not read the agent's outcome: {_message(error)}")

    d.submit(f"collect-{todo_id}", work, done, failed)


def record_outcome(d: Daemon, todo_id: str, token: str, result: _Collected) -> None:
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


def stop_all(d: Daemon, reason: str, *, grace: float) -> None:
    """Give running agents up to ``grace`` seconds (an agent that ends is collected, not lost), then
    SIGTERM and SIGKILL the rest of the groups; record them interrupted."""
    deadline = d.clock() + grace
    while (d.agents or any(k.startswith("collect-") for k in d.jobs)) and d.clock() < deadline:
        d.poll_jobs()
        poll(d, d.clock())
        if d.agents or d.jobs:
            time.sleep(0.1)
    spent = {todo_id: proc.elapsed for todo_id, proc in d.agents.items()}  # before the kill ends them
    kill_all(d)
    interrupt_running(d, reason, spent)


def kill_all(d: Daemon) -> None:
    """SIGTERM then SIGKILL every agent's process group, at once (the fatal path: no waiting)."""
    for proc in d.agents.values():
        proc.kill_group(signal.SIGTERM)
    for todo_id, proc in list(d.agents.items()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)  # it is killed next either way
        proc.kill_group(signal.SIGKILL)
        del d.agents[todo_id]


def interrupt_running(d: Daemon, reason: str, spent: Mapping[str, float] | None = None) -> None:
    """Record every running todo interrupted, with the agent time it had spent (wasted: it runs
    again): ``spent`` as its process measured it, else from its start as the log has it."""
    for todo in list(d.proj.todos.values()):
        if todo.state == TodoState.RUNNING:
            duration = (spent or {}).get(todo.todo_id)
            if duration is None:
                proc = d.agents.get(todo.todo_id)
                duration = proc.elapsed if proc is not None else agent_seconds(todo)
            d.emit_one(
                ev.todo_stream(todo.todo_id),
                ev.AgentInterrupted(
                    todo_id=todo.todo_id, attempt=todo.attempt, reason=reason, duration=round(duration, 3)
                ),
            )


def agent_seconds(todo: TodoView, until: float | None = None) -> float:
    """Seconds from the todo's agent start (its log's time) to ``until`` (wall clock, default now);
    0 when no agent process was recorded (it was still being set up: no agent time spent)."""
    if todo.pid is None or not todo.agent_started_at:
        return 0.0
    started = parse_time(todo.agent_started_at).timestamp()
    return max(0.0, (time.time() if until is None else until) - started)


def stop_agent(d: Daemon, todo_id: str) -> None:
    """Kill one todo's agent (a person cancelled, deleted or edited its todo)."""
    proc = d.agents.pop(todo_id, None)
    if proc is not None:
        proc.kill_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        proc.kill_group(signal.SIGKILL)
