"""daemon.service.lock: one daemon per repository, checked with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.exceptions import LockHeld
from daemon.service.lock import LOCK_NAME, DaemonLock, read_holder_pid
from daemon.service.lock import holder as lock_holder

# A holder process: takes the lock, optionally starts a long-lived child, says so, then waits.
_HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from daemon.service.lock import DaemonLock
    lock = DaemonLock.for_repo(sys.argv[1]).acquire()
    if len(sys.argv) > 2:
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        print(child.pid, flush=True)
    print("locked", flush=True)
    time.sleep(30)
    """
)


def _start_holder(repo: Path, *, with_child: bool = False) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", _HOLDER, str(repo)] + (["child"] if with_child else [])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def _wait_locked(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().strip()) != "locked":
        assert line, "holder exited before locking"
        lines.append(line)
    return lines


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of tmp_path."""
    proc = _start_holder(tmp_path)
    _wait_locked(proc)
    yield proc
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_acquire_creates_lock_file_with_our_pid(tmp_path: Path) -> None:
    """The lock file under .batchd/ names the holder's pid."""
    with DaemonLock.for_repo(tmp_path) as lock:
        assert lock.held
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_second_process_gets_lock_held_with_holder_pid(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """Acquiring while another process holds the lock raises LockHeld naming that pid."""
    with pytest.raises(LockHeld) as info:
        DaemonLock.for_repo(tmp_path).acquire()
    assert info.value.pid == holder.pid
    assert info.value.path == str(tmp_path / LOCK_NAME)
    assert f"kill {holder.pid}" in str(info.value)


def test_second_lock_in_same_process_is_refused(tmp_path: Path) -> None:
    """flock is per open file, so a second DaemonLock in one process is refused too."""
    with DaemonLock.for_repo(tmp_path), pytest.raises(LockHeld):
        DaemonLock.for_repo(tmp_path).acquire()


def test_release_lets_the_next_daemon_in(tmp_path: Path) -> None:
    """After release (context exit) the lock can be taken again and the old pid is cleared."""
    with DaemonLock.for_repo(tmp_path):
        pass
    assert read_holder_pid(tmp_path / LOCK_NAME) is None
    with DaemonLock.for_repo(tmp_path) as lock:
        assert lock.held


def test_clean_exit_of_holder_releases(tmp_path: Path) -> None:
    """A holder process that exits normally leaves the lock free."""
    code = (
        "import sys; from daemon.service.lock import DaemonLock; DaemonLock.for_repo(sys.argv[1]).acquire()"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    with DaemonLock.for_repo(tmp_path) as lock:
        assert lock.held


def test_stale_lock_of_killed_holder_does_not_block(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """kill -9 leaves the file with a dead pid, but the kernel dropped the flock."""
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder_pid(tmp_path / LOCK_NAME) == holder.pid  # stale content stays
    with DaemonLock.for_repo(tmp_path):
        assert read_holder_pid(tmp_path / LOCK_NAME) == os.getpid()


def test_orphaned_child_of_killed_holder_does_not_keep_lock(tmp_path: Path) -> None:
    """An agent-like child outliving a kill -9'd daemon did not inherit the lock descriptor."""
    proc = _start_holder(tmp_path, with_child=True)
    child_pid = int(_wait_locked(proc)[0])
    try:
        proc.kill()
        proc.wait()
        os.kill(child_pid, 0)  # the child is still alive
        with DaemonLock.for_repo(tmp_path) as lock:
            assert lock.held
    finally:
        os.kill(child_pid, signal.SIGKILL)
        assert proc.stdout is not None
        proc.stdout.close()


def test_read_holder_pid_without_file(tmp_path: Path) -> None:
    """No lock file means no holder."""
    assert read_holder_pid(tmp_path / LOCK_NAME) is None


def test_the_holder_is_named_while_another_process_holds_the_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """`holder()` (how control commands know a daemon runs) names the holding process; asking leaves
    the lock as it was."""
    assert lock_holder(tmp_path / LOCK_NAME) == holder.pid
    with pytest.raises(LockHeld):
        DaemonLock.for_repo(tmp_path).acquire()


def test_no_holder_once_the_holder_is_gone(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """A killed holder holds nothing: `holder()` says so (the file is left behind), and a daemon can
    start right after asking."""
    holder.kill()
    holder.wait()
    assert lock_holder(tmp_path / LOCK_NAME) is None
    DaemonLock.for_repo(tmp_path).acquire().release()
