"""The todos folder as a linter sees it: every problem batchd would meet, with the file and the fix.

``batchd plan check`` prints these (and exits 1 when there is one), so the check can run in a
pre-commit hook before a person's new or renamed todo reaches the daemon. It finds what the folder
scan refuses (names that break the convention, unreadable or non-UTF-8 files and names, bad front
matter, dependencies on ids no file has, dependency cycles, two files with one id), front matter
that disagrees with the file name, and files that look like todos but are not ``.md`` (batchd
ignores those without a word).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from daemon.exceptions import printable
from daemon.intake.scanner import ScanResult, scan_folder
from daemon.intake.todofile import DEFAULT_IGNORE, is_editor_temp

__all__ = ["FolderProblem", "lint_folder", "lint_scan"]

# A name that starts like a todo's ("273-ready-...") but is skipped for not ending in .md.
_LOOKS_LIKE_TODO = re.compile(r"^[0-9]+-[A-Za-z]")


@dataclass(frozen=True, slots=True)
class FolderProblem:
    file: str  # relative to the repository, undecodable bytes shown as \xff
    message: str
    fix: str
    todo_id: str | None = None


def _shown(root: Path, path: Path) -> str:
    try:
        rel: Path | str = path.relative_to(root)
    except ValueError:
        rel = path
    return os.fsencode(str(rel)).decode("utf-8", "backslashreplace")


def lint_scan(root: Path, todos_dir: Path, scan: ScanResult, ignore: Iterable[str]) -> list[FolderProblem]:
    """The problems of a folder already scanned with :func:`scan_folder`, in file name order."""
    problems = [
        FolderProblem(_shown(root, bad.path), printable(bad.reason), printable(bad.hint), bad.todo_id)
        for bad in scan.invalid
    ]
    for todo in scan.todos.values():
        problems.extend(
            FolderProblem(
                _shown(root, todo.path),
                note,
                "make the front matter say what the file name says (batchd goes by the name)",
                todo.id,
            )
            for note in todo.disagreements
        )
    globs = tuple(ignore)
    try:
        names = sorted(entry.name for entry in todos_dir.iterdir())
    except OSError:
        names = []  # the scan said what is wrong with the folder itself
    for name in names:
        if name.endswith(".md") or is_editor_temp(name) or not _LOOKS_LIKE_TODO.match(name):
            continue
        if any(fnmatchcase(name, glob) for glob in globs):
            continue  # ignored on purpose
        problems.append(
            FolderProblem(
                _shown(root, todos_dir / name),
                "looks like a todo file but does not end in .md, so batchd ignores it",
                f"rename it to end in .md (e.g. {printable(Path(name).stem)}.md)",
            )
        )
    return sorted(problems, key=lambda p: (p.file, p.message))


def lint_folder(
    root: Path, todos_dir: Path, ignore: Iterable[str] = DEFAULT_IGNORE, *, known_ids: Collection[str] = ()
) -> tuple[ScanResult, list[FolderProblem]]:
    """Scan ``todos_dir`` and return the scan with its problems; ``known_ids`` count as existing
    (todos the log has recorded whose files were archived)."""
    globs = tuple(ignore)
    scan = scan_folder(todos_dir, globs, known_ids=known_ids)
    return scan, lint_scan(root, todos_dir, scan, globs)
