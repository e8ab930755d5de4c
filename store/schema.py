"""The only schema definition of the event store (SQLAlchemy Core tables)."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

#: Bump when the tables change; opening a newer database is refused with a clear error.
SCHEMA_VERSION = 1

metadata = MetaData()

events = Table(
    "batchd_events",
    metadata,
    # The global order; assigned by the writer inside its exclusive transaction, so it has no gaps.
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("stream", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(200), nullable=False),
    Column("type_version", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    # ISO-8601 UTC with microseconds: sorts as text, so point-in-time reads are a range scan.
    Column("recorded_at", String(32), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream", "version", name="uq_stream_version"),
    Index("ix_events_recorded_at", "recorded_at"),
)

snapshots = Table(
    "batchd_snapshots",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("recorded_at", String(32), nullable=False),
)

meta = Table(
    "batchd_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
