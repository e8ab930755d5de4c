"""Reconcile the world with the log after a crash, before anything new starts.

The log says what was intended; the world (processes, worktrees, git refs, the remote) says what
happened. Each intent without its outcome is settled here or by the step that owns it: an agent
whose daemon died is killed (its process group) and re-run as a new, uncounted attempt; an
interrupted cherry-pick, merge or rebase in batchd's worktrees is aborted; records of vanished
worktrees are pruned. Commits and pushes are settled by their steps (found by trailer, compared
with the remote) so they are never made twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from daemon import agents, gitops
from daemon.exceptions import UsageError
from daemon.runner import Daemon
from statemachine import events as ev
from statemachine.tables import TodoState

log = structlog.get_logger(__name__)

EXCLUDE_LINE = "/.batchd/"


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


def groups_working_in(folder: Path) -> set[int]:
    """Process groups (other than ours) of processes whose working directory is inside ``folder``."""
    found: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    target = folder.resolve()
    own = os.getpgrp()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
            pgid = os.getpgid(int(entry.name))
        except (OSError, RuntimeError):
            continue  # gone, or not ours to look at
        if pgid != own and (cwd == target or target in cwd.parents):
            found.add(pgid)
    return found


def reconcile(d: Daemon) -> None:
    """Settle what a dead daemon left behind (idempotent: running it twice changes nothing more)."""
    gitops.prune_worktrees(d.root)
    for wt in gitops.list_worktrees(d.root):
        if d.ws.worktrees in wt.path.parents and wt.path.exists():
            aborted = gitops.abort_in_progress(wt.path)
            if aborted:
                log.info("recovered_git_operation", worktree=str(wt.path), aborted=aborted)
    interrupted = []
    for todo in list(d.proj.todos.values()):
        if todo.state != TodoState.RUNNING or todo.todo_id in d.agents:
            continue
        if todo.pgid:
            agents.kill_leftover_group(todo.pgid)
        if todo.worktree:
            # A crash between starting the agent and recording its group leaves no pgid in the log:
            # what still works inside the todo's worktree is that agent (or something it started).
            for pgid in groups_working_in(d.root / todo.worktree):
                agents.kill_leftover_group(pgid)
        interrupted.append(
            (
                ev.todo_stream(todo.todo_id),
                [
                    ev.AgentInterrupted(
                        todo_id=todo.todo_id,
                        attempt=todo.attempt,
                        reason="the daemon stopped while the agent ran",
                    )
                ],
            )
        )
    d.emit(*interrupted)
    if interrupted:
        log.info("recovered_agents", todos=[stream for stream, _ in interrupted])
