"""Small typed git helpers: the one way batchd runs git, reading, the verification worktree, commits.

Every call goes through :func:`run_git`, which holds batchd's rules for running git near code it
does not trust:

- hooks are off (``core.hooksPath=/dev/null``) unless the caller passes the person's hooks as
  pinned at start-up (pushes, the person's own checkout), and ``core.fsmonitor`` is off: nothing an
  agent or a test could have planted runs inside batchd's git;
- the git directory is given explicitly (:class:`WorkTree`) wherever a folder could have been
  written by someone else, never discovered from a ``.git`` file in it;
- ``untrusted=True`` reads an agent's own repository without replace refs, grafts, commit-graph or
  multi-pack-index files, which could make its history look other than it is;
- output is decoded as UTF-8 with ``surrogateescape``: a file name that is not UTF-8 round-trips
  to git unchanged and never raises; :func:`printable` shows it escaped (``\\xff``) for people and
  for the event log.

Every failure is a :class:`GitError` carrying the command and git's output.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.exceptions import GitError, printable

log = structlog.get_logger(__name__)

TRAILER_TODO = "Batchd-Todo"
TRAILER_ATTEMPT = "Batchd-Attempt"

# Variables that point git at another repository, index or object store: inherited from whoever
# started batchd (a hook, a shell with GIT_DIR exported) they would send batchd's git elsewhere.
_LOCAL_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_GRAFT_FILE",
    "GIT_REPLACE_REF_BASE",
    "GIT_SHALLOW_FILE",
    "GIT_INTERNAL_SUPER_PREFIX",
)
# What makes a repository's recorded history say something other than its commits do.
_UNTRUSTED_CONFIG = ("-c", "core.commitGraph=false", "-c", "core.multiPackIndex=false")
_UNTRUSTED_ENV = {"GIT_NO_REPLACE_OBJECTS": "1", "GIT_GRAFT_FILE": os.devnull}


@dataclass(frozen=True, slots=True)
class WorkTree:
    """A work tree and the git directory batchd gave it.

    batchd runs git there with both named (``--git-dir``/``--work-tree``), so a ``.git`` file that
    an agent or a test rewrote (to point at the person's repository, say) is never followed.
    """

    path: Path
    git_dir: Path


GitTarget = Path | WorkTree


def drop_stale_index_lock(wt: WorkTree) -> None:
    """Remove the ``index.lock`` a git killed mid-command (``kill -9`` of batchd and its group) left
    in one of batchd's own worktrees, which would refuse every later git command there. Only for a
    worktree no other process runs git in: batchd's, while it holds the daemon lock, between jobs."""
    lock = wt.git_dir / "index.lock"
    if lock.exists():
        log.warning("stale_index_lock_removed", worktree=str(wt.path))
        lock.unlink(missing_ok=True)


# `git merge-tree --write-tree` (a change carried onto a newer head, daemon.world.rebase) came in 2.38.
GIT_MIN_VERSION = (2, 38)


def git_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from ``git --version`` output ("git version 2.39.5", "… 2.43.0.windows.1")."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def run_git(
    where: GitTarget | str,
    *args: str,
    check: bool = True,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    hooks: Path | None = None,
    untrusted: bool = False,
    as_configured: bool = False,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``where``; stdout and stderr are returned together in ``stdout`` on failure.

    ``where`` is a folder (its repository is found the usual way: use it only for folders no one
    else writes to, such as the person's own checkout) or a :class:`WorkTree`. ``hooks`` is the
    person's pinned hooks folder; without it no hook runs. ``as_configured`` drops batchd's
    overrides, to read what the person's config says (where their hooks are).
    """
    argv, cwd, full_env = git_command(
        where, args, env, hooks, untrusted=untrusted, as_configured=as_configured
    )
    proc = subprocess.run(
        argv,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",
        env=full_env,
        check=False,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise GitError(
            f"git failed with exit code {proc.returncode} in {printable(str(cwd))}",
            command=[printable(a) for a in argv],
            output=printable(proc.stderr + proc.stdout),
            hint="read git's message above; `git status` in that folder shows its state",
        )
    return proc


def git_command(
    where: GitTarget | str,
    args: Sequence[str],
    env: Mapping[str, str] | None,
    hooks: Path | None,
    *,
    untrusted: bool,
    as_configured: bool,
) -> tuple[list[str], Path | str, dict[str, str]]:
    """argv, working folder and environment of one git command under batchd's rules.

    Public for callers that must run git their own way (stream its output, cap it, kill it on a
    timer, as the dashboard's ``git show`` does) and still keep these rules."""
    argv = ["git"]
    if not as_configured:
        argv += ["-c", f"core.hooksPath={hooks or os.devnull}", "-c", "core.fsmonitor=false"]
    if untrusted:
        argv += _UNTRUSTED_CONFIG
    if isinstance(where, WorkTree):
        argv += [f"--git-dir={where.git_dir}", f"--work-tree={where.path}"]
        cwd: Path | str = where.path
    else:
        cwd = where
    argv += args
    full_env = {k: v for k, v in os.environ.items() if k not in _LOCAL_ENV}
    full_env["GIT_TERMINAL_PROMPT"] = "0"  # a daemon has no one to type a password: fail instead of hang
    if untrusted:
        full_env.update(_UNTRUSTED_ENV)
    if env:
        full_env.update(env)
    return argv, cwd, full_env


def records(
    where: GitTarget | str,
    *args: str,
    limit: int,
    env: Mapping[str, str] | None = None,
    untrusted: bool = False,
) -> tuple[list[str], bool]:
    """The first ``limit`` records of a ``-z`` listing, read as they come (a listing of millions of
    names is never held whole); and whether there were more. A failing command gives what it wrote."""
    argv, cwd, full_env = git_command(where, args, env, None, untrusted=untrusted, as_configured=False)
    found: list[str] = []
    pending = b""
    more = False
    with subprocess.Popen(
        argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 16):
            parts = (pending + chunk).split(b"\0")
            pending = parts.pop()
            found.extend(os.fsdecode(p) for p in parts if p)
            if len(found) > limit:
                more = True
                proc.kill()
                break
    return found[:limit], more


# The tree modes of plain files (regular, executable): what batchd writes and merges as file content.
FILE_MODES = ("100644", "100755")


def read_blob_tail(where: GitTarget | str, sha: str, limit: int) -> bytes:
    """The last ``limit`` bytes of a blob, read as they come (a blob of gigabytes is never held
    whole); b"" when it cannot be read."""
    argv, cwd, full_env = git_command(
        where, ("cat-file", "blob", sha), None, None, untrusted=False, as_configured=False
    )
    tail = bytearray()
    with subprocess.Popen(
        argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 16):
            tail += chunk
            if len(tail) > 2 * limit + (1 << 16):  # trimmed now and then: linear in the blob's size
                del tail[: len(tail) - limit]
    return bytes(tail[-limit:] if limit else b"") if proc.returncode == 0 else b""


def read_blob(where: GitTarget | str, sha: str) -> bytes:
    """A blob's bytes as they are (``run_git`` decodes text; a file's content may be anything)."""
    argv, cwd, full_env = git_command(
        where, ("cat-file", "blob", sha), None, None, untrusted=False, as_configured=False
    )
    proc = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise GitError(
            f"cannot read the object {sha}",
            command=[printable(a) for a in argv],
            output=printable(os.fsdecode(proc.stderr)),
            hint="check that the object exists in this repository",
        )
    return proc.stdout


def out(where: GitTarget | str, *args: str, **kwargs: object) -> str:
    return run_git(where, *args, **kwargs).stdout.strip()  # type: ignore[arg-type]


def split_z(text: str) -> list[str]:
    """The records of a ``-z`` listing (NUL-terminated), without the empty tail."""
    return [r for r in text.split("\0") if r]


# --- reading ---------------------------------------------------------------------------------------


def rev_parse(repo: GitTarget, rev: str) -> str:
    return out(repo, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")


def head_sha(repo: GitTarget) -> str:
    return rev_parse(repo, "HEAD")


def has_commit(repo: GitTarget, sha: str) -> bool:
    proc = run_git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False)
    return proc.returncode == 0


def is_ancestor(repo: GitTarget, ancestor: str, descendant: str, *, untrusted: bool = False) -> bool:
    """Whether ``ancestor`` is ``descendant`` or one of its ancestors (a missing commit is a GitError)."""
    proc = run_git(
        repo, "merge-base", "--is-ancestor", ancestor, descendant, check=False, untrusted=untrusted
    )
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise GitError(
        "cannot compare commits",
        command=["git", "merge-base", "--is-ancestor", ancestor, descendant],
        output=printable(proc.stderr),
        hint="check that both commits exist in this repository",
    )


def changed_files(repo: GitTarget, a: str, b: str) -> tuple[str, ...]:
    """Paths that differ between two commits (both sides of a rename), sorted; bytes kept as escapes."""
    listing = run_git(repo, "diff", "--no-ext-diff", "--name-only", "-z", "--no-renames", a, b, "--").stdout
    return tuple(sorted(set(split_z(listing))))


def find_commits_by_trailer(repo: GitTarget, branch: str, key: str, value: str) -> list[str]:
    """SHAs on ``branch`` (newest first) whose message has the trailer ``key: value``."""
    fmt = f"%H%x00%(trailers:key={key},valueonly,separator=%x1f)%x1e"
    text = run_git(repo, "log", f"--format={fmt}", branch, "--").stdout
    found = []
    for record in text.split("\x1e"):
        sha, _, values = record.strip().partition("\x00")
        if sha and value in (v.strip() for v in values.split("\x1f")):
            found.append(sha)
    return found


def git_common_dir(repo: Path) -> Path:
    """The repository's own git directory (for a worktree: the main one's)."""
    return Path(out(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))


# --- the verification worktree ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Worktree:
    path: Path
    head: str
    branch: str | None


def list_worktrees(repo_root: Path) -> list[Worktree]:
    text = run_git(repo_root, "worktree", "list", "--porcelain", "-z").stdout
    found: list[Worktree] = []
    fields: dict[str, str] = {}
    for record in [*text.split("\0"), ""]:
        if record:
            key, _, value = record.partition(" ")
            fields[key] = value
            continue
        if "worktree" in fields:
            branch = fields.get("branch", "").removeprefix("refs/heads/") or None
            found.append(Worktree(path=Path(fields["worktree"]), head=fields.get("HEAD", ""), branch=branch))
        fields = {}
    return found


def prune_worktrees(repo_root: Path) -> None:
    """Forget worktrees whose folders are gone (after a crash or a manual rm)."""
    run_git(repo_root, "worktree", "prune")


def remove_tree(path: Path) -> None:
    """Delete a folder batchd made, whatever is in it; a link in its place is removed, never followed,
    and a folder someone made read-only inside is made writable to be emptied."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif not path.exists():
        return
    # fd-based on Linux: a link inside is removed, not followed.
    elif sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=_writable_and_retry)


def _writable_and_retry(func: Callable[..., Any], target: str, _exc: object) -> None:
    """rmtree met a folder it may not empty (made read-only inside): make it writable, try again."""
    for folder in (Path(target).parent, Path(target)):
        with contextlib.suppress(OSError):
            if not folder.is_symlink() and folder.is_dir():
                folder.chmod(folder.stat().st_mode | 0o700)
    func(target)


def remove_worktree(repo_root: Path, path: Path, *, delete_branch: bool = False) -> None:
    """Remove a worktree and its folder whatever state it is in; missing is fine."""
    path = path.absolute()
    known = {w.path.absolute(): w for w in list_worktrees(repo_root)}
    wt = known.get(path)
    remove_tree(path)
    prune_worktrees(repo_root)
    if delete_branch and wt is not None and wt.branch:
        run_git(repo_root, "branch", "-D", "--", wt.branch, check=False)


def add_worktree(repo_root: Path, path: Path, branch: str, base_sha: str) -> Path:
    """A fresh worktree at ``path`` on a fresh ``branch`` at ``base_sha`` (a stale one is replaced)."""
    remove_worktree(repo_root, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # -B resets a leftover branch of an earlier attempt instead of failing on it.
    run_git(repo_root, "worktree", "add", "--quiet", "-B", branch, str(path), base_sha)
    log.debug("worktree_added", path=str(path), branch=branch, base=base_sha)
    return path


def open_worktree(repo_root: Path, path: Path) -> WorkTree | None:
    """The worktree at ``path`` with its git directory as the main repository records it, or None.

    The admin folder is found from the main repository (``worktrees/*/gitdir`` names each worktree's
    ``.git`` file), never from the ``.git`` file in ``path``, which a test run there could rewrite;
    that file is written back if it no longer points home, so git inside the worktree keeps working.
    """
    wanted = (path.absolute() / ".git").as_posix()
    admin_root = git_common_dir(repo_root) / "worktrees"
    if not admin_root.is_dir():
        return None
    for admin in sorted(admin_root.iterdir()):
        try:
            recorded = (admin / "gitdir").read_text(encoding="utf-8", errors="surrogateescape").strip()
        except OSError:
            continue
        if recorded == wanted and path.is_dir() and not path.is_symlink():
            _repair_gitfile(path, admin)
            return WorkTree(path=path, git_dir=admin)
    return None


def _repair_gitfile(path: Path, admin: Path) -> None:
    gitfile = path / ".git"
    text = f"gitdir: {admin}\n"
    try:
        if gitfile.is_file() and not gitfile.is_symlink() and gitfile.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    remove_tree(gitfile)
    gitfile.write_text(text, encoding="utf-8")
    log.warning("worktree_gitfile_repaired", worktree=str(path))


# --- in-progress operations, resets ------------------------------------------------------------------

_IN_PROGRESS = (
    ("rebase-merge", "rebase"),
    ("rebase-apply", "rebase"),
    ("CHERRY_PICK_HEAD", "cherry-pick"),
    ("REVERT_HEAD", "revert"),
    ("MERGE_HEAD", "merge"),
)


def _git_dir(repo: GitTarget) -> Path:
    if isinstance(repo, WorkTree):
        return repo.git_dir
    return Path(out(repo, "rev-parse", "--absolute-git-dir"))


def abort_in_progress(worktree: GitTarget) -> list[str]:
    """Abort an interrupted rebase, cherry-pick, revert or merge; returns the commands aborted."""
    git_dir = _git_dir(worktree)
    aborted = []
    for marker, command in _IN_PROGRESS:
        if (git_dir / marker).exists() and command not in aborted:
            run_git(worktree, command, "--abort")
            aborted.append(command)
    if aborted:
        log.info("git_operation_aborted", worktree=str(worktree), aborted=aborted)
    return aborted


def reset_hard(worktree: GitTarget, sha: str) -> None:
    """Make a batchd-owned worktree exactly ``sha``: ignored files and nested repositories go too.

    The checks that ran there ran code the agents wrote: a cache they left (forged bytecode that
    makes the next tree pass) or a ``git init`` in a folder (which hides the folder's files from the
    next ``git add``) must not outlive the tree they came with.
    """
    _make_writable_and_drop_nested_git(worktree.path if isinstance(worktree, WorkTree) else worktree)
    run_git(worktree, "reset", "--quiet", "--hard", sha)
    run_git(worktree, "clean", "-ffdxq")


def _make_writable_and_drop_nested_git(top: Path) -> None:
    """What ``git clean -ffdx`` leaves: a ``.git`` inside a tracked folder (it hides the folder's files
    from ``git add``) and folders made read-only (``git rm`` would fail there). Links are not followed."""
    for folder, dirs, files in os.walk(top):
        here = Path(folder)
        for name in dirs:
            path = here / name
            with contextlib.suppress(OSError):
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode) and mode & 0o700 != 0o700:
                    path.chmod(mode | 0o700)
        if here != top and ".git" in (*dirs, *files):
            remove_tree(here / ".git")
            log.warning("nested_git_removed", folder=str(here))
        dirs[:] = [d for d in dirs if d != ".git"]


def stage(worktree: GitTarget, paths: Sequence[str]) -> None:
    """``git add`` batchd's own files (renamed todos, the status file) whatever ``.gitignore`` says,
    and check that each one is really in the index: a file a nested repository or an ignore rule
    hid would otherwise be left out of the commit without a word."""
    paths = [posixpath.normpath(p) for p in paths]
    run_git(worktree, "--literal-pathspecs", "add", "--force", "--all", "--", *paths)
    listed = set(split_z(run_git(worktree, "--literal-pathspecs", "ls-files", "-z", "--", *paths).stdout))
    missing = [p for p in paths if p not in listed]
    if missing:
        raise GitError(
            f"batchd could not stage its own file(s) {', '.join(printable(p) for p in missing)}",
            command=["git", "add", "--force", "--", *map(printable, missing)],
            hint="something in the worktree hides them from git (a nested repository?); "
            "`git status` in .batchd/verify shows it",
        )


def reset_keep(checkout: GitTarget, sha: str, *, hooks: Path | None = None) -> None:
    """Move HEAD to ``sha`` keeping a person's local edits, or refuse (GitError) rather than lose one."""
    run_git(checkout, "reset", "--quiet", "--keep", sha, hooks=hooks)


def ff_merge(checkout: GitTarget, sha: str, *, hooks: Path | None = None) -> None:
    """Fast-forward the checked-out branch to ``sha``; anything else is a GitError."""
    run_git(checkout, "merge", "--quiet", "--ff-only", sha, hooks=hooks)


# --- commits ---------------------------------------------------------------------------------------


def with_trailers(cwd: GitTarget, message: str, trailers: Mapping[str, str]) -> str:
    """``message`` with ``Key: value`` trailers added to its trailer block (git's own parser)."""
    if not trailers:
        return message
    args = [a for k, v in trailers.items() for a in ("--trailer", f"{k}: {v}")]
    return run_git(cwd, "interpret-trailers", *args, stdin=message.rstrip("\n") + "\n").stdout


def commit_paths(
    worktree: GitTarget,
    paths: Sequence[str],
    *,
    message: str,
    trailers: Mapping[str, str],
) -> str:
    """Commit exactly ``paths`` (added, changed or deleted) with trailers; other edits stay uncommitted."""
    if not paths:
        raise GitError("nothing to commit", command=["git", "commit"], hint="pass the paths to commit")
    run_git(worktree, "--literal-pathspecs", "add", "--all", "--", *paths)
    text = with_trailers(worktree, message, trailers)
    run_git(
        worktree,
        "--literal-pathspecs",
        "commit", "--quiet", "--no-verify", "-F", "-", "--only", "--", *paths,
        stdin=text,
    )  # fmt: skip
    return head_sha(worktree)
