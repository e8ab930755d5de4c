"""An attempt that starts from an earlier attempt's change (a resolve after a conflict, a repair
after a rejection): that change rebased onto the attempt's base for its workspace, said in its log,
and the files it was given with conflict markers (which its change must not keep)."""

from __future__ import annotations

from pathlib import Path

import structlog

from daemon.engine.runner import Daemon
from daemon.exceptions import GitError, printable
from daemon.world import rebase, safefs

log = structlog.get_logger(__name__)


def carried_change(
    root: Path, todo_id: str, commit: str, base_sha: str, log_path: Path
) -> rebase.Carried | None:
    """An earlier attempt's change rebased onto this attempt's base (None: start from scratch), said
    in the agent's log: what was carried, and which files hold conflict markers."""
    if not commit:
        return None
    rel = log_path.relative_to(root)
    try:
        carried = rebase.carry(root, commit, base_sha)
    except GitError as e:
        log.warning("carry_missing", todo_id=todo_id, commit=commit, error=e.message)
        note = f"--- batchd: the earlier change {commit[:12]} cannot be read ({e.message}): starting afresh"
        safefs.append_text(root, rel, printable(note) + " ---\n")
        return None
    line = f"--- batchd: carried the change of {commit[:12]} ({len(carried.files)} files)"
    line += f" onto {base_sha[:12]}"
    if carried.conflicts:
        line += "; conflict markers in: " + ", ".join(printable(f) for f in carried.conflicts)
    if carried.skipped:
        line += "; not carried (not plain files): " + ", ".join(printable(f) for f in carried.skipped)
    safefs.append_text(root, rel, line + " ---\n")
    log.info(
        "change_carried",
        todo_id=todo_id,
        commit=commit[:12],
        files=len(carried.files),
        conflicts=[printable(f) for f in carried.conflicts],
    )
    return carried


def marker_files(d: Daemon, todo_id: str) -> tuple[str, ...]:
    """The files its attempt was given with conflict markers: as prepared, or (its workspace was
    prepared by a daemon that is gone) the same rebase worked out again from the objects."""
    if todo_id in d.markers:
        return d.markers[todo_id]
    todo = d.proj.todos[todo_id]
    if not todo.carry or not todo.base_sha:
        return ()
    try:
        return rebase.carry(d.root, todo.carry, todo.base_sha).conflicts
    except GitError:
        return ()  # it was started afresh then too
