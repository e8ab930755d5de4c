"""Recovery's look at the world: processes left working in a todo's worktree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.recovery import groups_working_in


def test_groups_working_in_finds_a_process_inside_the_worktree(tmp_path: Path) -> None:
    """An agent whose group was never recorded is found by its working directory, and only it."""
    inside = tmp_path / "worktrees" / "todo-7" / "src"
    inside.mkdir(parents=True)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    agent = subprocess.Popen(sleeper, cwd=inside, start_new_session=True)
    bystander = subprocess.Popen(sleeper, cwd=elsewhere, start_new_session=True)
    try:
        time.sleep(0.2)
        found = groups_working_in(tmp_path / "worktrees" / "todo-7")
        assert os.getpgid(agent.pid) in found
        assert os.getpgid(bystander.pid) not in found
        assert os.getpgrp() not in found
    finally:
        for proc in (agent, bystander):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_groups_working_in_a_missing_folder_is_empty(tmp_path: Path) -> None:
    """A worktree that no longer exists has nobody working in it."""
    assert groups_working_in(tmp_path / "gone") == set()


def test_a_checkout_on_another_branch_is_refused_with_how_to_fix(tmp_path: Path) -> None:
    """`batchd run` on a checkout that is not on [batchd] branch stops at once (exit 2) naming both."""
    import pytest

    from daemon.exceptions import UsageError
    from daemon.recovery import check_checkout

    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "checkout", "-q", "-b", "feature"], check=True)
    with pytest.raises(UsageError) as caught:
        check_checkout(tmp_path, "main")
    assert "'feature'" in caught.value.message and "'main'" in caught.value.message
    assert caught.value.exit_code == 2
    assert "git checkout main" in caught.value.hint
