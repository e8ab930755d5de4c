"""What steers an agent's later sessions is put back after each attempt.

An agent's home must be writable for it (credentials it refreshes, its sessions), but some files
there decide what the person's *own* later sessions run: Claude Code's ``settings.json`` (hooks),
``commands/``, ``agents/``, ``skills/``, ``CLAUDE.md``; Codex's ``config.toml`` and ``prompts/``;
aider's ``.aider.conf.yml``. The sandbox binds those read-only when they exist; one that does not
exist yet could still be created. So before each attempt batchd notes what they are, and after it
puts back what changed (a file an agent created is removed), and says so on the attempt.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.world.gitops import remove_tree

log = structlog.get_logger(__name__)

# Relative to the home folder.
STEERING = (
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".claude/CLAUDE.md",
    ".claude/commands",
    ".claude/agents",
    ".claude/skills",
    ".claude/output-styles",
    ".claude/hooks",
    ".claude/plugins",
    ".codex/config.toml",
    ".codex/AGENTS.md",
    ".codex/prompts",
    ".aider.conf.yml",
)
MAX_FILES = 500
MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every file under the steering paths as it was (path -> bytes), and the paths that did not exist."""

    files: dict[Path, bytes]
    absent: frozenset[Path]
    watched: tuple[Path, ...]


def steering_paths(home: Path, writable: Iterable[Path]) -> tuple[Path, ...]:
    """The steering paths an agent can write to: those inside one of its writable folders."""
    spots = tuple(writable)
    return tuple(
        home / rel for rel in STEERING if any(home / rel == w or w in (home / rel).parents for w in spots)
    )


def _files(path: Path) -> dict[Path, bytes]:
    found: dict[Path, bytes] = {}
    todo = [path]
    while todo and len(found) < MAX_FILES:
        current = todo.pop()
        with contextlib.suppress(OSError):
            mode = current.lstat().st_mode
            if stat.S_ISDIR(mode):
                todo.extend(sorted(current.iterdir()))
            elif stat.S_ISREG(mode) and current.lstat().st_size <= MAX_BYTES:
                found[current] = current.read_bytes()
            elif stat.S_ISLNK(mode):
                found[current] = b"\0link:" + os.fsencode(current.readlink())
    return found


def take(paths: Iterable[Path]) -> Snapshot:
    watched = tuple(paths)
    files: dict[Path, bytes] = {}
    for path in watched:
        files.update(_files(path))
    absent = frozenset(p for p in watched if not p.exists() and not p.is_symlink())
    return Snapshot(files=files, absent=absent, watched=watched)


def restore(snapshot: Snapshot) -> list[str]:
    """Put the steering paths back as they were; returns what was put back, for the records."""
    changed: list[str] = []
    for path in snapshot.watched:
        now = _files(path)
        if path in snapshot.absent and (path.exists() or path.is_symlink()):
            remove_tree(path)
            changed.append(f"{_home_relative(path)} (created by the agent: removed)")
            continue
        for file in sorted(set(now) | {f for f in snapshot.files if path == f or path in f.parents}):
            before, after = snapshot.files.get(file), now.get(file)
            if before == after:
                continue
            with contextlib.suppress(OSError):
                if before is None:
                    remove_tree(file)
                elif before.startswith(b"\0link:"):
                    remove_tree(file)
                    file.symlink_to(os.fsdecode(before.removeprefix(b"\0link:")))
                else:
                    remove_tree(file) if file.is_symlink() or file.is_dir() else None
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(before)
            changed.append(f"{_home_relative(file)} (an agent's setting: put back)")
    if changed:
        log.warning("agent_settings_put_back", paths=changed)
    return changed


def _home_relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return "~/" + path.relative_to(Path.home()).as_posix()
    return str(path)
