"""daemon.world.sparetrees on real repositories: spare copies of the verification worktree's index,
reused across calls and repaired after whatever a test run, a crash or a person left in them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gitrepo import commit_files, git, head, init_repo
from structlog.testing import capture_logs

from daemon.exceptions import GitError
from daemon.world.gitops import (
    WorkTree,
    add_worktree,
    drop_stale_index_lock,
    list_worktrees,
    open_worktree,
    read_blob,
    reset_hard,
    run_git,
    split_z,
)
from daemon.world.sparetrees import SpareTrees

FILES = {"a.txt": "a\n", "src/b.py": "b = 1\n", "src/c.py": "c = 1\n", ".gitignore": "*.log\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", FILES)


@pytest.fixture
def verify(repo: Path) -> WorkTree:
    """batchd's verification worktree, made as the engine makes it."""
    path = add_worktree(repo, repo / ".batchd" / "verify", "batchd/verify", head(repo))
    wt = open_worktree(repo, path)
    assert wt is not None
    return wt


@pytest.fixture
def spares(repo: Path) -> SpareTrees:
    return SpareTrees(repo / ".batchd" / "verify-spares", repo=repo)


def index_files(wt: WorkTree) -> dict[bytes, bytes]:
    """What git's index of ``wt`` holds: path -> content (a link's content is its target)."""
    listing = run_git(wt, "ls-files", "--stage", "-z").stdout
    found = {}
    for record in split_z(listing):
        meta, _, path = record.partition("\t")
        found[os.fsencode(path)] = read_blob(wt, meta.split()[1])
    return found


def folder_files(top: Path) -> dict[bytes, bytes]:
    """The files and links of a folder (its top ``.git`` left out), read as bytes, links not followed."""
    found = {}
    root = os.fsencode(top)
    for folder, dirs, files in os.walk(root):
        if folder == root:
            dirs[:] = [d for d in dirs if d != b".git"]
        names = [f for f in files if folder != root or f != b".git"]
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            found[rel] = os.readlink(path) if os.path.islink(path) else Path(os.fsdecode(path)).read_bytes()
    return found


def spare_worktrees(repo: Path, spares: SpareTrees) -> list[Path]:
    return sorted(w.path for w in list_worktrees(repo) if w.path.parent == spares.root)


def test_spare_holds_the_staged_state_of_the_verification_tree(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A candidate with a path put back by `git restore --staged --worktree` and a deleted file: the
    spare holds exactly the index (the restored path at its base content, the deleted file absent)."""
    base = head(repo)
    sha = commit_files(repo, base, {"a.txt": "changed\n", "src/b.py": "b = 2\n", "src/c.py": None})
    reset_hard(verify, sha)
    run_git(verify, "restore", f"--source={base}", "--staged", "--worktree", "--", "src/b.py")
    [spare] = spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert (spare / "src" / "b.py").read_text() == "b = 1\n"
    assert not (spare / "src" / "c.py").exists()


def test_spare_follows_the_index_not_unstaged_edits(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """An edit in the verification tree that is not staged is not in the spare."""
    (verify.path / "a.txt").write_text("unstaged\n")
    [spare] = spares.get(verify.path, 1)
    assert (spare / "a.txt").read_text() == "a\n"


def test_spare_head_is_the_verification_tree_head(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """A spare's (detached) HEAD is the verification tree's, so `git diff HEAD` reads the same there."""
    sha = commit_files(repo, head(repo), {"a.txt": "next\n"})
    [spare] = spares.get(verify.path, 1)
    reset_hard(verify, sha)
    spares.get(verify.path, 1)
    assert head(spare) == sha


def test_spares_are_reused_across_calls_at_different_commits(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A second get at another commit returns the same folders, now holding that commit, with no new
    worktree registered; a file only the first commit had is gone."""
    base = head(repo)
    first = spares.get(verify.path, 2)
    sha = commit_files(repo, base, {"src/new.py": "n = 1\n", "a.txt": None})
    reset_hard(verify, sha)
    second = spares.get(verify.path, 2)
    assert second == first
    for spare in second:
        assert folder_files(spare) == index_files(verify)
    assert spare_worktrees(repo, spares) == first


def test_spares_are_named_spare_1_to_n_under_root(verify: WorkTree, spares: SpareTrees) -> None:
    """get returns root/spare-1 .. root/spare-n, made with root on first use."""
    assert spares.get(verify.path, 2) == [spares.root / "spare-1", spares.root / "spare-2"]


def test_more_spares_than_before_are_added(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """Asking for more spares than the last call keeps the first ones and adds the rest."""
    [one] = spares.get(verify.path, 1)
    more = spares.get(verify.path, 3)
    assert more[0] == one
    assert spare_worktrees(repo, spares) == more
    for spare in more:
        assert folder_files(spare) == index_files(verify)


def test_zero_spares_is_nothing(verify: WorkTree, spares: SpareTrees) -> None:
    """get with n = 0 makes no folder."""
    assert spares.get(verify.path, 0) == []
    assert not spares.root.exists()


def test_file_name_that_is_not_utf8_is_copied(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """A file whose name is not UTF-8 is in the spare under the same bytes, and goes when the tree
    no longer has it."""
    name = b"caf\xe9.txt"
    (verify.path / os.fsdecode(name)).write_bytes(b"bytes\n")
    run_git(verify, "add", "--all")
    [spare] = spares.get(verify.path, 1)
    assert name in os.listdir(os.fsencode(spare))
    assert folder_files(spare) == index_files(verify)
    run_git(verify, "rm", "--quiet", "--cached", "--", os.fsdecode(name))
    spares.get(verify.path, 1)
    assert name not in os.listdir(os.fsencode(spare))


def test_leftovers_of_a_test_run_are_cleaned(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """Edited, deleted, untracked and ignored files, a cache, a nested repository and a read-only
    folder left in a spare are gone at the next get: the spare equals the index again."""
    [spare] = spares.get(verify.path, 1)
    (spare / "a.txt").write_text("edited\n")
    (spare / "src" / "c.py").unlink()
    (spare / "untracked.py").write_text("x\n")
    (spare / "run.log").write_text("ignored\n")
    (spare / "src" / "__pycache__").mkdir()
    (spare / "src" / "__pycache__" / "b.cpython.pyc").write_bytes(b"forged")
    git(spare / "src", "init", "-q")
    locked = spare / "locked"
    locked.mkdir()
    (locked / "f").write_text("f\n")
    locked.chmod(0o500)
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert not (spare / "src" / ".git").exists()


def test_skip_worktree_set_in_a_spare_does_not_hide_an_edit(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A test that ran `git update-index --skip-worktree` in a spare and then edited that file does
    not keep the edit: an index batchd did not leave is not trusted."""
    [spare] = spares.get(verify.path, 1)
    git(spare, "update-index", "--skip-worktree", "--", "a.txt")
    (spare / "a.txt").write_text("hidden edit\n")
    spares.get(verify.path, 1)
    assert (spare / "a.txt").read_text() == "a\n"


def test_spare_folder_deleted_by_hand_is_remade(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """A spare removed with rm -rf while git still lists it is made again, registered once."""
    [spare] = spares.get(verify.path, 1)
    subprocess.run(["rm", "-rf", str(spare)], check=True)
    assert spares.get(verify.path, 1) == [spare]
    assert folder_files(spare) == index_files(verify)
    assert spare_worktrees(repo, spares) == [spare]


def test_spare_without_its_git_file_is_repaired(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """A spare whose .git file was deleted gets it back and still matches the index."""
    [spare] = spares.get(verify.path, 1)
    (spare / ".git").unlink()
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert git(spare, "rev-parse", "HEAD") == head(verify.path)


def test_spare_git_file_pointing_elsewhere_is_not_followed(
    tmp_path: Path, repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A .git file rewritten to point at another repository is repaired; that repository is untouched."""
    other = init_repo(tmp_path / "other", {"other.txt": "mine\n"})
    [spare] = spares.get(verify.path, 1)
    (spare / ".git").write_text(f"gitdir: {other / '.git'}\n")
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert git(other, "status", "--porcelain") == ""
    assert (other / "other.txt").read_text() == "mine\n"


def test_stale_index_lock_of_a_killed_git_is_ignored(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """An index.lock left in a spare's git directory by a killed git is cleared in place: the next get
    resets that spare without remaking it."""
    [spare] = spares.get(verify.path, 1)
    wt = open_worktree(repo, spare)
    assert wt is not None
    (wt.git_dir / "index.lock").write_text("")
    (spare / "a.txt").write_text("edited\n")
    with capture_logs() as logs:
        spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert [e["event"] for e in logs if e["event"] in ("spare_tree_broken", "spare_tree_made")] == []


def test_spare_whose_git_directory_is_gone_is_remade(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A spare folder git no longer knows (its admin folder deleted) is replaced by a new worktree."""
    [spare] = spares.get(verify.path, 1)
    wt = open_worktree(repo, spare)
    assert wt is not None
    subprocess.run(["rm", "-rf", str(wt.git_dir)], check=True)
    (spare / "junk.txt").write_text("junk\n")
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert spare_worktrees(repo, spares) == [spare]


def test_corrupt_spare_index_is_replaced(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """A spare whose index file is garbage still ends equal to the verification tree's index."""
    [spare] = spares.get(verify.path, 1)
    wt = open_worktree(repo, spare)
    assert wt is not None
    (wt.git_dir / "index").write_bytes(b"not an index")
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)


def test_half_made_locked_registration_is_replaced(repo: Path, verify: WorkTree, spares: SpareTrees) -> None:
    """A `git worktree add` killed mid-way (registration locked "initializing", folder gone) does not
    block the spare: it is made again and registered once."""
    [spare] = spares.get(verify.path, 1)
    wt = open_worktree(repo, spare)
    assert wt is not None
    (wt.git_dir / "locked").write_text("initializing")
    subprocess.run(["rm", "-rf", str(spare)], check=True)
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert spare_worktrees(repo, spares) == [spare]


def test_spare_replaced_by_a_link_is_not_followed(
    tmp_path: Path, repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A spare folder replaced by a link to another folder: the link is replaced, the folder untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    [spare] = spares.get(verify.path, 1)
    subprocess.run(["rm", "-rf", str(spare)], check=True)
    spare.symlink_to(outside, target_is_directory=True)
    spares.get(verify.path, 1)
    assert not spare.is_symlink()
    assert folder_files(spare) == index_files(verify)
    assert sorted(os.listdir(outside)) == ["keep.txt"]


def test_tracked_link_becoming_a_folder_is_not_written_through(
    tmp_path: Path, repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A tree with a link `data` -> an outside folder, then a tree with a folder `data/`: the second
    get makes a real folder and writes nothing into the outside one."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (verify.path / "data").symlink_to(outside, target_is_directory=True)
    run_git(verify, "add", "--all")
    [spare] = spares.get(verify.path, 1)
    assert (spare / "data").is_symlink()
    run_git(verify, "rm", "--quiet", "--cached", "--", "data")
    (verify.path / "data").unlink()
    (verify.path / "data").mkdir()
    (verify.path / "data" / "x.txt").write_text("x\n")
    run_git(verify, "add", "--all")
    spares.get(verify.path, 1)
    assert not (spare / "data").is_symlink()
    assert folder_files(spare) == index_files(verify)
    assert os.listdir(outside) == []


def test_untracked_link_left_in_a_spare_is_removed_not_followed(
    tmp_path: Path, repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A link a test left in a spare (to an outside folder) is removed; what it pointed at stays."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    [spare] = spares.get(verify.path, 1)
    (spare / "out").symlink_to(outside, target_is_directory=True)
    (spare / "src" / "b.py").unlink()
    (spare / "src" / "b.py").symlink_to(outside / "keep.txt")
    spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert (outside / "keep.txt").read_text() == "keep\n"


def test_dependencies_are_placed_like_the_verification_tree(repo: Path, verify: WorkTree) -> None:
    """With dependencies_from, each spare gets the person's .venv (a link) and node_modules (a folder
    of links); what a test wrote into that folder is gone at the next get."""
    (repo / ".venv").mkdir()
    (repo / "node_modules" / "pkg").mkdir(parents=True)
    spares = SpareTrees(repo / ".batchd" / "verify-spares", dependencies_from=repo, repo=repo)
    [spare] = spares.get(verify.path, 1)
    assert (spare / ".venv").resolve() == (repo / ".venv").resolve()
    assert (spare / "node_modules" / "pkg").resolve() == (repo / "node_modules" / "pkg").resolve()
    (spare / "node_modules" / ".cache").mkdir()
    spares.get(verify.path, 1)
    assert sorted(os.listdir(spare / "node_modules")) == ["pkg"]


def test_repository_is_found_from_the_tree_when_not_given(repo: Path, verify: WorkTree) -> None:
    """Without repo=, the repository is the tree's own, and the spares are its worktrees."""
    spares = SpareTrees(repo / ".batchd" / "verify-spares")
    [spare] = spares.get(verify.path, 1)
    assert folder_files(spare) == index_files(verify)
    assert spare_worktrees(repo, spares) == [spare]


def test_the_main_checkout_can_be_the_tree(repo: Path, spares: SpareTrees) -> None:
    """The repository's own checkout is accepted as the tree (its index is the person's staging)."""
    (repo / "staged.txt").write_text("s\n")
    git(repo, "add", "staged.txt")
    [spare] = spares.get(repo, 1)
    assert (spare / "staged.txt").read_text() == "s\n"


def test_a_folder_of_another_repository_is_refused(tmp_path: Path, spares: SpareTrees) -> None:
    """A tree that is not a worktree of the repository is a GitError, and no spare is made."""
    other = init_repo(tmp_path / "other", {"x.txt": "x\n"})
    with pytest.raises(GitError, match="not a worktree of the repository"):
        spares.get(other, 1)
    assert not spares.root.exists()


def test_remove_all_removes_folders_and_registrations(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """remove_all deletes root and every spare, git forgets them, and a later get makes them again."""
    spares.get(verify.path, 2)
    spares.remove_all()
    assert not spares.root.exists()
    assert spare_worktrees(repo, spares) == []
    assert len(spares.get(verify.path, 1)) == 1


KILLER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from daemon.world.gitops import run_git
    from daemon.world.sparetrees import SpareTrees
    repo, verify, first, second = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    spares = SpareTrees(repo / ".batchd" / "verify-spares", repo=repo)
    print("ready", flush=True)
    while True:  # alternate the verification tree between two trees, making spares of each
        for sha in (first, second):
            run_git(verify, "read-tree", sha)
            spares.get(verify, 2)
    """
)


def test_get_after_kill_9_mid_get_still_works(tmp_path: Path, repo: Path, verify: WorkTree) -> None:
    """A process killed with SIGKILL (with its git, as a service manager kills the group) while making
    and resetting spares leaves nothing that stops the next get from giving spares equal to the index,
    whatever step each kill landed on."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    many = {f"src/m{i}.py": f"m = {i}\n" for i in range(100)}
    other = commit_files(repo, head(repo), many)
    first = git(repo, "rev-parse", "HEAD^{tree}")
    second = git(repo, "rev-parse", f"{other}^{{tree}}")
    spares = SpareTrees(repo / ".batchd" / "verify-spares", repo=repo)
    for delay in (0.0, 0.1, 0.25):  # fixed, not random: where each lands is the machine's
        proc = subprocess.Popen(
            [sys.executable, str(script), str(repo), str(verify.path), first, second],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
            start_new_session=True,  # its own group, so its git dies with it
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # The kill may land in the killer's own read-tree of the verify tree: its lock is stale, and
        # batchd drops it the same way before it uses its verify worktree (phases).
        drop_stale_index_lock(verify)
        run_git(verify, "read-tree", second)
        for spare in spares.get(verify.path, 2):
            assert folder_files(spare) == index_files(verify)


def test_spare_made_into_its_own_repository_is_repaired(
    repo: Path, verify: WorkTree, spares: SpareTrees
) -> None:
    """A test that replaced a spare's .git file with a repository of its own (`git init`) does not
    keep it: the spare is a worktree of the repository again and equals the index."""
    [spare] = spares.get(verify.path, 1)
    (spare / ".git").unlink()
    git(spare, "init", "-q")
    spares.get(verify.path, 1)
    assert (spare / ".git").is_file()
    assert git(spare, "rev-parse", "HEAD") == head(verify.path)
    assert folder_files(spare) == index_files(verify)


def test_without_repo_a_lost_spare_is_remade_and_remove_all_forgets_it(repo: Path, verify: WorkTree) -> None:
    """With the repository learned from the tree, a spare deleted by hand is remade in it, and
    remove_all leaves git no spare to list."""
    spares = SpareTrees(repo / ".batchd" / "verify-spares")
    [spare] = spares.get(verify.path, 1)
    subprocess.run(["rm", "-rf", str(spare)], check=True)
    spares.get(verify.path, 1)
    assert spare_worktrees(repo, spares) == [spare]
    spares.remove_all()
    assert spare_worktrees(repo, spares) == []
