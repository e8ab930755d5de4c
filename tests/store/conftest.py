"""Store fixtures: logs on a real SQLite file and in memory, and a clock tests can move."""

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


@pytest.fixture(params=["file", "memory"])
def log(request: pytest.FixtureRequest, db_path: Path, clock: ManualClock) -> Iterator[EventLog]:
    """The contract suite's store: the same tests run on a file and on ``sqlite://`` in memory."""
    target = str(db_path) if request.param == "file" else "sqlite://"
    with EventLog(target, reg=REG, clock=clock) as opened:
        yield opened


@pytest.fixture
def file_log(db_path: Path, clock: ManualClock) -> Iterator[EventLog]:
    with EventLog(db_path, reg=REG, clock=clock) as opened:
        yield opened
