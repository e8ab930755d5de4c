"""A todo's change moved onto a newer head, as files: what a resolve or repair attempt starts from.

An attempt whose change lost a conflict (or was rejected) need not be redone from nothing: its
commit is merged onto the new head with git's 3-way rules (``git merge-tree --write-tree``, no
worktree and no index touched), and the result is written into the next attempt's workspace as
uncommitted files. Where the merge conflicts, the files hold git's conflict markers; the agent is
told which files and which todo won, and keeps both intents. Everything here reads objects only:
the person's checkout and batchd's verification worktree are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from daemon.exceptions import GitError
from daemon.world.gitops import FILE_MODES, read_blob, rev_parse, run_git, split_z


@dataclass(frozen=True, slots=True, kw_only=True)
class Carried:
    """The change of ``commit`` on top of ``onto``: each changed path's new bytes (``None``: deleted),
    which of them are executable, the paths left with conflict markers, and paths that are not plain
    files (links, submodules) and so are not carried."""

    onto: str
    files: dict[str, bytes | None] = field(default_factory=dict)
    executable: frozenset[str] = frozenset()
    conflicts: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.conflicts


def carry(root: Path, commit: str, onto: str) -> Carried:
    """``commit``'s change (against its first parent) merged onto ``onto``, read as files.

    Raises :class:`GitError` when a commit is missing (a log from another clone, say): the caller
    then starts the attempt from scratch.
    """
    commit = rev_parse(root, commit)
    onto = rev_parse(root, onto)
    parent = rev_parse(root, f"{commit}^")
    ours, theirs = _with_base(root, parent, onto, commit)
    proc = run_git(
        root,
        "-c", "merge.conflictStyle=merge",
        "merge-tree", "--write-tree", "-z", "--name-only", ours, theirs,
        check=False,
    )  # fmt: skip
    if proc.returncode not in (0, 1):  # 1 = merged with conflicts
        raise GitError(
            f"cannot merge commit {commit[:12]} onto {onto[:12]}",
            command=["git", "merge-tree", "--write-tree", ours, theirs],
            output=proc.stdout + proc.stderr,
            hint="check that both commits exist in this repository",
        )
    # -z --name-only: the tree, then each conflicted path, NUL-ended; an empty record ends them.
    head, _, rest = proc.stdout.partition("\0")
    conflicts: list[str] = []
    for name in rest.split("\0"):
        if not name:
            break
        if name not in conflicts:
            conflicts.append(name)
    tree = head.strip()
    files: dict[str, bytes | None] = {}
    executable: set[str] = set()
    skipped: list[str] = []
    listing = run_git(root, "diff-tree", "-r", "-z", "--no-renames", onto, tree).stdout
    records = split_z(listing)
    # Records come in pairs: ":old_mode new_mode old_sha new_sha status" then the path.
    for meta, path in zip(records[::2], records[1::2], strict=True):
        _old_mode, new_mode, _old_sha, new_sha, status = meta.lstrip(":").split()
        if status == "D":
            files[path] = None
        elif new_mode in FILE_MODES:
            files[path] = read_blob(root, new_sha)
            if new_mode == "100755":
                executable.add(path)
        else:
            skipped.append(path)
    return Carried(
        onto=onto,
        files=files,
        executable=frozenset(executable),
        conflicts=tuple(conflicts),
        skipped=tuple(skipped),
    )


_IDENTITY = {
    "GIT_AUTHOR_NAME": "batchd",
    "GIT_AUTHOR_EMAIL": "batchd@localhost",
    "GIT_COMMITTER_NAME": "batchd",
    "GIT_COMMITTER_EMAIL": "batchd@localhost",
}


def _with_base(root: Path, base: str, onto: str, commit: str) -> tuple[str, str]:
    """Two commits whose only merge base has ``base``'s tree: ``onto``'s and ``commit``'s trees on top
    of a new root commit. ``git merge-tree --merge-base`` needs git 2.40 (Debian 12 has 2.39), and the
    real merge base of ``onto`` and ``commit`` may not be ``base`` (a person's rewritten branch); so
    the 3-way merge asked for is built as history (dangling commits, which git's gc removes)."""

    def tree(rev: str) -> str:
        return run_git(root, "rev-parse", "--verify", f"{rev}^{{tree}}").stdout.strip()

    def commit_tree(tree_sha: str, *parents: str) -> str:
        args = [a for p in parents for a in ("-p", p)]
        proc = run_git(root, "commit-tree", tree_sha, *args, "-m", "batchd: rebase", env=_IDENTITY)
        return proc.stdout.strip()

    root_commit = commit_tree(tree(base))
    return commit_tree(tree(onto), root_commit), commit_tree(tree(commit), root_commit)
