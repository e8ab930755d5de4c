"""Where a repository's batchd files live, and opening its event log for a command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.exceptions import UsageError
from store import EventLog

STATE_DIR = ".batchd"
DEFAULT_DB = f"{STATE_DIR}/events.db"


@dataclass(frozen=True, slots=True)
class Workspace:
    """The repository root and batchd's private folder in it (excluded from git)."""

    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def workspaces(self) -> Path:
        """Agents' own repositories, one per todo (see :mod:`daemon.world.agentspace`)."""
        return self.state_dir / "workspaces"

    def workspace(self, todo_id: str) -> Path:
        return self.workspaces / f"todo-{todo_id}"

    @property
    def verify_worktree(self) -> Path:
        """batchd's own worktree for verification, phase commits and pushes."""
        return self.state_dir / "verify"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def exits(self) -> Path:
        """Agents' exit records, written by :mod:`daemon.world.agentshim`."""
        return self.state_dir / "exits"

    def exit_record(self, todo_id: str, attempt: int) -> Path:
        return self.exits / f"todo-{todo_id}-attempt-{attempt}.json"

    @property
    def crash_log(self) -> Path:
        return self.logs / "daemon-crashes.log"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "daemon.service.lock"

    @property
    def tmp(self) -> Path:
        """batchd's own scratch files (the person's hooks as pinned, throwaway indexes)."""
        return self.state_dir / "tmp"

    def agent_log(self, todo_id: str, attempt: int) -> Path:
        return self.logs / f"todo-{todo_id}-attempt-{attempt}.log"

    def verify_log(self, todo_id: str, attempt: int) -> Path:
        """The whole output of the check that rejected ``attempt`` (``batchd logs ID --verify``)."""
        return self.logs / f"todo-{todo_id}-attempt-{attempt}-verify.log"

    def failure_file(self, todo_id: str, attempt: int) -> Path:
        """Why the attempt before ``attempt`` was not accepted, for the agent of ``attempt``
        (``{failure_file}``, ``BATCHD_FAILURE_FILE``): outside its workspace, readable in its sandbox."""
        return self.logs / f"todo-{todo_id}-attempt-{attempt}-failure.txt"

    def db_location(self, db: str | None) -> str:
        """A URL is used as is; a path is relative to the repository root."""
        value = db or DEFAULT_DB
        if "://" in value:
            return value
        path = Path(value)
        return str(path if path.is_absolute() else self.root / path)


def find_root(start: Path) -> Path:
    """The repository root: the nearest folder at or above ``start`` with batchd.toml or .git."""
    here = start.resolve()
    if not here.exists():
        raise UsageError(f"{start} does not exist", hint="pass -C with the repository's folder")
    for folder in (here, *here.parents):
        if (folder / "batchd.toml").is_file() or (folder / ".git").exists():
            return folder
    return here


def open_log(root: Path, db: str | None = None, *, must_exist: bool = True) -> EventLog:
    ws = Workspace(root)
    location = ws.db_location(db)
    if must_exist and "://" not in location and not Path(location).exists():
        raise UsageError(
            f"no event log at {location}",
            hint="run `batchd run` (or `batchd demo`) in this repository first, or pass -C / --db",
        )
    return EventLog(location)
