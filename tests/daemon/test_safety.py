"""What batchd must never do: drop a person's commit, or write an event that would make its log unreadable."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from procs import PY, base_env, git, make_repo, read_events

from daemon.config import load_config
from daemon.engine.runner import Daemon
from statemachine import events as ev
from statemachine.exceptions import InvalidTransition


def test_a_persons_commit_during_the_run_is_never_dropped(tmp_path: Path) -> None:
    """A commit made on the branch while agents work stops the phase (exit 3 with --once) and stays."""
    root = make_repo(tmp_path / "repo", {"1": "sleep: 2\nwrite: [{path: one.txt, content: one}]"}, speed="1")
    daemon = subprocess.Popen(
        [PY, "-m", "daemon", "run", "--once", "-C", str(root)],
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The person commits while the agent sleeps (the daemon has started the run by then).
    db = root / ".batchd" / "events.db"
    deadline = time.monotonic() + 30
    while not (db.exists() and any(e.type == "todo.agent_spawned" for e in read_events(root))):
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.1)
    (root / "mine.txt").write_text("a person's work\n", encoding="utf-8")
    git(root, "add", "mine.txt")
    git(root, "commit", "-q", "-m", "a person's commit")
    mine = git(root, "rev-parse", "HEAD")
    _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 3, err[-2000:]
    assert "branch moved" in err
    assert git(root, "rev-parse", "HEAD") == mine
    assert (root / "mine.txt").read_text(encoding="utf-8") == "a person's work\n"


def test_an_event_its_machine_cannot_take_is_refused_before_it_is_written(tmp_path: Path) -> None:
    """Daemon.emit refuses an impossible event (accepting a todo that never ran): nothing reaches the log."""
    root = make_repo(tmp_path / "repo", {})
    daemon = Daemon(load_config(root))
    try:
        daemon.load()
        with pytest.raises(InvalidTransition) as caught:
            daemon.emit_one(ev.todo_stream("9"), ev.TodoAccepted(todo_id="9", batch="1.1", commit="abc"))
        assert caught.value.state == "new" and caught.value.event == "todo.accepted"
        assert daemon.log.last_seq() == 0
    finally:
        daemon.close()
