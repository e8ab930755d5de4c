"""daemon.world.exchange on a real repository and a real bare remote: a push or fetch that fails
says why in git's own words, even behind long paths and many refs."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import bare_remote, git, head, init_repo, refuse_pushes, write

from daemon.world import exchange
from daemon.world.hooks import snapshot
from daemon.world.remote import PinnedRemote, pin_remote


def pinned(repo: Path) -> PinnedRemote:
    found = pin_remote(repo, "origin", snapshot(repo, repo / ".batchd" / "tmp"))
    assert found is not None
    return found


@pytest.fixture
def deep(tmp_path: Path) -> Path:
    """A folder whose path is long (as a test or a CI runner's temporary folders can be)."""
    folder = tmp_path / ("long-folder-name-" * 12)
    folder.mkdir()
    return folder


def test_a_push_a_hook_refuses_says_the_hooks_words_behind_long_paths(deep: Path) -> None:
    repo = init_repo(deep / "repo", {"a.txt": "a\n"})
    remote = bare_remote(deep / "remote.git", repo)
    refuse_pushes(remote, "the remote is closed for maintenance")
    sha = head(repo)
    refs = {f"refs/batchd/todo/{n:03d}/a1-0123456789abcdef": sha for n in range(6)}
    with pytest.raises(exchange.ExchangeError) as caught:
        exchange.push_refs(repo, pinned(repo), refs)
    said = caught.value.message
    assert "the remote is closed for maintenance" in said
    assert "pre-receive hook declined" in said
    assert "\n" not in said.partition(": ")[2]  # one line, for a log line or a table cell


def test_a_fetch_from_a_remote_that_is_gone_says_so(deep: Path) -> None:
    repo = init_repo(deep / "repo", {"a.txt": "a\n"})
    remote = bare_remote(deep / "remote.git", repo)
    pin = pinned(repo)
    (remote / "HEAD").unlink()  # no longer a repository
    with pytest.raises(exchange.ExchangeError) as caught:
        exchange.fetch_refs(repo, pin, ["refs/batchd/base/run/1"])
    assert "does not appear to be a git repository" in caught.value.message


def test_nothing_outside_batchds_refs_is_pushed(tmp_path: Path) -> None:
    """Pushes are forced: a ref of a branch or a tag (from a claim batchd did not write) is refused
    before anything is sent."""
    repo = init_repo(tmp_path / "repo", {"a.txt": "a\n"})
    remote = bare_remote(tmp_path / "remote.git", repo)
    before = git(remote, "rev-parse", "refs/heads/main")
    first = head(repo)
    write(repo, {"a.txt": "b\n"})
    git(repo, "commit", "-qam", "b")
    for ref in ("refs/heads/main", "refs/heads/release", "refs/tags/v1"):
        with pytest.raises(exchange.ExchangeError, match="not one of batchd's refs"):
            exchange.push_refs(repo, pinned(repo), {ref: head(repo)})
    assert git(remote, "rev-parse", "refs/heads/main") == before == first
    assert git(remote, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
