"""The records the log hands out and takes in: stored events, appends, snapshots, and its timestamps.

Kept apart from :mod:`store.eventlog` (which re-exports them) so the log's module is its logic only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from store.registry import EventRegistry, registry


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC, so text order is time order."""
    # isoformat is twice as fast as strftime and zero-pads the year; "+00:00" becomes "Z".
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def seconds_since(recorded_at: str, now: datetime | None = None) -> float:
    """Seconds from a ``recorded_at`` stamp to ``now`` (default: the clock), never negative; 0.0
    for an empty stamp."""
    if not recorded_at:
        return 0.0
    return max(0.0, ((now or datetime.now(UTC)) - parse_time(recorded_at)).total_seconds())


class StoredEvent(NamedTuple):
    """One row of the log, as read back.

    A NamedTuple rather than a frozen dataclass: replay builds a million of these, and a tuple is
    made about five times faster (0.5 us against 2.4 us here), which is a fifth of replay's time.
    """

    seq: int
    stream: str
    version: int
    type: str
    type_version: int
    payload: dict[str, Any]
    recorded_at: str
    hash: str

    @property
    def time(self) -> datetime:
        return parse_time(self.recorded_at)

    def decode(self, reg: EventRegistry = registry) -> Any:
        """The domain event this row holds, upcast to the current version of its class."""
        return reg.decode(self.type, self.type_version, self.payload, seq=self.seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "type_version": self.type_version,
            "payload": self.payload,
            "recorded_at": self.recorded_at,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Append:
    """One stream's part of an atomic append. ``expected_version=None`` appends without a check."""

    stream: str
    events: Sequence[object]
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    name: str
    seq: int
    state: dict[str, Any]
    recorded_at: str
    check: str = "ok"  # against the hash saved with it: ok | unhashed (an older batchd) | edited


def url_for(path_or_url: str | Path) -> str:
    """Accept a plain path (SQLite) or any SQLAlchemy URL."""
    text = str(path_or_url)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"
