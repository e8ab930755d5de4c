"""daemon.gitops on real repositories, worktrees and a real bare remote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gitrepo import bare_remote, clone, commit_files, git, head, init_repo, refuse_pushes, write

from daemon.exceptions import GitError
from daemon.gitops import (
    abort_in_progress,
    add_worktree,
    changed_files,
    collect_change,
    commit_paths,
    ff_merge,
    find_commits_by_trailer,
    head_sha,
    is_ancestor,
    list_worktrees,
    prune_worktrees,
    pull_rebase,
    push,
    push_with_retry,
    remove_worktree,
    reset_keep,
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


def test_collect_change_squashes_committed_uncommitted_and_untracked(repo: Path) -> None:
    """Committed, modified and new files become ONE commit on base; .batchd and todos left out."""
    base = head(repo)
    wt = _worktree(repo)
    write(wt, {"committed.txt": "c\n"})
    git(wt, "add", "committed.txt")
    git(wt, "commit", "-qm", "agent commit")
    write(wt, {"a.txt": "changed\n", "new/untracked.txt": "u\n", ".batchd/scratch": "x\n"})
    (wt / "todos" / "273-ready-p1-x.md").rename(wt / "todos" / "273-complete-p1-x.md")
    change = collect_change(
        wt, base, message="fix: todo 273", trailers=TRAILERS, exclude=(".batchd", "todos")
    )
    assert change is not None
    assert change.files == ("a.txt", "committed.txt", "new/untracked.txt")
    assert git(repo, "rev-parse", f"{change.sha}^") == base
    assert "todos/273-ready-p1-x.md" in change.excluded
    body = git(repo, "log", "-1", "--format=%B", change.sha)
    assert body.startswith("fix: todo 273")
    assert "Batchd-Todo: 273" in body
    assert "Batchd-Attempt: 1" in body
    assert head(wt) == change.sha


def test_collect_change_returns_none_when_nothing_changed(repo: Path) -> None:
    """An agent that changed nothing (or only .batchd/) gives None."""
    wt = _worktree(repo)
    write(wt, {".batchd/log.txt": "x\n"})
    assert collect_change(wt, head(repo), message="m", trailers=TRAILERS) is None


def test_find_commits_by_trailer(repo: Path) -> None:
    """Commits are found by trailer value, newest first; other values do not match."""
    base = head(repo)
    wt = _worktree(repo)
    write(wt, {"x.txt": "x\n"})
    change = collect_change(wt, base, message="m", trailers=TRAILERS)
    assert change is not None
    assert find_commits_by_trailer(repo, "batchd/todo-273-a1", "Batchd-Todo", "273") == [change.sha]
    assert find_commits_by_trailer(repo, "batchd/todo-273-a1", "Batchd-Todo", "27") == []


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


# --- remote -----------------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path: Path, repo: Path) -> Path:
    return bare_remote(tmp_path / "remote.git", repo)


def _other_pushes(tmp_path: Path, remote: Path, files: dict[str, str]) -> str:
    other = clone(remote, tmp_path / "other")
    write(other, files)
    git(other, "add", "-A")
    git(other, "commit", "-qm", "someone else")
    git(other, "push", "-q", "origin", "main")
    return head(other)


def test_push_ok(repo: Path, remote: Path) -> None:
    """A fast-forward push succeeds and the remote branch is our HEAD."""
    write(repo, {"a.txt": "x\n"})
    commit_paths(repo, ["a.txt"], message="m", trailers={})
    result = push(repo, "origin", "HEAD", "main")
    assert result.ok and not result.rejected
    assert git(remote, "rev-parse", "main") == head(repo)


def test_push_rejected_when_remote_moved(tmp_path: Path, repo: Path, remote: Path) -> None:
    """A non-fast-forward push is reported as rejected, not raised."""
    _other_pushes(tmp_path, remote, {"o.txt": "o\n"})
    write(repo, {"a.txt": "ours\n"})
    commit_paths(repo, ["a.txt"], message="ours", trailers={})
    result = push(repo, "origin", "HEAD", "main")
    assert not result.ok and result.rejected


def test_pull_rebase_prefers_our_side_on_conflict(tmp_path: Path, repo: Path, remote: Path) -> None:
    """Both sides edit one line: after pull_rebase our tested line wins and their other file arrives."""
    theirs = _other_pushes(tmp_path, remote, {"a.txt": "theirs\n", "o.txt": "o\n"})
    write(repo, {"a.txt": "ours\n"})
    commit_paths(repo, ["a.txt"], message="ours", trailers={})
    rebased = pull_rebase(repo, "origin", "main")
    assert rebased.brought_new
    assert (repo / "a.txt").read_text() == "ours\n"
    assert (repo / "o.txt").read_text() == "o\n"
    assert git(repo, "rev-parse", "HEAD^") == theirs


def test_push_with_retry_rebases_reverifies_and_pushes(tmp_path: Path, repo: Path, remote: Path) -> None:
    """Remote moved: fetch, rebase, re-verify the new tree, push; 2 attempts."""
    _other_pushes(tmp_path, remote, {"o.txt": "o\n"})
    write(repo, {"a.txt": "ours\n"})
    commit_paths(repo, ["a.txt"], message="ours", trailers={})
    verified: list[str] = []

    def reverify(sha: str) -> bool:
        verified.append(sha)
        return True

    result = push_with_retry(repo, "origin", "main", reverify=reverify)
    assert result.ok and result.attempts == 2
    assert verified == [head(repo)]
    assert git(remote, "rev-parse", "main") == head(repo)


def test_push_with_retry_never_pushes_a_red_rebase(tmp_path: Path, repo: Path, remote: Path) -> None:
    """When the rebased tree fails re-verification nothing is pushed and HEAD is the tested commit."""
    theirs = _other_pushes(tmp_path, remote, {"o.txt": "o\n"})
    write(repo, {"a.txt": "ours\n"})
    tested = commit_paths(repo, ["a.txt"], message="ours", trailers={})
    result = push_with_retry(repo, "origin", "main", reverify=lambda sha: False)
    assert not result.ok
    assert result.reason == "remote's new commits break the tests with ours"
    assert head(repo) == tested
    assert git(remote, "rev-parse", "main") == theirs


def test_push_with_retry_gives_up_after_three_rejections(repo: Path, remote: Path) -> None:
    """A remote whose pre-receive hook refuses everything fails after 3 attempts with the reason."""
    refuse_pushes(remote, "pushes are closed")
    before = git(remote, "rev-parse", "main")
    write(repo, {"a.txt": "ours\n"})
    commit_paths(repo, ["a.txt"], message="ours", trailers={})
    result = push_with_retry(repo, "origin", "main", reverify=lambda sha: True)
    assert not result.ok and result.rejected
    assert result.attempts == 3
    assert result.reason.startswith("remote rejected:")
    assert "pushes are closed" in result.reason
    assert git(remote, "rev-parse", "main") == before


def test_git_error_names_command_and_output(repo: Path) -> None:
    """A failing git command raises GitError with the argv and git's message."""
    with pytest.raises(GitError) as e:
        ff_merge(repo, "no-such-ref")
    assert e.value.command[:2] == ["git", "merge"]
    assert "no-such-ref" in e.value.output


def test_head_sha_reads_worktree_head(repo: Path) -> None:
    """head_sha of a worktree is its own HEAD, not the main checkout's."""
    wt = _worktree(repo)
    sha = commit_files(repo, head(repo), {"z.txt": "z\n"})
    git(wt, "reset", "-q", "--hard", sha)
    assert head_sha(wt) == sha
    assert head_sha(repo) != sha
