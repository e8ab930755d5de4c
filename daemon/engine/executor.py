"""Agents: prepare a workspace, start the agent, watch it; :mod:`daemon.engine.outcomes` takes its exit.

intent (``todo.agent_started``) -> workspace + setup (a job) -> spawn (``todo.agent_spawned``) ->
poll -> collect its change into one commit -> outcome (``todo.agent_finished`` / ``todo.agent_failed``).

An agent is untrusted: it works in a repository of its own (:mod:`daemon.world.agentspace`), under the
sandbox where there is one (:mod:`daemon.world.sandbox`), and its change comes in through one door
(:mod:`daemon.world.collect`). Whatever goes wrong while collecting fails that attempt with the reason;
it never stops the daemon.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import structlog

from daemon.engine import carrying, dispatching, outcomes
from daemon.engine.runner import Daemon
from daemon.exceptions import AgentError, BatchdError
from daemon.intake.todofile import MAX_TODO_BYTES
from daemon.world import (
    agentproc,
    agentresult,
    agents,
    agentspace,
    deps,
    homeguard,
    rebase,
    safefs,
)
from daemon.world.faults import raise_at
from statemachine import economy
from statemachine import events as ev
from statemachine.tables import TodoState
from statemachine.views import TodoView

log = structlog.get_logger(__name__)


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
    if dispatching.wants_worker(d):
        _started(d, todo_id, batch_key, base_sha, argv=())
        dispatching.queue(d, todo_id, failure_text(d, todo_id, attempt))
        return
    todo_file = workspace / todo.path  # its own copy: the person's checkout is not the agent's to edit
    failure_file = write_failure_file(d, todo_id, attempt)
    # Worked out before the prompt (a few git object reads): the prompt and the log say what the
    # workspace really holds, and the accounting counts the earlier attempt kept only if it was.
    change = carrying.carried_change(d.root, todo_id, todo.carry, base_sha, log_path)
    repair, carried = todo.repair, change is not None
    if todo.carry and change is None:
        repair += (
            "\nbatchd could not carry your earlier change into this workspace: the workspace is the "
            "plain base, so do the work again."
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
    _started(d, todo_id, batch_key, base_sha, argv=tuple(argv), carried=todo.carry if carried else "")
    prepare(d, todo_id, argv, change)


def _started(
    d: Daemon, todo_id: str, batch_key: str, base_sha: str, *, argv: tuple[str, ...], carried: str = ""
) -> None:
    """``todo.agent_started``: the intent, with a new token (an agent on a worker has no argv here:
    its worker builds the command from its own clone's configuration)."""
    todo = d.proj.todos[todo_id]
    d.emit_one(
        ev.todo_stream(todo_id),
        ev.AgentStarted(
            todo_id=todo_id,
            attempt=todo.attempt,
            batch=batch_key,
            worktree=str(d.ws.workspace(todo_id).relative_to(d.root)),
            branch=branch_for(todo_id, todo.attempt),
            base_sha=base_sha,
            log_path=str(d.ws.agent_log(todo_id, todo.attempt).relative_to(d.root)),
            argv=argv,
            token=uuid.uuid4().hex,
            carried=carried,
        ),
    )


def _why_fresh(d: Daemon) -> str:
    if not d.config.agent.resume:
        return "[agent] resume is off"
    if not d.config.agent.resume_template:
        return "the agent has no resume command"
    return "its session id does not look like one"


MAX_FAILURE_BYTES = 1 << 20  # the failure file keeps the end of a longer check output


def write_failure_file(d: Daemon, todo_id: str, attempt: int) -> Path:
    """Write why the attempt before ``attempt`` was not accepted (empty on a first attempt) where
    the agent may read it (:func:`failure_text`). Losing it costs the agent the detail, never the run."""
    path = d.ws.failure_file(todo_id, attempt)
    try:
        safefs.write_text(d.root, path.relative_to(d.root), failure_text(d, todo_id, attempt))
    except (OSError, BatchdError) as e:
        log.warning("failure_file_not_written", todo_id=todo_id, attempt=attempt, error=str(e))
    return path


def failure_text(d: Daemon, todo_id: str, attempt: int) -> str:
    """Why the attempt before ``attempt`` was not accepted ("" on a first attempt): the failing
    command and its whole output (as ``batchd logs ID --verify`` keeps it) for a rejection, the
    reason and the repair text for anything else."""
    todo = d.proj.todos[todo_id]
    last = next((r for r in reversed(todo.history) if r.outcome != "interrupted"), None)
    if last is None or last.outcome == "accepted" or last.attempt >= attempt:
        return ""
    verify_log = d.ws.verify_log(todo_id, last.attempt)
    output = agentproc.tail_bytes(verify_log, MAX_FAILURE_BYTES) if last.outcome == "rejected" else ""
    with contextlib.suppress(OSError):
        if output and verify_log.stat().st_size > MAX_FAILURE_BYTES:
            output = "[batchd: the start of the output was dropped]\n" + output.partition("\n")[2]
    return agents.failure_text(
        attempt=last.attempt, outcome=last.outcome, reason=last.reason, verify_output=output,
        repair=todo.repair,
    )  # fmt: skip


def prepare(d: Daemon, todo_id: str, argv: list[str], carried: rebase.Carried | None = None) -> None:
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

    def work() -> agentresult.SetupResult | None:
        header = f"--- batchd: todo {shown} attempt {attempt}, workspace {workspace} ---\n"
        # Appended, not truncated: an attempt re-run after an interruption keeps the first run's output.
        safefs.append_text(root, log_path.relative_to(root), header)
        text = safefs.read_bytes(root, todo.path, limit=MAX_TODO_BYTES + 1)
        if text is None:
            raise AgentError(f"its todo file {todo.path} is gone", hint="it is cancelled by the next scan")
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
            outcomes.fail(
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
                timeout=timeout,  # the shim's backstop, should this daemon die and none come back
            )
        except (OSError, BatchdError) as e:
            outcomes.fail(d, todo_id, attempt, "start", f"agent could not start: {e}")
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
        outcomes.fail(
            d, todo_id, attempt, "setup", f"could not prepare the workspace: {outcomes.message(error)}"
        )

    d.submit(f"prepare-{todo_id}", work, done, failed)


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
            outcomes.collect_exited(d, todo_id, proc)


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
        # An agent on a worker goes on without this daemon: the next one collects its outcome.
        if todo.state == TodoState.RUNNING and not dispatching.is_remote(d, todo):
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
    if todo.pid is None:
        return 0.0
    now = datetime.now(UTC) if until is None else datetime.fromtimestamp(until, UTC)
    return economy.running_seconds(todo, now)


def stop_agent(d: Daemon, todo_id: str) -> None:
    """Kill one todo's agent (a person cancelled, deleted or edited its todo)."""
    proc = d.agents.pop(todo_id, None)
    if proc is not None:
        proc.kill_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        proc.kill_group(signal.SIGKILL)
