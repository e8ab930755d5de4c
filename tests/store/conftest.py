"""Store fixtures: logs on a real SQLite file, in memory and on a real PostgreSQL server (a fresh
database per test, see tests/pgserver.py), and a clock tests can move.

``log`` is the contract suite's store on all three; ``backend`` is a URL on SQLite or PostgreSQL, for
tests that open the log more than once or from another process (an in-memory log cannot be reopened).
The PostgreSQL cases are named ``postgresql`` (``-k "not postgresql"`` leaves them out)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store import EventLog
from tests.store.events import REG


class ManualClock:
    """A clock that only moves when told: point-in-time reads need known timestamps."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


def _target(request: pytest.FixtureRequest, kind: str, db_path: Path) -> str:
    if kind == "postgresql":
        # Asked for lazily, so the SQLite cases never start (or wait for) the server.
        return str(request.getfixturevalue("pg_url"))
    return "sqlite://" if kind == "memory" else str(db_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, db_path: Path) -> str:
    """Where a log lives, as EventLog takes it: an SQLite file (its path) or a new PostgreSQL database."""
    return _target(request, str(request.param), db_path)


def is_postgres(target: str) -> bool:
    return target.startswith("postgresql")


@pytest.fixture(params=["file", "memory", "postgresql"])
def log(request: pytest.FixtureRequest, db_path: Path, clock: ManualClock) -> Iterator[EventLog]:
    """The contract suite's store: the same tests run on a file, on ``sqlite://`` in memory and on
    PostgreSQL."""
    with EventLog(_target(request, str(request.param), db_path), reg=REG, clock=clock) as opened:
        yield opened


@pytest.fixture
def file_log(db_path: Path, clock: ManualClock) -> Iterator[EventLog]:
    with EventLog(db_path, reg=REG, clock=clock) as opened:
        yield opened
