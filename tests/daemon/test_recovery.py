"""Recovery's look at the world before a run resumes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import make_repo

from daemon.config import load_config
from daemon.engine.recovery import check_checkout, reconcile
from daemon.engine.runner import Daemon
from daemon.exceptions import UsageError
from daemon.world.agentproc import process_start_ticks
from statemachine import events as ev


def test_a_checkout_on_another_branch_is_refused_with_how_to_fix(tmp_path: Path) -> None:
    """`batchd run` on a checkout that is not on [batchd] branch stops at once (exit 2) naming both."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "checkout", "-q", "-b", "feature"], check=True)
    with pytest.raises(UsageError) as caught:
        check_checkout(tmp_path, "main")
    assert "'feature'" in caught.value.message and "'main'" in caught.value.message
    assert caught.value.exit_code == 2
    assert "git checkout main" in caught.value.hint


# --- killing only what batchd started -------------------------------------------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """A daemon whose log says todo 7's agent runs, with the given pid, start time and token."""
    made: list[Daemon] = []

    def make(*, pid: int | None, start_ticks: int | None, token: str) -> Daemon:
        root = make_repo(tmp_path / "repo", {})
        d = Daemon(load_config(root))
        d.load()
        d.emit_one(
            ev.todo_stream("7"),
            ev.TodoQueued(todo_id="7", path="todos/7.md", title="t", priority="p2", digest="d"),
        )
        d.emit_one(ev.todo_stream("7"), ev.TodoPlanned(todo_id="7", batch="1.1", phase=1))
        d.emit_one(
            ev.todo_stream("7"),
            ev.AgentStarted(
                todo_id="7", attempt=1, batch="1.1", worktree=".batchd/workspaces/todo-7", branch="b",
                base_sha="0" * 40, log_path=".batchd/logs/x.log", token=token,
            ),
        )  # fmt: skip
        if pid is not None:
            d.emit_one(
                ev.todo_stream("7"),
                ev.AgentSpawned(todo_id="7", attempt=1, pid=pid, pgid=pid, start_ticks=start_ticks),
            )
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def sleeper(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True, env={**os.environ, **env})


def gone(proc: subprocess.Popen[bytes]) -> bool:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_the_recorded_agent_group_is_killed_and_the_attempt_interrupted(
    running: Callable[..., Daemon],
) -> None:
    """The group whose leader has the recorded start time is the dead daemon's agent: killed, re-run."""
    agent = sleeper()
    d = running(pid=agent.pid, start_ticks=process_start_ticks(agent.pid), token="t1")
    reconcile(d)
    assert gone(agent)
    assert d.proj.todos["7"].state == "planned"
    assert d.proj.todos["7"].history[-1].outcome == "interrupted"


def test_a_reused_pid_is_never_killed(running: Callable[..., Daemon]) -> None:
    """A live process at the recorded pid that started at another time is someone else's: spared."""
    stranger = sleeper()
    try:
        ticks = process_start_ticks(stranger.pid)
        assert ticks is not None
        d = running(pid=stranger.pid, start_ticks=ticks - 1, token="t2")
        reconcile(d)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_an_agent_started_but_never_recorded_is_found_by_its_token(running: Callable[..., Daemon]) -> None:
    """A crash between starting the agent and recording its pid: the agent carries the attempt's token."""
    agent = sleeper(BATCHD_AGENT_TOKEN="t3")
    bystander = sleeper(BATCHD_AGENT_TOKEN="another-attempt")
    try:
        d = running(pid=None, start_ticks=None, token="t3")
        reconcile(d)
        assert gone(agent)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
