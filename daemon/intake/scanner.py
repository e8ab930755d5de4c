"""The todos folder as a whole: scan it, validate it, and diff it against what the daemon knows.

:func:`scan_folder` reads every todo file in a folder (not its subfolders) and checks the folder
as a whole: two files with one id, a dependency on an id no file has, dependency cycles. It never
raises for a bad file: each one becomes an :class:`InvalidTodo` with a reason and a hint, and a
file fixed later parses fine on the next scan.

:func:`diff_scan` compares a scan with what the daemon recorded and returns the changes, which the
daemon turns into events. Both are pure apart from reading the folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daemon.exceptions import TodoFileError
from daemon.intake.depgraph import find_cycles, format_cycle
from daemon.intake.todofile import (
    DEFAULT_IGNORE,
    TodoFile,
    TodoStatus,
    id_key,
    id_order,
    is_ignored,
    parse_name,
    parse_todo,
)

__all__ = [
    "Added",
    "Change",
    "Edited",
    "Fixed",
    "Invalid",
    "InvalidTodo",
    "KnownTodo",
    "Removed",
    "ScanResult",
    "StatusChanged",
    "diff_scan",
    "scan_folder",
]

_FILE_KEY_PREFIX = "file:"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidTodo:
    """A file in the todos folder that is not a usable todo, and how to fix it.

    ``key`` is the todo's id key when this file holds the id (so that fixing it later reads as
    :class:`Fixed`), else ``"file:<name>"`` (a bad name, or the second file with an id).
    """

    key: str
    path: Path
    reason: str
    hint: str
    todo_id: str | None


_Signature = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Valid todos by id key, and every file that is not a usable todo (sorted by name).

    ``parsed`` remembers each parsed file with its stat signature, so that passing this result as
    ``previous`` to the next :func:`scan_folder` skips re-reading files that did not change.
    """

    todos: Mapping[str, TodoFile]
    invalid: tuple[InvalidTodo, ...]
    parsed: Mapping[str, tuple[_Signature, TodoFile]] = field(default_factory=dict, repr=False, compare=False)


def _printable(name: str) -> str:
    """A file name safe to log and store: undecodable bytes shown as ``\\xff``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _reason(err: TodoFileError) -> str:
    prefix = f"{err.path}: "
    return err.message.removeprefix(prefix)


# A file changed within this many ns of its ctime may change again within the same timestamp tick
# (the kernel's clock is coarse): such files are not remembered, so the next scan reads them again.
_RACY_NS = 2_000_000_000


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False)
    except OSError:
        return None  # gone since the listing: parse_todo reports it


def _list_entries(todos_dir: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(todos_dir) as it:
            return sorted(it, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []  # a repository that has no todos yet: nothing to do, not an error
    except NotADirectoryError:
        raise TodoFileError(
            "the todos folder is a file, not a folder",
            path=str(todos_dir),
            hint="point todos_dir in batchd.toml at a folder",
        ) from None
    except OSError as e:
        raise TodoFileError(
            f"cannot list the todos folder: {e.strerror}",
            path=str(todos_dir),
            hint="check its permissions (batchd needs to read and rename files there)",
        ) from e


def scan_folder(
    todos_dir: Path,
    ignore: Iterable[str] = DEFAULT_IGNORE,
    *,
    known_ids: Collection[str] = (),
    previous: ScanResult | None = None,
) -> ScanResult:
    """Parse and validate every todo file directly in ``todos_dir``.

    ``ignore`` are glob patterns of names that are not todos (besides non-.md files, dot files and
    editor temp files). ``known_ids`` are ids that count as existing although no file has them (for
    example todos the daemon recorded as complete whose files were archived). A todo whose
    dependency is itself invalid stays valid here: the daemon blocks it until the dependency is done.
    With ``previous`` (the last result), files whose inode, size, mtime and ctime did not change
    are not read again; the folder-level checks always run on the whole folder.
    """
    globs = tuple(ignore)
    owner: dict[str, str] = {}  # id key -> the name of the file that holds it (first in sort order)
    parsed: dict[str, TodoFile] = {}
    invalid: dict[str, InvalidTodo] = {}  # by file name
    remembered = previous.parsed if previous is not None else {}
    remember: dict[str, tuple[_Signature, TodoFile]] = {}
    settled_before = time.time_ns() - _RACY_NS

    for entry in _list_entries(todos_dir):
        name = entry.name
        if is_ignored(name, globs):
            continue
        path = todos_dir / name
        parts = parse_name(name)
        if parts is not None:
            holder = owner.setdefault(parts.key, name)
            if holder != name:
                invalid[name] = InvalidTodo(
                    key=_FILE_KEY_PREFIX + name,
                    path=path,
                    reason=f"id {parts.id} is already used by {holder} (ids compare as numbers)",
                    hint=f"give this todo the next free id, or delete whichever of {holder} and {name} "
                    "is the stray copy",
                    todo_id=parts.id,
                )
                continue
        st = _lstat(entry)
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if st else None
        hit = remembered.get(entry.path)
        if sig is not None and hit is not None and hit[0] == sig:
            parsed[hit[1].key] = hit[1]
            remember[entry.path] = hit
            continue
        try:
            todo = parse_todo(path, lstat=st)
        except TodoFileError as e:
            invalid[name] = InvalidTodo(
                key=parts.key if parts is not None else _FILE_KEY_PREFIX + _printable(name),
                path=path,
                reason=_reason(e),
                hint=e.hint,
                todo_id=parts.id if parts is not None else None,
            )
            continue
        parsed[todo.key] = todo
        if sig is not None and sig[3] < settled_before:
            remember[entry.path] = (sig, todo)

    known = set(owner) | {id_key(k) for k in known_ids}
    for key, todo in parsed.items():
        unknown = [d for d in todo.dependencies if id_key(d) not in known]
        if unknown:
            listed = ", ".join(unknown)
            invalid[todo.path.name] = InvalidTodo(
                key=key,
                path=todo.path,
                reason=f"depends on {listed}, which no todo file in {todos_dir} has",
                hint=f"correct the ids in `dependencies`, or add the todo file for {listed}",
                todo_id=todo.id,
            )

    cycles = find_cycles({key: todo.dependency_keys for key, todo in parsed.items()})
    for key, cycle in cycles.items():
        todo = parsed[key]
        if todo.path.name in invalid:
            continue
        shown = format_cycle(cycle, start=key, label=lambda k: parsed[k].id)
        invalid[todo.path.name] = InvalidTodo(
            key=key,
            path=todo.path,
            reason=f"is on a dependency cycle: {shown}",
            hint="remove one of these dependencies so that the todos can run one after another",
            todo_id=todo.id,
        )

    todos = {key: todo for key, todo in parsed.items() if todo.path.name not in invalid}
    return ScanResult(todos=todos, invalid=tuple(invalid[name] for name in sorted(invalid)), parsed=remember)


# --- diff ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownTodo:
    """What the daemon has recorded about one key: where, in which status, which content."""

    path: Path
    status: TodoStatus | None
    digest: str | None
    invalid_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Added:
    todo: TodoFile

    @property
    def key(self) -> str:
        return self.todo.key


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The status in the file name changed (pending->ready, ready->complete, complete->ready, ...)."""

    todo: TodoFile
    old: TodoStatus
    new: TodoStatus

    @property
    def key(self) -> str:
        return self.todo.key


@dataclass(frozen=True, slots=True)
class Edited:
    """Same id and status, but different content or a different file name (priority, description)."""

    todo: TodoFile

    @property
    def key(self) -> str:
        return self.todo.key


@dataclass(frozen=True, slots=True)
class Removed:
    key: str
    path: Path


@dataclass(frozen=True, slots=True)
class Invalid:
    """Newly invalid, or invalid for a different reason than recorded."""

    invalid: InvalidTodo

    @property
    def key(self) -> str:
        return self.invalid.key


@dataclass(frozen=True, slots=True)
class Fixed:
    """Was recorded as invalid and now parses and validates."""

    todo: TodoFile

    @property
    def key(self) -> str:
        return self.todo.key


Change = Added | StatusChanged | Edited | Removed | Invalid | Fixed


def diff_scan(previous: Mapping[str, KnownTodo], result: ScanResult) -> list[Change]:
    """The changes from what the daemon recorded (by key) to a new scan, in key order."""
    changes: list[Change] = []
    for key, todo in result.todos.items():
        known = previous.get(key)
        if known is None:
            changes.append(Added(todo))
        elif known.invalid_reason is not None or known.status is None:
            changes.append(Fixed(todo))
        elif known.status != todo.status:
            changes.append(StatusChanged(todo, known.status, todo.status))
        elif known.digest != todo.digest or known.path != todo.path:
            changes.append(Edited(todo))
    for bad in result.invalid:
        known = previous.get(bad.key)
        # The log keeps names escaped (a name that is not UTF-8 shows as \xff): compare them so.
        moved = known is not None and _printable(str(known.path)) != _printable(str(bad.path))
        if known is None or known.invalid_reason != bad.reason or moved:
            changes.append(Invalid(bad))
    present = set(result.todos) | {bad.key for bad in result.invalid}
    changes.extend(Removed(key, known.path) for key, known in previous.items() if key not in present)
    changes.sort(key=lambda c: id_order(c.key))
    return changes
