"""A red run's failing tests, read safely from a tree the agents' code wrote: the JUnit report at
``[verify] junit`` when this run wrote it, else the output (:mod:`daemon.world.testevidence` parses).

The report is opened without following any link, must be a regular file of at most
``MAX_JUNIT_BYTES``, and is parsed from a private copy; whether this run wrote it is told by the
file's identity before and after the run (:func:`report_id`), so a report a previous command left,
or one the repository tracks, is neither read as this run's nor deleted.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import structlog

from daemon.exceptions import BatchdError
from daemon.world import safefs
from daemon.world.testevidence import MAX_JUNIT_BYTES, Evidence, failing_tests

__all__ = ["REFUSED", "read_evidence", "report_id"]

log = structlog.get_logger(__name__)


REFUSED = (-1, -1, -1, -1)  # a report that cannot be looked at safely


def report_id(tree: Path, junit: str) -> tuple[int, int, int, int] | None:
    """What tells one report file from another (inode, size, mtime, ctime); None when there is none,
    ``REFUSED`` when it cannot be looked at safely (a link on the way, a folder of links)."""
    try:
        fd = safefs.open_read(tree, junit)
    except (BatchdError, ValueError, OSError):
        return REFUSED
    if fd is None:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def read_evidence(tree: Path, output: str, junit: str = "") -> Evidence:
    """The failing tests of a red run in ``tree``: from the report at ``junit`` (relative to the
    tree) when it is there, else from ``output``. The tree is the agents' code's to write: the report
    is opened without following any link, must be a regular file of at most MAX_JUNIT_BYTES, and one
    that cannot be read so is no evidence at all (a plain red), not a reason to trust the output."""
    if not junit:
        return failing_tests(output)
    try:
        fd = safefs.open_read(tree, junit)
    except (BatchdError, ValueError, OSError):
        return Evidence()
    if fd is None:  # this run wrote no report (a lint command before the tests): its output tells
        return failing_tests(output)
    data = _read_regular(fd)
    if data is None:
        return Evidence()
    # testevidence reads a report by path: a private copy, out of the agents' reach, is that path.
    try:
        with tempfile.TemporaryDirectory(prefix="batchd-junit-") as tmp:
            copy = Path(tmp) / "report.xml"
            copy.write_bytes(data)
            return failing_tests(output, junit=copy)
    except OSError as e:  # a full /tmp: no evidence (a plain red), never a failed verification
        log.warning("junit_report_unreadable", path=junit, error=str(e))
        return Evidence()


def _read_regular(fd: int) -> bytes | None:
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JUNIT_BYTES:
            return None
        data = os.read(fd, MAX_JUNIT_BYTES + 1)
        return data if len(data) <= MAX_JUNIT_BYTES else None
    except OSError:
        return None
    finally:
        os.close(fd)
