"""Small typed git helpers: worktrees, a todo's change as one commit, trailers, fast-forward, push.

GitPython serves where it has an API (reading HEAD, ancestry, diffs); everything else is the git
CLI with an argv list. Every failure is a :class:`GitError` carrying the command and git's output.
Repo objects are opened per call and closed, because GitPython leaks handles and child processes
in a long-running process otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git
import structlog

from daemon.exceptions import GitError

log = structlog.get_logger(__name__)

STATE_DIR = ".batchd"
TRAILER_TODO = "Batchd-Todo"
TRAILER_ATTEMPT = "Batchd-Attempt"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A todo's work as one commit on its base; ``excluded`` = paths it changed that were left out."""

    sha: str
    files: tuple[str, ...]
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Worktree:
    path: Path
    head: str
    branch: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RebaseResult:
    """``brought_new``: the remote had commits we did not, so the rebased tree is untested."""

    sha: str
    brought_new: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    ok: bool
    rejected: bool
    output: str
    attempts: int = 1
    sha: str = ""
    reason: str = ""


def run_git(
    cwd: Path | str,
    *args: str,
    check: bool = True,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd``; stdout and stderr are returned together in ``stdout``."""
    argv = ["git", *args]
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(
        argv,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise GitError(
            f"git failed with exit code {proc.returncode} in {cwd}",
            command=argv,
            output=proc.stderr + proc.stdout,
            hint="read git's message above; `git status` in that folder shows its state",
        )
    return proc


def _out(cwd: Path | str, *args: str) -> str:
    return run_git(cwd, *args).stdout.strip()


@contextmanager
def open_repo(path: Path | str) -> Iterator[git.Repo]:
    """A GitPython Repo that is closed on exit (it holds pipes to cat-file processes)."""
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
        raise GitError(
            f"{path} is not a git repository", command=["git", "rev-parse"], hint="run batchd in a clone"
        ) from e
    try:
        yield repo
    finally:
        repo.close()


# --- reading ---------------------------------------------------------------------------------------


def head_sha(repo: Path | str) -> str:
    with open_repo(repo) as r:
        return r.head.commit.hexsha


def rev_parse(repo: Path | str, rev: str) -> str:
    return _out(repo, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")


def is_ancestor(repo: Path | str, ancestor: str, descendant: str) -> bool:
    with open_repo(repo) as r:
        return bool(r.is_ancestor(r.commit(ancestor), r.commit(descendant)))


def changed_files(repo: Path | str, a: str, b: str) -> tuple[str, ...]:
    """Paths that differ between two commits (both sides of a rename), sorted."""
    with open_repo(repo) as r:
        diffs = r.commit(a).diff(r.commit(b))
        paths = {p for d in diffs for p in (d.a_path, d.b_path) if p}
    return tuple(sorted(paths))


def find_commits_by_trailer(repo: Path | str, branch: str, key: str, value: str) -> list[str]:
    """SHAs on ``branch`` (newest first) whose message has the trailer ``key: value``."""
    fmt = f"%H%x00%(trailers:key={key},valueonly,separator=%x1f)%x1e"
    out = run_git(repo, "log", f"--format={fmt}", branch, "--").stdout
    found = []
    for record in out.split("\x1e"):
        sha, _, values = record.strip().partition("\x00")
        if sha and value in (v.strip() for v in values.split("\x1f")):
            found.append(sha)
    return found


# --- worktrees -------------------------------------------------------------------------------------


def list_worktrees(repo_root: Path) -> list[Worktree]:
    out = run_git(repo_root, "worktree", "list", "--porcelain").stdout
    found = []
    for block in out.strip().split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in block.splitlines())
        if "worktree" not in fields:
            continue
        branch = fields.get("branch", "").removeprefix("refs/heads/") or None
        found.append(Worktree(path=Path(fields["worktree"]), head=fields.get("HEAD", ""), branch=branch))
    return found


def prune_worktrees(repo_root: Path) -> None:
    """Forget worktrees whose folders are gone (after a crash or a manual rm)."""
    run_git(repo_root, "worktree", "prune")


def remove_worktree(repo_root: Path, path: Path, *, delete_branch: bool = False) -> None:
    """Remove a worktree and its folder whatever state it is in; missing is fine."""
    path = path.resolve()
    known = {w.path.resolve(): w for w in list_worktrees(repo_root)}
    wt = known.get(path)
    if wt is not None:
        run_git(repo_root, "worktree", "remove", "--force", "--force", str(path))
    if path.exists():
        shutil.rmtree(path)
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


# --- in-progress operations, resets ------------------------------------------------------------------

_IN_PROGRESS = (
    ("rebase-merge", "rebase"),
    ("rebase-apply", "rebase"),
    ("CHERRY_PICK_HEAD", "cherry-pick"),
    ("REVERT_HEAD", "revert"),
    ("MERGE_HEAD", "merge"),
)


def abort_in_progress(worktree: Path) -> list[str]:
    """Abort an interrupted rebase, cherry-pick, revert or merge; returns the commands aborted."""
    git_dir = Path(_out(worktree, "rev-parse", "--absolute-git-dir"))
    aborted = []
    for marker, command in _IN_PROGRESS:
        if (git_dir / marker).exists() and command not in aborted:
            run_git(worktree, command, "--abort")
            aborted.append(command)
    if aborted:
        log.info("git_operation_aborted", worktree=str(worktree), aborted=aborted)
    return aborted


def reset_hard(worktree: Path, sha: str) -> None:
    """Make a batchd-owned worktree exactly ``sha``; ignored files (caches, node_modules) stay."""
    run_git(worktree, "reset", "--quiet", "--hard", sha)
    run_git(worktree, "clean", "-fdq")


def reset_keep(checkout: Path, sha: str) -> None:
    """Move HEAD to ``sha`` keeping a person's local edits, or refuse (GitError) rather than lose one."""
    run_git(checkout, "reset", "--quiet", "--keep", sha)


def ff_merge(checkout: Path, sha: str) -> None:
    """Fast-forward the checked-out branch to ``sha``; anything else is a GitError."""
    run_git(checkout, "merge", "--quiet", "--ff-only", sha)


# --- commits ---------------------------------------------------------------------------------------


def with_trailers(cwd: Path, message: str, trailers: Mapping[str, str]) -> str:
    """``message`` with ``Key: value`` trailers added to its trailer block (git's own parser)."""
    if not trailers:
        return message
    args = [a for k, v in trailers.items() for a in ("--trailer", f"{k}: {v}")]
    return run_git(cwd, "interpret-trailers", *args, stdin=message.rstrip("\n") + "\n").stdout


def commit_paths(
    worktree: Path,
    paths: Sequence[str],
    *,
    message: str,
    trailers: Mapping[str, str],
) -> str:
    """Commit exactly ``paths`` (added, changed or deleted) with trailers; other edits stay uncommitted."""
    if not paths:
        raise GitError("nothing to commit", command=["git", "commit"], hint="pass the paths to commit")
    run_git(worktree, "add", "--all", "--", *paths)
    text = with_trailers(worktree, message, trailers)
    run_git(worktree, "commit", "--quiet", "--no-verify", "-F", "-", "--only", "--", *paths, stdin=text)
    return head_sha(worktree)


def _in_excluded(path: str, exclude: Sequence[str]) -> bool:
    return any(path == e.rstrip("/") or path.startswith(e.rstrip("/") + "/") for e in exclude)


def collect_change(
    worktree: Path,
    base_sha: str,
    *,
    message: str,
    trailers: Mapping[str, str],
    exclude: Sequence[str] = (STATE_DIR,),
) -> Change | None:
    """Squash whatever the agent left in ``worktree`` into ONE commit on ``base_sha``; None if no change.

    Committed, staged, unstaged and new untracked files all count; paths under ``exclude`` keep
    their base content. The worktree's branch is moved to the new commit so reconciliation after
    a crash finds it by trailer. The agent's own index is not used: a throwaway index is.
    """
    abort_in_progress(worktree)
    agent_head = head_sha(worktree)
    with tempfile.TemporaryDirectory(prefix="batchd-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(worktree, "read-tree", base_sha, env=env)
        run_git(worktree, "add", "--all", "--", ":/", env=env)
        for e in exclude:  # back to their base content (exclude pathspecs trip over ignored dirs)
            run_git(worktree, "reset", "--quiet", base_sha, "--", f":(top){e.rstrip('/')}", env=env)
        # Files the agent force-committed despite .gitignore: `add --all` skips them, -f does not.
        committed = [
            p
            for p in changed_files(worktree, base_sha, agent_head)
            if not _in_excluded(p, exclude) and (worktree / p).exists()
        ]
        if committed:
            run_git(worktree, "add", "--force", "--", *committed, env=env)
        tree = run_git(worktree, "write-tree", env=env).stdout.strip()
    everything = set(changed_files(worktree, base_sha, agent_head))
    everything |= set(_dirty_paths(worktree))
    excluded = tuple(sorted(p for p in everything if _in_excluded(p, exclude)))
    if excluded:
        log.info("agent_changes_left_out", worktree=str(worktree), paths=list(excluded))
    if tree == _out(worktree, "rev-parse", f"{base_sha}^{{tree}}"):
        return None
    text = with_trailers(worktree, message, trailers)
    sha = run_git(worktree, "commit-tree", tree, "-p", base_sha, "-F", "-", stdin=text).stdout.strip()
    reset_hard(worktree, sha)
    return Change(sha=sha, files=changed_files(worktree, base_sha, sha), excluded=excluded)


def _dirty_paths(worktree: Path) -> list[str]:
    out = run_git(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=all").stdout
    paths, records = [], out.split("\0")
    i = 0
    while i < len(records):
        rec = records[i]
        if len(rec) > 3:
            paths.append(rec[3:])
            if rec[0] in "RC":  # a rename's source path follows as its own record
                i += 1
        i += 1
    return paths


# --- remote ----------------------------------------------------------------------------------------


def push(repo_or_worktree: Path, remote: str, local_ref: str, branch: str) -> PushResult:
    """``git push remote local_ref:refs/heads/branch``; ``rejected`` = the remote refused the update."""
    proc = run_git(
        repo_or_worktree, "push", "--porcelain", remote, f"{local_ref}:refs/heads/{branch}", check=False
    )
    output = (proc.stdout + proc.stderr).strip()
    ok = proc.returncode == 0
    rejected = not ok and ("[rejected]" in output or "[remote rejected]" in output)
    return PushResult(ok=ok, rejected=rejected, output=output, sha=rev_parse(repo_or_worktree, local_ref))


def pull_rebase(worktree: Path, remote: str, branch: str) -> RebaseResult:
    """Fetch ``remote/branch`` and rebase HEAD's commits onto it, our side winning every conflict.

    During a rebase git's "ours" is the branch being rebased onto (the remote) and "theirs" the
    commits being replayed (ours), so `-X theirs` keeps our tested changes. A conflict that no
    strategy option resolves (modify/delete) aborts the rebase and raises GitError.
    """
    run_git(worktree, "fetch", "--quiet", remote, branch)
    upstream = rev_parse(worktree, "FETCH_HEAD")
    if is_ancestor(worktree, upstream, "HEAD"):
        return RebaseResult(sha=head_sha(worktree), brought_new=False)
    proc = run_git(worktree, "rebase", "--quiet", "-X", "theirs", upstream, check=False)
    if proc.returncode != 0:
        abort_in_progress(worktree)
        raise GitError(
            f"cannot rebase onto {remote}/{branch}",
            command=["git", "rebase", "-X", "theirs", upstream],
            output=proc.stdout + proc.stderr,
            hint=f"rebase by hand onto {remote}/{branch} and push",
        )
    return RebaseResult(sha=head_sha(worktree), brought_new=True)


def _refusal(output: str) -> str:
    """The lines that say why: the ref's status and what the remote's hooks printed."""
    lines = [ln.strip() for ln in output.splitlines()]
    why = [ln.split("\t")[-1] for ln in lines if "rejected]" in ln or ln.startswith("remote:")]
    why = why or [ln for ln in lines if ln and ln != "Done"][-1:]
    return "; ".join(why)


def push_with_retry(
    worktree: Path,
    remote: str,
    branch: str,
    *,
    reverify: Callable[[str], bool],
    attempts: int = 3,
) -> PushResult:
    """Push HEAD to ``remote/branch``; on a refusal rebase onto the remote and try again.

    A rebase that brought the remote's new commits makes an untested tree: ``reverify(sha)`` must
    pass before it is pushed, else the worktree goes back to the tested commit and nothing is
    pushed. Returns the last result, with ``attempts`` used and ``reason`` on failure.
    """
    tested = head_sha(worktree)
    result = PushResult(ok=False, rejected=False, output="", sha=tested)
    for attempt in range(1, attempts + 1):
        result = push(worktree, remote, "HEAD", branch)
        if result.ok:
            log.info("push_ok", remote=remote, branch=branch, sha=result.sha, attempt=attempt)
            return _with(result, attempt, "")
        log.warning("push_refused", remote=remote, branch=branch, attempt=attempt, output=result.output)
        if attempt == attempts:
            break
        try:
            rebased = pull_rebase(worktree, remote, branch)
        except GitError as e:
            return _with(result, attempt, f"rebase onto the remote failed: {_refusal(e.output)}")
        if rebased.brought_new and not reverify(rebased.sha):
            reset_keep(worktree, tested)
            log.warning("push_reverify_failed", remote=remote, branch=branch, sha=rebased.sha)
            return _with(result, attempt, "remote's new commits break the tests with ours")
        tested = rebased.sha
    prefix = "remote rejected" if result.rejected else "push failed"
    return _with(result, attempts, f"{prefix}: {_refusal(result.output)}")


def _with(result: PushResult, attempts: int, reason: str) -> PushResult:
    return PushResult(
        ok=result.ok,
        rejected=result.rejected,
        output=result.output,
        attempts=attempts,
        sha=result.sha,
        reason=reason,
    )
