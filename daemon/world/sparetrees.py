"""Spare copies of the verification tree, to re-run a red check on the same tree in parallel.

A red command is confirmed by re-running it on the very tree it failed on (``[verify] parallel``
re-runs at once). Re-runs cannot share the verification worktree (two test runs writing one
folder's caches and reports would disturb each other), so each gets a *spare*: ``spare-1`` ..
``spare-n`` under a folder batchd owns (``.batchd/verify-spares``), made once and reused.

What a spare holds is the verification tree's **index**, not its commit: the tree under test may
be a commit with a few paths put back to the base (``git restore --staged --worktree``), which is
staged but not committed. So :meth:`SpareTrees.get` writes the index as a tree object
(``git write-tree``) and makes every spare exactly that tree:

- each spare is a detached linked worktree of the same repository (``git worktree add --detach
  --no-checkout``, once), found and its ``.git`` file repaired through the main repository's
  records (:func:`gitops.open_worktree`), never through the ``.git`` file in it, which the last
  test run there could have rewritten; git runs there with both folders named (:class:`WorkTree`);
- ``git read-tree -u --reset <tree>`` writes what differs (it overwrites changed and untracked
  files, replaces a link where a folder belongs without following it, and restores deleted files),
  then ``git clean -ffdx`` drops whatever else is there: caches, reports, nested repositories,
  the dependency links of the last get; nested ``.git`` folders inside tracked folders (which
  ``git clean`` never lists) and folders made read-only are dealt with first, as for the
  verification tree (:func:`gitops.reset_hard`);
- the spare's own index is trusted only if it is the one this object wrote: a test that ran
  ``git`` there (``update-index --skip-worktree``, ``--assume-unchanged``, or a corrupt index)
  could make ``read-tree`` skip a changed file, so an index whose stat differs from the one left
  last time is deleted, and the spare is written whole (a first get after a restart does the same);
- its HEAD is set (detached) to the verification tree's HEAD, so ``git diff HEAD`` reads the same
  in a spare as in the verification tree;
- the person's installed dependencies are placed as in the verification tree
  (:func:`deps.place` from ``dependencies_from``; the check runner still computes each spare's own
  ``PYTHONPATH`` with :func:`deps.with_python_paths`).

Crashes and hands: anything wrong with a spare (the folder deleted while git still lists it, the
``.git`` file or git's admin folder gone, a stale ``index.lock`` from a ``kill -9``, a half-made
``worktree add`` still locked "initializing") either is repaired on the way or makes a git command
fail, and a spare whose reset fails is remade from nothing (folder removed, registration pruned,
``worktree add --force --force``, which also takes over a locked leftover) and reset once more.

File names are never decoded here: git reads and writes them as bytes, and what Python walks it
walks with ``surrogateescape`` names, so a name that is not UTF-8 is copied like any other.

Threads: one :class:`SpareTrees` is used by one verification thread at a time (``get`` and
``remove_all`` are not re-entrant and keep no lock). Its ``git worktree add`` and ``prune`` write
the repository's shared worktree list, as making the verification worktree does.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

from daemon.exceptions import GitError, printable
from daemon.world import deps
from daemon.world.gitops import (
    GitTarget,
    WorkTree,
    abort_in_progress,
    drop_stale_index_lock,
    git_common_dir,
    list_worktrees,
    open_worktree,
    out,
    prune_worktrees,
    remove_tree,
    remove_worktree,
    run_git,
)

# Private in gitops, and exactly what a reused tree needs before git resets it (the verification
# worktree's reset_hard uses it the same way); imported rather than copied so the two cannot drift.
from daemon.world.gitops import _make_writable_and_drop_nested_git as _make_cleanable

log = structlog.get_logger(__name__)

PREFIX = "spare-"

# An index file's identity: any write to it (git writes a new file and renames it) changes these.
_Stamp = tuple[int, int, int, int, int]


class SpareTrees:
    """Spare worktrees ``root/spare-1`` .. ``spare-n``, each made equal to a tree's index on demand.

    ``root`` is a folder batchd owns (made on first use). ``dependencies_from`` is the person's
    checkout whose ``node_modules``/``.venv`` every spare gets (as :class:`CheckRunner` gives the
    verification tree). ``repo`` is the repository the trees belong to (the person's checkout):
    pass it, so that the repository is never learned from a tree an agent's test ran in; without
    it, it is found from the first tree given to :meth:`get`.
    """

    def __init__(
        self, root: Path, dependencies_from: Path | None = None, *, repo: Path | None = None
    ) -> None:
        root = Path.cwd() / root  # absolute (an absolute root stays as it is)
        # The parent resolved as git records it (real paths), the last part not: a link put where
        # the folder should be is replaced, never followed.
        self.root = root.parent.resolve() / root.name
        self.dependencies_from = dependencies_from
        self._repo = repo
        self._stamps: dict[Path, _Stamp] = {}

    def get(self, tree: Path, n: int) -> list[Path]:
        """``n`` spare folders whose files are exactly ``tree``'s index (its staged state), with the
        person's dependencies placed; the same folders every call (``spare-1`` first)."""
        if n <= 0:
            return []
        repo = self._repository(tree)
        source = _tree_target(repo, tree)
        tree_sha = out(source, "write-tree")
        head = run_git(source, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).stdout
        head = head.strip()
        self._make_root()
        spares = [self.root / f"{PREFIX}{i}" for i in range(1, n + 1)]
        for spare in spares:
            self._refresh(repo, spare, tree_sha, head)
        log.debug("spare_trees_ready", tree=tree_sha, count=n)
        return spares

    def remove_all(self) -> None:
        """Remove every spare and ``root`` itself, and forget them in git (known repository only:
        otherwise git forgets them at its next ``worktree prune``)."""
        repo = self._repo
        if repo is not None:
            for wt in list_worktrees(repo):
                if wt.path.absolute().parent == self.root:
                    remove_tree(wt.path)
        remove_tree(self.root)
        if repo is not None:
            prune_worktrees(repo)
        self._stamps.clear()
        log.info("spare_trees_removed", root=str(self.root))

    # --- internals ---------------------------------------------------------------------------------

    def _repository(self, tree: Path) -> Path:
        if self._repo is None:
            # Learned once, from the first tree (see the class docstring), as its git directory:
            # git runs there as in a bare repository, which is all worktree commands need.
            self._repo = git_common_dir(tree)
        return self._repo

    def _make_root(self) -> None:
        if self.root.is_symlink() or (os.path.lexists(self.root) and not self.root.is_dir()):
            remove_tree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _refresh(self, repo: Path, spare: Path, tree_sha: str, head: str) -> None:
        """Make ``spare`` ``tree_sha``; a spare that cannot be reset is remade and reset once more."""
        wt = open_worktree(repo, spare)
        if wt is not None:
            try:
                self._reset(wt, tree_sha, head)
                return
            except (GitError, OSError) as e:
                log.warning("spare_tree_broken", spare=str(spare), error=printable(str(e)))
        wt = self._make(repo, spare, head)
        self._reset(wt, tree_sha, head)

    def _make(self, repo: Path, spare: Path, head: str) -> WorkTree:
        """A new, empty detached worktree at ``spare`` (whatever was there, or is registered there)."""
        self._stamps.pop(spare, None)
        remove_worktree(repo, spare)  # the folder, and a registration whose folder is gone
        if not head:
            raise GitError(
                "the verification tree has no commit to base a spare tree on",
                command=["git", "rev-parse", "HEAD"],
                hint="make a first commit in the repository",
            )
        # --force twice: a `worktree add` killed mid-way leaves its registration locked
        # ("initializing"), which prune keeps and a plain add refuses; this drops it and starts over.
        # --no-checkout: get's read-tree writes the files (once, not twice).
        run_git(repo, "worktree", "add", "--quiet", "--force", "--force", "--detach", "--no-checkout",
                str(spare), head)  # fmt: skip
        wt = open_worktree(repo, spare)
        if wt is None:
            raise GitError(
                f"the spare tree {spare} is not registered in the repository after `git worktree add`",
                command=["git", "worktree", "list"],
                hint=f"run `git worktree prune` and remove {self.root} by hand",
            )
        log.info("spare_tree_made", spare=str(spare))
        return wt

    def _reset(self, wt: WorkTree, tree_sha: str, head: str) -> None:
        index = wt.git_dir / "index"
        # One get at a time (see the module docstring): a lock left here is a killed git's.
        drop_stale_index_lock(wt)
        if self._stamps.pop(wt.path, None) != _stamp(index):
            index.unlink(missing_ok=True)  # not the index we left: read-tree writes every file
        abort_in_progress(wt)
        _make_cleanable(wt.path)
        run_git(wt, "read-tree", "-u", "--reset", tree_sha)
        run_git(wt, "clean", "-ffdxq")
        if head and _head_file(wt) != head:
            run_git(wt, "update-ref", "--no-deref", "HEAD", head)
        stamp = _stamp(index)
        if stamp is not None:
            self._stamps[wt.path] = stamp
        if self.dependencies_from is not None:
            deps.place(self.dependencies_from, wt.path)


def _tree_target(repo: Path, tree: Path) -> GitTarget:
    """How to run git in ``tree``: a linked worktree with its git directory as the repository
    records it; the repository's own checkout as it is; anything else is refused."""
    found = open_worktree(repo, tree)
    if found is not None:
        return found
    with contextlib.suppress(OSError):
        dot_git = tree / ".git"
        if dot_git.is_dir() and not dot_git.is_symlink() and dot_git.resolve() == git_common_dir(repo):
            return tree
    raise GitError(
        f"{printable(str(tree))} is not a worktree of the repository at {printable(str(repo))}",
        command=["git", "worktree", "list"],
        hint="spare trees copy batchd's verification worktree; pass that folder",
    )


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _head_file(wt: WorkTree) -> str:
    try:
        return (wt.git_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
