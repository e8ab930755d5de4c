"""What a coding agent is given: its argv, its environment and its prompt (the processes are
:mod:`daemon.world.agentproc`).

Agents get these environment variables (see :func:`agent_env`): ``BATCHD_TODO_ID``,
``BATCHD_TODO_PATH`` (absolute, inside its workspace), ``BATCHD_ATTEMPT`` (1-based),
``BATCHD_WORKTREE`` (its workspace, its cwd), ``BATCHD_FAILURE_FILE`` (why the previous attempt
was rejected, see :func:`failure_text`) and ``BATCHD_AGENT_TOKEN`` (marks every process of the
attempt, so recovery finds them and nothing else), on top of batchd's own environment and
``[agent] env``.

A repair may *resume* the agent's own session (``[agent] resume``): the argv is then
``resume_template`` with ``{session_id}`` filled in, and the prompt is :func:`resume_prompt`, the
failure and what to do about it, not the whole task again (the session already holds the task, the
files it read and its reasoning; repeating them costs tokens and reads as a new task). A session id
comes from the agent's own output, so it is used only when it looks like an id
(:func:`valid_session_id`): never as an option, never across lines.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from daemon.config import AGENT_PLACEHOLDERS, PLACEHOLDER, RESUME_PLACEHOLDERS, AgentConfig
from daemon.exceptions import AgentError

__all__ = [
    "AGENT_FIX",
    "PROMPT_PLACEHOLDERS",
    "agent_env",
    "build_argv",
    "default_template",
    "failure_text",
    "load_template",
    "render_prompt",
    "repair_text",
    "resolve_executable",
    "resume_prompt",
    "resume_session",
    "todo_title",
    "valid_session_id",
]

PROMPT_PLACEHOLDERS = ("todo_id", "todo_path", "title", "verify_commands", "worktree", "repair")


def substitute(text: str, values: Mapping[str, str]) -> str:
    # One pass, known names only: a substituted value is never scanned again (a todo containing
    # "{prompt}" stays literal), and other braces (JSON, code in a prompt) are left alone.
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------------------------------
# argv, environment, prompt


def build_argv(
    agent: AgentConfig,
    *,
    prompt: str,
    todo_path: Path | str,
    todo_id: str,
    worktree: Path | str,
    failure_file: Path | str = "",
    session_id: str = "",
) -> list[str]:
    """The agent's argv with placeholders filled in; each element stays one argument (no shell).

    With ``session_id`` (from :func:`resume_session`: checked, and only when the agent can resume)
    it is ``resume_template`` that is filled in, ``{session_id}`` included."""
    values = {
        "prompt": prompt,
        "todo_path": str(todo_path),
        "todo_id": todo_id,
        "worktree": str(worktree),
        "failure_file": str(failure_file),
    }
    assert set(values) == set(AGENT_PLACEHOLDERS)
    template = agent.argv_template
    if session_id:
        if not valid_session_id(session_id) or not agent.resume_template:
            raise ValueError(f"not a session to resume: {session_id[:80]!r}")  # resume_session's job
        values["session_id"] = session_id
        assert set(values) == set(RESUME_PLACEHOLDERS)
        template = agent.resume_template
    return [substitute(element, values) for element in template]


# What an agent printed as its session, to be passed back as one argv element: a word of id
# characters, never an option ("-..."), bounded. Claude's are UUIDs, codex's UUIDs too.
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def valid_session_id(value: object) -> bool:
    """Whether ``value`` may be given back to the agent as the session it continues."""
    return isinstance(value, str) and bool(_SESSION_ID.fullmatch(value)) and not value.startswith("-")


def resume_session(agent: AgentConfig, session_id: str) -> str:
    """The session the next attempt continues: ``session_id`` when ``[agent] resume`` is on, the
    agent has a resume command and the id looks like one; else "" (a fresh start, which always works)."""
    if agent.resume and agent.resume_template and valid_session_id(session_id):
        return session_id
    return ""


DAEMON_ONLY_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "BATCHD_CRASH_AFTER",
    "BATCHD_CRASH_AT_SEQ",
)


def agent_env(
    agent: AgentConfig,
    *,
    todo_id: str,
    todo_path: Path | str,
    attempt: int,
    worktree: Path | str,
    token: str = "",
    failure_file: Path | str = "",
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of an agent: ``base`` (default ``os.environ``), ``[agent] env``, BATCHD_*."""
    env = dict(os.environ if base is None else base)
    # systemd's notify socket and watchdog belong to the daemon: an agent (or a tool it runs that
    # speaks sd_notify) must not report READY or pings in the daemon's name.
    for name in DAEMON_ONLY_ENV:
        env.pop(name, None)
    env.update(agent.env)
    env.update(
        BATCHD_TODO_ID=todo_id,
        BATCHD_TODO_PATH=str(todo_path),
        BATCHD_ATTEMPT=str(attempt),
        BATCHD_WORKTREE=str(worktree),
    )
    if str(failure_file):
        env["BATCHD_FAILURE_FILE"] = str(failure_file)
    if token:
        env["BATCHD_AGENT_TOKEN"] = token
    return env


def default_template() -> str:
    return resources.files("daemon").joinpath("prompts/agent.md").read_text(encoding="utf-8")


def load_template(agent: AgentConfig, root: Path) -> str:
    """``[agent] prompt_file`` (relative to ``root``) when set, else the built-in template."""
    return (root / agent.prompt_file).read_text(encoding="utf-8") if agent.prompt_file else default_template()


def repair_text(command: Sequence[str], output_tail: str) -> str:
    """The ``{repair}`` text for an attempt after a rejected one."""
    return f"Your previous attempt broke: {shlex.join(command)}\n{output_tail.rstrip()}\nFix it."


def resume_prompt(
    repair: str,
    *,
    todo_id: str,
    todo_path: Path | str,
    verify_commands: Sequence[Sequence[str]],
    carried: bool,
) -> str:
    """The prompt of a resumed session: the failure and what to do, not the task again.

    ``carried``: its change is in the workspace (rebased onto the new head); otherwise the workspace
    is a fresh checkout and the session's memory of its edits is out of date: it must make them again.
    """
    where = (
        "Your change is in the workspace, rebased onto the newest verified head: fix it there."
        if carried
        else "The workspace was reset to the newest verified head, so your earlier edits are not in "
        "it: make the change again, with the fix."
    )
    checks = "\n".join(f"   - `{shlex.join(c)}`" for c in verify_commands)
    return (
        f"batchd did not accept your change for todo #{todo_id} ({todo_path}).\n"
        f"{repair.strip()}\n\n{where}\nRun the verification commands and make them pass:\n{checks}\n"
        "Same rules as before: do not rename the todo file, do not push, do not weaken tests. "
        "Return a summary of what you changed."
    )


def failure_text(*, attempt: int, outcome: str, reason: str, verify_output: str | None, repair: str) -> str:
    """The failure file's text: why ``attempt`` was not accepted (its outcome and reason), then the
    failing command with its whole output when the checks rejected it, else the repair text."""
    head = f"batchd: attempt {attempt} was {outcome.replace('_', ' ')}: {reason}".rstrip(": ") + "\n"
    if verify_output:
        return f"{head}\n{verify_output}"
    return f"{head}\n{repair.strip()}\n" if repair.strip() else head


def render_prompt(
    template: str,
    *,
    todo_id: str,
    todo_path: Path | str,
    title: str,
    verify_commands: Sequence[Sequence[str]],
    worktree: Path | str,
    repair: str = "",
) -> str:
    """Fill the template's placeholders; unknown ``{words}`` are left as written."""
    values = {
        "todo_id": todo_id,
        "todo_path": str(todo_path),
        "title": title,
        "verify_commands": "\n".join(f"   - `{shlex.join(c)}`" for c in verify_commands),
        "worktree": str(worktree),
        "repair": f"\n{repair}\n" if repair else "",
    }
    assert set(values) == set(PROMPT_PLACEHOLDERS)
    return substitute(template, values)


def todo_title(path: Path) -> str:
    """The todo's first ``# `` heading (after any front matter), else its file name's description."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    body = re.sub(r"\A---\n.*?\n---\n", "", text, count=1, flags=re.DOTALL)
    heading = re.search(r"^#\s+(.+?)\s*#*\s*$", body, re.MULTILINE)
    if heading:
        return heading.group(1)
    stem = re.sub(r"^\d+-(?:pending|ready|complete)-p\d-", "", path.stem)
    return stem.replace("-", " ")


AGENT_FIX = "install it, or set [agent] command in batchd.toml to an agent that is installed"


def resolve_executable(argv0: str, *, cwd: Path, env: Mapping[str, str], what: str, fix: str) -> str:
    """The program ``argv0`` names: a path (relative to ``cwd``) or a name on ``env``'s PATH."""
    if "/" in argv0:
        candidate = Path(argv0) if Path(argv0).is_absolute() else cwd / argv0
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        state = "is not executable" if candidate.is_file() else "does not exist"
        raise AgentError(f"{what} {argv0!r} {state} (looked at {candidate})", hint=fix)
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise AgentError(f"{what} {argv0!r} was not found on PATH", hint=fix)
    return found
