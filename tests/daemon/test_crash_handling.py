"""An unexpected error (a bug) ends the daemon cleanly: agents first, the traceback kept, the crash
recorded, exit 3; and the same crash three times in a row is not paid for a fourth time.

``BATCHD_FAULT_RAISE=agent_exit`` (daemon.world.faults) raises at the moment the daemon collects an agent
that exited: a real ``batchd run`` process, real agents, a real log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from phase_repo import PhaseRepo, build_repo
from procs import DaemonProcess, alive, base_env, wait_for

NO_SANDBOX = 'sandbox = "none"'


def crashing(tmp_path: Path, actions: dict[str, list[str]]) -> PhaseRepo:
    return build_repo(tmp_path, {}, hostile=actions, agent_extra=NO_SANDBOX, max_parallel=2)


def fault_env() -> dict[str, str]:
    return base_env(BATCHD_FAULT_RAISE="agent_exit")


def test_an_unexpected_error_kills_the_agents_and_exits_3(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """Todo 1's exit hits the bug while todo 2's agent still works: todo 2's agent is killed, the crash
    is recorded against todo 1 with the traceback kept in .batchd/logs, and the daemon exits 3."""
    repo = crashing(tmp_path, {"1": ["sleep 1"], "2": ["sleep 120"]})
    daemon = start_daemon(repo.root, "--once", env=fault_env())
    spawned = daemon.wait_events("todo.agent_spawned", count=2)
    assert daemon.wait(60) == 3
    pids = [int(e.payload["pid"]) for e in spawned]
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10, what="every agent to be killed")
    crashed = [dict(e.payload) for e in repo.events("run.daemon_crashed")]
    assert len(crashed) == 1
    assert crashed[0]["todo_id"] == "1" and crashed[0]["place"] == "InjectedFault at agent_exit"
    assert "InjectedFault" in (repo.root / ".batchd" / "logs" / "daemon-crashes.log").read_text()
    interrupted = {e.payload["todo_id"] for e in repo.events("todo.agent_interrupted")}
    assert "2" in interrupted


def test_the_same_crash_three_times_in_a_row_blocks_the_todo(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """Three starts crash at the same place on todo 1; the fourth blocks todo 1 with the error instead
    of running (and paying for) its agent again, and the run goes on to its verdict."""
    repo = crashing(tmp_path, {"1": []})
    for _ in range(3):
        assert start_daemon(repo.root, "--once", env=fault_env()).wait(60) == 3
    assert len(repo.events("todo.agent_spawned")) == 3
    assert start_daemon(repo.root, "--once", env=fault_env()).wait(60) == 1
    assert len(repo.events("todo.agent_spawned")) == 3
    blocked = [dict(e.payload) for e in repo.events("todo.blocked")]
    assert blocked and blocked[-1]["todo_id"] == "1"
    assert "failed 3 times in a row at InjectedFault at agent_exit" in str(blocked[-1]["reason"])
