"""Runs an agent and writes down how and when it ended, so the record outlives the daemon.

``python agentshim.py EXIT_FILE EXECUTABLE ARG...`` runs ``EXECUTABLE ARG...`` as its child (same
process group, same output) and, when the child exits, writes ``{"rc": ..., "ended_at": ...}``
to ``EXIT_FILE`` (a new file renamed into place), then exits the way the child did. batchd reads
that file for the agent's own end time: an agent that ended before its timeout is never called
timed out because the daemon looked late (stopped, or busy in a long step), and a run that ended
while the daemon was down is known to have ended.

Standard library only and run with ``-I -S``: it starts in milliseconds and trusts no environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: agentshim.py EXIT_FILE EXECUTABLE [ARG...]\n")
        return 2
    exit_file, command = argv[1], argv[2:]
    # The daemon's SIGTERM/SIGKILL reach the whole group; a terminal's ^C is the child's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = subprocess.Popen(command)
    except OSError as e:
        sys.stderr.write(f"[batchd] cannot start {command[0]!r}: {e}\n")
        rc = 127
    else:
        rc = child.wait()
    record = {"rc": rc, "ended_at": time.time()}
    tmp = f"{exit_file}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(record).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, exit_file)  # noqa: PTH105 - stdlib-only script, paths stay strings
    if rc < 0:  # end the way the child did, so the daemon's view of the signal is the same
        signal.signal(-rc, signal.SIG_DFL)
        os.kill(os.getpid(), -rc)
    return rc & 0xFF if rc >= 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
