"""Where a repository's batchd files live, and opening its event log for a command.

An event log is scoped by a repository id (see :class:`store.EventLog`'s ``scope``), so several
repositories can share one PostgreSQL database. The id is ``--repo-id``, else ``[batchd] repo_id``,
else: on SQLite ``""`` (the file is the repository's own, as before scopes existed); on a shared
database the first 12 hex digits of the repository's root commit, which every clone of it on every
host computes alike without being told. ``-`` (:data:`UNSCOPED`) names the unscoped log itself on a
shared database: where a log written before scopes existed was migrated to.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.exceptions import UsageError
from store import EventLog

if TYPE_CHECKING:
    from daemon.config import Config

STATE_DIR = ".batchd"
DEFAULT_DB = f"{STATE_DIR}/events.db"

#: The store keeps up to 100 characters of scope; ids are plain so they read well in a shell, a
#: URL-ish name (acme/webshop, github.com/acme/webshop) or a sha.
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")
#: The spelling of the unscoped log (scope "") where the default would be the root commit's id: a
#: PostgreSQL log from before scopes existed is migrated there. Not a valid id, so it names nothing else.
UNSCOPED = "-"
#: Hex digits of the root commit that name a repository by default on a shared database.
ROOT_ID_DIGITS = 12


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


def repo_id_problem(text: str) -> str:
    """What is wrong with ``text`` as a repository id ("" when it is fine; "" and "-" are fine)."""
    if not text or text == UNSCOPED or REPO_ID.fullmatch(text):
        return ""
    if len(text) > 100:
        return f"a repository id is at most 100 characters, this one has {len(text)}"
    return (
        f"repository id {text!r} must start with a letter or digit and hold only letters, digits "
        "and . _ - : / @ +"
    )


def is_shared(location: str) -> bool:
    """A database server (which several repositories may share), not an SQLite file or memory."""
    return "://" in location and not location.startswith("sqlite")


@cache
def root_commit_id(root: Path) -> str:
    """The first hex digits of the repository's root commit: the same in every clone. The root of the
    first-parent chain, so a merge of an unrelated history (a second root) never changes it; a
    shallow clone is refused, as its oldest commit is not the root."""
    shallow = _git_out(root, "rev-parse", "--is-shallow-repository")
    if shallow.stdout.strip() == "true":
        raise UsageError(
            f"{root} is a shallow clone: its oldest commit is not the repository's root commit, which "
            "names the repository in a shared event log",
            hint=f"`git -C {root} fetch --unshallow`, or set [batchd] repo_id in batchd.toml",
        )
    done = _git_out(root, "rev-list", "--max-parents=0", "--first-parent", "HEAD")
    roots = done.stdout.split()
    if done.returncode != 0 or not roots:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "it has no commit yet"
        raise UsageError(f"{root} has no root commit to name it in a shared event log ({why})", hint=_NAME_IT)
    return roots[0][:ROOT_ID_DIGITS]


def _git_out(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"cannot run git to find the repository id of {root}: {e}", hint=_NAME_IT) from e


_NAME_IT = "set [batchd] repo_id in batchd.toml (or pass --repo-id), or commit something first"


def checked_repo_id(repo_id: str) -> str:
    problem = repo_id_problem(repo_id)
    if problem:
        raise UsageError(problem, hint="e.g. --repo-id acme/webshop; see `batchd events --help`")
    return repo_id


def log_scope(root: Path, location: str, repo_id: str = "") -> str:
    """The scope of the repository's events in the log at ``location``: ``repo_id`` as configured,
    "" meaning the default, "-" the unscoped log (see the module docstring)."""
    if checked_repo_id(repo_id) == UNSCOPED:
        return ""
    if repo_id:
        return repo_id
    return root_commit_id(root.resolve()) if is_shared(location) else ""


def config_scope(config: Config) -> str:
    """The scope of the daemon's own events: ``repo_id`` as configured, or its default."""
    return log_scope(config.root, config.db_url, config.batchd.repo_id)


def unscoped_left_behind(config: Config) -> tuple[str, str] | None:
    """(what, how to fix) when the daemon's default scope on a shared database is empty while the
    unscoped log holds events: a log from before scopes, migrated to ``""``, which the default scope
    would silently start beside. Setting ``repo_id`` (to ``-`` or to an id) is the person's answer."""
    if config.batchd.repo_id or not is_shared(config.db_url):
        return None
    scope = config_scope(config)
    with EventLog(config.db_url, scope=scope) as own:
        if own.last_seq():
            return None
    with EventLog(config.db_url, scope="") as unscoped:
        events = unscoped.last_seq()
    if not events:
        return None
    return (
        f"the database holds a log of {events} events from before repository scopes, which this "
        f"repository's default scope ({scope}) does not see",
        f'set repo_id = "{UNSCOPED}" in [batchd] to go on with that log, or repo_id = "{scope}" to '
        "start a new one beside it",
    )


def config_log(config: Config) -> EventLog:
    """The daemon's own log: ``db`` and ``repo_id`` as configured."""
    return EventLog(config.db_url, scope=config_scope(config))


def find_root(start: Path) -> Path:
    """The repository root: the nearest folder at or above ``start`` with batchd.toml or .git."""
    here = start.resolve()
    if not here.exists():
        raise UsageError(f"{start} does not exist", hint="pass -C with the repository's folder")
    for folder in (here, *here.parents):
        if (folder / "batchd.toml").is_file() or (folder / ".git").exists():
            return folder
    return here


def open_log(
    root: Path, db: str | None = None, *, must_exist: bool = True, repo_id: str | None = None
) -> EventLog:
    """The repository's log for a command: ``db`` (``--db``; None: ``[batchd] db`` of the
    repository's batchd.toml, default .batchd/events.db), scoped by ``repo_id`` (``--repo-id``, taken
    as given; None: ``[batchd] repo_id`` of batchd.toml, or its default)."""
    from daemon.config import configured_log

    configured_db, configured_id = configured_log(root)
    ws = Workspace(root)
    location = ws.db_location(db if db is not None else configured_db)
    if must_exist and "://" not in location and not Path(location).exists():
        raise UsageError(
            f"no event log at {location}",
            hint="run `batchd run` (or `batchd demo`) in this repository first, or pass -C / --db",
        )
    if repo_id is not None:
        # Given on the command line, "" included: `--repo-id ""` reads the unscoped events (an SQLite
        # log's, or those a database held before it had scopes).
        return EventLog(location, scope="" if checked_repo_id(repo_id) == UNSCOPED else repo_id)
    return EventLog(location, scope=log_scope(root, location, configured_id))
