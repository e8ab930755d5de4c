"""An agent a dead daemon started, taken over by the daemon that replaced it (crash recovery).

The agent ran on while batchd was down (its output goes to a file, its group is its own); the new
daemon finds it by its recorded pid and start time, or, when the crash came before the pid was
recorded, by its attempt's token and its shim's command line, and watches it like its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from daemon.world.agentproc import (
    SHIM,
    AgentProcess,
    process_alive,
    process_start_ticks,
    read_exit_record,
    token_holders,
)

__all__ = ["AdoptedProcess", "shim_leader"]


def shim_leader(token: str, exit_path: Path) -> int | None:
    """Among the processes carrying ``token``, the shim that leads the agent's group and writes
    ``exit_path``: how an agent started just before a crash (its pid never recorded) is found. Set-up
    commands carry the token too, but are not a shim writing that record."""
    wanted = [os.fsencode(SHIM), os.fsencode(str(exit_path))]
    for pid in token_holders(token):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            pgid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[2])
        except (OSError, ValueError, IndexError):
            continue
        if pgid == pid and all(part in argv for part in wanted):
            return pid
    return None


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
        # The shim ended it at its deadline while no daemon watched: the timeout, enforced late.
        if record is not None and record.get("timed_out") is True:
            self.timed_out = True
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
