"""An agent's workspace: a repository of its own, not a worktree of the person's.

A git worktree shares the repository's config, hooks and refs with the person's checkout and with
every other worktree, so one agent's ``git config remote.origin.pushurl ...`` or a hook it writes
would reach them all. Each agent instead gets ``.batchd/workspaces/todo-<id>``: a fresh ``git init``
whose objects are borrowed from the person's repository through ``objects/info/alternates`` (the
same as ``git clone --shared``, without copying the person's refs or any remote). Its config, hooks
and refs are its own; it has no remote that leads anywhere; whatever it pushes or rewrites stays in it.

batchd reads such a repository only with its git directory named explicitly and ``untrusted=True``
(see :func:`daemon.gitops.run_git`), and never writes to it after the agent started: the change is
collected from its files by :mod:`daemon.collect` into the person's repository, and the workspace is
deleted as a folder (never ``reset``), so a ``.git`` the agent rewrote cannot redirect anything.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from daemon.exceptions import BatchdError
from daemon.gitops import WorkTree, git_common_dir, out, printable, remove_tree, run_git, split_z

log = structlog.get_logger(__name__)

MAX_AGENT_COMMITS = 200  # recorded per attempt (to recognise them on the remote); more are not listed


class WorkspaceError(BatchdError):
    """An agent's workspace is not the repository batchd made (its ``.git`` was replaced or removed)."""

    code = "workspace_error"


def create(root: Path, path: Path, *, branch: str, base_sha: str, files: dict[str, bytes]) -> Path:
    """A new workspace at ``path`` on ``branch`` at ``base_sha``; ``files`` (relative path -> bytes)
    are written on top (the todo file as the person has it now, committed or not)."""
    remove_tree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    common = git_common_dir(root)
    fmt = out(root, "rev-parse", "--show-object-format")
    # --template= (empty): no hooks, no exclude file; -b: its own branch, named after the attempt.
    run_git(root, "init", "--quiet", "--template=", f"--object-format={fmt}", "-b", branch, str(path))
    git_dir = path / ".git"
    (git_dir / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(f"{common / 'objects'}\n", encoding="utf-8")
    identity = [
        (key, value)
        for key in ("user.name", "user.email")
        if (value := run_git(root, "config", "--get", key, check=False).stdout.strip())
    ]
    with (git_dir / "config").open("a", encoding="utf-8") as config:
        # Agents commit as the person would (an identity only in the repository's config is copied).
        for key, value in identity:
            section, _, name = key.partition(".")
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            config.write(f'[{section}]\n\t{name} = "{escaped}"\n')
    ws = WorkTree(path=path, git_dir=git_dir)
    run_git(ws, "update-ref", f"refs/heads/{branch}", base_sha)
    run_git(ws, "reset", "--quiet", "--hard", base_sha)
    for rel, data in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    log.debug("workspace_created", path=str(path), branch=branch, base=base_sha)
    return path


def _agents(path: Path) -> WorkTree:
    """The agent's repository, with its git directory named (after checking it is still a folder)."""
    return WorkTree(path=path, git_dir=checked_git_dir(path))


def checked_git_dir(path: Path) -> Path:
    """``path/.git`` when it is still the real folder batchd made; else a :class:`WorkspaceError`."""
    git_dir = path / ".git"
    if path.is_symlink() or not path.is_dir():
        raise WorkspaceError(
            f"the workspace {printable(str(path))} is gone or was replaced by a link",
            hint="nothing of this attempt can be collected; it is run again",
        )
    if git_dir.is_symlink() or not git_dir.is_dir():
        raise WorkspaceError(
            f"the agent replaced its workspace's .git ({printable(str(git_dir))}) with a file or a link",
            hint="an agent must not redirect its repository; the attempt fails",
        )
    return git_dir


def agent_head(path: Path) -> str:
    """The commit the agent's repository is at (read without trusting anything it may have added)."""
    proc = run_git(
        _agents(path), "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False, untrusted=True
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise WorkspaceError(
            "the agent's repository has no HEAD commit (its branch was deleted or emptied)",
            hint="an agent must leave its workspace on a commit that descends from its base",
        )
    return proc.stdout.strip()


def descends(path: Path, base_sha: str, head: str) -> bool:
    proc = run_git(_agents(path), "merge-base", "--is-ancestor", base_sha, head, check=False, untrusted=True)
    return proc.returncode == 0


def agent_commits(path: Path, base_sha: str, head: str) -> tuple[str, ...]:
    """The commits the agent made on top of its base (newest first, at most :data:`MAX_AGENT_COMMITS`)."""
    proc = run_git(
        _agents(path), "rev-list", f"--max-count={MAX_AGENT_COMMITS}", head, f"^{base_sha}", "--",
        check=False, untrusted=True,
    )  # fmt: skip
    return tuple(proc.stdout.split()) if proc.returncode == 0 else ()


def tracked_paths(path: Path, head: str) -> list[str]:
    """Paths the agent's own index or its HEAD holds: how a file it added despite ``.gitignore`` is found.

    Only names come out of here; their content is read from the workspace's files, so a lie in the
    agent's index or objects can at worst add a file that is really there.
    """
    agents = _agents(path)
    names: set[str] = set()
    index = agents.git_dir / "index"
    if index.is_file() and not index.is_symlink():
        listing = run_git(agents, "ls-files", "-z", "--cached", check=False, untrusted=True)
        names.update(split_z(listing.stdout))
    tree = run_git(
        agents, "ls-tree", "-r", "-z", "--name-only", "--full-tree", head, check=False, untrusted=True
    )
    names.update(split_z(tree.stdout))
    return sorted(n for n in names if _plain(n))


def _plain(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".git" not in parts and ".." not in parts


def remove(path: Path) -> None:
    """Delete a workspace as a folder: nothing inside it (a rewritten ``.git``, links) is followed."""
    remove_tree(path)


def is_workspace(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / ".git").is_dir()
