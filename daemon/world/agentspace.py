"""An agent's workspace: a repository of its own, not a worktree of the person's.

A git worktree shares the repository's config, hooks and refs with the person's checkout and with
every other worktree, so one agent's ``git config remote.origin.pushurl ...`` or a hook it writes
would reach them all. Each agent instead gets ``.batchd/workspaces/todo-<id>``: a fresh ``git init``
whose objects are borrowed from the person's repository through ``objects/info/alternates`` (the
same as ``git clone --shared``, without copying the person's refs or any remote). Its config, hooks
and refs are its own; it has no remote that leads anywhere; whatever it pushes or rewrites stays in it.

batchd reads such a repository as data only, never through git's view of it: HEAD and the branch it
names are parsed by batchd, and commits are read through the person's repository with the agent's
objects folder as an extra alternate, so the agent's config (a partial-clone remote, an
sshCommand, filters) never runs. batchd never writes to it after the agent started: the change is
collected from its files by :mod:`daemon.world.collect` into the person's repository, and the workspace is
deleted as a folder (never ``reset``), so a ``.git`` the agent rewrote cannot redirect anything.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import structlog

from daemon.exceptions import BatchdError, printable
from daemon.world import safefs
from daemon.world.gitops import WorkTree, git_common_dir, out, records, remove_tree, run_git
from daemon.world.rebase import Carried

log = structlog.get_logger(__name__)

MAX_AGENT_COMMITS = 200  # recorded per attempt (to recognise them on the remote); more are not listed


class WorkspaceError(BatchdError):
    """An agent's workspace is not the repository batchd made (its ``.git`` was replaced or removed)."""

    code = "workspace_error"


def create(
    root: Path,
    path: Path,
    *,
    branch: str,
    base_sha: str,
    files: dict[str, bytes],
    carried: Carried | None = None,
) -> Path:
    """A new workspace at ``path`` on ``branch`` at ``base_sha``; ``files`` (relative path -> bytes)
    are written on top (the todo file as the person has it now, committed or not). ``carried``: an
    earlier attempt's change rebased onto ``base_sha``, written first as uncommitted files (conflict
    markers and all), so the agent goes on from its own work."""
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
    if carried is not None:
        _write_carried(path, carried)
    for rel, data in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    log.debug("workspace_created", path=str(path), branch=branch, base=base_sha)
    return path


def _write_carried(path: Path, carried: Carried) -> None:
    """The rebased change's files into a workspace batchd just made (no link in it is followed:
    the names come from git trees, which hold no ``..``, and folders are made fresh)."""
    for rel, data in carried.files.items():
        target = path / rel
        if data is None:
            if target.is_symlink() or target.is_file():
                target.unlink()
            continue
        if target.is_symlink():
            target.unlink()
        elif target.is_dir():
            remove_tree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if rel in carried.executable else 0o644)


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


# The agent's repository is read as data only: its refs by batchd's own parsing, its objects through
# the person's repository (its objects folder as an extra alternate). Git never reads the agent's
# config, so nothing the agent wrote there (a partial-clone remote, an sshCommand, an uploadpack,
# filters) runs outside its sandbox; and no transport at all may start (protocol.allow=never).
_NO_TRANSPORT = ("-c", "protocol.allow=never")
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_REF = re.compile(r"^refs/(?:heads|tags)/[A-Za-z0-9._/-]+$")


MAX_OBJECT_ENTRIES = 200_000
MAX_TRACKED = 200_000  # names of files an agent's commits or index changed
_AS_GIT_WROTE = "an agent must leave its repository's objects as git wrote them"
READ_TIMEOUT = 300.0  # seconds any read of an agent's repository may take


def _objects(root: Path, path: Path) -> dict[str, str]:
    """The agent's objects folder, once checked to hold only files and folders (a FIFO there would
    make git block forever) and the alternates file batchd wrote, as an extra alternate."""
    objects = checked_git_dir(path) / "objects"
    if objects.is_symlink() or not objects.is_dir():
        raise WorkspaceError(
            "the agent replaced its repository's objects folder", hint="the attempt cannot be collected"
        )
    seen = 0
    for folder, dirs, files in os.walk(objects):
        for name in (*dirs, *files):
            seen += 1
            mode = (Path(folder) / name).lstat().st_mode
            if seen > MAX_OBJECT_ENTRIES:
                raise WorkspaceError("the agent's objects folder holds too many entries", hint=_AS_GIT_WROTE)
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise WorkspaceError(
                    f"the agent's objects folder holds {printable(name)}, which is not a file",
                    hint=_AS_GIT_WROTE,
                )
    if _small(objects / "info" / "alternates") != str(git_common_dir(root) / "objects"):
        raise WorkspaceError(
            "the agent changed its repository's alternates file", hint="the attempt cannot be collected"
        )
    return {"GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects.absolute())}


def _read(root: Path, path: Path, *args: str, index: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = _objects(root, path)
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    try:
        return run_git(
            root, *_NO_TRANSPORT, *args, env=env, check=False, untrusted=True, timeout=READ_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise WorkspaceError(
            f"reading the agent's repository took more than {READ_TIMEOUT:.0f}s",
            hint="an agent must not leave its repository in a state git cannot read",
        ) from None


def _small(path: Path) -> str:
    """A ref file's text (a few bytes at most), never through a link."""
    try:
        data = safefs.read_bytes(path.parent, path.name, limit=4096)
    except (OSError, safefs.LinkRefused):
        return ""
    return (data or b"").decode("ascii", "replace").strip()


def agent_head(root: Path, path: Path) -> str:
    """The commit the agent's repository is at: its HEAD (and the branch it names) parsed by batchd,
    and the commit checked to exist; a :class:`WorkspaceError` when there is none."""
    git_dir = checked_git_dir(path)
    head = _small(git_dir / "HEAD")
    if head.startswith("ref:"):
        ref = head.removeprefix("ref:").strip()
        sha = _small(git_dir / ref) if _REF.match(ref) and ".." not in ref else ""
        if not sha and _REF.match(ref):
            for line in _small_lines(git_dir / "packed-refs"):
                value, _, name = line.partition(" ")
                if name == ref:
                    sha = value
        head = sha
    if not _HEX.match(head) or _read(root, path, "cat-file", "-e", f"{head}^{{commit}}").returncode != 0:
        raise WorkspaceError(
            "the agent's repository has no HEAD commit (its branch was deleted, emptied or forged)",
            hint="an agent must leave its workspace on a commit that descends from its base",
        )
    return head


def _small_lines(path: Path) -> list[str]:
    try:
        data = safefs.read_bytes(path.parent, path.name, limit=1 << 20)
    except (OSError, safefs.LinkRefused):
        return []
    return (data or b"").decode("ascii", "replace").splitlines()


def descends(root: Path, path: Path, base_sha: str, head: str) -> bool:
    return _read(root, path, "merge-base", "--is-ancestor", base_sha, head).returncode == 0


def agent_commits(root: Path, path: Path, base_sha: str, head: str) -> tuple[str, ...]:
    """The commits the agent made on top of its base (newest first, at most :data:`MAX_AGENT_COMMITS`)."""
    proc = _read(root, path, "rev-list", f"--max-count={MAX_AGENT_COMMITS}", head, f"^{base_sha}", "--")
    return tuple(proc.stdout.split()) if proc.returncode == 0 else ()


def committed_done(root: Path, path: Path, base_sha: str, trailers: dict[str, str]) -> float | None:
    """When the agent's HEAD is a commit of its own (on its base) whose message carries every one of
    ``trailers`` (``Batchd-Todo``/``Batchd-Attempt`` of its attempt): that commit's time, the agent's
    word that its work was done. None otherwise (or when the workspace cannot be read)."""
    try:
        head = agent_head(root, path)
        if head == base_sha or not descends(root, path, base_sha, head):
            return None
        keys = "".join(f"%x1e%(trailers:key={k},valueonly,separator=%x1f)" for k in trailers)
        proc = _read(root, path, "log", "-1", f"--format=%ct{keys}", head, "--")
    except WorkspaceError:
        return None
    fields = proc.stdout.strip().split("\x1e")
    if proc.returncode != 0 or len(fields) != len(trailers) + 1 or not fields[0].isdigit():
        return None
    found = [set(value.strip().split("\x1f")) for value in fields[1:]]
    return float(fields[0]) if all(v in f for v, f in zip(trailers.values(), found, strict=True)) else None


def written_after(path: Path, when: float, *, limit: int = MAX_OBJECT_ENTRIES) -> bool:
    """Whether any file of the workspace (its ``.git`` aside, no link followed) was written after
    ``when`` (epoch seconds, with a second of slack for file systems' coarse clocks): the agent went
    on working after its commit. A workspace too large to look through counts as written."""
    seen = 0
    for folder, dirs, files in os.walk(path):
        if Path(folder) == path:
            dirs[:] = [d for d in dirs if d != ".git"]
        for name in (*dirs, *files):
            seen += 1
            if seen > limit:
                return True
            try:
                if (Path(folder) / name).lstat().st_mtime > when + 1.0:
                    return True
            except OSError:
                continue
    return False


def tracked_paths(root: Path, path: Path, base_sha: str, head: str) -> list[str]:
    """Paths the agent's commits or its own index changed from the base: how a file it added despite
    ``.gitignore`` is found. Only what differs from the base is listed (bounded by the change, not
    the repository), and at most :data:`MAX_TRACKED` names.

    Only names come out of here; their content is read from the workspace's files, so a lie in the
    agent's index or objects can at worst add a file that is really there.
    """
    names: set[str] = set()
    index = checked_git_dir(path) / "index"
    env = _objects(root, path)
    listings: list[tuple[dict[str, str], tuple[str, ...]]] = [
        (env, ("diff", "--name-only", "-z", "--no-renames", base_sha, head, "--"))
    ]
    if index.is_file() and not index.is_symlink():
        listings.append(
            ({**env, "GIT_INDEX_FILE": str(index)}, ("diff-index", "--cached", "--name-only", "-z", base_sha))
        )
    for listing_env, args in listings:
        found, more = records(root, *_NO_TRANSPORT, *args, limit=MAX_TRACKED, env=listing_env, untrusted=True)
        if more:
            raise WorkspaceError(
                f"the agent's change lists more than {MAX_TRACKED} files",
                hint="a change that large is not a todo's; the attempt fails",
            )
        names.update(found)
    return sorted(n for n in names if _plain(n))


def _plain(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".git" not in parts and ".." not in parts


def remove(path: Path) -> None:
    """Delete a workspace as a folder: nothing inside it (a rewritten ``.git``, links) is followed."""
    remove_tree(path)


def is_workspace(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / ".git").is_dir()
