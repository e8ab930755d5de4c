"""The dashboard's one door to files and to git: batchd's logs, todo files and the diff of a change.

Everything shown here was written by agents, tests or people, and is read as bytes through
:func:`open_regular`: ``O_NOFOLLOW`` (a link put in place of a log is refused, not followed out of
``.batchd/``), ``O_NONBLOCK`` and an ``fstat`` that must say "regular file" (a FIFO put there would
hang a page forever), and a size cap on whatever is read whole. Paths come from
:class:`daemon.workspace.Workspace` and the log, never from the request. Text is decoded as UTF-8
with replacement characters: an agent's output that is not UTF-8 still shows, marked where it is not.

:func:`git_show` runs ``git show`` the way batchd runs git (:mod:`daemon.world.gitops`: hooks and
fsmonitor off, no replace refs or grafts) with external diff and textconv programs off too, a
timeout, and its output read only up to a cap: a diff of a huge generated file costs the page a
few hundred KiB, not the server's memory. A commit never changes, so what ``git show`` printed is
kept in a small LRU (:data:`SHOW_CACHE` entries, by repository, commit and cap): a live todo page,
fetched again after each of its events, runs git once per commit, not once per refresh. Failures
(a timeout, a commit not there yet) are not kept: the next view tries again.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from daemon.exceptions import BatchdError
from daemon.world import gitops

__all__ = [
    "DIFF_LIMIT",
    "GIT_TIMEOUT",
    "SHOW_CACHE",
    "TAIL_BYTES",
    "Diff",
    "FileRefused",
    "Tail",
    "git_show",
    "iter_file",
    "open_regular",
    "read_capped",
    "read_tail",
]

TAIL_BYTES = 64 * 1024  # the end of a log a page shows; the whole is one link away
DIFF_LIMIT = 512 * 1024  # bytes of `git show` a page shows
GIT_TIMEOUT = 10.0  # seconds: a page never waits longer for git
CHUNK = 64 * 1024
SHOW_CACHE = 32  # diffs kept (each at most its cap, DIFF_LIMIT): 16 MiB at worst


class FileRefused(BatchdError):
    """A file the dashboard will not read: missing, a link, or not a regular file."""

    def __init__(self, message: str, *, path: Path, missing: bool = False) -> None:
        super().__init__(
            f"{message}: {path}",
            hint="batchd never follows a link put in place of its files; `batchd status` shows the todo",
        )
        self.path = path
        self.missing = missing


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file and not a link (else :class:`FileRefused`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileRefused("refused a symbolic link", path=path) from e
        missing = e.errno in (errno.ENOENT, errno.ENOTDIR)
        raise FileRefused(f"cannot read it ({e.strerror})", path=path, missing=missing) from e
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular:
            os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise FileRefused("not a regular file", path=path)
    return os.fdopen(fd, "rb")


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of a file as text; ``skipped`` bytes before it were left out (0: the whole file)."""

    text: str
    skipped: int
    size: int


def read_tail(path: Path, limit: int = TAIL_BYTES) -> Tail:
    """The last ``limit`` bytes of ``path``, decoded (a character cut at the start shows as one
    replacement character)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        start = max(0, size - limit)
        fh.seek(start)
        data = fh.read(limit)
    return Tail(text=data.decode("utf-8", errors="replace"), skipped=start, size=size)


def read_capped(path: Path, limit: int) -> tuple[str, bool]:
    """The start of ``path`` (at most ``limit`` bytes), decoded; and whether there was more."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def iter_file(fh: BinaryIO) -> Iterator[bytes]:
    """The file's bytes in chunks, closing it at the end (or when the client goes away)."""
    try:
        while chunk := fh.read(CHUNK):
            yield chunk
    finally:
        fh.close()


@dataclass(frozen=True, slots=True)
class Diff:
    """``git show --stat --patch`` of one commit; ``error`` says why there is none."""

    sha: str
    text: str = ""
    truncated: bool = False
    error: str = ""


# External diff drivers and textconv filters are programs named in the repository's config: a page
# view must not run them (nor the pager; stdout is a pipe, but say so anyway).
_SHOW_ARGS = ("show", "--stat", "--patch", "--no-color", "--no-ext-diff", "--no-textconv", "--end-of-options")


class _ShowCache:
    """The last :data:`SHOW_CACHE` diffs shown, by (repository, commit, cap); shared by the threads
    that render pages."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Path, str, int], Diff] = OrderedDict()

    def get(self, key: tuple[Path, str, int]) -> Diff | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Path, str, int], diff: Diff) -> None:
        with self._lock:
            self._items[key] = diff
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_shown = _ShowCache(SHOW_CACHE)


def git_show(repo: Path, sha: str, *, limit: int = DIFF_LIMIT, timeout: float = GIT_TIMEOUT) -> Diff:
    """The commit ``sha`` (a full hex id from the log) as ``git show`` prints it, up to ``limit`` bytes."""
    if not (7 <= len(sha) <= 64 and all(c in "0123456789abcdef" for c in sha)):
        return Diff(sha, error="not a commit id")
    key = (repo, sha, limit)
    diff = _shown.get(key)
    if diff is None:
        diff = _git_show(repo, sha, limit=limit, timeout=timeout)
        if not diff.error:
            _shown.put(key, diff)
    return diff


def _git_show(repo: Path, sha: str, *, limit: int, timeout: float) -> Diff:
    # gitops' own argv and environment (hooks, fsmonitor, replace refs off): batchd's one way to run git.
    argv, cwd, env = gitops.git_command(
        repo, (*_SHOW_ARGS, sha), {"GIT_PAGER": "cat"}, None, untrusted=True, as_configured=False
    )
    # stderr goes to a file: a git that writes much there while its stdout is read never stalls.
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as e:
            return Diff(sha, error=f"cannot run git: {e.strerror}")
        timer = threading.Timer(timeout, proc.kill)  # a read blocked on a hung git ends when it is killed
        timer.start()
        try:
            assert proc.stdout is not None
            with proc.stdout:
                data = proc.stdout.read(limit + 1)
                truncated = len(data) > limit
                if truncated:
                    proc.kill()
            rc = proc.wait()
        finally:
            timer.cancel()
        errors.seek(0)
        err = errors.read(4096)
    text = data[:limit].decode("utf-8", errors="replace")
    if truncated:
        return Diff(sha, text=text, truncated=True)
    if rc != 0:
        why = err.decode("utf-8", errors="replace").strip() or f"git exited with code {rc}"
        if rc < 0:
            why = f"git took longer than {timeout:g}s"
        return Diff(sha, error=why)
    return Diff(sha, text=text)
