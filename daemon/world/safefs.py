"""batchd's own file writes, which never follow a link.

The status file, the renamed todo files, agent logs and exit records are written below a folder
batchd trusts (the repository root, a worktree, ``.batchd/``); an agent could have committed or
planted a symbolic link anywhere below it, pointing at a file elsewhere. Every folder on the way
is opened with ``O_NOFOLLOW | O_DIRECTORY`` from that trusted folder down, and the file itself is
written as a new file renamed into place (``rename`` replaces a name, it never writes through one)
or opened with ``O_NOFOLLOW``. A link on the way is refused with :class:`LinkRefused`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from daemon.exceptions import BatchdError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class LinkRefused(BatchdError):
    """A path batchd was about to write through is (or passes through) a symbolic link, or a folder
    on the way is a file (``not_a_folder``)."""

    code = "link_refused"

    def __init__(self, *, path: str, not_a_folder: bool = False) -> None:
        self.path = path
        self.not_a_folder = not_a_folder
        if not_a_folder:
            message = f"{path} is a file, where batchd needs a folder"
            hint = "move the file away (git rm it if it was committed)"
        else:
            message = f"{path} is (or is inside) a symbolic link; batchd never writes through a link"
            hint = "replace the link with a real file or folder (git rm it if it was committed)"
        super().__init__(message, hint=hint)


def _refusal(walked: Path) -> LinkRefused:
    return LinkRefused(path=str(walked), not_a_folder=walked.exists() and not walked.is_symlink())


def _parts(rel: str | Path) -> list[str]:
    parts = list(PurePosixPath(Path(rel).as_posix()).parts)
    if not parts or parts[0] == "/" or ".." in parts:
        raise ValueError(f"{rel!r} is not a relative path inside its folder")
    return parts


@contextlib.contextmanager
def _folder(base: Path, parts: list[str], *, create: bool) -> Iterator[int]:
    """An fd of ``base/parts...`` reached without following any link below ``base``."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = base
        for part in parts:
            walked = walked / part
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                nxt = _open_dir_at(fd, part, walked)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refusal(walked) from None
                raise
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _open_dir_at(fd: int, part: str, walked: Path) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refusal(walked) from None
        raise


def _is_link_at(fd: int, name: str) -> bool:
    try:
        os.readlink(name, dir_fd=fd)
    except OSError:
        return False
    return True


def write_text(base: Path, rel: str | Path, text: str, *, replace_link: bool = False) -> None:
    """Write ``base/rel`` atomically (a new file renamed over the old name); folders are created.

    A link at ``rel`` itself is refused unless ``replace_link`` (then the link, not its target, is
    replaced: for files in batchd's own worktree, whose content batchd decides).
    """
    parts = _parts(rel)
    name = parts[-1]
    with _folder(base, parts[:-1], create=True) as fd:
        if not replace_link and _is_link_at(fd, name):
            raise LinkRefused(path=str(base / rel))
        tmp = f".{name}.batchd-{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        out = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
        )
        try:
            os.write(out, text.encode("utf-8"))
        finally:
            os.close(out)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)


def open_read(base: Path, rel: str | Path) -> int | None:
    """A read-only fd of ``base/rel`` (``O_NONBLOCK``: a FIFO there never blocks; check ``fstat``
    before reading), None when missing; a link on the way is refused, a file on the way too
    (``not_a_folder``)."""
    parts = _parts(rel)
    try:
        with _folder(base, parts[:-1], create=False) as fd:
            try:
                return os.open(parts[-1], _READ_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise LinkRefused(path=str(base / rel)) from None
                raise
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def read_bytes(base: Path, rel: str | Path, *, limit: int) -> bytes | None:
    """``base/rel``'s bytes (at most ``limit``), None when missing; a link on the way is refused."""
    handle = open_read(base, rel)
    if handle is None:
        return None
    try:
        return os.read(handle, limit)
    except IsADirectoryError:
        return None
    finally:
        os.close(handle)


def open_append(base: Path, rel: str | Path) -> int:
    """An fd appending to ``base/rel`` (created; folders too), never through a link."""
    parts = _parts(rel)
    with _folder(base, parts[:-1], create=True) as fd:
        try:
            return os.open(
                parts[-1],
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=fd,
            )
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise LinkRefused(path=str(base / rel)) from None
            raise


def append_text(base: Path, rel: str | Path, text: str) -> None:
    append_bytes(base, rel, text.encode("utf-8", "surrogateescape"))


def append_bytes(base: Path, rel: str | Path, data: bytes) -> None:
    fd = open_append(base, rel)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def unlink(base: Path, rel: str | Path) -> None:
    """Remove ``base/rel`` (a link itself, never what it points at; no folder on the way followed)."""
    parts = _parts(rel)
    try:
        with _folder(base, parts[:-1], create=False) as fd:
            os.unlink(parts[-1], dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return


def relative_to(base: Path, path: Path) -> str:
    """``path`` relative to ``base`` (a ValueError when it is not below it)."""
    return path.absolute().relative_to(base.absolute()).as_posix()
