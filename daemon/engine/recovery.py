"""Reconcile the world with the log after a crash, before anything new starts.

The log says what was intended; the world (processes, workspaces, git refs, the remote) says what
happened. Each intent without its outcome is settled here or by the step that owns it: an agent
whose daemon died is adopted while it runs, collected when it ended meanwhile (or committed its
work), and only when its work is lost killed (only the processes batchd started: checked by
start time and token) and re-run as a new, uncounted attempt (:func:`settle_agent`); an
interrupted cherry-pick, merge or rebase in batchd's worktree is aborted; records of vanished
worktrees are pruned. Commits and pushes are settled by their steps (found by trailer, compared
with the remote) so they are never made twice. A crash
that repeats at the same place is stopped here (:func:`break_crash_loop`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import structlog

from daemon.engine import dispatching, executor, outcomes, requests
from daemon.engine.runner import Daemon
from daemon.exceptions import UsageError
from daemon.workspace import STATE_DIR
from daemon.world import adopted, agentproc, agentspace, gitops
from statemachine import events as ev
from statemachine.tables import TodoState
from statemachine.views import TodoView
from store.eventlog import parse_time

log = structlog.get_logger(__name__)

EXCLUDE_LINE = f"/{STATE_DIR}/"


def ensure_excluded(root: Path) -> None:
    """batchd's own files must never show as changes: add ``.batchd/`` to ``.git/info/exclude``."""
    git_dir = Path(gitops.run_git(root, "rev-parse", "--absolute-git-dir").stdout.strip())
    exclude = git_dir / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    if EXCLUDE_LINE not in text.splitlines():
        exclude.write_text(
            text + ("" if text.endswith("\n") or not text else "\n") + EXCLUDE_LINE + "\n", encoding="utf-8"
        )


FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "batchd",
    "GIT_AUTHOR_EMAIL": "batchd@localhost",
    "GIT_COMMITTER_NAME": "batchd",
    "GIT_COMMITTER_EMAIL": "batchd@localhost",
}


def check_checkout(root: Path, branch: str) -> None:
    """The repository's own checkout must be on the branch batchd moves forward (it follows it)."""
    proc = gitops.run_git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    current = proc.stdout.strip()
    if current == branch:
        return
    exists = gitops.run_git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    where = f"on branch {current!r}" if current else "not on a branch (detached HEAD)"
    if exists.returncode != 0:
        hint = (
            f"set [batchd] branch = {current!r} in batchd.toml, or create {branch!r}"
            if current
            else (f"`git checkout {branch}`")
        )
        raise UsageError(f"{root} is {where} and has no branch {branch!r}", hint=hint)
    raise UsageError(
        f"{root} is {where}, but batchd.toml says branch = {branch!r}",
        hint=f"`git checkout {branch}` (batchd keeps this checkout on it), or change [batchd] branch",
    )


def ensure_identity(root: Path) -> bool:
    """Commits need an author: when git has none configured for this repository (a fresh machine, a
    service account), batchd commits as ``batchd <batchd@localhost>`` rather than failing. A
    configured identity is never overridden. Returns True when the fallback was set."""
    configured = gitops.run_git(root, "config", "user.email", check=False).stdout.strip()
    if configured or os.environ.get("GIT_AUTHOR_EMAIL") or os.environ.get("EMAIL"):
        return False
    for key, value in FALLBACK_IDENTITY.items():
        os.environ.setdefault(key, value)
    log.warning(
        "git_identity_fallback",
        name="batchd",
        email="batchd@localhost",
        hint="set user.name and user.email (git config) to commit as someone else",
    )
    return True


def check_state_dir(root: Path) -> None:
    """``.batchd/`` must be batchd's own folder, not a link to somewhere else (it holds the log,
    the logs, the workspaces, and batchd writes there all the time)."""
    state = root / STATE_DIR
    if state.is_symlink() or (state.exists() and not state.is_dir()):
        raise UsageError(
            f"{state} is a link or a file, not batchd's folder",
            hint=f"remove it (batchd makes it again): `rm {state}`",
        )
    state.mkdir(exist_ok=True)


def reconcile(d: Daemon) -> None:
    """Settle what a dead daemon left behind (idempotent: running it twice changes nothing more)."""
    gitops.prune_worktrees(d.root)
    verify = gitops.open_worktree(d.root, d.ws.verify_worktree)
    if verify is not None:
        aborted = gitops.abort_in_progress(verify)
        if aborted:
            log.info("recovered_git_operation", worktree=str(verify.path), aborted=aborted)
    interrupted = []
    for todo in list(d.proj.todos.values()):
        if todo.state != TodoState.RUNNING or todo.todo_id in d.agents or dispatching.is_remote(d, todo):
            continue
        lost = settle_agent(d, todo)
        if lost is not None:
            interrupted.append((ev.todo_stream(todo.todo_id), [lost]))
    d.emit(*interrupted)
    if interrupted:
        log.info("recovered_agents", todos=[stream for stream, _ in interrupted])
    requests.reconcile(d)
    break_crash_loop(d)


LOST = "the daemon stopped while the agent ran and its work was lost with it ({why}): it is redone"


def settle_agent(d: Daemon, todo: TodoView) -> ev.AgentInterrupted | None:
    """A dead daemon's running agent, which is never paid for twice when its work is there:

    - still running (its shim leads its group with the recorded start time): adopted, and the
      normal poll, timeout and collect path finishes it;
    - ended while the daemon was down (the shim's exit record): collected by that same path;
    - killed with the daemon (no record, no process) after committing its work with its attempt's
      ``Batchd-Todo``/``Batchd-Attempt`` trailers: collected, as finished when it committed;
    - otherwise its work is lost (half-written files are not a change): what is left of it is
      killed (only what batchd started: checked by start time and token) and the returned
      interruption, with the agent time spent, makes it run again.
    """
    if not todo.pgid and todo.token:
        # Started just before the crash, its pid never recorded: its shim is found by its token.
        leader = adopted.shim_leader(todo.token, d.ws.exit_record(todo.todo_id, todo.attempt))
        if leader is not None:
            todo = dataclasses.replace(
                todo,
                pid=leader,
                pgid=leader,
                start_ticks=agentproc.process_start_ticks(leader),
                exit_path=str(d.ws.exit_record(todo.todo_id, todo.attempt).relative_to(d.root)),
            )
    if todo.pgid and todo.exit_path:
        proc = adopt(d, todo)
        if proc is not None:
            d.agents[todo.todo_id] = proc
            if proc.recovery == "adopted":
                agentproc.on_exit(proc.pid, d.wake)
            log.info(
                "recovered_agent",
                todo_id=todo.todo_id,
                attempt=todo.attempt,
                case=proc.recovery,
                detail=outcomes.RECOVERED[proc.recovery],
            )
            return None
    # Only what batchd started: the group whose leader has the recorded start time, and the
    # processes carrying the attempt's token (a crash before the pid was recorded). A reused
    # pid, or a person's shell in the workspace, is never killed.
    if todo.pgid:
        agentproc.kill_leftover_group(todo.pgid, start_ticks=todo.start_ticks)
    for pid in agentproc.token_holders(todo.token):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            log.info("leftover_agent_killed", todo_id=todo.todo_id, pid=pid)
    if not todo.pgid:
        why = "it had not started yet, or its process was never recorded"
    elif not todo.exit_path:
        why = "it ran without an exit record"
    else:
        why = "it ended with no exit record and no committed work"
    duration = executor.agent_seconds(todo, until=crash_time(d, todo))
    log.info("recovered_agent", todo_id=todo.todo_id, attempt=todo.attempt, case="lost", detail=why)
    return ev.AgentInterrupted(
        todo_id=todo.todo_id, attempt=todo.attempt, reason=LOST.format(why=why), duration=round(duration, 3)
    )


def adopt(d: Daemon, todo: TodoView) -> adopted.AdoptedProcess | None:
    """The handle the normal path finishes the agent through, or None when its work is lost."""
    assert todo.pgid is not None
    started = parse_time(todo.agent_started_at).timestamp() if todo.agent_started_at else time.time()

    def handle(assumed: dict[str, Any] | None = None) -> adopted.AdoptedProcess:
        return adopted.AdoptedProcess(
            pid=todo.pgid or 0,
            start_ticks=todo.start_ticks,
            token=todo.token,
            log_path=d.root / todo.log_path,
            exit_path=d.root / todo.exit_path,
            started_wall=started,
            assumed=assumed,
        )

    proc = handle()
    if proc.poll() is None:
        return proc  # still running: "adopted"
    if proc.exit_record() is not None:
        proc.recovery = "exited"
        return proc
    shown = d.proj.shown(todo.todo_id)
    trailers = {gitops.TRAILER_TODO: shown, gitops.TRAILER_ATTEMPT: str(todo.attempt)}
    workspace = d.root / todo.worktree
    committed = agentspace.committed_done(d.root, workspace, todo.base_sha, trailers)
    if committed is None or agentspace.written_after(workspace, committed):
        return None  # no word that it was done, or it went on writing after it: half-done work
    # The agent said it was done when it committed: it counts as ended then, with success.
    assumed = {"rc": 0, "ended_at": min(max(committed, started), time.time())}
    proc = handle(assumed)
    proc.recovery = "committed"
    proc.poll()
    return proc


def crash_time(d: Daemon, todo: TodoView) -> float:
    """The best known moment the agent was lost: the latest of its log's last write and the log's
    last event (both happened before the crash), or now when neither is known."""
    known: list[float] = []
    with contextlib.suppress(OSError):
        known.append((d.root / todo.log_path).stat().st_mtime)
    if d.proj.last_recorded_at:
        known.append(parse_time(d.proj.last_recorded_at).timestamp())
    return min(max(known), time.time()) if known else time.time()


CRASH_LOOP = 3  # the same unexpected error at the same place this many times in a row


def break_crash_loop(d: Daemon) -> None:
    """After the same crash at the same place three times in a row, stop trying: block the todo whose
    step it was (paying for its agent again and again would be the cost), or pause the run."""
    run = d.proj.run
    if run.crash_count < CRASH_LOOP:
        return
    reason = (
        f"batchd failed {run.crash_count} times in a row at {run.crash_place}: {run.crash_error} "
        f"(traceback in {d.ws.crash_log.relative_to(d.root)})"
    )
    todo = d.proj.todos.get(run.crash_todo) if run.crash_todo else None
    if todo is not None and d.proj.may(todo.stream, "block"):
        d.emit_one(
            todo.stream,
            ev.TodoBlocked(
                todo_id=todo.todo_id,
                reason=reason,
                action=f"report the bug with that file; `batchd retry {d.proj.shown(todo.todo_id)}` "
                "once batchd is fixed",
            ),
        )
        log.error("crash_loop_broken", todo_id=todo.todo_id, place=run.crash_place)
    elif run.state == "running":
        d.emit_one(ev.RUN_STREAM, ev.RunPaused(reason=reason, by="daemon"))
        log.error("crash_loop_paused", place=run.crash_place)
