"""Schema migrations: a new database gets the current schema, a v1 log is brought up to it and still
verifies, on SQLite and (the v1 fixture's rows copied into a v1 schema) on PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    inspect,
)
from sqlalchemy.pool import NullPool

from statemachine.projection import replay
from store import EventLog
from store.schema import SCHEMA_VERSION
from tests.store.conftest import is_postgres
from tests.store.events import REG, Noted

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "logs" / "demo-run-v1.db"
FIXTURE_EVENTS = 363  # events in the recorded demo log
TABLES = ("batchd_events", "batchd_snapshots", "batchd_meta")

# The v1 schema exactly as batchd 0.1 declared it: what an old PostgreSQL log looks like.
V1 = MetaData()
Table(
    "batchd_events",
    V1,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("stream", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(200), nullable=False),
    Column("type_version", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream", "version", name="uq_stream_version"),
    Index("ix_events_recorded_at", "recorded_at"),
)
Table(
    "batchd_snapshots",
    V1,
    Column("name", String(200), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("recorded_at", String(32), nullable=False),
)
Table("batchd_meta", V1, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))


def _engine(target: str) -> Engine:
    url = target if is_postgres(target) else f"sqlite:///{target}"
    return create_engine(url, poolclass=NullPool)


def _fixture_rows() -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in TABLES}
    finally:
        conn.close()


@pytest.fixture
def v1_log(backend: str) -> str:
    """A v1 log holding the recorded demo run: the fixture file copied (SQLite), or its rows copied
    into the v1 tables of a fresh database (PostgreSQL)."""
    if not is_postgres(backend):
        shutil.copyfile(FIXTURE, backend)
        return backend
    engine = _engine(backend)
    with engine.begin() as conn:
        V1.create_all(conn)
        for name, rows in _fixture_rows().items():
            conn.execute(V1.tables[name].insert(), rows)
    engine.dispose()
    return backend


def _version(target: str) -> str:
    engine = _engine(target)
    with engine.connect() as conn:
        value = conn.exec_driver_sql("SELECT value FROM batchd_meta WHERE key = 'schema_version'").scalar()
    engine.dispose()
    return str(value)


def _shape(target: str) -> dict[str, Any]:
    """Columns, keys and indexes of every table, as the database reports them (order-free)."""
    engine = _engine(target)
    with engine.connect() as conn:
        insp = inspect(conn)
        shape = {
            t: {
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in insp.get_columns(t)
                ),
                "pk": sorted(insp.get_pk_constraint(t)["constrained_columns"]),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)
                ),
                "indexes": sorted(
                    (i["name"], tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(t)
                    if not str(i["name"]).startswith("sqlite_autoindex")
                ),
            }
            for t in TABLES
        }
        if not is_postgres(target):
            ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'batchd_events'").scalar()
            shape["events_without_rowid"] = str(ddl).rstrip().upper().endswith("WITHOUT ROWID")
    engine.dispose()
    return shape


@pytest.fixture
def fresh(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second new database of the same backend, made by the current code."""
    target = str(request.getfixturevalue("pg_url")) if is_postgres(backend) else str(tmp_path / "fresh.db")
    EventLog(target, reg=REG).close()
    yield target


def test_a_new_database_is_created_at_the_current_version(backend: str) -> None:
    """Opening an empty database creates the tables and records the current schema version."""
    EventLog(backend, reg=REG).close()
    assert _version(backend) == str(SCHEMA_VERSION) == "2"


def test_a_v1_log_is_migrated_to_the_current_version(v1_log: str) -> None:
    """Opening the recorded v1 log brings it to the current schema version."""
    EventLog(v1_log, reg=REG).close()
    assert _version(v1_log) == str(SCHEMA_VERSION)


def test_a_migrated_v1_log_still_verifies(v1_log: str) -> None:
    """Every v1 event keeps its hash: the whole chain and the head check out after the migration."""
    with EventLog(v1_log, reg=REG) as log:
        report = log.verify()
    assert report.ok, report.problem
    assert report.checked == FIXTURE_EVENTS


def test_a_migrated_v1_log_is_the_unscoped_log(v1_log: str) -> None:
    """v1's events become scope "": the repository's own log, with nothing in any named scope."""
    with EventLog(v1_log, reg=REG) as own, EventLog(v1_log, scope="demo", reg=REG) as other:
        assert (own.last_seq(), other.last_seq()) == (FIXTURE_EVENTS, 0)


def test_a_migrated_v1_log_replays_to_the_recorded_outcome(v1_log: str) -> None:
    """The demo run replays from the migrated log as it did from v1: 26 complete, snapshot + tail agree,
    and the snapshot keeps its scope-less v1 standing (recorded before snapshots were hashed)."""
    with EventLog(v1_log) as log:
        from_zero = replay(log, use_snapshot=False)
        assert replay(log, use_snapshot=True) == from_zero
        snap = log.load_snapshot("projection")
    assert sum(1 for t in from_zero.todos.values() if str(t.state) == "complete") == 26
    assert snap is not None and (snap.seq, snap.check) == (FIXTURE_EVENTS, "unhashed")


def test_a_migrated_v1_log_takes_new_appends_on_its_chain(v1_log: str) -> None:
    """After the migration, appends continue the v1 seqs and chain, and the whole log verifies."""
    with EventLog(v1_log, reg=REG) as log:
        (ev,) = log.append("after-migration", [Noted(text="new")], expected_version=0)
        assert ev.seq == FIXTURE_EVENTS + 1
        assert log.verify().ok


def test_a_migrated_database_has_the_shape_of_a_new_one(v1_log: str, fresh: str) -> None:
    """Columns, primary keys, unique constraints and indexes after v1 -> v2 are those a new log gets."""
    EventLog(v1_log, reg=REG).close()
    assert _shape(v1_log) == _shape(fresh)


def test_two_processes_opening_a_v1_log_at_once_migrate_it_once(v1_log: str, tmp_path: Path) -> None:
    """Two processes that open the same v1 log together both succeed and see every event once."""
    go = tmp_path / "go"
    code = (
        "import sys, time, pathlib\n"
        "from store import EventLog\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "print('ready', flush=True)\n"
        "while not go.exists(): time.sleep(0.001)\n"
        "with EventLog(sys.argv[1]) as log: print(log.last_seq(), log.verify().ok, flush=True)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, v1_log, str(go)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == [f"{FIXTURE_EVENTS} True"] * 2
    assert _version(v1_log) == str(SCHEMA_VERSION)


def test_the_fixture_file_itself_is_never_changed() -> None:
    """The recorded v1 fixture stays at schema 1 (tests migrate copies only)."""
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM batchd_meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    assert row == ("1",)
