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

Two kinds of installed dependency are the person's own code, not a package, and would make a check
test the person's checkout instead of the workspace's change (a false green): a monorepo's
workspace packages (``node_modules/@team/lib`` -> ``../../packages/lib``) are linked to the
workspace's own copy of that folder, and an editable install in the venv (``pip install -e .``,
whose ``.pth`` or finder points at the checkout's ``src``) is shadowed by the workspace's copy put
first on ``PYTHONPATH`` (:func:`python_paths`).

Nothing is placed where the workspace already has that name (the repository tracks it, or a set-up
command made it), and the placed links never become part of a change (:mod:`daemon.world.collect`
leaves these names out of every collected tree).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
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
            _link_entries(source, target, root=root, workspace=workspace)
        else:
            target.symlink_to(source, target_is_directory=True)
        placed.append(name)
    if placed:
        log.debug("dependencies_placed", workspace=str(workspace), names=placed)
    return tuple(placed)


def _link_entries(source: Path, target: Path, *, root: Path, workspace: Path) -> None:
    """``target``: a new folder with one link per entry of ``source`` (packages, ``.bin``); an
    ``@scope`` gets a folder of its own the same way, as its entries may be workspace packages."""
    target.mkdir()
    with os.scandir(source) as entries:
        for entry in entries:
            path = source / entry.name
            own = _in_checkout(path, root) if entry.is_symlink() else None
            if own is not None:  # a workspace package: the workspace's copy, not the person's
                (target / entry.name).symlink_to(workspace / own, target_is_directory=True)
            elif entry.name.startswith("@") and entry.is_dir(follow_symlinks=False):
                _link_entries(path, target / entry.name, root=root, workspace=workspace)
            else:
                (target / entry.name).symlink_to(path)


def _in_checkout(path: Path, root: Path) -> Path | None:
    """Where ``path`` leads inside the person's checkout, outside its dependency folders (their own
    code), relative to it; None for anything else (a package, a path outside)."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    if not rel.parts or rel.parts[0] in NAMES:
        return None
    return rel


_MAPPING = re.compile(r"^MAPPING\s*(?::[^=\n]*)?=\s*(\{.*?\})\s*$", re.MULTILINE | re.DOTALL)


def python_paths(root: Path, workspace: Path) -> tuple[str, ...]:
    """The workspace's copies of the folders that the checkout's venv imports from the checkout
    itself (editable installs: a ``.pth`` line, or setuptools' ``__editable__`` finder mapping), to
    go first on ``PYTHONPATH``: those come before site-packages and its finders, so the code tested
    is the workspace's. Empty when the venv has none (or there is no venv)."""
    venv = sources(root).get(".venv")
    if venv is None:
        return ()
    found: list[str] = []

    def add(path: Path) -> None:
        rel = _in_checkout(path, root) if path.is_absolute() else None
        if rel is not None and str(workspace / rel) not in found:
            found.append(str(workspace / rel))

    for site in sorted(venv.glob("lib/python*/site-packages")):
        for pth in sorted(site.glob("*.pth")):
            for line in _lines(pth):
                if line and not line.startswith(("#", "import ", "import\t")):
                    add(Path(line))
        for finder in sorted(site.glob("__editable__*finder.py")):
            for package in _finder_mapping(finder):
                add(Path(package).parent)
    return tuple(found)


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return []


def _finder_mapping(finder: Path) -> list[str]:
    """The package folders of a setuptools editable finder (its ``MAPPING = {name: path}``)."""
    match = _MAPPING.search("\n".join(_lines(finder)))
    if match is None:
        return []
    try:
        mapping = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return []
    return [v for v in mapping.values() if isinstance(v, str)] if isinstance(mapping, dict) else []


def with_python_paths(env: dict[str, str], root: Path, workspace: Path) -> dict[str, str]:
    """``env`` with :func:`python_paths` first on its ``PYTHONPATH`` (unchanged when there are none)."""
    paths = python_paths(root, workspace)
    if not paths:
        return env
    rest = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": os.pathsep.join([*paths, *([rest] if rest else [])])}
