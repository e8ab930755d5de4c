"""One daemon per repository: an exclusive ``flock`` on ``.batchd/daemon.service.lock``.

``flock`` belongs to the open file, so the kernel drops it when the holder exits for any reason,
``kill -9`` included: a lock file left behind by a dead daemon never blocks the next one, and no
pid-liveness guessing is needed. The pid written into the file is only there to name the holder
in the error. The file is never deleted: unlinking a locked file lets a third process lock a new
inode at the same path while the old holder still runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from daemon.exceptions import LockHeld
from daemon.workspace import STATE_DIR

__all__ = ["LOCK_NAME", "DaemonLock", "holder", "read_holder_pid"]

LOCK_NAME = Path(STATE_DIR) / "daemon.service.lock"


class DaemonLock:
    """An exclusive, non-blocking lock held for the life of the daemon.

    Use as a context manager, or ``acquire()`` / ``release()``. ``acquire`` raises
    :class:`~daemon.exceptions.LockHeld` naming the holder's pid when another open file holds it
    (another process, or another ``DaemonLock`` in this one).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @classmethod
    def for_repo(cls, repo: Path | str) -> DaemonLock:
        return cls(Path(repo) / LOCK_NAME)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DaemonLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: an agent started by the daemon must not inherit the descriptor, or an agent
        # that outlives a crashed daemon would keep the repository locked.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(path=str(self.path), pid=pid) from None
        except OSError:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            os.close(fd)  # closing drops the flock too
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Clear the pid while still holding the lock so nobody reads a stale holder; a failure
        # here is harmless, close() below releases the lock either way.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    close = release

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DaemonLock({str(self.path)!r}, held={self.held})"


def read_holder_pid(path: Path | str) -> int | None:
    """The pid written by the current or last holder, or None (for ``batchd status``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def holder(path: Path | str) -> int | None:
    """The pid of the daemon holding the lock now, or None when no process holds it.

    Read first from the kernel's lock table (``/proc/locks``, matched by device and inode), which
    asking does not disturb. When the table does not name the file (no holder, or a file system
    whose device numbers differ from the table's), a shared non-blocking ``flock`` probe answers;
    it is let go at once (a daemon starting in that instant would find the lock taken).
    """
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        table = ""
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:
            continue  # a process waiting for the lock, not holding it
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4]) if fields[4].isdigit() else -1
    return _probe(path)


def _probe(path: Path | str) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)  # closing drops a probe's shared lock at once
    return None


def _read_pid(fd: int) -> int | None:
    # The holder writes its pid right after locking; a reader in between sees an empty file.
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
