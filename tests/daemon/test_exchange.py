"""daemon.world.exchange on a real repository and a real bare remote: a push or fetch that fails
says why in git's own words, even behind long paths and many refs."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitrepo import bare_remote, head, init_repo, refuse_pushes

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
