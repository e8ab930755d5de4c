"""Schema versions and the ordered steps between them, per dialect.

The database's version is the ``schema_version`` row of ``batchd_meta`` (scope ``""``; in v1 that
table had no scope). Opening a log:

- an empty database gets the current tables of :mod:`store.schema` at once (no steps run);
- an older one runs each step of :data:`STEPS` it lacks, in order, **each in one transaction**
  that also records the new version, so a crash leaves the database at a version, never between;
- a newer one is refused (:class:`SchemaTooNew`): this code cannot know what it means.

Writers are serialised the way each backend serialises writes: SQLite's ``BEGIN IMMEDIATE``, and
on PostgreSQL a database-wide advisory lock; the version is read again under the lock, so two
processes opening one old log migrate it once.

Steps are written per dialect because the two need different DDL: SQLite cannot change a primary
key in place (a table is rebuilt: rename, create, copy, drop), PostgreSQL alters it. A step's SQL
is fixed text: it describes a past schema, which must not follow later edits of ``store.schema``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, column, inspect, select, table

from store.exceptions import LogCorrupted, NotADatabase, SchemaTooNew, StoreError
from store.schema import SCHEMA_VERSION, meta, metadata

#: v1's meta table as v1 wrote it (no scope): enough to read the version of any batchd database.
_version_row = table("batchd_meta", column("key"), column("value"))


@dataclass(frozen=True, slots=True)
class Step:
    """Brings a database from ``version - 1`` to ``version``."""

    version: int
    description: str
    by_dialect: Mapping[str, Callable[[Connection], None]]


def _v2_sqlite(conn: Connection) -> None:
    # Rebuild each table: SQLite cannot add a column to a primary key. The new tables are the
    # current schema's only while it is v2; later versions must freeze this DDL here.
    for name in ("batchd_events", "batchd_snapshots", "batchd_meta"):
        conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {name}_v1")
    conn.exec_driver_sql(
        "CREATE TABLE batchd_events ("
        " scope VARCHAR(100) DEFAULT '' NOT NULL, seq INTEGER NOT NULL, stream VARCHAR(200) NOT NULL,"
        " version INTEGER NOT NULL, type VARCHAR(200) NOT NULL, type_version INTEGER NOT NULL,"
        " payload TEXT NOT NULL, recorded_at VARCHAR(32) NOT NULL, hash VARCHAR(64) NOT NULL,"
        " PRIMARY KEY (scope, seq),"
        " CONSTRAINT uq_scope_stream_version UNIQUE (scope, stream, version)) WITHOUT ROWID"
    )
    conn.exec_driver_sql(
        "CREATE TABLE batchd_snapshots ("
        " scope VARCHAR(100) DEFAULT '' NOT NULL, name VARCHAR(200) NOT NULL, seq INTEGER NOT NULL,"
        " state TEXT NOT NULL, recorded_at VARCHAR(32) NOT NULL, PRIMARY KEY (scope, name))"
    )
    conn.exec_driver_sql(
        "CREATE TABLE batchd_meta ("
        " scope VARCHAR(100) DEFAULT '' NOT NULL, \"key\" VARCHAR(64) NOT NULL, value TEXT NOT NULL,"
        ' PRIMARY KEY (scope, "key"))'
    )
    conn.exec_driver_sql(
        "INSERT INTO batchd_events (scope, seq, stream, version, type, type_version, payload,"
        " recorded_at, hash) SELECT '', seq, stream, version, type, type_version, payload, recorded_at,"
        " hash FROM batchd_events_v1 ORDER BY seq"
    )
    conn.exec_driver_sql(
        "INSERT INTO batchd_snapshots (scope, name, seq, state, recorded_at)"
        " SELECT '', name, seq, state, recorded_at FROM batchd_snapshots_v1"
    )
    conn.exec_driver_sql(
        'INSERT INTO batchd_meta (scope, "key", value) SELECT \'\', "key", value FROM batchd_meta_v1'
    )
    for name in ("batchd_events", "batchd_snapshots", "batchd_meta"):
        conn.exec_driver_sql(f"DROP TABLE {name}_v1")  # its indexes go with it
    conn.exec_driver_sql("CREATE INDEX ix_events_scope_recorded_at ON batchd_events (scope, recorded_at)")


def _v2_postgresql(conn: Connection) -> None:
    insp = inspect(conn)
    scope = "ADD COLUMN scope VARCHAR(100) DEFAULT '' NOT NULL"
    for name, key in (
        ("batchd_events", "scope, seq"),
        ("batchd_snapshots", "scope, name"),
        ("batchd_meta", "scope, key"),
    ):
        # v1's primary keys were named by the server: ask for the name rather than assume it.
        pk = insp.get_pk_constraint(name)["name"]
        conn.exec_driver_sql(f'ALTER TABLE {name} {scope}, DROP CONSTRAINT "{pk}", ADD PRIMARY KEY ({key})')
    conn.exec_driver_sql(
        "ALTER TABLE batchd_events DROP CONSTRAINT uq_stream_version,"
        " ADD CONSTRAINT uq_scope_stream_version UNIQUE (scope, stream, version)"
    )
    conn.exec_driver_sql("DROP INDEX ix_events_recorded_at")
    conn.exec_driver_sql("CREATE INDEX ix_events_scope_recorded_at ON batchd_events (scope, recorded_at)")


#: Every step, in order; the last one's version is SCHEMA_VERSION.
STEPS: tuple[Step, ...] = (
    Step(
        2,
        "repository scope: a scope column in every table, keys (scope, seq), (scope, stream, version)",
        {"sqlite": _v2_sqlite, "postgresql": _v2_postgresql},
    ),
)
assert STEPS[-1].version == SCHEMA_VERSION, "a schema change needs its migration step"


def found_version(conn: Connection, location: str) -> int | None:
    """The database's schema version; None when it has no tables at all (a new database)."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return None
    if meta.name not in tables:
        names = ", ".join(sorted(tables))
        raise NotADatabase(path=location, detail=f"it is a database of something else (tables: {names})")
    value = conn.execute(select(_version_row.c.value).where(_version_row.c.key == "schema_version")).scalar()
    try:
        found = int(value) if value is not None else 0
    except ValueError:
        found = 0
    if found < 1:
        raise NotADatabase(path=location, detail="its batchd_meta table has no valid schema version")
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(path=location, found=found, supported=SCHEMA_VERSION)
    missing = {t.name for t in metadata.sorted_tables} - tables
    if missing:
        raise LogCorrupted(path=location, seq=None, detail=f"tables {sorted(missing)} are missing")
    return found


WriteTxn = Callable[[], AbstractContextManager[Connection]]


def open_schema(engine: Engine, location: str, write: WriteTxn) -> int:
    """Create or migrate the database to SCHEMA_VERSION; returns the version it was found at (0: new).

    ``write()`` opens a write transaction that holds the backend's schema lock.
    """
    with engine.connect() as conn, conn.begin():
        found = found_version(conn, location)
    if found == SCHEMA_VERSION:
        return found
    with write() as conn:
        again = found_version(conn, location)
        if again is None:
            metadata.create_all(conn)
            conn.execute(
                meta.insert(), [{"scope": "", "key": "schema_version", "value": str(SCHEMA_VERSION)}]
            )
            return 0
    start = again
    for step in STEPS:
        with write() as conn:
            now = found_version(conn, location)
            if now is None or now >= step.version:
                continue  # another process got here first
            run = step.by_dialect.get(conn.dialect.name)
            if run is None:
                raise StoreError(
                    f"{location} is at event-log schema {now} and batchd has no step to {step.version}"
                    f" for {conn.dialect.name}",
                    hint="open it with the batchd that wrote it and export, or use SQLite or PostgreSQL",
                )
            run(conn)
            conn.execute(
                _version_row.update()
                .where(_version_row.c.key == "schema_version")
                .values(value=str(step.version))
            )
    return start
