"""Fixtures of the daemon tests (helpers live in ``procs.py``, imported by name)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from procs import DaemonProcess
from worker.fleet import Fleet


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``batchd run`` subprocesses; every one still running is killed (with its agents) at teardown."""
    started: list[DaemonProcess] = []

    def start(root: Path, *args: str, env: Mapping[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(root, *args, env=env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def make_fleet(tmp_path: Path, start_daemon: Callable[..., DaemonProcess]) -> Iterator[Callable[..., Fleet]]:
    """Make :class:`Fleet`s; their workers and the agents those recorded are killed at teardown."""
    made: list[Fleet] = []

    def make(todos: dict[str, str]) -> Fleet:
        fleet = Fleet(tmp_path, todos, start_daemon)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()
