"""Repository scopes: several repositories' logs in one database, each a complete log of its own
(seq from 1, stream versions, hash chain and head, snapshots, reads and follow), on SQLite and
PostgreSQL. A scope is what `[batchd] repo_id` names (see daemon/workspace.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Append, ConcurrencyError, EventLog
from tests.pgserver import PgServer
from tests.store.conftest import is_postgres
from tests.store.events import REG, Noted


def notes(*texts: str) -> list[Noted]:
    return [Noted(text=t) for t in texts]


@pytest.fixture
def pair(backend: str) -> Iterator[tuple[EventLog, EventLog]]:
    """Two repositories' logs in one database."""
    with (
        EventLog(backend, scope="acme/one", reg=REG) as one,
        EventLog(backend, scope="acme/two", reg=REG) as two,
    ):
        yield one, two


def edit(request: pytest.FixtureRequest, target: str, sql: str) -> None:
    """Change the database behind the store's back."""
    if is_postgres(target):
        server: PgServer = request.getfixturevalue("pg_server")
        server.execute_script(sql, url=target)
        return
    conn = sqlite3.connect(target)
    try:
        conn.executescript(sql)
    finally:
        conn.close()


def test_each_scope_numbers_its_events_from_one(pair: tuple[EventLog, EventLog]) -> None:
    """Interleaved appends to two scopes give each scope gap-free seqs from 1."""
    one, two = pair
    for n in range(3):
        one.append("a", notes(f"one {n}"))
        two.append("a", notes(f"two {n}"), expected_version=n)
    assert [e.seq for e in one.read()] == [1, 2, 3]
    assert [e.seq for e in two.read()] == [1, 2, 3]
    assert (one.last_seq(), two.last_seq()) == (3, 3)


def test_reads_see_only_their_scope(pair: tuple[EventLog, EventLog]) -> None:
    """read, read_stream, stream_version and stream_prefix reads return the scope's own events only."""
    one, two = pair
    one.append_many([Append("todo:1", notes("mine")), Append("todo:2", notes("mine too"))])
    two.append("todo:1", notes("theirs", "theirs again"))
    assert [e.payload["text"] for e in one.read()] == ["mine", "mine too"]
    assert [e.payload["text"] for e in one.read_stream("todo:1")] == ["mine"]
    assert [e.stream for e in one.read(stream_prefix="todo:")] == ["todo:1", "todo:2"]
    assert (one.stream_version("todo:1"), two.stream_version("todo:1")) == (1, 2)
    assert two.stream_version("todo:2") == 0


def test_expected_versions_are_checked_per_scope(pair: tuple[EventLog, EventLog]) -> None:
    """The same stream name in two scopes has two versions: expecting 0 in each succeeds once each."""
    one, two = pair
    one.append("todo:1", notes("one"), expected_version=0)
    two.append("todo:1", notes("two"), expected_version=0)
    with pytest.raises(ConcurrencyError) as info:
        two.append("todo:1", notes("stale"), expected_version=0)
    assert info.value.actual == 1


def test_snapshots_are_kept_per_scope(pair: tuple[EventLog, EventLog]) -> None:
    """A snapshot saved under one name in one scope is not another scope's."""
    one, two = pair
    one.append("a", notes("x"))
    one.save_snapshot("proj", 1, {"who": "one"})
    assert two.load_snapshot("proj") is None
    snap = one.load_snapshot("proj")
    assert snap is not None
    assert snap.state == {"who": "one"}


def test_follow_yields_only_its_scope(pair: tuple[EventLog, EventLog]) -> None:
    """A follower of one scope skips the other scope's appends."""
    one, two = pair
    two.append("a", notes("theirs"))
    one.append("a", notes("mine 1"))
    two.append("a", notes("theirs 2"))
    one.append("a", notes("mine 2"))
    stream = one.follow(poll_interval=0.005)
    try:
        assert [next(stream).payload["text"], next(stream).payload["text"]] == ["mine 1", "mine 2"]
    finally:
        stream.close()


def test_tampering_in_one_scope_is_named_there_only(
    request: pytest.FixtureRequest, backend: str, pair: tuple[EventLog, EventLog]
) -> None:
    """A payload edited in one scope fails that scope's verify at its seq; the other still verifies."""
    one, two = pair
    one.append("a", notes("1", "2", "3"))
    two.append("a", notes("1", "2", "3"))
    edit(
        request,
        backend,
        "UPDATE batchd_events SET payload = '{\"text\":\"forged\"}' WHERE scope = 'acme/two' AND seq = 2",
    )
    assert one.verify().ok
    report = two.verify()
    assert (report.ok, report.first_bad_seq) == (False, 2)


def test_a_scope_copied_under_another_name_does_not_verify(
    request: pytest.FixtureRequest, backend: str, pair: tuple[EventLog, EventLog]
) -> None:
    """Rows and head copied from one scope into another (to pass one repository's history off as
    another's) fail verify at the first event: each chain is bound to its scope."""
    one, _ = pair
    one.append("a", notes("1", "2"))
    columns = "seq, stream, version, type, type_version, payload, recorded_at, hash"
    edit(
        request,
        backend,
        f"INSERT INTO batchd_events (scope, {columns}) SELECT 'acme/copy', {columns} "
        "FROM batchd_events WHERE scope = 'acme/one';"
        "INSERT INTO batchd_meta (scope, key, value) SELECT 'acme/copy', key, value "
        "FROM batchd_meta WHERE scope = 'acme/one' AND key = 'head'",
    )
    with EventLog(backend, scope="acme/copy", reg=REG) as copy:
        assert [e.payload["text"] for e in copy.read()] == ["1", "2"]
        report = copy.verify()
    assert (report.ok, report.first_bad_seq) == (False, 1)


def test_the_unscoped_log_is_a_scope_like_the_others(backend: str, pair: tuple[EventLog, EventLog]) -> None:
    """Scope "" (an SQLite log's, a v1 log's) neither sees nor is seen by the named scopes."""
    one, _ = pair
    one.append("a", notes("named"))
    with EventLog(backend, reg=REG) as plain:
        assert plain.scope == ""
        assert list(plain.read()) == []
        plain.append("a", notes("plain"), expected_version=0)
        assert plain.verify().ok
    assert [e.payload["text"] for e in one.read()] == ["named"]


def test_scope_that_the_store_cannot_hold_is_refused(tmp_path: Path) -> None:
    """A scope longer than 100 characters or with control characters is a store error at open."""
    from store import StoreError

    for bad in ("x" * 101, "tab\there"):
        with pytest.raises(StoreError, match="repository id"):
            EventLog(tmp_path / "e.db", scope=bad, reg=REG)
