"""``batchd workers`` and the workers in ``batchd status``: read from the log a real coordinator and a
real worker write, while the worker holds an agent, and after it is killed (silent past its lease)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import DaemonProcess, batchd, make_repo, wait_for
from worker.fleet import Fleet, wait_event

pytestmark = pytest.mark.timeout(180)

SLOW = "sleep: 30\nwrite: [{path: slow.py, content: 'SLOW = 1'}]"


def workers_json(root: Path) -> dict[str, Any]:
    done = batchd(root, "workers", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_workers_lists_a_worker_with_the_agent_it_holds(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet({"001": SLOW, "002": SLOW})
    fleet.start(fleet.root)
    worker = fleet.worker("w1")  # one slot: 002 waits
    wait_event(fleet.root, "agent.lease_renewed", timeout=60)
    data = workers_json(fleet.root)
    [row] = data["workers"]
    assert (row["name"], row["state"], row["slots"], row["pid"]) == ("w1", "up", 1, worker.pid)
    assert [c["id"] for c in row["claims"]] == ["001"]
    assert row["seconds_since_heartbeat"] is not None and row["seconds_since_heartbeat"] < 10
    assert data["queued"] == []  # 002 is not handed out until a worker has a slot for it
    text = batchd(fleet.root, "workers")
    assert text.returncode == 0 and "w1" in text.stdout and "#001" in text.stdout


def test_status_shows_a_killed_worker_as_silent_once_its_lease_is_past(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet({"001": SLOW})
    fleet.start(fleet.root)
    worker = fleet.worker("w1")
    wait_event(fleet.root, "agent.claimed", timeout=60)
    worker.kill()

    def silent() -> dict[str, Any] | None:
        done = batchd(fleet.root, "status", "--json")
        assert done.returncode == 0, done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data if data["workers"][0]["state"] == "silent" else None

    data = wait_for(silent, timeout=30, what="the killed worker shown silent")
    assert data["workers"][0]["name"] == "w1"
    text = batchd(fleet.root, "status")
    assert "silent" in text.stdout


def test_workers_says_so_when_none_ever_registered(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    root = tmp_path / "repo"
    make_repo(root, {"001": "write: [{path: a.py, content: 'A = 1'}]"})
    assert start_daemon(root, "--once").wait(timeout=90) == 0  # a run of its own, on its own slots
    done = batchd(root, "workers", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"workers": [], "queued": []}
    assert "no worker has registered" in batchd(root, "workers").stdout
