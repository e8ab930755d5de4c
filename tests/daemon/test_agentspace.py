"""daemon.world.agentspace: each agent's repository is its own, and nothing it does there reaches
the person's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from gitrepo import bare_remote, git, head, init_repo

from daemon.world import agentspace
from daemon.world.agentspace import WorkspaceError

TODO = "todos/7-ready-p2-thing.md"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "repo", {"a.txt": "a\n"})
    bare_remote(tmp_path / "remote.git", root)
    return root


@pytest.fixture
def ws(repo: Path) -> Path:
    return agentspace.create(
        repo,
        repo / ".batchd" / "workspaces" / "todo-7",
        branch="batchd/todo-7-a1",
        base_sha=head(repo),
        files={TODO: b"# Thing 7\n"},
    )


def test_the_workspace_is_the_base_with_the_todo_file_on_top(repo: Path, ws: Path) -> None:
    """The agent starts on its own branch at the base, its todo file beside the files (committed or not)."""
    assert head(ws) == head(repo)
    assert git(ws, "branch", "--show-current") == "batchd/todo-7-a1"
    assert (ws / "a.txt").read_text() == "a\n"
    assert (ws / TODO).read_bytes() == b"# Thing 7\n"


def test_it_has_no_remote_and_none_of_the_persons_refs(repo: Path, ws: Path) -> None:
    """Nothing in it leads to the person's repository or the real remote."""
    git(repo, "branch", "person-topic")
    assert git(ws, "remote") == ""
    refs = git(ws, "for-each-ref", "--format=%(refname)").split()
    assert refs == ["refs/heads/batchd/todo-7-a1"]


def test_config_and_hooks_written_there_stay_there(repo: Path, ws: Path) -> None:
    """`git config remote.origin.pushurl` and a hook in the workspace change nothing of the person's."""
    before = (repo / ".git" / "config").read_text()
    git(ws, "config", "remote.origin.pushurl", "/somewhere/else.git")
    hooks = ws / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-push").write_text("#!/bin/sh\nexit 0\n")
    assert (repo / ".git" / "config").read_text() == before
    assert not (repo / ".git" / "hooks" / "pre-push").exists()
    assert git(repo, "remote", "get-url", "--push", "origin").endswith("remote.git")


def test_its_commits_never_reach_the_persons_repository(repo: Path, ws: Path) -> None:
    """The agent's commits are written to its own object store (the person's is only borrowed)."""
    (ws / "b.txt").write_text("b\n")
    git(ws, "add", "b.txt")
    git(ws, "commit", "-qm", "agent")
    missing = subprocess.run(["git", "cat-file", "-e", head(ws)], cwd=repo, capture_output=True, check=False)
    assert missing.returncode != 0


def test_agent_head_and_commits_are_read(repo: Path, ws: Path) -> None:
    """The agent's HEAD and the commits it made on top of its base are read from its repository."""
    base = head(repo)
    for n in range(2):
        (ws / f"f{n}").write_text("x\n")
        git(ws, "add", "-A")
        git(ws, "commit", "-qm", f"c{n}")
    sha = agentspace.agent_head(repo, ws)
    assert sha == head(ws)
    assert agentspace.descends(repo, ws, base, sha)
    assert agentspace.agent_commits(repo, ws, base, sha) == (sha, head(ws, "HEAD~1"))


def test_a_git_folder_replaced_by_a_link_is_refused(repo: Path, ws: Path) -> None:
    """A .git swapped for a link to the person's repository is never read or written."""
    shutil.rmtree(ws / ".git")
    (ws / ".git").symlink_to(repo / ".git")
    with pytest.raises(WorkspaceError, match=r"replaced its workspace's \.git"):
        agentspace.agent_head(repo, ws)


def test_remove_deletes_the_folder_and_never_follows_a_link_inside(
    repo: Path, ws: Path, tmp_path: Path
) -> None:
    """A link an agent left in its workspace is removed, not what it points at."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep\n")
    (ws / "link").symlink_to(precious)
    agentspace.remove(ws)
    assert not ws.exists()
    assert (precious / "keep.txt").read_text() == "keep\n"
