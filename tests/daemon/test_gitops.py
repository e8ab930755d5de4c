"""daemon.world.gitops on real repositories and worktrees."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gitrepo import commit_files, git, head, init_repo, write

from daemon.exceptions import GitError
from daemon.world.gitops import (
    WorkTree,
    abort_in_progress,
    add_worktree,
    changed_files,
    commit_paths,
    drop_stale_index_lock,
    ff_merge,
    find_commits_by_trailer,
    head_sha,
    is_ancestor,
    list_worktrees,
    open_worktree,
    printable,
    prune_worktrees,
    remove_worktree,
    reset_hard,
    reset_keep,
    run_git,
    split_z,
    stage,
)

TRAILERS = {"Batchd-Todo": "273", "Batchd-Attempt": "1"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", {"a.txt": "a\n", "todos/273-ready-p1-x.md": "todo\n"})


def _worktree(repo: Path, todo: str = "273") -> Path:
    return add_worktree(
        repo, repo / ".batchd" / "worktrees" / f"todo-{todo}", f"batchd/todo-{todo}-a1", head(repo)
    )


def test_add_worktree_creates_branch_at_base(repo: Path) -> None:
    """A new worktree is on batchd/todo-<id>-a<n> at the base commit."""
    wt = _worktree(repo)
    assert head(wt) == head(repo)
    assert git(wt, "branch", "--show-current") == "batchd/todo-273-a1"


def test_add_worktree_replaces_a_stale_one(repo: Path) -> None:
    """A leftover worktree and branch from a crash are replaced by fresh ones at the new base."""
    wt = _worktree(repo)
    write(wt, {"junk.txt": "half-written\n"})
    git(wt, "commit", "-qam", "old", "--allow-empty")
    new_base = commit_files(repo, head(repo), {"b.txt": "b\n"}, branch="main")
    wt2 = add_worktree(repo, wt, "batchd/todo-273-a1", new_base)
    assert head(wt2) == new_base
    assert not (wt2 / "junk.txt").exists()


def test_remove_and_list_worktrees(repo: Path) -> None:
    """list_worktrees shows a worktree with its branch; remove_worktree deletes it and its branch."""
    wt = _worktree(repo)
    listed = {w.path.resolve(): w for w in list_worktrees(repo)}
    assert listed[wt.resolve()].branch == "batchd/todo-273-a1"
    remove_worktree(repo, wt, delete_branch=True)
    assert not wt.exists()
    assert wt.resolve() not in {w.path.resolve() for w in list_worktrees(repo)}
    assert git(repo, "branch", "--list", "batchd/todo-273-a1") == ""


def test_prune_forgets_deleted_worktree_folders(repo: Path) -> None:
    """A worktree folder removed behind git's back is forgotten by prune_worktrees."""
    wt = _worktree(repo)
    shutil.rmtree(wt)
    prune_worktrees(repo)
    assert wt.resolve() not in {w.path.resolve() for w in list_worktrees(repo)}


def test_find_commits_by_trailer(repo: Path) -> None:
    """Commits are found by trailer value, newest first; other values do not match."""
    write(repo, {"x.txt": "x\n"})
    sha = commit_paths(repo, ["x.txt"], message="m", trailers=TRAILERS)
    assert find_commits_by_trailer(repo, "main", "Batchd-Todo", "273") == [sha]
    assert find_commits_by_trailer(repo, "main", "Batchd-Todo", "27") == []


def test_changed_files_and_is_ancestor(repo: Path) -> None:
    """changed_files lists both sides of a change; is_ancestor follows history."""
    base = head(repo)
    sha = commit_files(repo, base, {"b.txt": "b\n", "a.txt": None})
    assert changed_files(repo, base, sha) == ("a.txt", "b.txt")
    assert is_ancestor(repo, base, sha)
    assert not is_ancestor(repo, sha, base)


def test_abort_in_progress_cherry_pick(repo: Path) -> None:
    """A conflicted cherry-pick is aborted and the worktree is back at its HEAD."""
    base = head(repo)
    ours = commit_files(repo, base, {"a.txt": "ours\n"}, branch="main")
    theirs = commit_files(repo, base, {"a.txt": "theirs\n"})
    git(repo, "reset", "-q", "--hard", ours)
    with pytest.raises(AssertionError):
        git(repo, "cherry-pick", theirs)
    assert abort_in_progress(repo) == ["cherry-pick"]
    assert (repo / "a.txt").read_text() == "ours\n"
    assert abort_in_progress(repo) == []


def test_ff_merge_moves_forward_and_refuses_divergence(repo: Path) -> None:
    """ff_merge fast-forwards; a diverged commit is a GitError naming the command."""
    base = head(repo)
    ahead = commit_files(repo, base, {"b.txt": "b\n"})
    ff_merge(repo, ahead)
    assert head(repo) == ahead
    other = commit_files(repo, base, {"c.txt": "c\n"})
    with pytest.raises(GitError) as e:
        ff_merge(repo, other)
    assert "--ff-only" in e.value.command


def test_reset_keep_keeps_a_persons_edit(repo: Path) -> None:
    """reset --keep moves HEAD and keeps an uncommitted edit to a file it does not touch."""
    ahead = commit_files(repo, head(repo), {"b.txt": "b\n"})
    write(repo, {"a.txt": "my edit\n"})
    reset_keep(repo, ahead)
    assert head(repo) == ahead
    assert (repo / "a.txt").read_text() == "my edit\n"


def test_reset_keep_refuses_rather_than_lose_an_edit(repo: Path) -> None:
    """When the target changes the edited file, reset --keep refuses and the edit survives."""
    ahead = commit_files(repo, head(repo), {"a.txt": "theirs\n"})
    write(repo, {"a.txt": "my edit\n"})
    with pytest.raises(GitError):
        reset_keep(repo, ahead)
    assert (repo / "a.txt").read_text() == "my edit\n"


def test_commit_paths_commits_only_given_paths(repo: Path) -> None:
    """Only the named paths are committed; another uncommitted edit stays in the working tree."""
    write(repo, {"status.md": "s\n", "a.txt": "person's edit\n"})
    sha = commit_paths(repo, ["status.md"], message="chore: status", trailers={"Batchd-Phase": "1"})
    assert git(repo, "show", "--name-only", "--format=", sha) == "status.md"
    assert "Batchd-Phase: 1" in git(repo, "log", "-1", "--format=%B")
    assert git(repo, "status", "--porcelain") == "M a.txt"


def test_git_error_names_command_and_output(repo: Path) -> None:
    """A failing git command raises GitError with the argv and git's message."""
    with pytest.raises(GitError) as e:
        ff_merge(repo, "no-such-ref")
    assert e.value.command[0] == "git" and "merge" in e.value.command
    assert "no-such-ref" in e.value.output


def test_head_sha_reads_worktree_head(repo: Path) -> None:
    """head_sha of a worktree is its own HEAD, not the main checkout's."""
    wt = _worktree(repo)
    sha = commit_files(repo, head(repo), {"z.txt": "z\n"})
    git(wt, "reset", "-q", "--hard", sha)
    assert head_sha(wt) == sha
    assert head_sha(repo) != sha


NOT_UTF8 = b"caf\xe9.txt"  # Latin-1 bytes: not a UTF-8 name


def test_a_file_name_that_is_not_utf8_round_trips_through_run_git(repo: Path) -> None:
    """git's output with a non-UTF-8 name decodes without raising, and the name goes back to git intact."""
    name = os.fsdecode(NOT_UTF8)
    (repo / name).write_text("x\n")
    listed = split_z(run_git(repo, "ls-files", "-z", "--others").stdout)
    assert listed == [name]
    run_git(repo, "add", "--", listed[0])
    assert split_z(run_git(repo, "ls-files", "-z", "--cached", "--", listed[0]).stdout) == [name]


def test_printable_shows_undecodable_bytes_escaped() -> None:
    """A surrogate-escaped name becomes text that can be logged and stored as JSON."""
    shown = printable(os.fsdecode(NOT_UTF8))
    assert shown == "caf\\xe9.txt"
    shown.encode("utf-8")


def test_batchd_git_runs_no_hook(repo: Path, tmp_path: Path) -> None:
    """A hook in the repository (an agent could have planted one) never runs in batchd's git commands."""
    marker = tmp_path / "hook-ran"
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    write(repo, {"b.txt": "b\n"})
    commit_paths(repo, ["b.txt"], message="m", trailers={})
    assert not marker.exists()
    git(repo, "commit", "-q", "--allow-empty", "-m", "plain git runs it")
    assert marker.exists()


def test_open_worktree_ignores_a_rewritten_git_file(repo: Path) -> None:
    """A worktree whose .git file was pointed at the main repository is still reset as itself."""
    wt = _worktree(repo)
    person = head(repo)
    write(repo, {"staged.txt": "mine\n"})
    git(repo, "add", "staged.txt")
    ahead = commit_files(repo, person, {"z.txt": "z\n"})
    (wt / ".git").write_text(f"gitdir: {repo / '.git'}\n")
    tree = open_worktree(repo, wt)
    assert isinstance(tree, WorkTree)
    reset_hard(tree, ahead)
    assert head(repo) == person
    assert git(repo, "diff", "--cached", "--name-only") == "staged.txt"
    assert head(wt) == ahead  # and the .git file was written back, so git works there again


def test_open_worktree_of_a_folder_that_is_not_one(repo: Path, tmp_path: Path) -> None:
    """A plain folder is not batchd's worktree, whatever its .git file says."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / ".git").write_text(f"gitdir: {repo / '.git'}\n")
    assert open_worktree(repo, fake) is None


def test_reset_hard_removes_ignored_files_and_nested_repositories(repo: Path) -> None:
    """A batchd worktree is made exactly the commit: a cache a check left (ignored) and a `git init`
    inside a folder are gone, so neither can sway the next tree's checks or hide files from git add."""
    wt = _worktree(repo)
    write(wt, {"cache.pyc": "forged\n", "todos/inner/x.txt": "x\n"})
    git(wt / "todos" / "inner", "init", "-q")
    (repo / ".gitignore").write_text("*.pyc\n")
    reset_hard(wt, head(repo))
    assert not (wt / "cache.pyc").exists()
    assert not (wt / "todos" / "inner").exists()


def test_stage_refuses_to_leave_a_hidden_file_out(repo: Path) -> None:
    """A file git cannot see (its folder became a nested repository) is a GitError, not a silent gap."""
    wt = _worktree(repo)
    (wt / "plans").mkdir()
    git(wt / "plans", "init", "-q")
    write(wt, {"plans/EXECUTION-STATUS.md": "status\n"})
    with pytest.raises(GitError, match="could not stage its own file"):
        stage(wt, ["plans/EXECUTION-STATUS.md"])


def test_stage_adds_a_file_gitignore_would_skip(repo: Path) -> None:
    """batchd's own files go in whatever a .gitignore (maybe an agent's) says."""
    wt = _worktree(repo)
    write(wt, {".gitignore": "*-complete-*.md\n", "todos/273-complete-p1-x.md": "done\n"})
    stage(wt, ["todos/273-complete-p1-x.md"])
    assert "todos/273-complete-p1-x.md" in git(wt, "ls-files")


def test_reset_hard_removes_a_git_folder_inside_a_tracked_folder(repo: Path) -> None:
    """`git clean -ffdx` keeps a .git in a folder with tracked files; batchd removes it too."""
    wt = _worktree(repo)
    git(wt / "todos", "init", "-q")
    reset_hard(wt, head(repo))
    assert not (wt / "todos" / ".git").exists()
    assert (wt / "todos" / "273-ready-p1-x.md").exists()


def test_reset_hard_makes_read_only_folders_writable_again(repo: Path) -> None:
    """A check that chmods a folder read-only does not make the next git rm there fail."""
    wt = _worktree(repo)
    (wt / "todos").chmod(0o555)
    reset_hard(wt, head(repo))
    assert (wt / "todos").stat().st_mode & 0o700 == 0o700


def test_a_stale_index_lock_of_a_killed_git_is_dropped_so_the_worktree_resets(repo: Path) -> None:
    """A git killed mid-command (kill -9 of batchd's group) leaves index.lock in batchd's worktree:
    every git command there is refused until it is dropped; after that a reset works again."""
    wt = open_worktree(repo, _worktree(repo))
    (wt.git_dir / "index.lock").write_text("")
    with pytest.raises(GitError, match=r"index\.lock"):
        reset_hard(wt, head(repo))
    drop_stale_index_lock(wt)
    reset_hard(wt, head(repo))
    assert not (wt.git_dir / "index.lock").exists()


def test_read_blob_tail_gives_the_end_of_a_big_blob_and_nothing_for_a_missing_one(tmp_path: Path) -> None:
    from daemon.world.gitops import read_blob_tail

    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    data = os.urandom(3 << 20)  # 3 MiB: many chunks, trimmed on the way
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=data, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    assert read_blob_tail(repo, blob, 1000) == data[-1000:]
    assert read_blob_tail(repo, blob, 10 << 20) == data
    assert read_blob_tail(repo, "0" * 40, 1000) == b""
