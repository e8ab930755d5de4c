"""Repository scopes: several repositories' logs in one database, each a complete log of its own
(seq from 1, stream versions, hash chain and head, snapshots, reads and follow), on SQLite and
PostgreSQL. A scope is what `[batchd] repo_id` names (see daemon/workspace.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Append, ConcurrencyError, EventLog, StoreError
from store.hashing import GENESIS_HASH, chain_hash, genesis_hash
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
    """Change the database behind the store's back (``;``-separated statements, one transaction)."""
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


def test_snapshots_are_kept_per_scope(backend: str) -> None:
    """A snapshot saved under one repository is not another repository's snapshot of the same name."""
    with EventLog(backend, scope="repo-a", reg=REG) as a, EventLog(backend, scope="repo-b", reg=REG) as b:
        a.save_snapshot("projection", 0, {"owner": "a"})
        assert b.load_snapshot("projection") is None
        b.save_snapshot("projection", 0, {"owner": "b"})
        loaded_a, loaded_b = a.load_snapshot("projection"), b.load_snapshot("projection")
        assert loaded_a is not None and loaded_b is not None
        assert (loaded_a.state, loaded_b.state) == ({"owner": "a"}, {"owner": "b"})
        assert loaded_a.check == loaded_b.check == "ok"


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


def test_the_empty_scope_chains_from_the_v1_genesis(backend: str) -> None:
    """A log's own scope "" starts its chain at the all-zero hash, exactly as a v1 log did."""
    with EventLog(backend, reg=REG) as log:
        (ev,) = log.append("s", [Noted(text="x")])
    body = (ev.stream, ev.version, ev.type, ev.type_version)
    assert ev.hash == chain_hash(GENESIS_HASH, 1, *body, '{"n":0,"text":"x"}', ev.recorded_at)


def test_a_named_scope_chains_from_its_own_genesis(backend: str) -> None:
    """The first event of scope "repo-a" links to a hash of that name, not to the shared all-zero one."""
    with EventLog(backend, scope="repo-a", reg=REG) as log:
        (ev,) = log.append("s", [Noted(text="x")])
    assert genesis_hash("repo-a") != GENESIS_HASH
    body = (ev.stream, ev.version, ev.type, ev.type_version)
    assert ev.hash == chain_hash(genesis_hash("repo-a"), 1, *body, '{"n":0,"text":"x"}', ev.recorded_at)


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


def test_a_scope_moved_wholesale_into_another_name_fails_verify(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Renaming every row of one repository to another id (events, head) is caught at its first event."""
    with EventLog(backend, scope="repo-a", reg=REG) as a:
        a.append("s", [Noted(text=str(n)) for n in range(3)])
    edit(
        request,
        backend,
        "UPDATE batchd_events SET scope = 'repo-z' WHERE scope = 'repo-a';"
        "UPDATE batchd_meta SET scope = 'repo-z' WHERE scope = 'repo-a'",
    )
    with EventLog(backend, scope="repo-z", reg=REG) as z:
        report = z.verify()
    assert (report.first_bad_seq, report.problem) == (1, "content does not match its hash (edited or moved)")


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


def test_scope_with_hostile_text_is_kept_as_data(backend: str) -> None:
    """A repository id with quotes, markup and non-ASCII is stored and matched as plain data."""
    hostile = "o'hara\"; DROP TABLE batchd_events; -- <script>é"
    with EventLog(backend, scope=hostile, reg=REG) as h, EventLog(backend, reg=REG) as own:
        h.append("s", [Noted(text="h")])
        own.append("s", [Noted(text="own")])
        assert [e.payload["text"] for e in h.read()] == ["h"]
        assert h.verify().ok and own.verify().ok


@pytest.mark.parametrize(
    ("scope", "why"),
    [("x" * 101, "more than 100"), ("repo\nid", "control characters"), ("tab\there", "control characters")],
)
def test_unusable_scope_is_refused_at_open(tmp_path: Path, scope: str, why: str) -> None:
    """A repository id too long for the column, or with control characters, is refused naming it."""
    with pytest.raises(StoreError, match=why) as info:
        EventLog(tmp_path / "events.db", scope=scope, reg=REG)
    assert "repo_id" in info.value.hint
