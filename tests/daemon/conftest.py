"""Fixtures of the daemon tests (helpers live in ``procs.py``, imported by name)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from procs import DaemonProcess


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
