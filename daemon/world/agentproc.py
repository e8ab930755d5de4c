"""Agent processes: start, poll, time out, cap the log, kill, and read how they ended.

Every agent runs in its own session (``start_new_session=True``), so its process group holds it
and everything it spawned: a timeout, a stop or a crash recovery kills the group. Under the
bubblewrap sandbox it also has its own pid namespace, so even a process that ``setsid``\\ s dies
with it; without one, such a process escapes (only a cgroup would catch it).

The group's leader is :mod:`daemon.world.agentshim`, which runs the agent and writes down its exit code
and end time in an *exit record*: an agent that ended before its deadline is never recorded as
timed out, however late the daemon looks (stopped, or blocked in a long step), and its duration is
its own. The daemon polls: :func:`start_agent` returns at once, :meth:`AgentProcess.poll` and
:func:`enforce_timeout` are cheap and never block, and :func:`finish` turns an exited process into
an :class:`AgentOutcome`. :func:`run_agent` is the blocking convenience built from them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.exceptions import AgentError
from daemon.world import agentshim, safefs
from daemon.world.agents import AGENT_FIX, resolve_executable
from daemon.world.sandbox import Sandbox

__all__ = [
    "AdoptedProcess",
    "AgentOutcome",
    "AgentProcess",
    "SetupResult",
    "cap_log",
    "enforce_timeout",
    "finish",
    "group_members",
    "kill_leftover_group",
    "process_alive",
    "process_start_ticks",
    "read_exit_record",
    "read_result",
    "run_agent",
    "run_setup",
    "shim_leader",
    "start_agent",
    "token_holders",
]

log = structlog.get_logger(__name__)

TAIL_CHARS = 4000
_RESULT_SCAN_BYTES = 1 << 20  # the claude result object is at the end; a long log need not be read whole
_RESULT_CANDIDATES = 50  # lines starting with "{" tried, from the end
_SHIM = str(Path(agentshim.__file__).resolve())
NO_SANDBOX = Sandbox(kind="none")


# --- /proc ---------------------------------------------------------------------------------------


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


def token_holders(token: str) -> list[int]:
    """Live processes whose environment carries ``BATCHD_AGENT_TOKEN=<token>``: that attempt's, and
    only those (a person's shell in the workspace, or a reused pid, never carries it)."""
    if not token:
        return []
    needle = f"BATCHD_AGENT_TOKEN={token}".encode()
    found: list[int] = []
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def shim_leader(token: str, exit_path: Path) -> int | None:
    """Among the processes carrying ``token``, the shim that leads the agent's group and writes
    ``exit_path``: how an agent started just before a crash (its pid never recorded) is found. Set-up
    commands carry the token too, but are not a shim writing that record."""
    wanted = [os.fsencode(_SHIM), os.fsencode(str(exit_path))]
    for pid in token_holders(token):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            pgid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[2])
        except (OSError, ValueError, IndexError):
            continue
        if pgid == pid and all(part in argv for part in wanted):
            return pid
    return None


# --- one agent -----------------------------------------------------------------------------------


class AgentProcess:
    """A running agent: the leader of its own process group, output going to ``log_path``."""

    # How a crashed daemon's agent was taken over ("" for one this daemon started): see AdoptedProcess.
    recovery: str = ""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        argv: Sequence[str],
        log_path: Path,
        started: float,
        exit_path: Path | None = None,
    ) -> None:
        self._popen = popen
        self.argv = list(argv)
        self.log_path = log_path
        self.started = started
        self.started_wall = time.time()
        self.exit_path = exit_path
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

    def exit_record(self) -> dict[str, Any] | None:
        return read_exit_record(self.exit_path) if self.exit_path is not None else None


class AdoptedProcess(AgentProcess):
    """An agent a dead daemon started, taken over by its successor after a crash.

    It is not this process's child: there is no exit status to wait for. It is alive while its leader
    (the shim) runs with the recorded start time (a reused pid is not it); how it ended is the shim's
    exit record, or ``assumed`` when the shim left none but the agent's committed work says it was
    done. Its clock runs from ``started_wall``, the original start, so the timeout still applies
    from then and its duration is the whole run's.
    """

    def __init__(
        self,
        *,
        pid: int,
        start_ticks: int | None,
        token: str,
        log_path: Path,
        exit_path: Path | None,
        started_wall: float,
        assumed: dict[str, Any] | None = None,
    ) -> None:
        # Not AgentProcess.__init__: that one takes the Popen of a child this process started.
        self.argv = []
        self.log_path = log_path
        self.exit_path = exit_path
        self.pid = self.pgid = pid
        self.start_ticks = start_ticks
        self.token = token
        self.started_wall = started_wall
        self.started = time.monotonic() - max(0.0, time.time() - started_wall)
        self.ended = None
        self.timed_out = False
        self.term_sent_at = None
        self.recovery = "adopted"
        self._assumed = assumed
        self._rc: int | None = None

    def leader_alive(self) -> bool:
        """Whether the recorded leader still runs (its pid with its start time: not a reused pid)."""
        ticks = process_start_ticks(self.pid)
        return self.start_ticks is not None and ticks == self.start_ticks and process_alive(self.pid)

    def poll(self) -> int | None:
        if self._rc is not None:
            return self._rc
        if self.leader_alive():
            return None
        self.ended = time.monotonic()
        record = self.exit_record()
        # No record: the shim was killed (SIGKILL leaves no trace) before the agent ended.
        self._rc = record["rc"] if record is not None else -signal.SIGKILL
        return self._rc

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (rc := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
            _wait_exit(self.pid, 0.5 if left is None else min(left, 0.5))
        return rc

    @property
    def elapsed(self) -> float:
        record = self.exit_record()
        if record is not None:
            return max(0.0, float(record["ended_at"]) - self.started_wall)
        return super().elapsed

    def kill_group(self, sig: int = signal.SIGKILL) -> bool:
        """Signal its group and every process carrying its token. The group is signalled while its
        leader is the recorded one, or once the leader's pid is free (a group still in use keeps its
        number, so what is left in it is the agent's); never when the pid now leads someone else's."""
        hit = False
        leader_ticks = process_start_ticks(self.pgid)
        if self.pgid > 1 and self.pgid != os.getpgrp() and (leader_ticks is None or self.leader_alive()):
            try:
                os.killpg(self.pgid, sig)
                hit = True
            except (ProcessLookupError, PermissionError):
                pass
        for pid in token_holders(self.token):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                hit = True
        return hit

    def exit_record(self) -> dict[str, Any] | None:
        record = read_exit_record(self.exit_path) if self.exit_path is not None else None
        # A record older than this start is an earlier run's (the same attempt, interrupted before).
        if record is not None and record["ended_at"] >= self.started_wall:
            return record
        return self._assumed


def _wait_exit(pid: int, timeout: float) -> None:
    """Block up to ``timeout`` seconds or until ``pid`` exits (a pidfd works for any process)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        time.sleep(min(timeout, 0.05))
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def read_exit_record(path: Path) -> dict[str, Any] | None:
    """``{"rc": int, "ended_at": float}`` as the shim wrote it, or None (not ended, or killed)."""
    try:
        data = safefs.read_bytes(path.parent, path.name, limit=4096)
    except (OSError, safefs.LinkRefused):
        return None
    if data is None:
        return None
    try:
        record = _json.decode(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(record, dict)
        and isinstance(record.get("rc"), int)
        and isinstance(record.get("ended_at"), float)
    ):
        return record
    return None


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON may carry")


# What agents print is read with NaN and Infinity refused (they cannot be stored as JSON), and a
# nesting deep enough to exhaust the stack is a value like any other bad one (RecursionError caught).
_json = json.JSONDecoder(parse_constant=_no_constants)


def start_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str],
    sandbox: Sandbox = NO_SANDBOX,
    exit_path: Path | None = None,
    readable: Sequence[Path] = (),
) -> AgentProcess:
    """Start ``argv`` in ``cwd`` in a new session (in ``sandbox``); stdout+stderr appended to ``log_path``.

    ``env`` is the complete environment (build it with :func:`daemon.world.agents.agent_env`). With
    ``exit_path`` the shim leads the group and writes the exit record there.
    """
    if not argv:
        raise AgentError("the agent command is empty", hint="set [agent] command or preset in batchd.toml")
    executable = resolve_executable(argv[0], cwd=cwd, env=env, what="agent command", fix=AGENT_FIX)
    command = sandbox.wrap([executable, *argv[1:]], workspace=cwd, readable=readable)
    if exit_path is not None:
        exit_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            exit_path.unlink()
        command = [sys.executable, "-I", "-S", _SHIM, str(exit_path), *command]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = safefs.open_append(log_path.parent, log_path.name)
    try:
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:  # e.g. "Exec format error": a script without a shebang line
        raise AgentError(f"cannot start {argv[0]!r}: {e}", hint=AGENT_FIX) from e
    finally:
        os.close(out)
    proc = AgentProcess(popen, argv=argv, log_path=log_path, started=time.monotonic(), exit_path=exit_path)
    log.info(
        "agent_process_started", pid=proc.pid, argv0=argv[0], cwd=str(cwd), log=str(log_path),
        sandbox=sandbox.kind,
    )  # fmt: skip
    return proc


def enforce_timeout(proc: AgentProcess, timeout: float, now: float, *, grace: float = 5.0) -> bool:
    """Kill ``proc``'s group once it ran past ``timeout`` (monotonic ``now``); never blocks.

    Call it only after :meth:`AgentProcess.poll` said the process still runs: an agent that has
    ended is never timed out. The first call past the deadline sends SIGTERM to the group; a call
    ``grace`` seconds later sends SIGKILL. Returns whether the process timed out.
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


def cap_log(path: Path, max_bytes: int) -> bool:
    """Keep a growing agent log under ``max_bytes``: when it is over, only its last half stays, after
    a line saying how much was dropped. Returns whether it cut. (An agent writes with O_APPEND, so
    what it writes during the cut lands after it; a few bytes written in between can be lost.)"""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return False
        keep = max_bytes // 2
        os.lseek(fd, size - keep, os.SEEK_SET)
        tail = os.read(fd, keep)
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    fd = safefs.open_append(path.parent, path.name)
    try:
        os.write(
            fd, f"[batchd] {size - len(tail)} bytes of earlier output dropped (max_log_bytes)\n".encode()
        )
        os.write(fd, tail)
    finally:
        os.close(fd)
    log.info("agent_log_capped", log=str(path), dropped=size - len(tail))
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


def tail_bytes(path: Path, size: int) -> str:
    """The last ``size`` bytes of a log as text (a link in its place reads as nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, max(0, end - size), os.SEEK_SET)
        return os.read(fd, size).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def tail(path: Path, chars: int = TAIL_CHARS) -> str:
    return tail_bytes(path, chars * 4)[-chars:]  # UTF-8 is at most 4 bytes a character


def read_result(log_path: Path) -> dict[str, Any] | None:
    """The last JSON object in the log: one line (claude ``--output-format json``/stream-json)
    or pretty-printed from a line starting with ``{``."""
    text = tail_bytes(log_path, _RESULT_SCAN_BYTES)
    # Lines that start an object, newest first, only the last few (a log of a million lines of "{" is
    # not a result): one at the start of a line may run over several lines (pretty-printed) and is
    # parsed in place; an indented one is a nested value unless it is whole on its own line.
    starts = list(re.finditer(r"(?m)^([ \t]*)\{", text))[-_RESULT_CANDIDATES:]
    # Objects at the start of a line first: an indented whole-line object is more often a nested one.
    starts.sort(key=lambda m: (not m.group(1), m.start()))
    for match in reversed(starts):
        begin = match.end() - 1
        try:
            if match.group(1):
                line_end = text.find("\n", begin)
                obj, _ = _json.raw_decode(text[begin : line_end if line_end >= 0 else len(text)])
            else:
                obj, _ = _json.raw_decode(text, begin)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


# codex exec --json: one JSON event a line, the first of each run `{"type":"thread.started","thread_id":..}`.
_THREAD_STARTED = re.compile(rb'(?m)^\{"type":\s*"thread\.started"')
_SCAN_CHUNK = 1 << 20


def read_thread_id(log_path: Path) -> str | None:
    """The ``thread_id`` of the last ``thread.started`` event in the log (codex ``exec --json``: the
    session that ``codex exec resume`` continues), or None. Read in chunks: it is printed first,
    so in a long log it is far from the end (a capped log has lost it: the repair starts afresh)."""
    try:
        fd = os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    found: bytes | None = None
    carry = b""
    try:
        while chunk := os.read(fd, _SCAN_CHUNK):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next chunk
            lines, carry = (data[:cut], data[cut:]) if cut else (b"", data)
            if len(carry) > _SCAN_CHUNK:  # one endless line is no event
                carry = b""
            for match in _THREAD_STARTED.finditer(lines):
                found = lines[match.start() : lines.find(b"\n", match.start())]
        if carry and _THREAD_STARTED.match(carry):
            found = carry
    finally:
        os.close(fd)
    if found is None:
        return None
    try:
        event = _json.decode(found.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    thread = event.get("thread_id") if isinstance(event, dict) else None
    return thread if isinstance(thread, str) else None


MAX_COST_USD = 1e6  # a cost an agent reports above this is not a cost: it is not recorded


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int of hundreds of digits
        return None
    return number if math.isfinite(number) and 0 <= number <= MAX_COST_USD else None


def finish(proc: AgentProcess, *, tail_chars: int = TAIL_CHARS) -> AgentOutcome:
    """Wait for ``proc`` (call it once poll() returned a code), kill what it left in its group,
    and read its result from the log and its exit record."""
    rc = proc.wait()
    # The agent is done: anything still in its group (a dev server, a watcher) is left over.
    if proc.kill_group(signal.SIGKILL):
        log.info("agent_leftovers_killed", pid=proc.pid, pgid=proc.pgid)
    duration = proc.elapsed
    record = proc.exit_record()
    # The record says when the agent ended; it counts only when it agrees with how the shim itself
    # ended (an agent outside a sandbox could write a record of its own) and falls within the run.
    trusted = (
        record is not None
        and not proc.timed_out
        and (record["rc"] == rc or (record["rc"] >= 0 and record["rc"] & 0xFF == rc))
        and proc.started_wall <= record["ended_at"] <= time.time() + 1
    )
    if trusted and record is not None:
        rc = record["rc"]
        duration = record["ended_at"] - proc.started_wall
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
        turns = raw_turns if type(raw_turns) is int and 0 <= raw_turns < 2**31 else None
        session = summary.get("session_id") if isinstance(summary.get("session_id"), str) else None
    if session is None:
        session = read_thread_id(proc.log_path)
    outcome = AgentOutcome(
        rc=rc,
        duration=duration,
        timed_out=proc.timed_out,
        summary=summary,
        is_error=is_error,
        cost_usd=cost,
        num_turns=turns,
        session_id=session,
        log_tail=tail(proc.log_path, tail_chars),
    )
    log.info(
        "agent_exited",
        pid=proc.pid,
        rc=rc,
        duration=round(outcome.duration, 3),
        timed_out=outcome.timed_out,
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
    sandbox: Sandbox = NO_SANDBOX,
    readable: Sequence[Path] = (),
) -> AgentOutcome:
    """Start, wait (enforcing ``timeout``) and finish: the blocking form of the calls above."""
    proc = start_agent(argv, cwd=cwd, log_path=log_path, env=env, sandbox=sandbox, readable=readable)
    while proc.poll() is None:
        enforce_timeout(proc, timeout, time.monotonic(), grace=grace)
        time.sleep(poll_interval)
    return finish(proc)


def kill_leftover_group(pgid: int, *, start_ticks: int | None) -> bool:
    """After a daemon crash, SIGKILL the group of an agent it started; False if none was there.

    The group is killed only when its leader is the very process that was started: its start time
    (recorded with its pid) must match, so a reused pid's group is left alone. Without a recorded
    start time nothing is killed here (see :func:`token_holders` for finding such agents).
    """
    if pgid <= 1 or pgid == os.getpgrp():
        log.warning("leftover_group_refused", pgid=pgid)
        return False
    ticks = process_start_ticks(pgid)
    if start_ticks is None or ticks is None or ticks != start_ticks:
        if ticks is not None:
            log.info("leftover_group_spared", pgid=pgid, reason="not the process batchd started")
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
    sandbox: Sandbox = NO_SANDBOX,
    readable: Sequence[Path] = (),
) -> SetupResult:
    """Run ``[agent] setup`` commands in order in a new workspace (blocking); stop at the first failure.

    ``timeout`` applies to each command. Output is appended to ``log_path``. They run as the agent
    will: in its sandbox, with its environment and ``readable`` paths.
    """
    env = os.environ if env is None else env
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for argv in setup:
        safefs.append_text(log_path.parent, log_path.name, f"$ {shlex.join(argv)}\n")
        outcome = run_agent(
            argv, cwd=cwd, log_path=log_path, env=env, timeout=timeout, sandbox=sandbox, readable=readable
        )
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
        log_tail=tail(log_path),
    )


def on_exit(pid: int, callback: Callable[[], None]) -> None:
    """Call ``callback`` (from a thread of its own) once process ``pid`` has exited.

    A pidfd becomes readable when the process ends without reaping it, so the main loop's own
    ``poll()`` still collects the exit status. Where pidfds are missing (Linux before 5.3) or the
    process is already gone, ``callback`` runs at once: the loop's tick finds the exit anyway.
    """
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        callback()
        return

    def wait() -> None:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
        callback()

    threading.Thread(target=wait, name=f"batchd-exit-{pid}", daemon=True).start()
