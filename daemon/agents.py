"""Coding-agent subprocesses: argv and prompt, start, poll, time out, and read the result.

Every agent runs in its own session (``start_new_session=True``), so its process group holds it
and everything it spawned: a timeout, a stop or a crash recovery kills the group, leaving no
orphans (a process that calls ``setsid`` itself escapes; only a cgroup would catch that).

The daemon polls: :func:`start_agent` returns at once, :meth:`AgentProcess.poll` and
:func:`enforce_timeout` are cheap and never block, and :func:`finish` turns an exited process into
an :class:`AgentOutcome`. :func:`run_agent` is the blocking convenience built from them.

Agents get these environment variables (see :func:`agent_env`): ``BATCHD_TODO_ID``,
``BATCHD_TODO_PATH`` (absolute), ``BATCHD_ATTEMPT`` (1-based), ``BATCHD_WORKTREE`` (their cwd),
on top of batchd's own environment and ``[agent] env``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from daemon.config import AGENT_PLACEHOLDERS, AgentConfig
from daemon.exceptions import AgentError

__all__ = [
    "PROMPT_PLACEHOLDERS",
    "AgentOutcome",
    "AgentProcess",
    "SetupResult",
    "agent_env",
    "build_argv",
    "check_agent_command",
    "default_template",
    "enforce_timeout",
    "finish",
    "group_members",
    "kill_leftover_group",
    "load_template",
    "process_alive",
    "process_start_ticks",
    "read_result",
    "render_prompt",
    "repair_text",
    "run_agent",
    "run_setup",
    "start_agent",
    "todo_title",
]

log = structlog.get_logger(__name__)

PROMPT_PLACEHOLDERS = ("todo_id", "todo_path", "title", "verify_commands", "worktree", "repair")
TAIL_CHARS = 4000
_RESULT_SCAN_BYTES = 1 << 20  # the claude result object is at the end; a long log need not be read whole
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(text: str, values: Mapping[str, str]) -> str:
    # One pass, known names only: a substituted value is never scanned again (a todo containing
    # "{prompt}" stays literal), and other braces (JSON, code in a prompt) are left alone.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------------------------------
# argv, environment, prompt


def build_argv(
    agent: AgentConfig, *, prompt: str, todo_path: Path | str, todo_id: str, worktree: Path | str
) -> list[str]:
    """The agent's argv with placeholders filled in; each element stays one argument (no shell)."""
    values = {"prompt": prompt, "todo_path": str(todo_path), "todo_id": todo_id, "worktree": str(worktree)}
    assert set(values) == set(AGENT_PLACEHOLDERS)
    return [_substitute(element, values) for element in agent.argv_template]


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
    return env


def default_template() -> str:
    return resources.files("daemon").joinpath("prompts/agent.md").read_text(encoding="utf-8")


def load_template(agent: AgentConfig, root: Path) -> str:
    """``[agent] prompt_file`` (relative to ``root``) when set, else the built-in template."""
    return (root / agent.prompt_file).read_text(encoding="utf-8") if agent.prompt_file else default_template()


def repair_text(command: Sequence[str], output_tail: str) -> str:
    """The ``{repair}`` text for an attempt after a rejected one."""
    return f"Your previous attempt broke: {shlex.join(command)}\n{output_tail.rstrip()}\nFix it."


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
    return _substitute(template, values)


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


# --------------------------------------------------------------------------------------------
# processes


def _resolve(argv0: str, *, cwd: Path, env: Mapping[str, str], what: str, fix: str) -> str:
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


_AGENT_FIX = "install it, or set [agent] command in batchd.toml to an agent that is installed"


def check_agent_command(agent: AgentConfig, *, cwd: Path, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`AgentError` at start-up if the agent or a setup command cannot be found."""
    env = os.environ if env is None else env
    _resolve(agent.argv_template[0], cwd=cwd, env=env, what="agent command", fix=_AGENT_FIX)
    for argv in agent.setup:
        if "/" not in argv[0]:  # a relative path may only exist inside a worktree
            _resolve(
                argv[0],
                cwd=cwd,
                env=env,
                what="setup command",
                fix="install it, or change [agent] setup in batchd.toml",
            )


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not reaped: PID 1 in a container may never) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def group_members(pgid: int) -> list[int]:
    """Live pids in process group ``pgid`` (Linux /proc)."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            members.append(int(entry.name))
    return members


class AgentProcess:
    """A running agent: the leader of its own process group, output going to ``log_path``."""

    def __init__(
        self, popen: subprocess.Popen[bytes], *, argv: Sequence[str], log_path: Path, started: float
    ) -> None:
        self._popen = popen
        self.argv = list(argv)
        self.log_path = log_path
        self.started = started
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child is leader of a new session and group
        self.start_ticks = process_start_ticks(popen.pid)
        self.ended: float | None = None
        self.timed_out = False
        self.term_sent_at: float | None = None

    def poll(self) -> int | None:
        rc = self._popen.poll()
        if rc is not None and self.ended is None:
            self.ended = time.monotonic()
        return rc

    def wait(self, timeout: float | None = None) -> int:
        rc = self._popen.wait(timeout)
        self.poll()
        return rc

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def kill_group(self, sig: int = signal.SIGKILL) -> bool:
        """Signal the whole group; False when nothing was left in it."""
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            return False
        return True


def start_agent(argv: Sequence[str], *, cwd: Path, log_path: Path, env: Mapping[str, str]) -> AgentProcess:
    """Start ``argv`` in ``cwd`` in a new session; stdout+stderr appended to ``log_path``.

    ``env`` is the complete environment (build it with :func:`agent_env`).
    """
    if not argv:
        raise AgentError("the agent command is empty", hint="set [agent] command or preset in batchd.toml")
    executable = _resolve(argv[0], cwd=cwd, env=env, what="agent command", fix=_AGENT_FIX)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv),
                executable=executable,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:  # e.g. "Exec format error": a script without a shebang line
            raise AgentError(f"cannot start {argv[0]!r}: {e}", hint=_AGENT_FIX) from e
    proc = AgentProcess(popen, argv=argv, log_path=log_path, started=time.monotonic())
    log.info("agent_started", pid=proc.pid, argv0=argv[0], cwd=str(cwd), log=str(log_path))
    return proc


def enforce_timeout(proc: AgentProcess, timeout: float, now: float, *, grace: float = 5.0) -> bool:
    """Kill ``proc``'s group once it ran past ``timeout`` (monotonic ``now``); never blocks.

    The first call past the deadline sends SIGTERM to the group; a call ``grace`` seconds later
    sends SIGKILL. Returns whether the process timed out.
    """
    if proc.ended is not None or now - proc.started < timeout:
        return proc.timed_out
    if not proc.timed_out:
        proc.timed_out = True
        proc.term_sent_at = now
        log.warning("agent_timed_out", pid=proc.pid, timeout=timeout)
        proc.kill_group(signal.SIGTERM)
    elif proc.term_sent_at is not None and now - proc.term_sent_at >= grace:
        proc.kill_group(signal.SIGKILL)
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOutcome:
    """What an agent run came to; ``summary`` is the last JSON object it printed, if any."""

    rc: int
    duration: float
    timed_out: bool
    summary: dict[str, Any] | None
    is_error: bool
    cost_usd: float | None
    num_turns: int | None
    session_id: str | None
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and not self.is_error

    @property
    def reason(self) -> str:
        """Why the attempt failed, in a few words ("" when it did not)."""
        if self.timed_out:
            return f"timed out after {self.duration:.0f}s (process group killed)"
        if self.rc < 0:
            return f"killed by {signal.Signals(-self.rc).name}"
        if self.rc != 0:
            return f"exited with code {self.rc}"
        if self.is_error:
            summary = self.summary or {}
            detail = str(summary.get("result") or summary.get("subtype") or "")[:300]
            return f"agent reported an error: {detail}" if detail else "agent reported an error"
        return ""


def _tail_bytes(path: Path, size: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _tail(path: Path, chars: int) -> str:
    return _tail_bytes(path, chars * 4)[-chars:]  # UTF-8 is at most 4 bytes a character


def read_result(log_path: Path) -> dict[str, Any] | None:
    """The last JSON object in the log: one line (claude ``--output-format json``/stream-json)
    or pretty-printed from a line starting with ``{``."""
    text = _tail_bytes(log_path, _RESULT_SCAN_BYTES)
    lines = text.splitlines()
    decoder = json.JSONDecoder()
    for i in range(len(lines) - 1, -1, -1):
        stripped = lines[i].strip()
        if not stripped.startswith("{"):
            continue
        candidate = stripped if not lines[i].startswith("{") else "\n".join(lines[i:])
        try:
            obj, _ = decoder.raw_decode(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def finish(proc: AgentProcess, *, tail_chars: int = TAIL_CHARS) -> AgentOutcome:
    """Wait for ``proc`` (call it once poll() returned a code), kill what it left in its group,
    and read its result from the log."""
    rc = proc.wait()
    # The agent is done: anything still in its group (a dev server, a watcher) is left over.
    if proc.kill_group(signal.SIGKILL):
        log.info("agent_leftovers_killed", pid=proc.pid, pgid=proc.pgid)
    summary = read_result(proc.log_path)
    is_error = False
    cost = turns = session = None
    if summary is not None:
        subtype = summary.get("subtype")
        is_error = summary.get("is_error") is True or (
            summary.get("type") == "result" and isinstance(subtype, str) and subtype.startswith("error")
        )
        cost = _number(summary.get("total_cost_usd", summary.get("cost_usd")))
        raw_turns = summary.get("num_turns")
        turns = raw_turns if isinstance(raw_turns, int) and not isinstance(raw_turns, bool) else None
        session = summary.get("session_id") if isinstance(summary.get("session_id"), str) else None
    outcome = AgentOutcome(
        rc=rc,
        duration=proc.elapsed,
        timed_out=proc.timed_out,
        summary=summary,
        is_error=is_error,
        cost_usd=cost,
        num_turns=turns,
        session_id=session,
        log_tail=_tail(proc.log_path, tail_chars),
    )
    log.info(
        "agent_exited",
        pid=proc.pid,
        rc=rc,
        duration=round(outcome.duration, 3),
        timed_out=proc.timed_out,
        is_error=is_error,
    )
    return outcome


def run_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str],
    timeout: float,
    grace: float = 5.0,
    poll_interval: float = 0.05,
) -> AgentOutcome:
    """Start, wait (enforcing ``timeout``) and finish: the blocking form of the calls above."""
    proc = start_agent(argv, cwd=cwd, log_path=log_path, env=env)
    while proc.poll() is None:
        enforce_timeout(proc, timeout, time.monotonic(), grace=grace)
        time.sleep(poll_interval)
    return finish(proc)


def kill_leftover_group(pgid: int, *, start_ticks: int | None = None) -> bool:
    """After a daemon crash, SIGKILL the group of an agent it started; False if none was there.

    With ``start_ticks`` (recorded at start), a live leader whose start time differs is a
    different process that reused the pid, and is left alone.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        log.warning("leftover_group_refused", pgid=pgid)
        return False
    if start_ticks is not None:
        ticks = process_start_ticks(pgid)
        if ticks is not None and ticks != start_ticks:
            log.info("leftover_group_reused", pgid=pgid)
            return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    log.info("leftover_group_killed", pgid=pgid)
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupResult:
    ok: bool
    failed_command: tuple[str, ...] | None
    rc: int | None
    timed_out: bool
    duration: float
    log_tail: str


def run_setup(
    setup: Sequence[Sequence[str]],
    *,
    cwd: Path,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> SetupResult:
    """Run ``[agent] setup`` commands in order in a new worktree (blocking); stop at the first failure.

    ``timeout`` applies to each command. Output is appended to ``log_path``.
    """
    env = os.environ if env is None else env
    started = time.monotonic()
    for argv in setup:
        _note(log_path, f"$ {shlex.join(argv)}\n")
        outcome = run_agent(argv, cwd=cwd, log_path=log_path, env=env, timeout=timeout)
        if outcome.rc != 0 or outcome.timed_out:
            log.warning("setup_failed", argv=list(argv), rc=outcome.rc, timed_out=outcome.timed_out)
            return SetupResult(
                ok=False,
                failed_command=tuple(argv),
                rc=outcome.rc,
                timed_out=outcome.timed_out,
                duration=time.monotonic() - started,
                log_tail=outcome.log_tail,
            )
    return SetupResult(
        ok=True,
        failed_command=None,
        rc=0,
        timed_out=False,
        duration=time.monotonic() - started,
        log_tail=_tail(log_path, TAIL_CHARS),
    )


def _note(log_path: Path, text: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as out:
        out.write(text)
