"""daemon.world.remote on real repositories and real bare remotes: pinned at start-up, confirmed by
reading back, and never rewriting a person's history."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import bare_remote, clone, git, head, init_repo, refuse_pushes, write

from daemon.exceptions import UsageError
from daemon.world.gitops import commit_paths
from daemon.world.hooks import snapshot
from daemon.world.remote import PinnedRemote, PushPlan, pin_remote, push_tested


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", {"a.txt": "a\n"})


@pytest.fixture
def remote(tmp_path: Path, repo: Path) -> Path:
    return bare_remote(tmp_path / "remote.git", repo)


def pin(repo: Path, name: str = "origin") -> PinnedRemote | None:
    return pin_remote(repo, name, snapshot(repo, repo / ".batchd" / "tmp"))


@pytest.fixture
def pinned(repo: Path, remote: Path) -> PinnedRemote:
    found = pin(repo)
    assert found is not None
    return found


def _other_pushes(tmp_path: Path, remote: Path, files: dict[str, str]) -> str:
    other = clone(remote, tmp_path / "other") if not (tmp_path / "other").exists() else tmp_path / "other"
    git(other, "pull", "-q", "--ff-only")
    write(other, files)
    git(other, "add", "-A")
    git(other, "commit", "-qm", "someone else")
    git(other, "push", "-q", "origin", "main")
    return head(other)


def _ours(repo: Path, text: str = "ours\n") -> str:
    write(repo, {"a.txt": text})
    return commit_paths(repo, ["a.txt"], message="ours", trailers={})


def _push(repo: Path, pinned: PinnedRemote, plan: PushPlan | None = None, ok: bool = True):  # type: ignore[no-untyped-def]
    return push_tested(repo, repo, pinned, "main", plan=plan or PushPlan(), reverify=lambda _sha: ok)


def test_a_remote_that_is_not_configured_is_refused_naming_the_ones_that_are(
    repo: Path, remote: Path
) -> None:
    """[batchd] remote naming no remote is a start-up error that lists the remotes there are."""
    with pytest.raises(UsageError) as caught:
        pin(repo, "upstream")
    assert "no remote 'upstream'" in caught.value.message and "origin" in caught.value.message


def test_an_empty_remote_means_never_push(repo: Path) -> None:
    assert pin(repo, "") is None


def test_a_push_is_confirmed_on_the_remote(repo: Path, remote: Path, pinned: PinnedRemote) -> None:
    """A fast-forward push succeeds and the remote branch is our commit."""
    sha = _ours(repo)
    result = _push(repo, pinned)
    assert result.ok and result.sha == sha and result.attempts == 1
    assert git(remote, "rev-parse", "main") == sha


def test_pushes_go_where_they_went_at_start_up(
    tmp_path: Path, repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """A pushurl set after start-up (an agent's `git config`) does not move batchd's pushes."""
    evil = tmp_path / "evil.git"
    git(tmp_path, "init", "-q", "--bare", str(evil))
    git(repo, "config", "remote.origin.pushurl", str(evil))
    sha = _ours(repo)
    assert _push(repo, pinned).ok
    assert git(remote, "rev-parse", "main") == sha
    assert git(evil, "for-each-ref") == ""


def test_a_url_rewrite_added_during_the_run_stops_the_push(
    repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """An insteadOf rule added after start-up could send the push elsewhere: refused, naming it."""
    before = git(remote, "rev-parse", "main")
    git(repo, "config", "url./elsewhere/.pushInsteadOf", str(remote))
    _ours(repo)
    result = _push(repo, pinned)
    assert not result.ok
    assert "URL rewriting rules changed" in result.reason and "pushinsteadof" in result.reason.lower()
    assert git(remote, "rev-parse", "main") == before


def test_a_push_the_remote_did_not_keep_is_not_recorded_as_pushed(
    repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """git says the push worked, but a hook on the remote put the branch back: not pushed, and why."""
    before = git(remote, "rev-parse", "main")
    hook = remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ngit update-ref refs/heads/main {before}\n")
    hook.chmod(0o755)
    _ours(repo)
    result = _push(repo, pinned)
    assert not result.ok
    assert "nothing is recorded as pushed" in result.reason


def test_a_rejected_push_is_rebased_reverified_and_pushed(
    tmp_path: Path, repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """Remote moved: fetch, rebase (ours wins), re-verify the new tree, push; 2 attempts."""
    theirs = _other_pushes(tmp_path, remote, {"o.txt": "o\n"})
    _ours(repo)
    verified: list[str] = []

    def reverify(sha: str) -> bool:
        verified.append(sha)
        return True

    result = push_tested(repo, repo, pinned, "main", plan=PushPlan(), reverify=reverify)
    assert result.ok and result.attempts == 2
    assert verified == [head(repo)] and result.sha == head(repo)
    assert git(remote, "rev-parse", "main") == head(repo)
    assert git(repo, "rev-parse", "HEAD^") == theirs


def test_a_red_rebase_is_never_pushed(tmp_path: Path, repo: Path, remote: Path, pinned: PinnedRemote) -> None:
    """When the rebased tree fails re-verification nothing is pushed and HEAD is the tested commit."""
    theirs = _other_pushes(tmp_path, remote, {"o.txt": "o\n"})
    tested = _ours(repo)
    result = _push(repo, pinned, ok=False)
    assert not result.ok
    assert result.reason == "remote's new commits break the tests with ours"
    assert head(repo) == tested
    assert git(remote, "rev-parse", "main") == theirs


def test_a_remote_that_refuses_everything_fails_after_three_attempts(
    repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """A pre-receive hook refusing every push: 3 attempts, its words in the reason, git's in the output."""
    refuse_pushes(remote, "pushes are closed")
    before = git(remote, "rev-parse", "main")
    _ours(repo)
    result = _push(repo, pinned)
    assert not result.ok and result.rejected and result.attempts == 3
    assert result.reason.startswith("remote rejected:") and "pushes are closed" in result.reason
    assert "pre-receive hook declined" in result.output
    assert git(remote, "rev-parse", "main") == before


def test_a_rewritten_remote_is_never_overwritten_with_old_history(
    tmp_path: Path, repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """After a person force-pushed a rewrite that dropped what batchd pushed, batchd's next push stops:
    nothing of the old history comes back (a purged file stays purged)."""
    write(repo, {"secret.txt": "oops\n"})
    pushed = commit_paths(repo, ["secret.txt"], message="phase 1", trailers={})
    assert _push(repo, pinned).ok
    other = clone(remote, tmp_path / "other")
    git(other, "reset", "-q", "--hard", "HEAD~1")
    write(other, {"clean.txt": "c\n"})
    git(other, "add", "-A")
    git(other, "commit", "-qm", "purge the secret")
    git(other, "push", "-q", "--force", "origin", "main")
    rewritten = head(other)
    _ours(repo, "phase 2\n")
    result = _push(repo, pinned, PushPlan(last_pushed=pushed))
    assert not result.ok
    assert f"no longer contains {pushed[:10]}" in result.reason and "force-push" in result.reason
    assert git(remote, "rev-parse", "main") == rewritten
    assert "secret.txt" not in git(remote, "ls-tree", "--name-only", "main").split()


def test_an_agents_own_push_is_recognised_and_not_built_on(
    tmp_path: Path, repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """A commit an agent pushed itself is on the remote: batchd stops instead of rebasing onto it."""
    agents = _other_pushes(tmp_path, remote, {"unverified.txt": "u\n"})
    _ours(repo)
    result = _push(repo, pinned, PushPlan(agent_commits=frozenset({agents})))
    assert not result.ok
    assert "an agent made and pushed itself" in result.reason
    assert git(remote, "rev-parse", "main") == agents


def test_the_persons_pre_push_hook_gates_pushes_but_a_later_hook_never_runs(
    tmp_path: Path, repo: Path, remote: Path
) -> None:
    """Hooks are the person's as at start-up: their pre-push still runs; one written afterwards does not."""
    marker = tmp_path / "pre-push-ran"
    late = tmp_path / "late-hook-ran"
    hook = repo / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    pinned = pin(repo)
    assert pinned is not None
    hook.write_text(f"#!/bin/sh\ntouch {late}\nexit 1\n")
    _ours(repo)
    assert _push(repo, pinned).ok
    assert marker.exists() and not late.exists()


def test_remote_commits_that_change_batchd_toml_are_not_pushed_on(
    tmp_path: Path, repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """Someone (an agent with the person's credentials, say) pushed a commit switching the checks off:
    batchd does not rebase onto it and push; the reason says what to do."""
    write(repo, {"batchd.toml": "[verify]\ncommands = [['make', 'test']]\n"})
    commit_paths(repo, ["batchd.toml"], message="config", trailers={})
    assert _push(repo, pinned).ok
    theirs = _other_pushes(tmp_path, remote, {"batchd.toml": "[verify]\ncommands = [['true']]\n"})
    _ours(repo)
    result = _push(repo, pinned, PushPlan(guarded=("batchd.toml",)))
    assert not result.ok
    assert "change batchd.toml" in result.reason and "pull it yourself" in result.reason
    assert git(remote, "rev-parse", "main") == theirs


def test_a_deleted_remote_branch_is_not_silently_recreated(
    repo: Path, remote: Path, pinned: PinnedRemote
) -> None:
    """The branch batchd pushed to is gone from the remote: batchd stops and says so."""
    pushed = _ours(repo)
    assert _push(repo, pinned).ok
    git(remote, "update-ref", "-d", "refs/heads/main")
    _ours(repo, "more\n")
    result = _push(repo, pinned, PushPlan(last_pushed=pushed))
    assert not result.ok and "no branch main any more" in result.reason
