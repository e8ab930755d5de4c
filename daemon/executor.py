"""Agents: prepare a worktree, start the agent, watch it, and turn its exit into an outcome event.

intent (``todo.agent_started``) -> worktree + setup (a job) -> spawn (``todo.agent_spawned``) ->
poll -> squash its change into one commit -> outcome (``todo.agent_finished`` / ``todo.agent_failed``).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import structlog

from daemon import agents, gitops
from daemon.exceptions import AgentError, GitError
from daemon.runner import Daemon
from statemachine import events as ev
from statemachine.tables import TodoState

log = structlog.get_logger(__name__)


def worktree_for(d: Daemon, todo_id: str) -> Path:
    return d.ws.worktrees / f"todo-{todo_id}"


def branch_for(todo_id: str, attempt: int) -> str:
    return f"batchd/todo-{todo_id}-a{attempt}"


def running_count(d: Daemon) -> int:
    return sum(1 for t in d.proj.todos.values() if t.state == TodoState.RUNNING)


def launch(d: Daemon, todo_id: str, batch_key: str, base_sha: str) -> None:
    """Record the intent, then prepare the worktree in the pool; the agent starts when it is ready."""
    todo = d.proj.todos[todo_id]
    attempt = todo.attempt
    worktree = worktree_for(d, todo_id)
    log_path = d.ws.agent_log(todo_id, attempt)
    todo_file = d.root / todo.path
    template = agents.load_template(d.config.agent, d.root)
    prompt = agents.render_prompt(
        template,
        todo_id=todo_id,
        todo_path=todo_file,
        title=todo.title,
        verify_commands=d.config.verify.commands,
        worktree=worktree,
        repair=todo.repair,
    )
    argv = agents.build_argv(
        d.config.agent, prompt=prompt, todo_path=todo_file, todo_id=todo_id, worktree=worktree
    )
    d.emit_one(
        ev.todo_stream(todo_id),
        ev.AgentStarted(
            todo_id=todo_id,
            attempt=attempt,
            batch=batch_key,
            worktree=str(worktree.relative_to(d.root)),
            branch=branch_for(todo_id, attempt),
            base_sha=base_sha,
            log_path=str(log_path.relative_to(d.root)),
            argv=tuple(argv),
        ),
    )
    prepare(d, todo_id, argv)


def prepare(d: Daemon, todo_id: str, argv: list[str]) -> None:
    """Create a clean worktree and run the set-up commands (in the pool), then spawn the agent."""
    todo = d.proj.todos[todo_id]
    attempt = todo.attempt
    worktree = d.root / todo.worktree
    log_path = d.root / todo.log_path
    base_sha = todo.base_sha
    branch = todo.branch
    env = agents.agent_env(
        d.config.agent, todo_id=todo_id, todo_path=d.root / todo.path, attempt=attempt, worktree=worktree
    )
    setup = d.config.agent.setup
    timeout = d.config.agent.timeout

    def work() -> agents.SetupResult | None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appended, not truncated: an attempt re-run after an interruption keeps the first run's output.
        with log_path.open("a", encoding="utf-8") as out:
            out.write(f"--- batchd: todo {todo_id} attempt {attempt}, worktree {worktree} ---\n")
        with d.git_lock:
            gitops.add_worktree(d.root, worktree, branch, base_sha)
        if setup:
            return agents.run_setup(setup, cwd=worktree, log_path=log_path, timeout=timeout, env=env)
        return None

    def done(result: agents.SetupResult | None) -> None:
        current = d.proj.todos[todo_id]
        if current.state != TodoState.RUNNING or current.attempt != attempt:
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
        try:
            proc = agents.start_agent(argv, cwd=worktree, log_path=log_path, env=env)
        except (OSError, AgentError) as e:
            fail(d, todo_id, attempt, "start", f"agent could not start: {e}")
            return
        d.agents[todo_id] = proc
        d.emit_one(
            ev.todo_stream(todo_id),
            ev.AgentSpawned(todo_id=todo_id, attempt=attempt, pid=proc.pid, pgid=proc.pgid),
        )
        log.info("agent_started", todo_id=todo_id, attempt=attempt, pid=proc.pid)

    def failed(error: BaseException) -> None:
        current = d.proj.todos[todo_id]
        if current.state != TodoState.RUNNING or current.attempt != attempt:
            return  # cancelled or interrupted meanwhile: nothing of this attempt to record
        fail(d, todo_id, attempt, "setup", f"could not prepare the worktree: {error}")

    d.submit(f"prepare-{todo_id}", work, done, failed)


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
) -> None:
    d.emit_one(
        ev.todo_stream(todo_id),
        ev.AgentFailed(
            todo_id=todo_id,
            attempt=attempt,
            reason=reason,
            detail=detail,
            returncode=rc,
            duration=duration,
            cost_usd=cost,
            log_tail=tail[-2000:],
        ),
    )
    log.warning("agent_failed", todo_id=todo_id, attempt=attempt, reason=reason, detail=detail)


def poll(d: Daemon, now: float) -> None:
    """Enforce timeouts and collect every agent that exited."""
    for todo_id, proc in list(d.agents.items()):
        agents.enforce_timeout(proc, d.config.agent.timeout, now)
        if proc.poll() is None:
            continue
        del d.agents[todo_id]
        outcome = agents.finish(proc)
        collect(d, todo_id, outcome)


def collect(d: Daemon, todo_id: str, outcome: agents.AgentOutcome) -> None:
    todo = d.proj.todos[todo_id]
    attempt = todo.attempt
    if todo.state != TodoState.RUNNING:
        return
    if d.stopping and outcome.rc < 0 and not outcome.timed_out:
        return  # killed by our own stop: recorded as interrupted
    if not outcome.ok:
        reason = "timeout" if outcome.timed_out else ("is_error" if outcome.is_error else "exit")
        fail(
            d,
            todo_id,
            attempt,
            reason,
            outcome.reason,
            rc=outcome.rc,
            duration=outcome.duration,
            cost=outcome.cost_usd,
            tail=outcome.log_tail,
        )
        return
    worktree = d.root / todo.worktree
    try:
        change = gitops.collect_change(
            worktree,
            todo.base_sha,
            message=f"batchd: todo {todo_id} attempt {attempt} - {todo.title}",
            trailers={gitops.TRAILER_TODO: todo_id, gitops.TRAILER_ATTEMPT: str(attempt)},
        )
    except GitError as e:
        fail(
            d,
            todo_id,
            attempt,
            "exit",
            f"could not collect the agent's change: {e.message}",
            rc=outcome.rc,
            duration=outcome.duration,
            cost=outcome.cost_usd,
            tail=outcome.log_tail,
        )
        return
    if change is None:
        fail(
            d,
            todo_id,
            attempt,
            "no_change",
            "the agent exited 0 but changed nothing",
            rc=outcome.rc,
            duration=outcome.duration,
            cost=outcome.cost_usd,
            tail=outcome.log_tail,
        )
        return
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
            summary={k: v for k, v in (outcome.summary or {}).items() if k in SUMMARY_KEYS},
        ),
    )
    log.info(
        "agent_finished", todo_id=todo_id, attempt=attempt, commit=change.sha[:10], files=len(change.files)
    )


SUMMARY_KEYS = ("type", "subtype", "is_error", "num_turns", "session_id", "duration_ms", "total_cost_usd")


def stop_all(d: Daemon, reason: str, *, grace: float) -> None:
    """SIGTERM every agent group, wait up to ``grace`` seconds, SIGKILL the rest; record them interrupted."""
    deadline = d.clock() + grace
    while d.agents and d.clock() < deadline:
        d.poll_jobs()
        poll(d, d.clock())
        if d.agents:
            time.sleep(0.1)
    for proc in d.agents.values():
        proc.kill_group(signal.SIGTERM)
    for todo_id, proc in list(d.agents.items()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)  # it is killed next either way
        proc.kill_group(signal.SIGKILL)
        del d.agents[todo_id]
    interrupt_running(d, reason)


def interrupt_running(d: Daemon, reason: str) -> None:
    for todo in list(d.proj.todos.values()):
        if todo.state == TodoState.RUNNING:
            d.emit_one(
                ev.todo_stream(todo.todo_id),
                ev.AgentInterrupted(todo_id=todo.todo_id, attempt=todo.attempt, reason=reason),
            )
