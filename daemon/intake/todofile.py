"""One todo file: its name, its YAML front matter, and the edits batchd makes to it.

The convention (compound-engineering ``file-todos``): ``{id}-{status}-{priority}-{description}.md``
with optional front matter. The file name is the authority: where the front matter says something
else, the name wins and the difference is kept in ``disagreements`` for the caller to log.

Ids are kept as written (``"001"``) and compared as numbers (``001`` and ``1`` are the same todo);
:func:`id_key` gives the canonical key used in mappings and stream names.

Pure parsing: no logging and no events; a malformed file raises :class:`TodoFileError`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from daemon.exceptions import TodoFileError
from daemon.intake.frontmatter import FrontMatterError, load_front_matter, replace_status, split_front_matter
from statemachine.ids import id_key, id_order

__all__ = [
    "DEFAULT_IGNORE",
    "MAX_TODO_BYTES",
    "Priority",
    "TodoFile",
    "TodoName",
    "TodoStatus",
    "id_key",
    "id_order",
    "is_editor_temp",
    "is_ignored",
    "parse_name",
    "parse_todo",
    "rename_status",
    "set_front_matter_status",
]

MAX_TODO_BYTES = 1024 * 1024
DEFAULT_IGNORE: tuple[str, ...] = ("README.md", ".gitkeep", "TEMPLATE*.md")

# Editors write these next to the file they save; none of them is ever a todo.

_NAME_HINT = (
    "name it ID-STATUS-PRIORITY-DESCRIPTION.md, e.g. 273-ready-p1-tenant-filter.md "
    "(status pending|ready|complete, priority p1|p2|p3, description in kebab-case)"
)


class TodoStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    COMPLETE = "complete"


class Priority(StrEnum):
    P1 = "p1"
    P2 = "p2"
    P3 = "p3"


_STATUSES = "|".join(s.value for s in TodoStatus)
_PRIORITIES = "|".join(p.value for p in Priority)
_NAME_RE = re.compile(
    rf"^(?P<id>[0-9]+)-(?P<status>{_STATUSES})-(?P<priority>{_PRIORITIES})"
    r"-(?P<description>[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*)\.md$"
)
_DIGITS_RE = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class TodoName:
    """The four parts of a todo file name."""

    id: str
    status: TodoStatus
    priority: Priority
    description: str

    @property
    def key(self) -> str:
        return id_key(self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class TodoFile:
    """A parsed todo file; ``status``, ``priority`` and ``id`` come from its name."""

    id: str
    status: TodoStatus
    priority: Priority
    description: str
    title: str
    path: Path
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    issue_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    body: str = ""
    digest: str = ""
    disagreements: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Canonical id (``"1"`` for ``001``): the key in every mapping of todos."""
        return id_key(self.id)

    @property
    def number(self) -> int:
        return int(self.id)

    @property
    def dependency_keys(self) -> tuple[str, ...]:
        return tuple(id_key(d) for d in self.dependencies)


def _diagnose_name(name: str) -> str:
    """Say which part of a todo file name is wrong, for the error message."""
    if not name.endswith(".md"):
        return "is not a .md file"
    parts = name[: -len(".md")].split("-", 3)
    if len(parts) < 4:
        return "does not have the four parts id-status-priority-description"
    raw_id, raw_status, raw_priority, description = parts
    if not _DIGITS_RE.match(raw_id):
        return f"id {raw_id!r} is not a number"
    if raw_status not in TodoStatus.__members__.values():
        return f"status {raw_status!r} is not one of pending, ready, complete"
    if raw_priority not in Priority.__members__.values():
        return f"priority {raw_priority!r} is not one of p1, p2, p3"
    return f"description {description!r} is not kebab-case (letters, digits, single dashes)"


def parse_name(name: str) -> TodoName | None:
    """The parts of a todo file name, or None when it does not follow the convention."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return TodoName(
        id=m["id"],
        status=TodoStatus(m["status"]),
        priority=Priority(m["priority"]),
        description=m["description"],
    )


_VIM_SWAP = re.compile(r"\.sw[a-z]\Z")  # .swp, .swo, ... and .swx, vim's writability probe
_TEMP_SUFFIXES = ("~", ".tmp", ".part", "___jb_tmp___", "___jb_old___")


def is_editor_temp(name: str) -> bool:
    """True for names editors write next to the file they save: never a todo, never reported."""
    return (
        name.startswith(".")  # dot files, emacs lock files (.#x), vim's .x.swp
        or (name.startswith("#") and name.endswith("#"))  # emacs auto-save
        or name.isdigit()  # vim's 4913 probe (and 5036, ... when 4913 exists)
        or name.endswith(_TEMP_SUFFIXES)
        or _VIM_SWAP.search(name) is not None
    )


def is_ignored(name: str, ignore_globs: Iterable[str] = DEFAULT_IGNORE) -> bool:
    """True for names that are not todos: non-.md files, dot files, editor temp files, ignore globs."""
    if is_editor_temp(name):
        return True
    if not name.endswith(".md"):
        return True
    return any(fnmatchcase(name, glob) for glob in ignore_globs)


_H1_RE = re.compile(r"^# +(\S.*?)\s*$", re.MULTILINE)


def _title(body: str, description: str) -> str:
    m = _H1_RE.search(body)
    return m[1] if m is not None else description.replace("-", " ")


class _Fields:
    """Typed reading of the front matter mapping; each wrong type raises TodoFileError."""

    def __init__(self, data: Mapping[str, Any], path: Path, todo_id: str) -> None:
        self.data = data
        self.path = path
        self.todo_id = todo_id

    def error(self, key: str, message: str, hint: str) -> TodoFileError:
        return TodoFileError(
            f"front matter key {key!r} {message}", path=str(self.path), hint=hint, todo_id=self.todo_id
        )

    def scalar(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(key, f"must be a single value, not {type(value).__name__}", f"write `{key}: …`")
        return str(value)

    def str_list(self, key: str, example: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {type(value).__name__}", f"write `{key}: {example}`")
        out: list[str] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.error(
                    key, f"must list plain values, found {type(item).__name__}", f"write `{key}: {example}`"
                )
            out.append(str(item))
        return tuple(out)

    def dependencies(self) -> tuple[str, ...]:
        out: dict[str, str] = {}
        for written in self.str_list("dependencies", '["001", "002"]'):
            dep = written.strip()
            if not _DIGITS_RE.match(dep):
                raise self.error(
                    "dependencies",
                    f"lists {dep!r}, which is not a todo id",
                    'list todo ids as quoted numbers: `dependencies: ["001"]`',
                )
            out.setdefault(id_key(dep), dep)  # a dependency listed twice counts once
        return tuple(out.values())


def _read_checked(path: Path, lstat: os.stat_result | None = None) -> bytes:
    """The file's bytes, after refusing what cannot be a todo (symlink, directory, binary, huge).

    ``lstat`` is the file's lstat when the caller has it already (a folder scan).
    """
    p = str(path)
    name = path.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise TodoFileError(
            f"file name {os.fsencode(name)!r} is not valid UTF-8",
            path=p.encode("utf-8", "backslashreplace").decode("utf-8"),
            hint="rename the file using only UTF-8 characters (ASCII is safest)",
        ) from None
    try:
        _refuse_kind(lstat or path.lstat(), p)  # before opening: opening a device or FIFO can have effects
        # O_NOFOLLOW: a file swapped for a link after the lstat is refused too (ELOOP).
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            _refuse_kind(os.stat_result((stat.S_IFLNK, 0, 0, 0, 0, 0, 0, 0, 0, 0)), p)
        raise TodoFileError(
            f"cannot read the file: {e.strerror}", path=p, hint="check that it exists and is readable"
        ) from e
    try:
        st = os.fstat(fd)
        _refuse_kind(st, p)
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # it grew since the fstat: read on, up to the limit
            chunks = [data]
            while chunks[-1] and sum(map(len, chunks)) <= MAX_TODO_BYTES:
                chunks.append(os.read(fd, MAX_TODO_BYTES + 1 - sum(map(len, chunks))))
            data = b"".join(chunks)
    except OSError as e:
        raise TodoFileError(
            f"cannot read the file: {e.strerror}", path=p, hint="check that it exists and is readable"
        ) from e
    finally:
        os.close(fd)
    if len(data) > MAX_TODO_BYTES:
        _refuse_kind(os.stat_result((stat.S_IFREG, 0, 0, 0, 0, 0, len(data), 0, 0, 0)), p)
    return data


def _refuse_kind(st: os.stat_result, p: str) -> None:
    """Raise for what can never be a todo file: a link, a directory, a special file, a huge file."""
    if stat.S_ISLNK(st.st_mode):
        raise TodoFileError(
            "is a symbolic link; batchd refuses links because they can point outside the todos folder",
            path=p,
            hint="replace the link with a copy of the todo file",
        )
    if stat.S_ISDIR(st.st_mode):
        raise TodoFileError(
            "is a directory, not a todo file", path=p, hint="rename the directory so it does not end in .md"
        )
    if not stat.S_ISREG(st.st_mode):
        raise TodoFileError("is not a regular file", path=p, hint="remove it from the todos folder")
    if st.st_size > MAX_TODO_BYTES:
        raise TodoFileError(
            f"is more than {MAX_TODO_BYTES} bytes (1 MiB), the most a todo file may have",
            path=p,
            hint="shorten it: move logs and large data into files the todo links to",
        )


def _decode(data: bytes, path: Path, todo_id: str) -> str:
    if b"\x00" in data:
        raise TodoFileError(
            "is binary (contains NUL bytes), not a markdown text file",
            path=str(path),
            hint="todo files must be UTF-8 markdown text; move binary attachments elsewhere",
            todo_id=todo_id,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TodoFileError(
            f"is not UTF-8 text (bad byte at offset {e.start})",
            path=str(path),
            hint="re-save the file as UTF-8",
            todo_id=todo_id,
        ) from None
    return text.removeprefix("\ufeff")


_KNOWN_KEYS = frozenset({"status", "priority", "issue_id", "tags", "dependencies", "files"})


def _json_safe(value: Any) -> Any:
    """Plain JSON-able values for ``extra`` (it ends up in event payloads): dates as ISO text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_json_safe(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    return str(value)  # !!binary bytes and other rare YAML types


def parse_todo(path: Path, *, lstat: os.stat_result | None = None) -> TodoFile:
    """Parse one todo file; raise :class:`TodoFileError` saying what is wrong and how to fix it.

    ``lstat`` (optional) is the file's ``os.lstat`` result when the caller already has it.
    """
    data = _read_checked(path, lstat)
    name = parse_name(path.name)
    if name is None:
        raise TodoFileError(f"file name {_diagnose_name(path.name)}", path=str(path), hint=_NAME_HINT)
    text = _decode(data, path, name.id)
    try:
        raw, body = split_front_matter(text)
    except FrontMatterError as e:
        raise TodoFileError(
            str(e), path=str(path), hint="add a line '---' after the front matter", todo_id=name.id
        ) from None
    try:
        meta = load_front_matter(raw) if raw is not None else {}
    except FrontMatterError as e:
        raise TodoFileError(
            str(e),
            path=str(path),
            hint="fix the YAML between the two '---' lines: `key: value` lines; quote values "
            "that contain ':' or '#'",
            todo_id=name.id,
        ) from None
    fields = _Fields(meta, path, name.id)

    try:
        extra = {k: _json_safe(v) for k, v in meta.items() if k not in _KNOWN_KEYS}
    except RecursionError:  # a YAML alias that contains itself: `a: &x [*x]`
        raise TodoFileError(
            "front matter contains a value that refers to itself",
            path=str(path),
            hint="remove the YAML anchor (&name) that is used inside its own value",
            todo_id=name.id,
        ) from None
    disagreements: list[str] = []
    for key, from_name in (("status", name.status.value), ("priority", name.priority.value)):
        value = fields.scalar(key)
        if value is not None and value.strip().lower() != from_name:
            disagreements.append(f"front matter {key} is {value!r} but the file name says {from_name!r}")
    issue_id = fields.scalar("issue_id")
    if issue_id is not None:
        same = id_key(issue_id) == name.key if _DIGITS_RE.match(issue_id.strip()) else False
        if not same:
            disagreements.append(f"front matter issue_id is {issue_id!r} but the file name says {name.id!r}")

    return TodoFile(
        id=name.id,
        status=name.status,
        priority=name.priority,
        description=name.description,
        title=_title(body, name.description),
        path=path,
        dependencies=fields.dependencies(),
        files=fields.str_list("files", "[src/app.py]"),
        tags=fields.str_list("tags", "[security, api]"),
        issue_id=issue_id,
        extra=extra,
        body=body,
        digest=hashlib.sha256(data).hexdigest(),
        disagreements=tuple(disagreements),
    )


def rename_status(name: str, new_status: TodoStatus | str) -> str:
    """The file name with its status part replaced: ``273-ready-p1-x.md`` -> ``273-complete-p1-x.md``."""
    parts = parse_name(name)
    if parts is None:
        raise TodoFileError(f"file name {_diagnose_name(name)}", path=name, hint=_NAME_HINT)
    status = TodoStatus(new_status)
    return f"{parts.id}-{status.value}-{parts.priority.value}-{parts.description}.md"


def set_front_matter_status(text: str, new_status: TodoStatus | str) -> str:
    """The todo text with its front matter ``status:`` set to ``new_status``; everything else kept.

    See :func:`daemon.intake.frontmatter.replace_status`: a file without front matter is returned as is.
    """
    return replace_status(text, TodoStatus(new_status).value)
