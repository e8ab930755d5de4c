"""Section 5 of ``python -m bench.workspace --deps``: what a workspace's installed dependencies cost.

A checkout with a Node-like ``node_modules`` (by default 20,000 small files in 1,000 packages, some
scoped, with ``.bin`` links) and a ``.venv`` (``python -m venv --without-pip`` plus 5,000 files in
site-packages). Per workspace, the time to make it and remove it again (as batchd removes a
workspace, :func:`daemon.world.gitops.remove_tree`) and the disk it takes (blocks of inodes the
checkout does not already have), for:

- a full copy (the baseline "without reuse": what any per-workspace install costs at least, before
  resolving or downloading anything);
- a hard-linked copy (``cp -al``: every folder and name again, the files shared);
- :func:`daemon.world.deps.place`, what batchd does (a folder of links; the venv one link).

And per verification run (every tree is checked out afresh): :func:`daemon.world.gitops.reset_hard`
of the verification worktree, alone (the baseline) and with the dependencies placed again.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.world import deps
from daemon.world.gitops import add_worktree, remove_tree, reset_hard

PACKAGE_FILES = 20  # files per generated package: a package.json, an index.js, lib/*.js
Seconds = dict[str, float]


def make_node_modules(root: Path, files: int, rng: random.Random) -> int:
    """``root/node_modules`` with about ``files`` files; returns how many it made."""
    top = root / "node_modules"
    (top / ".bin").mkdir(parents=True)
    made = 0
    for i in range(max(1, files // PACKAGE_FILES)):
        name = f"@scope{i % 7}/pkg-{i:05d}" if i % 5 == 0 else f"pkg-{i:05d}"
        package = top / name
        (package / "lib").mkdir(parents=True)
        (package / "package.json").write_text(
            f'{{"name": "{name}", "version": "1.{i}.0", "main": "index.js"}}\n'
        )
        (package / "index.js").write_text(f"module.exports = require('./lib/m0.js');\n// {rng.random()}\n")
        for j in range(PACKAGE_FILES - 2):
            body = "".join(
                f"exports.f{k} = (x) => x * {rng.randint(1, 999)};\n" for k in range(rng.randint(3, 30))
            )
            (package / "lib" / f"m{j}.js").write_text(body)
        made += PACKAGE_FILES
        if i % 10 == 0:
            (top / ".bin" / f"pkg-{i:05d}").symlink_to(f"../{name}/index.js")
    return made


def make_venv(root: Path, files: int, rng: random.Random) -> int:
    """``root/.venv`` (no pip) with ``files`` small modules in site-packages; returns how many."""
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    for n in range(files):
        folder = site / f"dist_{n // 50:04d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod_{n % 50:02d}.py").write_text(f"VALUE = {rng.random()}\n" * rng.randint(1, 40))
    return files


def inodes(path: Path) -> set[tuple[int, int]]:
    found = set()
    for folder, dirs, names in os.walk(path):
        for name in (*dirs, *names):
            st = (Path(folder) / name).lstat()
            found.add((st.st_dev, st.st_ino))
    return found


def new_bytes(path: Path, shared: set[tuple[int, int]]) -> int:
    """Disk blocks under ``path`` (the entry itself included) of inodes not in ``shared``, each once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    entries = [path]
    for folder, dirs, names in os.walk(path):
        entries += [Path(folder) / name for name in (*dirs, *names)]
    for entry in entries:
        st = entry.lstat()
        key = (st.st_dev, st.st_ino)
        if key not in shared and key not in seen:
            seen.add(key)
            total += st.st_blocks * 512
    return total


def _link_or_copy(src: str, dst: str) -> None:
    """``cp -al``'s way with a file, and its fallback across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def full_copy(root: Path, ws: Path, name: str) -> None:
    shutil.copytree(root / name, ws / name, symlinks=True)


def hard_linked(root: Path, ws: Path, name: str) -> None:
    shutil.copytree(root / name, ws / name, symlinks=True, copy_function=_link_or_copy)


def reuse(root: Path, ws: Path, name: str) -> None:
    assert deps.place(root, ws, (name,)) == (name,)


VARIANTS: dict[str, Callable[[Path, Path, str], None]] = {
    "copy": full_copy,
    "hardlink": hard_linked,
    "link": reuse,
}


@dataclass(slots=True)
class DepsBench:
    """The checkout (a repository whose ``node_modules`` and ``.venv`` are git-ignored) and its numbers."""

    repo: Path
    base: str
    disk: dict[str, int]
    shared: set[tuple[int, int]]
    verify: Path

    @classmethod
    def make(cls, repo: Path, base: str, *, node_files: int, venv_files: int, seed: int) -> DepsBench:
        rng = random.Random(seed)
        with (repo / ".git" / "info" / "exclude").open("a") as f:
            f.write("node_modules/\n.venv/\n")
        make_node_modules(repo, node_files, rng)
        make_venv(repo, venv_files, rng)
        shared = inodes(repo / "node_modules") | inodes(repo / ".venv")
        verify = add_worktree(repo, repo / ".batchd" / "verify", "batchd/verify", base)
        return cls(repo=repo, base=base, disk={}, shared=shared, verify=verify)

    def one(self, key: str, name: str, variant: Callable[[Path, Path, str], None]) -> Seconds:
        """Make a workspace's ``name`` by ``variant``, weigh it, remove it: seconds of both steps."""
        ws = self.repo / ".batchd" / "workspaces" / key
        ws.mkdir(parents=True)
        start = time.perf_counter()
        variant(self.repo, ws, name)
        made = time.perf_counter()
        self.disk[key] = new_bytes(ws / name, self.shared)
        start_rm = time.perf_counter()
        remove_tree(ws)
        end = time.perf_counter()
        return {key: (made - start) + (end - start_rm)}

    def variants(self) -> list[Callable[[], Seconds]]:
        found: list[Callable[[], Seconds]] = []
        for label, variant in VARIANTS.items():
            found.append(lambda v=variant, k=f"deps.node.{label}": self.one(k, "node_modules", v))
        for label in ("copy", "link"):
            found.append(lambda v=VARIANTS[label], k=f"deps.venv.{label}": self.one(k, ".venv", v))
        found.append(self.reset_only)
        found.append(self.reset_and_place)
        return found

    def reset_only(self) -> Seconds:
        return {"deps.reset": _timed(lambda: reset_hard(self.verify, self.base))}

    def reset_and_place(self) -> Seconds:
        def both() -> None:
            reset_hard(self.verify, self.base)
            deps.place(self.repo, self.verify)

        seconds = {"deps.reset_place": _timed(both)}
        reset_hard(self.verify, self.base)  # the other variant starts from a clean tree as well
        return seconds


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# (label, key, the baseline's key)
ROWS = (
    ("node_modules: full copy (baseline, no reuse)", "deps.node.copy", "deps.node.copy"),
    ("node_modules: hard-linked copy (cp -al)", "deps.node.hardlink", "deps.node.copy"),
    ("node_modules: deps.place, a folder of links", "deps.node.link", "deps.node.copy"),
    (".venv: full copy (baseline, no reuse)", "deps.venv.copy", "deps.venv.copy"),
    (".venv: deps.place, one link", "deps.venv.link", "deps.venv.copy"),
    ("verify run: reset_hard (baseline)", "deps.reset", "deps.reset"),
    ("verify run: reset_hard + deps.place", "deps.reset_place", "deps.reset"),
)
