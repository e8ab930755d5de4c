"""The only schema definition of the event store (SQLAlchemy Core tables), at :data:`SCHEMA_VERSION`.

Every table carries a ``scope`` (the repository id): each scope is a complete log of its own, with
its own gap-free ``seq``, stream versions, head record, hash chain and snapshots, so several
repositories can share one PostgreSQL database. An SQLite log is one repository's own: scope ``""``.
Older databases are brought here by :mod:`store.migrations`.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Bump when the tables change (and add the step to store.migrations); a newer database is refused.
SCHEMA_VERSION = 2

#: The longest repository id a scope holds.
SCOPE_LENGTH = 100


def _scope() -> Column[str]:
    # server_default: rows written without a scope (a v1 writer, a hand-made INSERT) land in "".
    return Column("scope", String(SCOPE_LENGTH), nullable=False, server_default="")


metadata = MetaData()

events = Table(
    "batchd_events",
    metadata,
    _scope(),
    # The order within a scope; assigned by the writer inside its exclusive transaction: no gaps.
    Column("seq", Integer, nullable=False, autoincrement=False),
    Column("stream", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(200), nullable=False),
    Column("type_version", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    # ISO-8601 UTC with microseconds: sorts as text, so point-in-time reads are a range scan.
    Column("recorded_at", String(32), nullable=False),
    Column("hash", String(64), nullable=False),
    PrimaryKeyConstraint("scope", "seq"),
    UniqueConstraint("scope", "stream", "version", name="uq_scope_stream_version"),
    Index("ix_events_scope_recorded_at", "scope", "recorded_at"),
    # SQLite: rows stored in (scope, seq) order, so reading a scope in order is one range scan of
    # the table itself rather than an index walk plus a row lookup per event (see bench/store.py).
    sqlite_with_rowid=False,
)

snapshots = Table(
    "batchd_snapshots",
    metadata,
    _scope(),
    Column("name", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("recorded_at", String(32), nullable=False),
    PrimaryKeyConstraint("scope", "name"),
)

meta = Table(
    "batchd_meta",
    metadata,
    _scope(),
    Column("key", String(64), nullable=False),
    Column("value", Text, nullable=False),
    # The database's own rows (schema_version) live in scope "": they are not any repository's.
    PrimaryKeyConstraint("scope", "key"),
)
