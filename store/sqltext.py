# ruff: noqa: S608 - SQL is built only from the schema's own identifiers; every value is a bound parameter
"""Driver SQL for the store's hot paths, written once from the ``store.schema`` tables.

The statements run on the DBAPI cursor (see :mod:`store.eventlog` for why); table and column
names come from the Core tables, so ``store/schema.py`` stays the only schema definition.
They are written in pysqlite's ``?`` style and rewritten for drivers using ``%s``.
"""

from __future__ import annotations

from typing import Any

from store.schema import events, meta, snapshots

_E = events.name
_COLUMNS = ", ".join(c.name for c in events.columns)
_SNAP_COLUMNS = ", ".join(c.name for c in snapshots.columns)


class Statements:
    """Every statement of the append, read and audit paths, in the driver's parameter style."""

    def __init__(self, paramstyle: str) -> None:
        self._percent = paramstyle in ("format", "pyformat")
        q = self._q
        # The append's one read: last seq and hash, the recorded head, and a stream's version (bind it).
        self.head = q(
            f"SELECT (SELECT max(seq) FROM {_E}),"
            f" (SELECT hash FROM {_E} WHERE seq = (SELECT max(seq) FROM {_E})),"
            f" (SELECT value FROM {meta.name} WHERE key = 'head'),"
            f" (SELECT max(version) FROM {_E} WHERE stream = ?)"
        )
        self.get_head = q(f"SELECT value FROM {meta.name} WHERE key = 'head'")
        self.set_head = q(f"UPDATE {meta.name} SET value = ? WHERE key = 'head'")
        self.insert_head = q(f"INSERT INTO {meta.name} (key, value) VALUES ('head', ?)")
        self.stream_version = q(f"SELECT max(version) FROM {_E} WHERE stream = ?")
        self.last_seq = q(f"SELECT max(seq) FROM {_E}")
        self.insert = q(f"INSERT INTO {_E} ({_COLUMNS}) VALUES ({', '.join('?' for _ in events.columns)})")
        self.all_events = q(f"SELECT {_COLUMNS} FROM {_E} ORDER BY seq")
        self.events_from = q(f"SELECT {_COLUMNS} FROM {_E} WHERE seq >= ? ORDER BY seq")
        self.hash_at = q(f"SELECT hash FROM {_E} WHERE seq = ?")
        self.get_meta = q(f"SELECT value FROM {meta.name} WHERE key = ?")
        self.delete_meta = q(f"DELETE FROM {meta.name} WHERE key = ?")
        self.insert_meta = q(f"INSERT INTO {meta.name} (key, value) VALUES (?, ?)")
        self.get_snapshot = q(f"SELECT {_SNAP_COLUMNS} FROM {snapshots.name} WHERE name = ?")
        self.delete_snapshot = q(f"DELETE FROM {snapshots.name} WHERE name = ?")
        snap_marks = ", ".join("?" for _ in snapshots.columns)
        self.insert_snapshot = q(f"INSERT INTO {snapshots.name} ({_SNAP_COLUMNS}) VALUES ({snap_marks})")
        self._selects: dict[tuple[bool, bool, bool], str] = {}

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._percent else sql

    def select_events(
        self, *, at: str | None, stream: str | None, stream_prefix: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        """A page of events: bind ``(after_seq, until_seq, *params, limit)``."""
        key = (at is not None, stream is not None, bool(stream_prefix))
        params: list[Any] = []
        if at is not None:
            params.append(at)
        if stream is not None:
            params.append(stream)
        if stream_prefix:
            # A range bound keeps the (stream, version) index usable; substr makes the match exact
            # (LIKE is case-insensitive in SQLite and gives meaning to % and _).
            params += [stream_prefix, len(stream_prefix), stream_prefix]
        sql = self._selects.get(key)
        if sql is None:
            where = ["seq > ?", "seq <= ?"]
            if key[0]:
                where.append("recorded_at <= ?")
            if key[1]:
                where.append("stream = ?")
            if key[2]:
                where.append("stream >= ? AND substr(stream, 1, ?) = ?")
            sql = self._q(f"SELECT {_COLUMNS} FROM {_E} WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?")
            self._selects[key] = sql
        return sql, tuple(params)
