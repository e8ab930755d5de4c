"""A workspace's installed dependencies: the person's own, reused read-only, never copied or installed.

A fresh workspace (an agent's repository, batchd's verification worktree) has only what git tracks,
and ``node_modules`` and ``.venv`` are normally git-ignored, so a Node or Python repository's tests
could not run there. Where the person's checkout has them, each workspace gets them this way:

- ``.venv``: a link to the person's (a venv's scripts carry absolute shebangs to where it was made,
  so a link is the one form of it that works anywhere);
- ``node_modules``: a folder of the workspace's own in which each entry (a package, ``@scope``,
  ``.bin``) is a link to the person's. Node resolves a linked package to its real path, so its own
  imports find their neighbours there; the folder itself stays writable, so a tool's cache
  (``node_modules/.cache``, ``.vite``) and an ``npm ci`` in ``[agent] setup`` (which empties it and
  installs afresh) work without touching the person's files.

Why links and not a hard-linked copy (``cp -al``): a file written in place through a hard link
changes the person's file too, and its mode is shared with it, so no sandbox can stop an agent from
editing the person's packages that way. A link leads to the person's path, which the sandbox
(:mod:`daemon.world.sandbox`) binds read-only (:func:`protected`): a write through it fails with
EROFS, and replacing or deleting the link touches only the workspace. Without a sandbox
(``sandbox = "none"``) a program can write anywhere the person can, links or not; batchd says so.

Nothing is placed where the workspace already has that name (the repository tracks it, or a set-up
command made it), and the placed links never become part of a change (:mod:`daemon.world.collect`
leaves these names out of every collected tree).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

NAMES: tuple[str, ...] = ("node_modules", ".venv")  # at the repository's top, where installers put them


def sources(root: Path) -> dict[str, Path]:
    """The dependency folders of the person's checkout (name -> the real folder), those that exist."""
    found: dict[str, Path] = {}
    for name in NAMES:
        path = root / name
        with contextlib.suppress(OSError):
            if path.is_dir():
                found[name] = path.resolve()
    return found


def protected(root: Path) -> tuple[Path, ...]:
    """Paths a sandbox binds read-only so that nothing reaches the person's dependencies through a
    workspace's links: the real folders the links lead to."""
    return tuple(sources(root).values())


def place(root: Path, workspace: Path, names: tuple[str, ...] = NAMES) -> tuple[str, ...]:
    """Give ``workspace`` the person's dependency folders (see the module's docstring); the names placed.

    Idempotent: a name the workspace already has is left as it is.
    """
    placed = []
    for name, source in sources(root).items():
        target = workspace / name
        if name not in names or os.path.lexists(target):
            continue
        if name == "node_modules":
            _link_entries(source, target)
        else:
            target.symlink_to(source, target_is_directory=True)
        placed.append(name)
    if placed:
        log.debug("dependencies_placed", workspace=str(workspace), names=placed)
    return tuple(placed)


def _link_entries(source: Path, target: Path) -> None:
    """``target``: a new folder with one link per entry of ``source`` (packages, ``@scope``, ``.bin``)."""
    target.mkdir()
    with os.scandir(source) as entries:
        for entry in entries:
            (target / entry.name).symlink_to(source / entry.name)
