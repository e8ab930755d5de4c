"""One claimed attempt on a worker: its blocking steps, run in the worker's pool.

``prepare`` fetches the base the coordinator pushed, makes a workspace of this clone with the todo
file as the coordinator sent it, writes the failure file, runs the set-up commands and starts the
agent as the coordinator would (the command, prompt and sandbox from this clone's configuration).
``finish`` reads the agent's outcome, collects its change into one commit on the base with
batchd's trailers, and pushes it with a commit of the agent's log (one forced push of both refs).

The worker's collection is a first filter only: the coordinator takes the change through its own
door again, under its repository's full policy, so nothing a worker (or its agent) pushes is trusted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Config
from daemon.engine import outcomes
from daemon.exceptions import AgentError, printable
from daemon.workspace import Workspace
from daemon.world import (
    agentproc,
    agentresult,
    agents,
    agentspace,
    collect,
    deps,
    exchange,
    safefs,
)
from daemon.world.remote import PinnedRemote
from daemon.world.sandbox import Sandbox
from statemachine import dispatch as dp

log = structlog.get_logger(__name__)

PUSH_PAUSES = (2.0, 8.0)  # seconds between the tries of pushing a result


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """What every attempt of one worker shares: its clone, its configuration, its remote."""

    config: Config
    remote: PinnedRemote
    sandbox: Sandbox
    name: str

    @property
    def root(self) -> Path:
        return self.config.root


@dataclass(slots=True)
class Attempt:
    """A claim this worker holds: ``version`` is the claim stream's version after its own last append."""

    token: str
    queued: dp.AgentQueued
    version: int
    renewed_at: float  # monotonic, of its last append
    workspace: Path
    log_path: Path
    todo_text: bytes = b""
    proc: agentproc.AgentProcess | None = None
    phase: str = "preparing"  # -> running -> finishing -> reporting
    report: dp.AgentReported | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def todo_id(self) -> str:
        return self.queued.todo_id


def remote_dir(root: Path) -> Path:
    """Where this clone's workspaces of remote attempts live (one folder per claim)."""
    return Workspace(root).state_dir / "remote"


def remove_leftovers(host: Host) -> None:
    """The workspaces an earlier run of this worker left (it was killed): nothing in them counts."""
    folder = remote_dir(host.root)
    if folder.is_dir():
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                agentspace.remove(path)


def new_attempt(host: Host, queued: dp.AgentQueued, version: int, now: float) -> Attempt:
    ws = Workspace(host.root)
    return Attempt(
        token=queued.token,
        queued=queued,
        version=version,
        renewed_at=now,
        # Named by the token: an earlier run of the same attempt, given up, never shares its folder.
        workspace=remote_dir(host.root) / queued.token[:16],
        log_path=ws.agent_log(queued.todo_id, queued.attempt),
    )


def prepare(host: Host, a: Attempt) -> agentproc.AgentProcess:
    """Fetch the base, make the workspace, run the set-up, start the agent (see the module docstring)."""
    q = a.queued
    root, config = host.root, host.config
    fetched = exchange.fetch_refs(root, host.remote, [q.base_ref])
    if fetched[q.base_ref] != q.base_sha:
        raise exchange.ExchangeError(
            f"the remote's {q.base_ref} holds {fetched[q.base_ref][:10]}, "
            f"not the queued base {q.base_sha[:10]}"
        )
    try:
        a.todo_text = base64.b64decode(q.todo_b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AgentError(f"the queued todo file of {q.shown} is not base64: {e}") from e
    safefs.append_text(
        root,
        safefs.relative_to(root, a.log_path),
        f"--- batchd: todo {q.shown} attempt {q.attempt} on worker {host.name}, "
        f"workspace {a.workspace} ---\n",
    )
    agentspace.create(
        root, a.workspace, branch=q.branch, base_sha=q.base_sha, files={q.todo_path: a.todo_text}
    )
    deps.place(root, a.workspace)
    failure_file = Workspace(root).failure_file(q.todo_id, q.attempt)
    safefs.write_text(root, safefs.relative_to(root, failure_file), q.failure_text)
    todo_file = a.workspace / q.todo_path
    prompt = agents.render_prompt(
        agents.load_template(config.agent, root),
        todo_id=q.todo_id,
        todo_path=todo_file,
        title=q.title,
        verify_commands=config.verify.commands,
        worktree=a.workspace,
        repair=q.repair,
    )
    argv = agents.build_argv(
        config.agent,
        prompt=prompt,
        todo_path=todo_file,
        todo_id=q.todo_id,
        worktree=a.workspace,
        failure_file=failure_file,
    )
    env = agents.agent_env(
        config.agent,
        todo_id=q.todo_id,
        todo_path=todo_file,
        attempt=q.attempt,
        worktree=a.workspace,
        token=q.token,
        failure_file=failure_file,
    )
    env = deps.with_python_paths(env, root, a.workspace)
    if config.agent.setup:
        setup = agentresult.run_setup(
            config.agent.setup,
            cwd=a.workspace,
            log_path=a.log_path,
            timeout=config.agent.timeout,
            env=env,
            sandbox=host.sandbox,
            readable=[root],
        )
        if not setup.ok:
            raise AgentError(f"set-up command {setup.failed_command} failed (rc {setup.rc})")
    return agentproc.start_agent(
        argv,
        cwd=a.workspace,
        log_path=a.log_path,
        env=env,
        sandbox=host.sandbox,
        exit_path=Workspace(root).exit_record(q.todo_id, q.attempt),
        readable=[root],
        timeout=config.agent.timeout,
    )


def finish(host: Host, a: Attempt) -> dp.AgentReported:
    """The exited agent's outcome as the report to append: its change pushed when it has one."""
    assert a.proc is not None
    q, root = a.queued, host.root
    agentproc.cap_log(a.log_path, host.config.agent.max_log_bytes)
    outcome = agentresult.finish(a.proc)
    if outcome.ok:
        result = outcomes.collect_change(
            root, a.workspace, q.base_sha, outcome, shown=q.shown, attempt=q.attempt, title=q.title,
            branch=q.branch, policy=_policy(host, a),
        )  # fmt: skip
    else:
        result = outcomes.Result(outcome=outcome, reason=outcomes.exit_reason(outcome), detail=outcome.reason)
    return report_for(host, a, result)


def report_for(host: Host, a: Attempt, result: outcomes.Result) -> dp.AgentReported:
    """Push the change (if any) and the log, then say so; a failed push is the attempt's failure."""
    q, root, outcome = a.queued, host.root, result.outcome
    log_commit = exchange.log_commit(
        root,
        a.log_path,
        limit=host.config.agent.max_log_bytes,
        message=f"batchd: agent log of todo {q.shown} attempt {q.attempt} on {host.name}",
    )
    refs = {dp.log_ref(q.todo_id, q.attempt, q.token): log_commit}
    change = result.change
    if change is not None:
        refs[dp.todo_ref(q.todo_id, q.attempt, q.token)] = change.sha
    ok, reason, detail = change is not None, result.reason, result.detail
    try:
        push(host, refs)
    except exchange.RemoteUnreachable as e:
        if change is not None:
            raise  # this host's trouble, not the agent's: the worker gives the claim back, uncounted
        detail = f"{detail} (its log could not be pushed: {e.message})"
        refs = {}
    return dp.AgentReported(
        token=q.token,
        worker=host.name,
        ok=ok,
        returncode=outcome.rc if a.proc is not None else None,
        duration=round(outcome.duration, 3),
        cost_usd=outcome.cost_usd,
        summary=outcomes.plain_summary(outcome.summary),
        session_id=outcome.session_id or "",
        commit=change.sha if ok and change is not None else "",
        ref=dp.todo_ref(q.todo_id, q.attempt, q.token) if ok else "",
        log_ref=dp.log_ref(q.todo_id, q.attempt, q.token) if refs else "",
        reason="" if ok else reason,
        detail="" if ok else printable(detail),
        log_tail=printable(outcome.log_tail[-2000:]),
    )


def push(host: Host, refs: dict[str, str]) -> None:
    """Push ``refs``, trying again after a pause or two: a blip at the remote costs seconds, not the
    result (the claim's lease is renewed meanwhile). The last try's RemoteUnreachable when all fail."""
    for delay in PUSH_PAUSES:
        try:
            exchange.push_refs(host.root, host.remote, refs)
        except exchange.RemoteUnreachable as e:
            log.warning("push_failed", error=e.message, again_in=delay)
            time.sleep(delay)
        else:
            return
    exchange.push_refs(host.root, host.remote, refs)


def _policy(host: Host, a: Attempt) -> collect.Policy:
    """The worker's first filter: its todo file is the coordinator's, batchd's folders are off limits
    (the coordinator applies the repository's whole policy when it takes the change)."""
    config, root = host.config, host.root
    protected = {f"{safefs.relative_to(root, Workspace(root).state_dir)}/": "batchd's own folder"}
    with contextlib.suppress(ValueError):
        protected[f"{safefs.relative_to(root, config.todos_path)}/"] = "the todos folder"
    return collect.Policy(
        protected=protected,
        own_todo=a.queued.todo_path,
        own_todo_text=a.todo_text,
        todos_dir=safefs.relative_to(root, config.todos_path),
        max_change_bytes=config.agent.max_change_bytes,
    )


def stop(a: Attempt) -> None:
    """Kill the attempt's agent (its whole group), if it started."""
    proc = a.proc
    if proc is None or proc.poll() is not None:
        return
    proc.kill_group(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2)
    proc.kill_group(signal.SIGKILL)


def discard(a: Attempt) -> None:
    """What is left of an attempt this worker no longer holds: its agent and its workspace."""
    stop(a)
    with contextlib.suppress(OSError):
        agentspace.remove(a.workspace)
