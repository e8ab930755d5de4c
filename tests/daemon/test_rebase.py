"""A todo's change carried onto a newer head as files (daemon.world.rebase), and into a workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.exceptions import GitError
from daemon.world import agentspace
from daemon.world.rebase import carry
from tests.daemon.gitrepo import commit_files, git, head, init_repo

BASE = {"lib.py": "def a():\n    return 1\n", "other.py": "x = 1\n", "gone.py": "old = 1\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", BASE)


def test_a_change_that_still_applies_is_carried_clean(repo: Path) -> None:
    base = head(repo)
    change = commit_files(repo, base, {"other.py": "x = 2\n", "gone.py": None, "new.py": "n = 1\n"})
    newer = commit_files(repo, base, {"lib.py": "def a():\n    return 2\n"})
    carried = carry(repo, change, newer)
    assert carried.clean
    assert carried.files == {"other.py": b"x = 2\n", "gone.py": None, "new.py": b"n = 1\n"}
    assert carried.onto == newer


def test_a_conflict_is_carried_with_its_markers(repo: Path) -> None:
    base = head(repo)
    loser = commit_files(repo, base, {"lib.py": "def a():\n    return 1\n\n\ndef b():\n    return 2\n"})
    winner = commit_files(repo, base, {"lib.py": "def a():\n    return 1\n\n\ndef c():\n    return 3\n"})
    carried = carry(repo, loser, winner)
    assert carried.conflicts == ("lib.py",)
    text = (carried.files["lib.py"] or b"").decode()
    assert "<<<<<<<" in text and ">>>>>>>" in text
    assert "def b()" in text and "def c()" in text  # both intents are there to be kept


def test_a_missing_commit_is_a_git_error(repo: Path) -> None:
    with pytest.raises(GitError):
        carry(repo, "0" * 40, head(repo))


def test_the_workspace_starts_with_the_carried_change(repo: Path, tmp_path: Path) -> None:
    base = head(repo)
    change = commit_files(repo, base, {"other.py": "x = 2\n", "gone.py": None})
    carried = carry(repo, change, base)
    ws = agentspace.create(
        repo, tmp_path / "ws", branch="batchd/todo-1-a2", base_sha=base, files={}, carried=carried
    )
    assert (ws / "other.py").read_text() == "x = 2\n"
    assert not (ws / "gone.py").exists()
    # Uncommitted: the workspace's branch is still the base, the change is the agent's to finish.
    assert git(ws, "rev-parse", "HEAD") == base
    assert "other.py" in git(ws, "status", "--porcelain")
