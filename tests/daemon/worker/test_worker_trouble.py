"""A worker that cannot reach the remote (its base cannot be fetched, its change cannot be pushed)
gives the claim back instead of failing the attempt: nothing is counted against the todo, the
attempt runs again elsewhere, and the worker backs off, saying why in ``batchd workers``. A blip at
the remote while it pushes is waited out. Real coordinator and worker processes, a real bare remote
whose pre-receive hook refuses what the test says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import batchd, git, wait_for

from worker.fleet import Fleet, log_events, of_type, wait_event, worker_clone

pytestmark = pytest.mark.timeout(180)

CHANGE = "write: [{path: a.py, content: 'A = 1'}]"

# Refuses a push of a worker's change (refs/batchd/todo/...) while the count in REFUSALS is above 0.
HOOK = """#!/bin/sh
left=$(cat "{refusals}")
if grep -q ' refs/batchd/todo/' && [ "$left" -gt 0 ]; then
    echo $((left - 1)) > "{refusals}"
    echo "refused by the test's hook" >&2
    exit 1
fi
exit 0
"""


def refuse_change_pushes(fleet: Fleet, times: int) -> Path:
    """The remote refuses the next ``times`` pushes of a worker's change; returns the count's file."""
    refusals = fleet.tmp / "refusals"
    refusals.write_text(f"{times}\n")
    hook = fleet.remote / "hooks" / "pre-receive"
    hook.write_text(HOOK.format(refusals=refusals))
    hook.chmod(0o755)
    return refusals


def workers_json(root: Path) -> dict[str, Any]:
    done = batchd(root, "workers", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_a_worker_cut_off_from_the_remote_gives_the_attempt_back_uncounted(
    make_fleet: Callable[..., Fleet],
) -> None:
    """Its base cannot be fetched: the claim is given back (not a failed attempt), the worker says
    why and takes no claims for a while, and a worker that can reach the remote does the work."""
    fleet = make_fleet({"001": CHANGE})
    cut_off = worker_clone(str(fleet.remote), fleet.tmp / "cut-off")
    git(cut_off, "remote", "set-url", "origin", str(fleet.tmp / "no-such-remote.git"))
    coordinator = fleet.start(fleet.root, "--once")
    bad = fleet.worker("cut-off")
    [given] = wait_event(fleet.root, "agent.lease_expired", by="cut-off", timeout=60)
    assert "could not reach the remote" in given.payload["reason"]
    bad.wait_logged("worker_backing_off")
    row = wait_for(
        lambda: next((w for w in workers_json(fleet.root)["workers"] if w["trouble"]), None),
        timeout=30,
        what="the worker's trouble in `batchd workers`",
    )
    assert row["name"] == "cut-off"
    assert "no-such-remote.git" in row["trouble"]
    text = batchd(fleet.root, "workers")
    assert "cut-off takes no claims for now" in text.stdout, text.stdout
    fleet.worker("w2")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert of_type(events, "todo.agent_failed") == []
    assert [e.payload["worker"] for e in of_type(events, "agent.reported")] == ["w2"]
    interrupted = of_type(events, "todo.agent_interrupted")
    assert interrupted and "could not reach the remote" in interrupted[0].payload["reason"]
    assert "A = 1" in git(fleet.root, "show", "main:a.py")


def test_a_change_the_remote_refuses_for_good_is_given_back_and_run_again_when_it_is_back(
    make_fleet: Callable[..., Fleet],
) -> None:
    """Every try of pushing the change is refused: the claim is given back, uncounted; after its
    pause the same worker runs the attempt again, its push goes through, and the trouble is over."""
    fleet = make_fleet({"001": CHANGE})
    refusals = refuse_change_pushes(fleet, 3)  # as many as a worker tries
    coordinator = fleet.start(fleet.root, "--once")
    worker = fleet.worker("w1")
    assert coordinator.wait(timeout=120) == 0, coordinator.log_path.read_text()[-3000:]
    assert refusals.read_text().strip() == "0"
    events = log_events(fleet.root)
    assert of_type(events, "todo.agent_failed") == []
    assert len(of_type(events, "agent.claimed")) == 2
    given = [e.payload for e in of_type(events, "agent.lease_expired")]
    assert len(given) == 1, given
    assert given[0]["by"] == "w1" and "refused by the test's hook" in given[0]["reason"], given
    troubled = [e for e in of_type(events, "worker.heartbeat") if e.payload.get("trouble")]
    assert troubled, "no heartbeat said why the worker took no claims"
    assert worker.logged("worker_trouble_over")
    assert "A = 1" in git(fleet.root, "show", "main:a.py")


def test_a_push_refused_once_is_tried_again_and_the_attempt_kept(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet({"001": CHANGE})
    refuse_change_pushes(fleet, 1)
    coordinator = fleet.start(fleet.root, "--once")
    worker = fleet.worker("w1")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert len(of_type(events, "agent.claimed")) == 1
    assert of_type(events, "agent.lease_expired") == []
    assert worker.logged("push_failed")
    assert not worker.logged("worker_backing_off")
    assert "A = 1" in git(fleet.root, "show", "main:a.py")
