"""What batchd must never do: drop a person's commit, or write an event that would make its log unreadable."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from phase_repo import plan_text
from procs import PY, base_env, git, make_repo, read_events

from daemon.config import load_config
from daemon.engine.runner import Daemon
from statemachine import events as ev
from statemachine.exceptions import InvalidTransition


def _commit_while_the_agent_works(root: Path, after: str) -> tuple[subprocess.Popen[str], str]:
    """Start `run --once`, wait for the event ``after``, then commit a file of a person's on the branch."""
    daemon = subprocess.Popen(
        [PY, "-m", "daemon", "run", "--once", "-C", str(root)],
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = root / ".batchd" / "events.db"
    deadline = time.monotonic() + 30
    while not (db.exists() and any(e.type == after for e in read_events(root))):
        assert time.monotonic() < deadline, f"no {after} event"
        time.sleep(0.1)
    (root / "mine.txt").write_text("a person's work\n", encoding="utf-8")
    git(root, "add", "mine.txt")
    git(root, "commit", "-q", "-m", "a person's commit")
    return daemon, git(root, "rev-parse", "HEAD")


def test_barrier_a_persons_commit_while_agents_work_stops_the_phase_and_stays(tmp_path: Path) -> None:
    """`barrier`: the batch verifies on the base it started from, so a commit made on the branch while
    its agents work stops the phase (exit 3 with --once); the commit stays."""
    script = "sleep: 2\nwrite: [{path: one.txt, content: one}]"
    root = make_repo(tmp_path / "repo", {"1": script}, speed="1", schedule="barrier")
    daemon, mine = _commit_while_the_agent_works(root, "todo.agent_spawned")
    _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 3, err[-2000:]
    assert "branch moved" in err
    assert git(root, "rev-parse", "HEAD") == mine
    assert (root / "mine.txt").read_text(encoding="utf-8") == "a person's work\n"


def test_continuous_a_persons_commit_before_anything_was_accepted_becomes_the_phases_base(
    tmp_path: Path,
) -> None:
    """`continuous`: nothing of the phase is accepted yet, so it moves onto the person's commit: the
    agent's change is verified on top of it and committed after it; nothing of theirs is lost."""
    script = "sleep: 2\nwrite: [{path: one.txt, content: one}]"
    root = make_repo(tmp_path / "repo", {"1": script}, speed="1", schedule="continuous")
    daemon, mine = _commit_while_the_agent_works(root, "todo.agent_spawned")
    _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, err[-2000:]
    assert git(root, "rev-parse", "HEAD~1") == mine
    assert git(root, "show", "HEAD:mine.txt") == "a person's work"
    assert git(root, "show", "HEAD:one.txt") == "one"


def test_continuous_a_persons_commit_after_a_change_was_accepted_stops_the_phase_and_stays(
    tmp_path: Path,
) -> None:
    """Once a change of the phase is accepted its commit must be the tree that was verified: a
    commit on the branch after that stops the phase (exit 3 with --once), and stays."""
    todos = {
        "1": "write: [{path: one.txt, content: one}]",
        "2": "sleep: 3\nwrite: [{path: two.txt, content: two}]",
    }
    root = make_repo(tmp_path / "repo", todos, speed="1", schedule="continuous", max_parallel=1)
    # Both in one phase (without a plan each auto-planned batch would be a phase of its own, and
    # the commit could land in the second phase before it accepted anything).
    (root / "plans").mkdir()
    (root / "plans" / "PLAN.md").write_text(plan_text({1: ("One", [["1", "2"]], "")}), encoding="utf-8")
    config = (root / "batchd.toml").read_text(encoding="utf-8")
    (root / "batchd.toml").write_text(config.replace("[batchd]\n", '[batchd]\nplan = "plans/PLAN.md"\n'))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "plan")
    daemon, mine = _commit_while_the_agent_works(root, "todo.accepted")
    _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 3, err[-2000:]
    assert "branch moved" in err
    assert git(root, "rev-parse", "HEAD") == mine
    assert [e.payload["number"] for e in read_events(root) if e.type == "phase.planned"] == [1]


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
