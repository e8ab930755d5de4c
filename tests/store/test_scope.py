"""Repository scopes: several logs in one database, each complete on its own (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from store import Append, ConcurrencyError, EventLog, StoreError
from store.hashing import GENESIS_HASH, chain_hash, genesis_hash
from tests.store.conftest import is_postgres
from tests.store.events import REG, Noted


def _open(target: str, scope: str) -> EventLog:
    return EventLog(target, scope=scope, reg=REG)


def _run_sql(target: str, sql: str) -> None:
    """Change the database behind the store's back, as a person with a SQL prompt would."""
    if is_postgres(target):
        engine = create_engine(target, poolclass=NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
        engine.dispose()
    else:
        with sqlite3.connect(target) as conn:
            conn.execute(sql)
        conn.close()


def test_each_scope_counts_its_own_seq_from_one(backend: str) -> None:
    """A second repository's first event is seq 1 of its own, whatever the first has written."""
    with _open(backend, "repo-a") as a, _open(backend, "repo-b") as b:
        a.append("s", [Noted(text=str(n)) for n in range(3)])
        (first,) = b.append("s", [Noted(text="b")])
        assert (first.seq, first.version) == (1, 1)
        assert (a.last_seq(), b.last_seq()) == (3, 1)


def test_reads_see_only_their_own_scope(backend: str) -> None:
    """read, read_stream and stream_version never show another repository's events."""
    with _open(backend, "repo-a") as a, _open(backend, "repo-b") as b:
        a.append("todo-1", [Noted(text="a1"), Noted(text="a2")])
        b.append("todo-1", [Noted(text="b1")])
        assert [e.payload["text"] for e in b.read()] == ["b1"]
        assert [e.payload["text"] for e in a.read_stream("todo-1")] == ["a1", "a2"]
        assert (a.stream_version("todo-1"), b.stream_version("todo-1")) == (2, 1)


def test_expected_versions_are_checked_per_scope(backend: str) -> None:
    """The same stream name in two repositories has two versions: a check in one ignores the other."""
    with _open(backend, "repo-a") as a, _open(backend, "repo-b") as b:
        a.append("run", [Noted(text="a")], expected_version=0)
        b.append("run", [Noted(text="b")], expected_version=0)
        with pytest.raises(ConcurrencyError) as info:
            b.append_many([Append("run", [Noted(text="late")], expected_version=0)])
        assert info.value.actual == 1


def test_snapshots_are_kept_per_scope(backend: str) -> None:
    """A snapshot saved under one repository is not another repository's snapshot of the same name."""
    with _open(backend, "repo-a") as a, _open(backend, "repo-b") as b:
        a.save_snapshot("projection", 0, {"owner": "a"})
        assert b.load_snapshot("projection") is None
        b.save_snapshot("projection", 0, {"owner": "b"})
        loaded_a, loaded_b = a.load_snapshot("projection"), b.load_snapshot("projection")
        assert loaded_a is not None and loaded_b is not None
        assert (loaded_a.state, loaded_b.state) == ({"owner": "a"}, {"owner": "b"})
        assert loaded_a.check == loaded_b.check == "ok"


def test_the_empty_scope_chains_from_the_v1_genesis(backend: str) -> None:
    """A log's own scope "" starts its chain at the all-zero hash, exactly as a v1 log did."""
    with _open(backend, "") as log:
        (ev,) = log.append("s", [Noted(text="x")])
    body = (ev.stream, ev.version, ev.type, ev.type_version)
    assert ev.hash == chain_hash(GENESIS_HASH, 1, *body, '{"n":0,"text":"x"}', ev.recorded_at)


def test_a_named_scope_chains_from_its_own_genesis(backend: str) -> None:
    """The first event of scope "repo-a" links to a hash of that name, not to the shared all-zero one."""
    with _open(backend, "repo-a") as log:
        (ev,) = log.append("s", [Noted(text="x")])
    assert genesis_hash("repo-a") != GENESIS_HASH
    body = (ev.stream, ev.version, ev.type, ev.type_version)
    assert ev.hash == chain_hash(genesis_hash("repo-a"), 1, *body, '{"n":0,"text":"x"}', ev.recorded_at)


def test_verify_checks_one_scope_alone(backend: str) -> None:
    """An edit in one repository's events fails its verify and leaves the other's clean."""
    with _open(backend, "repo-a") as a, _open(backend, "repo-b") as b:
        a.append("s", [Noted(text=str(n)) for n in range(3)])
        b.append("s", [Noted(text=str(n)) for n in range(3)])
        _run_sql(
            backend,
            'UPDATE batchd_events SET payload = \'{"n":0,"text":"forged"}\' '
            "WHERE scope = 'repo-a' AND seq = 2",
        )
        assert a.verify().first_bad_seq == 2
        assert b.verify().ok


def test_a_scope_moved_wholesale_into_another_name_fails_verify(backend: str) -> None:
    """Renaming every row of one repository to another id (events, head) is caught at its first event."""
    with _open(backend, "repo-a") as a:
        a.append("s", [Noted(text=str(n)) for n in range(3)])
    _run_sql(backend, "UPDATE batchd_events SET scope = 'repo-z' WHERE scope = 'repo-a'")
    _run_sql(backend, "UPDATE batchd_meta SET scope = 'repo-z' WHERE scope = 'repo-a'")
    with _open(backend, "repo-z") as z:
        report = z.verify()
    assert (report.first_bad_seq, report.problem) == (1, "content does not match its hash (edited or moved)")


def test_scope_with_hostile_text_is_kept_as_data(backend: str) -> None:
    """A repository id with quotes, markup and non-ASCII is stored and matched as plain data."""
    hostile = "o'hara\"; DROP TABLE batchd_events; -- <script>é"
    with _open(backend, hostile) as h, _open(backend, "") as own:
        h.append("s", [Noted(text="h")])
        own.append("s", [Noted(text="own")])
        assert [e.payload["text"] for e in h.read()] == ["h"]
        assert h.verify().ok and own.verify().ok


@pytest.mark.parametrize(("scope", "why"), [("x" * 101, "more than 100"), ("repo\nid", "control characters")])
def test_unusable_scope_is_refused_at_open(tmp_path: Path, scope: str, why: str) -> None:
    """A repository id too long for the column, or with control characters, is refused naming it."""
    with pytest.raises(StoreError, match=why) as info:
        EventLog(tmp_path / "events.db", scope=scope, reg=REG)
    assert "repo_id" in info.value.hint
