"""Errors of the daemon and CLI, all under :class:`store.exceptions.BatchdError`.

Each names what went wrong, where (file, key, todo, command) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from store.exceptions import EXIT_CANNOT_PROCEED, EXIT_FAILURES, EXIT_USAGE, BatchdError

__all__ = [
    "AgentError",
    "BatchdError",
    "CannotProceed",
    "ConfigError",
    "GitError",
    "Halt",
    "LockHeld",
    "PlanError",
    "PreflightFailed",
    "Refused",
    "TodoFileError",
    "UsageError",
    "headline",
    "printable",
]


class UsageError(BatchdError):
    code = "usage_error"
    exit_code = EXIT_USAGE


class Refused(BatchdError):
    """A request the CLI can tell at once cannot be done (an unknown todo id): nothing was recorded."""

    code = "refused"
    exit_code = EXIT_FAILURES


class ConfigError(BatchdError):
    """``batchd.toml`` is missing a key, has an unknown one, or a value of the wrong type."""

    code = "config_error"
    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str, key: str = "", hint: str = "") -> None:
        self.path = path
        self.key = key
        where = f"{path}: [{key}] " if key else f"{path}: "
        super().__init__(where + message, hint=hint)


class PreflightFailed(ConfigError):
    """``batchd run`` would waste its attempts: the agent, a verify command, the branch or the remote
    cannot be found. Every problem is listed at once, each with its fix, so one edit clears them all."""

    code = "preflight_failed"

    def __init__(self, *, path: str, problems: Sequence[tuple[str, str, str]]) -> None:
        # (key, what is wrong, how to fix it); kept as dicts for --json.
        self.problems = [{"key": k, "message": m, "hint": h} for k, m, h in problems]
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = [f"batchd cannot start, {count} to fix first:"]
        for n, (key, message, hint) in enumerate(problems, 1):
            section, _, name = key.partition(".")
            lines.append(f"  {n}. [{section}] {name}: {message}" if key else f"  {n}. {message}")
            if hint:
                lines.append(f"     how to fix: {hint}")
        super().__init__("\n".join(lines), path=path, hint="fix each one as said, then start again")


class TodoFileError(BatchdError):
    """A todo file is malformed; the daemon records it as invalid and goes on."""

    code = "todo_invalid"
    exit_code = EXIT_FAILURES

    def __init__(self, message: str, *, path: str, hint: str, todo_id: str | None = None) -> None:
        self.path = path
        self.todo_id = todo_id
        super().__init__(f"{path}: {message}", hint=hint)


class PlanError(BatchdError):
    """A plan names an unknown todo, puts one in two batches, or orders a dependency wrongly."""

    code = "plan_error"
    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str, where: str = "", hint: str = "") -> None:
        self.path = path
        self.where = where
        loc = f"{path} ({where})" if where else path
        super().__init__(f"{loc}: {message}", hint=hint)


class GitError(BatchdError):
    """A git operation failed; carries the command and what git said."""

    code = "git_error"
    exit_code = EXIT_CANNOT_PROCEED

    def __init__(self, message: str, *, command: list[str], output: str = "", hint: str = "") -> None:
        self.command = command
        self.output = output
        # Whole: the line that says why (`error: ...`) is often first, before a long list of files.
        tail = f"\n  git said: {output.strip()}" if output.strip() else ""
        super().__init__(f"{message} (`{' '.join(command)}`){tail}", hint=hint)


_WHY_PREFIXES = ("fatal:", "error:", "remote: error:", "! [rejected]", "! [remote rejected]")


def printable(text: str) -> str:
    """``text`` with any undecodable bytes (surrogate escapes) shown as ``\\xNN``: safe to log and store."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def headline(text: str) -> str:
    """One line of a (git) failure for a person: its first line, and git's ``fatal:``/``error:`` line
    when that comes later (the whole text stays in the event and in ``--json``)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0]
    for line in lines[1:]:
        said = line.removeprefix("git said:").strip()
        if said.startswith(_WHY_PREFIXES) and said not in first:
            more = len(lines) - 2
            return f"{first} — {said}" + (f" (+{more} more lines)" if more > 0 else "")
    more = len(lines) - 1
    return first + (f" (+{more} more lines)" if more > 0 else "")


class AgentError(BatchdError):
    """An agent command cannot be started at all (not found, not executable)."""

    code = "agent_error"
    exit_code = EXIT_USAGE


class LockHeld(BatchdError):
    """Another daemon already runs on this repository."""

    code = "lock_held"
    exit_code = EXIT_CANNOT_PROCEED

    def __init__(self, *, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another batchd daemon ({who}) already runs on this repository (lock {path})",
            hint=f"stop it first (kill {pid})" if pid else "stop the other daemon first",
        )


class Halt(StrEnum):
    """Why a daemon stops instead of waiting: the conditions nothing but a person can clear."""

    BASELINE_RED = "baseline_red"  # --once: the tests fail before any todo ran
    COMMIT_FAILED = "commit_failed"  # the phase commit could not be made
    CHECKOUT_BLOCKED = "checkout_blocked"  # the person's checkout cannot take the phase commit
    PAUSED = "paused"  # --once: the daemon paused the run (a crash loop, a blocked checkout)
    GIT_FAILING = "git_failing"  # git failed tick after tick


class CannotProceed(BatchdError):
    """The run cannot go on without a person; the daemon stops its agents and exits 3."""

    code = "cannot_proceed"
    exit_code = EXIT_CANNOT_PROCEED

    def __init__(self, message: str, *, cause: Halt, hint: str = "") -> None:
        self.cause = cause
        super().__init__(message, hint=hint)
