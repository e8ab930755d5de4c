"""Leases on PostgreSQL: a worker that goes silent past its lease loses the claim, its late renewal
and report are refused by the log, its agent is killed, and another worker finishes the attempt."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import DaemonProcess, git, group_members, wait_for

from worker.fleet import (
    WorkerProcess,
    fleet_repo,
    kill_claimed_agents,
    log_events,
    of_type,
    wait_event,
    worker_clone,
)

pytestmark = pytest.mark.timeout(180)

SLOW = "sleep: 8\nwrite: [{path: slow.py, content: 'SLOW = 1'}]"
LEASE = 3.0


@pytest.fixture
def fleet(
    tmp_path: Path, pg_url: str, start_daemon: Callable[..., DaemonProcess]
) -> Iterator[dict[str, object]]:
    root = tmp_path / "repo"
    remote = fleet_repo(root, {"001": SLOW}, db=pg_url, lease=LEASE)
    workers: list[WorkerProcess] = []

    def start_worker(name: str) -> WorkerProcess:
        clone = tmp_path / name
        if not clone.exists():
            worker_clone(str(remote), clone)
        w = WorkerProcess(clone, name=name, db=pg_url)
        workers.append(w)
        return w

    coordinator = start_daemon(root, "--once")
    yield {"root": root, "remote": remote, "start_worker": start_worker, "coordinator": coordinator}
    for w in workers:
        w.kill()
    kill_claimed_agents(root)


def _agent_of(root: Path, worker: str) -> int:
    """The pgid of the agent ``worker`` said it runs (its first renewal with a process on record)."""

    def recorded() -> int | None:
        renewals = of_type(log_events(root), "agent.lease_renewed")
        return next(
            (int(e.payload["pgid"]) for e in renewals if e.payload["worker"] == worker and e.payload["pgid"]),
            None,
        )

    return wait_for(recorded, timeout=60, what=f"{worker}'s agent on record")


def test_a_worker_stopped_past_its_lease_is_fenced_and_another_finishes(fleet: dict[str, object]) -> None:
    root: Path = fleet["root"]  # type: ignore[assignment]
    start_worker: Callable[[str], WorkerProcess] = fleet["start_worker"]  # type: ignore[assignment]
    coordinator: DaemonProcess = fleet["coordinator"]  # type: ignore[assignment]
    w1 = start_worker("w1")
    pgid = _agent_of(root, "w1")
    os.kill(w1.pid, signal.SIGSTOP)
    expired = wait_event(root, "agent.lease_expired", timeout=30)
    assert expired[0].payload["worker"] == "w1" and expired[0].payload["by"] == "coordinator"
    start_worker("w2")
    wait_event(root, "agent.claimed", worker="w2")
    os.kill(w1.pid, signal.SIGCONT)
    lost = w1.wait_logged("claim_lost")
    assert "lease" in lost[0]["why"] or "no longer" in lost[0]["why"]
    wait_for(lambda: not group_members(pgid) or None, timeout=15, what="w1's agent killed")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(root)
    reports = of_type(events, "agent.reported")
    assert [r.payload["worker"] for r in reports] == ["w2"]
    interrupted = of_type(events, "todo.agent_interrupted")
    assert len(interrupted) == 1 and "w1" in interrupted[0].payload["reason"]
    assert "SLOW = 1" in git(root, "show", "main:slow.py")
    finished = of_type(events, "todo.agent_finished")
    assert [e.payload["attempt"] for e in finished] == [1]  # the lost run was not counted


def test_a_killed_workers_agent_runs_again_elsewhere_and_its_restart_kills_the_leftover(
    fleet: dict[str, object],
) -> None:
    root: Path = fleet["root"]  # type: ignore[assignment]
    start_worker: Callable[[str], WorkerProcess] = fleet["start_worker"]  # type: ignore[assignment]
    coordinator: DaemonProcess = fleet["coordinator"]  # type: ignore[assignment]
    w1 = start_worker("w1")
    pgid = _agent_of(root, "w1")
    w1.proc.kill()  # kill -9: no word to anyone, its agent left running
    w1.proc.wait(timeout=10)
    assert group_members(pgid), "the agent outlives its killed worker"
    wait_event(root, "agent.lease_expired", timeout=30)
    start_worker("w2")
    start_worker("w1")  # the same worker back: it kills what its earlier run left
    wait_for(lambda: not group_members(pgid) or None, timeout=15, what="the leftover agent killed")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(root)
    assert len(of_type(events, "agent.reported")) == 1
    assert "SLOW = 1" in git(root, "show", "main:slow.py")
