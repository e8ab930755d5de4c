"""Agent processes: start, poll, time out, cap the log, kill, and read how they ended.

Every agent runs in its own session (``start_new_session=True``), so its process group holds it
and everything it spawned: a timeout, a stop or a crash recovery kills the group. Under the
bubblewrap sandbox it also has its own pid namespace, so even a process that ``setsid``\\ s dies
with it; without one, such a process escapes (only a cgroup would catch it).

The group's leader is :mod:`daemon.world.agentshim`, which runs the agent and writes down its exit code
and end time in an *exit record*: an agent that ended before its deadline is never recorded as
timed out, however late the daemon looks (stopped, or blocked in a long step), and its duration is
its own. The shim also carries a deadline, past the daemon's own timeout: an agent whose daemon
crashed and never came back is still ended (and recorded timed out) then, not left to spend.

The daemon polls: :func:`start_agent` returns at once, :meth:`AgentProcess.poll` and
:func:`enforce_timeout` are cheap and never block, and :func:`finish` turns an exited process into
an :class:`AgentOutcome`. :func:`run_agent` is the blocking convenience built from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from daemon.exceptions import AgentError
from daemon.world import agentshim, safefs
from daemon.world.agents import AGENT_FIX, resolve_executable
from daemon.world.sandbox import Sandbox

__all__ = [
    "AgentProcess",
    "cap_log",
    "enforce_timeout",
    "group_members",
    "kill_leftover_group",
    "process_alive",
    "process_start_ticks",
    "read_exit_record",
    "start_agent",
    "token_holders",
]

log = structlog.get_logger(__name__)

TAIL_CHARS = 4000
# The shim's deadline is this much past the daemon's timeout: while a daemon runs, its own timeout
# (SIGTERM, grace, SIGKILL) ends the agent first; the shim's is for when no daemon is left to.
DEADLINE_MARGIN = 60.0
SHIM = str(Path(agentshim.__file__).resolve())
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
            # The shim hit its deadline (this daemon was too late: blocked, or its timeout raised
            # since): that is a timeout, not an agent that failed on its own.
            record = self.exit_record()
            if record is not None and record["timed_out"] and record["ended_at"] >= self.started_wall:
                self.timed_out = True
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


def read_exit_record(path: Path) -> dict[str, Any] | None:
    """``{"rc": int, "ended_at": float, "timed_out": bool}`` as the shim wrote it (``timed_out``: it
    ended the agent at its deadline; False when absent), or None (not ended, or killed)."""
    try:
        data = safefs.read_bytes(path.parent, path.name, limit=4096)
    except (OSError, safefs.LinkRefused):
        return None
    if data is None:
        return None
    try:
        record = STRICT_JSON.decode(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    if (
        isinstance(record, dict)
        and isinstance(record.get("rc"), int)
        and isinstance(record.get("ended_at"), float)
        and isinstance(record.get("timed_out", False), bool)
    ):
        return {**record, "timed_out": record.get("timed_out", False)}
    return None


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON may carry")


# What agents print is read with NaN and Infinity refused (they cannot be stored as JSON), and a
# nesting deep enough to exhaust the stack is a value like any other bad one (RecursionError caught).
STRICT_JSON = json.JSONDecoder(parse_constant=_no_constants)


def start_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str],
    sandbox: Sandbox = NO_SANDBOX,
    exit_path: Path | None = None,
    readable: Sequence[Path] = (),
    timeout: float | None = None,
    deadline_margin: float = DEADLINE_MARGIN,
    deadline_grace: float = agentshim.GRACE,
) -> AgentProcess:
    """Start ``argv`` in ``cwd`` in a new session (in ``sandbox``); stdout+stderr appended to ``log_path``.

    ``env`` is the complete environment (build it with :func:`daemon.world.agents.agent_env`). With
    ``exit_path`` the shim leads the group and writes the exit record there; with ``timeout`` too
    (the daemon's ``[agent] timeout``) the shim itself ends the group ``deadline_margin`` seconds
    after it (SIGTERM, ``deadline_grace`` seconds, SIGKILL), should no daemon have done it by then.
    """
    if not argv:
        raise AgentError("the agent command is empty", hint="set [agent] command or preset in batchd.toml")
    executable = resolve_executable(argv[0], cwd=cwd, env=env, what="agent command", fix=AGENT_FIX)
    command = sandbox.wrap([executable, *argv[1:]], workspace=cwd, readable=readable)
    if exit_path is not None:
        exit_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            exit_path.unlink()
        shim = [sys.executable, "-I", "-S", SHIM]
        if timeout is not None:
            deadline = time.time() + timeout + deadline_margin
            shim.append(f"--deadline={deadline:.3f},{deadline_grace:g}")
        command = [*shim, str(exit_path), *command]
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
