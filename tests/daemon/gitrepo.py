"""Helpers that build real git repositories for tests: a repo with files, commits on side branches,
a bare remote and clones. Commits on branches are made with plumbing (a throwaway index), so the
checkout is never touched, like agents working in their own worktrees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path

from daemon.world.verify import Candidate

IDENTITY = ("-c", "user.name=Test", "-c", "user.email=test@example.com")

# The repository's own check: imports every module under mods/ and calls its check().
# An exception prints a traceback (which names the module's file); a False return prints a
# message that names nothing, so tests can make culprits the output does or does not point at.
CHECK_PY = textwrap.dedent(
    """
    import importlib, pathlib, sys, traceback
    sys.path.insert(0, "mods")
    failed = 0
    for path in sorted(pathlib.Path("mods").glob("*.py")):
        try:
            ok = importlib.import_module(path.stem).check()
        except Exception:
            traceback.print_exc()
            failed += 1
            continue
        if ok is False:
            print("an invariant does not hold")
            failed += 1
    print("failures:", failed)
    sys.exit(1 if failed else 0)
    """
).lstrip()

GOOD_MOD = "def check():\n    return True\n"
NAMED_BREAK = "def check():\n    raise AssertionError('broken on purpose')\n"
UNNAMED_BREAK = "def check():\n    return False\n"
CHECK_CMD = (sys.executable, "-B", "check.py")  # -B: no stale .pyc when a file flips within a second


def git(cwd: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *IDENTITY, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}{proc.stdout}")
    return proc.stdout.strip()


def write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def init_repo(path: Path, files: Mapping[str, str], *, branch: str = "main") -> Path:
    """A repository at ``path`` with one commit holding ``files``; identity set in its config."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    (path / ".git" / "info" / "exclude").write_text(".batchd/\n")
    write(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def check_repo(path: Path, modules: int = 0) -> Path:
    """A repository with check.py and ``modules`` good modules (mods/base_<i>.py)."""
    files = {"check.py": CHECK_PY, "mods/base.py": GOOD_MOD}
    files.update({f"mods/base_{i}.py": GOOD_MOD for i in range(modules)})
    return init_repo(path, files)


def commit_files(
    repo: Path, base: str, files: Mapping[str, str | None], *, message: str = "change", branch: str = ""
) -> str:
    """A commit on ``base`` setting ``files`` (None deletes), optionally at refs/heads/``branch``."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", base, env=env)
        for rel, text in files.items():
            if text is None:
                git(repo, "update-index", "--force-remove", "--", rel, env=env)
                continue
            blob = git(repo, "hash-object", "-w", "--stdin", stdin=text)
            git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
        tree = git(repo, "write-tree", env=env)
    sha = git(repo, "commit-tree", tree, "-p", base, "-m", message)
    if branch:
        git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def candidate(repo: Path, base: str, todo_id: str, files: Mapping[str, str | None]) -> Candidate:
    sha = commit_files(repo, base, files, message=f"todo {todo_id}", branch=f"batchd/todo-{todo_id}-a1")
    return Candidate(todo_id=todo_id, sha=sha, files=tuple(sorted(files)))


def module_candidate(repo: Path, base: str, todo_id: str, body: str = GOOD_MOD) -> Candidate:
    """A todo that adds its own module mods/mod_<id>.py (good, or broken by ``body``)."""
    return candidate(repo, base, todo_id, {f"mods/mod_{todo_id}.py": body})


def head(repo: Path, rev: str = "HEAD") -> str:
    return git(repo, "rev-parse", rev)


def bare_remote(path: Path, source: Path, branch: str = "main") -> Path:
    """A bare repository at ``path`` holding ``source``'s ``branch``, added to it as ``origin``."""
    git(path.parent, "init", "-q", "--bare", "-b", branch, str(path))
    git(source, "remote", "add", "origin", str(path))
    git(source, "push", "-q", "origin", f"{branch}:refs/heads/{branch}")
    return path


def clone(remote: Path, dest: Path) -> Path:
    git(remote.parent, "clone", "-q", str(remote), str(dest))
    git(dest, "config", "user.name", "Other")
    git(dest, "config", "user.email", "other@example.com")
    return dest


def refuse_pushes(remote: Path, message: str = "pushes are closed") -> None:
    """A pre-receive hook that declines every push (CI runs as root: permissions cannot refuse)."""
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    hook.chmod(0o755)
