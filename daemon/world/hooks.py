"""The person's git hooks, as they were when batchd started, and only those.

batchd runs no hook in its own git commands, except where the person's hooks belong: a push
(``pre-push`` still gates it) and the fast-forward of the person's checkout (``post-merge``). Those
run from a copy taken at start-up and kept in memory; each use writes the copy into a fresh
private folder and removes it afterwards, so a hook written during the run (into ``.git/hooks``,
``core.hooksPath`` or batchd's own folders) never runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.world.gitops import out, remove_tree

log = structlog.get_logger(__name__)

MAX_HOOK_BYTES = 1 << 20  # per file: hooks are scripts; anything larger is not copied
MAX_HOOK_FILES = 500


@dataclass(frozen=True, slots=True)
class PersonHooks:
    """(relative path, bytes, executable) of every file of the hooks folder at start-up."""

    files: tuple[tuple[str, bytes, bool], ...]
    scratch: Path  # where the private copies are made (batchd's own folder)

    @contextlib.contextmanager
    def folder(self) -> Iterator[Path]:
        """A fresh folder holding the hooks as they were at start-up, removed after use."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix="hooks-", dir=self.scratch))
        try:
            for rel, data, executable in self.files:
                target = where / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                target.chmod(0o700 if executable else 0o600)
            yield where
        finally:
            remove_tree(where)


def snapshot(root: Path, scratch: Path) -> PersonHooks:
    """Read the person's hooks folder (``core.hooksPath``, else ``.git/hooks``) into memory.

    Hooks that are links are read through them (as the files they point to now); sample hooks and
    oversized files are left out.
    """
    source = Path(out(root, "rev-parse", "--path-format=absolute", "--git-path", "hooks", as_configured=True))
    files: list[tuple[str, bytes, bool]] = []
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if len(files) >= MAX_HOOK_FILES:
                break
            with contextlib.suppress(OSError):
                st = path.stat()
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_HOOK_BYTES or path.suffix == ".sample":
                    continue
                files.append(
                    (path.relative_to(source).as_posix(), path.read_bytes(), os.access(path, os.X_OK))
                )
    log.info("hooks_pinned", source=str(source), hooks=[rel for rel, _, x in files if x])
    return PersonHooks(files=tuple(files), scratch=scratch)
