"""Runs an agent and writes down how and when it ended, so the record outlives the daemon.

``python agentshim.py [--deadline=EPOCH[,GRACE]] EXIT_FILE EXECUTABLE ARG...`` runs
``EXECUTABLE ARG...`` as its child (same process group, same output) and, when the child exits,
writes ``{"rc": ..., "ended_at": ...}`` to ``EXIT_FILE`` (a new file renamed into place), then
exits the way the child did. batchd reads that file for the agent's own end time: an agent that
ended before its timeout is never called timed out because the daemon looked late (stopped, or
busy in a long step), and a run that ended while the daemon was down is known to have ended.

The deadline is the backstop for an agent whose daemon crashed and never came back (it would
otherwise run, and spend, forever): once wall-clock time ``EPOCH`` passes with the child still
running, the shim sends SIGTERM to every other process of its group, SIGKILL to what is left
``GRACE`` seconds later (10 by default), and writes ``"timed_out": true`` into the record. The
daemon sets it past its own ``[agent] timeout``, so while a daemon runs its timeout wins. Only
``argv[1]`` is looked at for it: an agent's own arguments are never taken for the shim's.

Standard library only and run with ``-I -S``: it starts in milliseconds and trusts no environment.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

USAGE = "usage: agentshim.py [--deadline=EPOCH[,GRACE]] EXIT_FILE EXECUTABLE [ARG...]\n"
DEADLINE_FLAG = "--deadline="
GRACE = 10.0  # seconds between the SIGTERM at the deadline and the SIGKILL
KILL_PASSES = 50  # SIGKILL rounds at most: a group forking as fast as it is killed ends anyway


def parse_deadline(value: str) -> tuple[float, float] | None:
    """``EPOCH`` or ``EPOCH,GRACE`` -> (deadline, grace); None when it is not that."""
    epoch, _, grace = value.partition(",")
    try:
        deadline = float(epoch)
        wait = float(grace) if grace else GRACE
    except ValueError:
        return None
    if not (math.isfinite(deadline) and math.isfinite(wait) and wait >= 0):
        return None
    return deadline, wait


def group_others() -> list[int]:
    """Live pids of this process's group other than itself (Linux /proc; ``os.killpg`` would hit the
    shim too, and a session leader cannot leave its group)."""
    own, pgid = os.getpid(), os.getpgrp()
    found: list[int] = []
    try:
        names = os.listdir("/proc")  # noqa: PTH208 - pathlib would cost the start-up time
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:  # noqa: PTH123 - no pathlib (start-up time)
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def signal_group(sig: int) -> int:
    """Send ``sig`` to every other live member of the group; how many there were."""
    members = group_others()
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(members)


def wait_until(child: subprocess.Popen[bytes], until: float) -> int | None:
    """The child's exit status, or None when wall-clock ``until`` passes first.

    A pidfd sleeps until the child exits (no polling for an agent's whole hour); without one
    (Linux before 5.3) ``Popen.wait`` polls."""
    try:
        fd = os.pidfd_open(child.pid)
    except (OSError, AttributeError):
        fd = -1
    try:
        while (rc := child.poll()) is None:
            left = until - time.time()
            if left <= 0:
                return None
            # Woken at least once a minute: a wall clock set forward is noticed.
            step = min(left, 60.0)
            if fd >= 0:
                select.select([fd], [], [], step)
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(step)
        return rc
    finally:
        if fd >= 0:
            os.close(fd)


def end_group(child: subprocess.Popen[bytes], grace: float) -> int:
    """The deadline passed: SIGTERM the group but the shim, SIGKILL it after ``grace``; the child's rc."""
    signal_group(signal.SIGTERM)
    end = time.time() + grace
    rc = wait_until(child, end)
    # The agent's own children get the rest of the grace too, if they are still ending.
    while time.time() < end and group_others():
        time.sleep(0.05)
    # What ignored SIGTERM goes now; repeated: a member may fork meanwhile.
    for _ in range(KILL_PASSES):
        if not signal_group(signal.SIGKILL):
            break
        time.sleep(0.01)
    return rc if rc is not None else child.wait()


def write_record(exit_file: str, record: dict[str, object]) -> None:
    tmp = f"{exit_file}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(record).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, exit_file)  # noqa: PTH105 - stdlib-only script, paths stay strings


def main(argv: list[str]) -> int:
    args = argv[1:]
    deadline: tuple[float, float] | None = None
    if args and args[0].startswith(DEADLINE_FLAG):
        deadline = parse_deadline(args[0][len(DEADLINE_FLAG) :])
        if deadline is None:
            sys.stderr.write(USAGE)
            return 2
        args = args[1:]
    if len(args) < 2:
        sys.stderr.write(USAGE)
        return 2
    exit_file, command = args[0], args[1:]
    # The daemon's SIGTERM/SIGKILL reach the whole group; a terminal's ^C is the child's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    timed_out = False
    try:
        child = subprocess.Popen(command)
    except OSError as e:
        sys.stderr.write(f"[batchd] cannot start {command[0]!r}: {e}\n")
        rc = 127
    else:
        if deadline is None:
            rc = child.wait()
        elif (ended := wait_until(child, deadline[0])) is not None:
            rc = ended
        else:
            timed_out = True
            sys.stderr.write("[batchd] the agent ran past its deadline (no daemon ended it): killed\n")
            sys.stderr.flush()
            rc = end_group(child, deadline[1])
    record: dict[str, object] = {"rc": rc, "ended_at": time.time()}
    if timed_out:
        record["timed_out"] = True
    write_record(exit_file, record)
    if rc < 0:  # end the way the child did, so the daemon's view of the signal is the same
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    return rc & 0xFF if rc >= 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
