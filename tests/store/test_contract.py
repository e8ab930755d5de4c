"""The store contract, run against a SQLite file, ``sqlite://`` in memory and PostgreSQL."""

from __future__ import annotations

import pytest

import store.eventlog
from store import Append, ConcurrencyError, EventLog
from store.eventlog import GENESIS_HASH, canonical_json, chain_hash
from store.registry import RegistryError
from tests.store.conftest import ManualClock
from tests.store.events import REG, Noted, Tagged


def notes(*texts: str) -> list[Noted]:
    return [Noted(text=t) for t in texts]


def test_empty_log_reads_nothing(log: EventLog) -> None:
    """A new log has no events, last_seq 0 and version 0 for any stream."""
    assert list(log.read()) == []
    assert log.last_seq() == 0
    assert log.stream_version("todo:1") == 0


def test_append_returns_what_read_gives_back(log: EventLog) -> None:
    """The StoredEvents returned by append equal the ones read back."""
    written = log.append("todo:1", notes("a", "b"), expected_version=0)
    assert list(log.read()) == written
    assert [(e.seq, e.version) for e in written] == [(1, 1), (2, 2)]


def test_decode_round_trips_the_event(log: EventLog) -> None:
    """An event decoded from its row equals the event appended, tuples included."""
    original = Tagged(tags=("x", "y"), extra={"k": 1})
    log.append("todo:1", [original])
    (stored,) = log.read()
    assert stored.decode(REG) == original


def test_stale_expected_version_raises_and_writes_nothing(log: EventLog) -> None:
    """Appending with an old expected version raises ConcurrencyError naming both versions."""
    log.append("todo:1", notes("a"), expected_version=0)
    with pytest.raises(ConcurrencyError) as info:
        log.append("todo:1", notes("b"), expected_version=0)
    assert (info.value.stream, info.value.expected, info.value.actual) == ("todo:1", 0, 1)
    assert log.last_seq() == 1


def test_none_expected_version_appends_unchecked(log: EventLog) -> None:
    """expected_version=None appends after whatever is there."""
    log.append("todo:1", notes("a"))
    log.append("todo:1", notes("b"))
    assert log.stream_version("todo:1") == 2


def test_append_many_is_atomic_when_one_stream_is_stale(log: EventLog) -> None:
    """One stale stream in append_many leaves every stream of the batch unwritten."""
    log.append("b", notes("b1"), expected_version=0)
    with pytest.raises(ConcurrencyError):
        log.append_many([Append("a", notes("a1"), 0), Append("b", notes("b2"), 0)])
    assert list(log.read()) == list(log.read(stream="b"))
    assert log.last_seq() == 1
    assert log.verify().ok


def test_append_many_same_stream_twice_continues_versions(log: EventLog) -> None:
    """Two parts for one stream in a batch get consecutive versions, checked against the running version."""
    out = log.append_many([Append("a", notes("1"), 0), Append("a", notes("2"), 1)])
    assert [e.version for e in out] == [1, 2]
    assert log.verify().ok


def test_append_many_same_stream_twice_checks_running_version(log: EventLog) -> None:
    """The second part of a stream in one batch must expect the version after the first part."""
    with pytest.raises(ConcurrencyError):
        log.append_many([Append("a", notes("1"), 0), Append("a", notes("2"), 0)])
    assert log.last_seq() == 0


def test_empty_appends_write_nothing(log: EventLog) -> None:
    """Appending no events is a no-op and returns an empty list."""
    assert log.append("a", []) == []
    assert log.append_many([Append("a", [])]) == []
    assert log.last_seq() == 0


def test_payload_that_is_not_json_is_refused(log: EventLog) -> None:
    """An event whose fields are not plain JSON raises RegistryError and writes nothing."""
    with pytest.raises(RegistryError, match=r"test\.noted"):
        log.append("a", [Noted(text=object())])  # type: ignore[arg-type]
    assert log.last_seq() == 0


def test_read_since_until_limit(log: EventLog) -> None:
    """since is exclusive, until inclusive, limit caps the count."""
    log.append("a", notes(*"abcdef"))
    assert [e.seq for e in log.read(since=2, until=5)] == [3, 4, 5]
    assert [e.seq for e in log.read(since=1, limit=2)] == [2, 3]


def test_read_filters_by_stream(log: EventLog) -> None:
    """read(stream=) gives only that stream, in log order."""
    log.append_many([Append("a", notes("1")), Append("b", notes("2")), Append("a", notes("3"))])
    assert [e.payload["text"] for e in log.read(stream="a")] == ["1", "3"]


def test_stream_prefix_is_exact_and_case_sensitive(log: EventLog) -> None:
    """stream_prefix matches literally: no case folding, no LIKE wildcards."""
    for s in ("todo:1", "todo:2", "TODO:3", "todo_x", "todox", "other"):
        log.append(s, notes(s))
    assert [e.stream for e in log.read(stream_prefix="todo:")] == ["todo:1", "todo:2"]
    assert [e.stream for e in log.read(stream_prefix="todo_")] == ["todo_x"]


def test_read_pages_through_more_than_one_page(log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read longer than one page returns every event once, in order, with limit honoured."""
    monkeypatch.setattr(store.eventlog, "READ_PAGE", 3)
    log.append("a", notes(*"abcdefghij"))
    assert [e.seq for e in log.read()] == list(range(1, 11))
    assert [e.seq for e in log.read(since=1, limit=7)] == list(range(2, 9))


def test_read_does_not_chase_events_appended_during_it(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read stops at the last event that existed when it started."""
    monkeypatch.setattr(store.eventlog, "READ_PAGE", 2)
    log.append("a", notes(*"abcd"))
    seen = []
    for ev in log.read():
        seen.append(ev.seq)
        log.append("b", notes("more"))
    assert seen == [1, 2, 3, 4]


def test_read_stream_since_version(log: EventLog) -> None:
    """read_stream returns one stream's events after a version."""
    log.append_many([Append("a", notes("1", "2", "3")), Append("b", notes("x"))])
    assert [e.version for e in log.read_stream("a", since_version=1)] == [2, 3]


def test_point_in_time_read_uses_the_clock(log: EventLog, clock: ManualClock) -> None:
    """read(at=) returns the events recorded no later than that moment."""
    log.append("a", notes("early"))
    middle = clock.advance(10)
    log.append("a", notes("at the moment"))
    clock.advance(10)
    log.append("a", notes("late"))
    assert [e.payload["text"] for e in log.read(at=middle)] == ["early", "at the moment"]
    assert log.read(at=middle).__next__().time < middle


def test_recorded_at_is_fixed_width_utc(log: EventLog, clock: ManualClock) -> None:
    """recorded_at is ISO-8601 UTC with microseconds and a Z, so it sorts as text."""
    (ev,) = log.append("a", notes("x"))
    assert ev.recorded_at == "2026-01-01T00:00:00.000000Z"
    assert ev.time == clock.now


def test_hash_chain_links_each_event_to_the_previous(log: EventLog) -> None:
    """Each event's hash is chain_hash over the previous hash, starting from the genesis hash."""
    first, second = log.append("a", notes("1", "2"))
    assert first.hash == chain_hash(
        GENESIS_HASH, 1, "a", 1, "test.noted", 1, canonical_json(first.payload), first.recorded_at
    )
    assert second.hash == chain_hash(
        first.hash, 2, "a", 2, "test.noted", 1, canonical_json(second.payload), second.recorded_at
    )


def test_verify_passes_on_a_good_log(log: EventLog) -> None:
    """verify() walks every event and reports no problem on an untouched log."""
    log.append_many([Append("a", notes("1", "2")), Append("b", notes("3"))])
    report = log.verify()
    assert (report.ok, report.checked, report.last_seq) == (True, 3, 3)


def test_snapshot_round_trip_and_latest_wins(log: EventLog) -> None:
    """load_snapshot returns the state saved last under that name."""
    assert log.load_snapshot("proj") is None
    log.save_snapshot("proj", 1, {"todos": [1]})
    log.save_snapshot("proj", 5, {"todos": [1, 2]})
    snap = log.load_snapshot("proj")
    assert snap is not None
    assert (snap.seq, snap.state) == (5, {"todos": [1, 2]})


def test_snapshots_are_kept_per_name(log: EventLog) -> None:
    """Two projections keep their own snapshots."""
    log.save_snapshot("one", 1, {"v": 1})
    log.save_snapshot("two", 2, {"v": 2})
    one, two = log.load_snapshot("one"), log.load_snapshot("two")
    assert one is not None and two is not None
    assert (one.state, two.state) == ({"v": 1}, {"v": 2})
