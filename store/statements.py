"""Every statement of the store's append, read and audit paths: SQLAlchemy Core, compiled once per dialect.

The statements are built from the :mod:`store.schema` tables (the only schema definition) and
compiled with the engine's own dialect, so each backend gets its own SQL and parameter style
(``?`` for pysqlite, ``%s`` for psycopg); nothing is rewritten by hand. The compiled text then runs
on the DBAPI cursor (see :mod:`store.eventlog` for why). Each :class:`Sql` takes its arguments as a
plain tuple in the order of its ``args`` names; the dialect's placement of the parameters is worked
out at compile time, so a call costs nothing when the orders agree (they do for both dialects here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Executable, and_, bindparam, func, literal_column, select, true
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import Compiled, SQLCompiler

from store.schema import events, meta, snapshots

#: The channel an append on PostgreSQL notifies, with its scope as the payload.
NOTIFY_CHANNEL = "batchd_events"

_HEAD_KEY: ColumnElement[str] = literal_column("'head'")


class Sql:
    """One compiled statement: ``text`` for the cursor and ``args(values)`` for its parameters."""

    __slots__ = ("args", "text")

    def __init__(self, compiled: Compiled, names: Sequence[str]) -> None:
        self.text = compiled.string
        order = list(compiled.positiontup or ()) if isinstance(compiled, SQLCompiler) else []
        if not order and compiled.params:
            raise ValueError(f"the dialect must use a positional paramstyle, not named: {self.text}")
        unknown = set(order) - set(names)
        if unknown:
            raise ValueError(f"statement has parameters {sorted(unknown)} not in {list(names)}")
        if order == list(names):
            self.args: Callable[[tuple[Any, ...]], tuple[Any, ...]] = _same
        else:
            picks = [names.index(n) for n in order]
            if len(picks) == 1:
                (one,) = picks
                self.args = lambda values: (values[one],)
            else:
                self.args = itemgetter(*picks)


def _same(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return values


def _p(name: str) -> Any:
    return bindparam(name)


class Statements:
    """The store's statements for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        e, m, s = events.c, meta.c, snapshots.c
        scope = _p("scope")
        cols = list(events.columns)
        last = select(func.max(e.seq)).where(e.scope == scope).scalar_subquery()

        # The append's one read: last seq and its hash, the recorded head, and one stream's version.
        self.head = self._sql(
            select(
                last,
                select(e.hash).where(e.scope == scope, e.seq == last).scalar_subquery(),
                select(m.value).where(m.scope == scope, m.key == _HEAD_KEY).scalar_subquery(),
                select(func.max(e.version))
                .where(e.scope == scope, e.stream == _p("stream"))
                .scalar_subquery(),
            ),
            "scope",
            "stream",
        )
        self.get_head = self._sql(select(m.value).where(m.scope == scope, m.key == _HEAD_KEY), "scope")
        self.set_head = self._sql(
            meta.update().where(m.scope == scope, m.key == _HEAD_KEY).values(value=_p("value")),
            "value",
            "scope",
        )
        self.stream_version = self._sql(
            select(func.max(e.version)).where(e.scope == scope, e.stream == _p("stream")), "scope", "stream"
        )
        self.last_seq = self._sql(select(func.max(e.seq)).where(e.scope == scope), "scope")
        names = [c.name for c in cols]
        self.insert = self._sql(events.insert().values({c.name: _p(c.name) for c in cols}), *names)
        self.events_from = self._sql(
            select(*cols[1:]).where(e.scope == scope, e.seq >= _p("seq")).order_by(e.seq), "scope", "seq"
        )
        self.hash_at = self._sql(select(e.hash).where(e.scope == scope, e.seq == _p("seq")), "scope", "seq")
        key = _p("key")
        self.get_meta = self._sql(select(m.value).where(m.scope == scope, m.key == key), "scope", "key")
        self.delete_meta = self._sql(meta.delete().where(m.scope == scope, m.key == key), "scope", "key")
        self.insert_meta = self._sql(
            meta.insert().values(scope=scope, key=key, value=_p("value")), "scope", "key", "value"
        )
        name = _p("name")
        snap_cols = list(snapshots.columns)[1:]
        self.get_snapshot = self._sql(
            select(*snap_cols).where(s.scope == scope, s.name == name), "scope", "name"
        )
        self.delete_snapshot = self._sql(
            snapshots.delete().where(s.scope == scope, s.name == name), "scope", "name"
        )
        self.insert_snapshot = self._sql(
            snapshots.insert().values({c.name: _p(c.name) for c in snapshots.columns}),
            *(c.name for c in snapshots.columns),
        )
        # PostgreSQL only: the per-scope writer lock and the wake-up of followers.
        self.lock = self._sql(select(func.pg_advisory_xact_lock(_p("key"))), "key")
        # Sent after the commit in a transaction of its own: synchronous_commit off for that one
        # transaction, so the cluster-wide notify lock is not held through a WAL flush (a notify is
        # worth nothing after a crash anyway; see store.eventlog).
        async_commit = func.set_config(
            literal_column("'synchronous_commit'"), literal_column("'off'"), true()
        )
        wake = func.pg_notify(literal_column(f"'{NOTIFY_CHANNEL}'"), scope)
        self.notify = self._sql(select(async_commit, wake), "scope")
        self._selects: dict[tuple[bool, bool, bool], Sql] = {}

    def _sql(self, stmt: Executable, *names: str) -> Sql:
        return Sql(stmt.compile(dialect=self._dialect), names)  # type: ignore[attr-defined]

    def select_events(
        self, *, at: str | None, stream: str | None, stream_prefix: str | None
    ) -> tuple[Sql, tuple[Any, ...]]:
        """A page of events: bind ``(scope, after_seq, until_seq, *params, limit)``."""
        key = (at is not None, stream is not None, bool(stream_prefix))
        params: list[Any] = []
        if at is not None:
            params.append(at)
        if stream is not None:
            params.append(stream)
        if stream_prefix:
            params += [stream_prefix, len(stream_prefix), stream_prefix]
        sql = self._selects.get(key)
        if sql is None:
            sql = self._selects[key] = self._select_events(*key)
        return sql, tuple(params)

    def _select_events(self, at: bool, stream: bool, prefix: bool) -> Sql:
        e = events.c
        where: list[ColumnElement[bool]] = [e.scope == _p("scope"), e.seq > _p("after"), e.seq <= _p("until")]
        names = ["scope", "after", "until"]
        if at:
            where.append(e.recorded_at <= _p("at"))
            names.append("at")
        if stream:
            where.append(e.stream == _p("stream"))
            names.append("stream")
        if prefix:
            # A range bound keeps the (scope, stream, version) index usable; substr makes the match
            # exact (LIKE is case-insensitive in SQLite and gives meaning to % and _).
            where.append(e.stream >= _p("prefix"))
            where.append(func.substr(e.stream, literal_column("1"), _p("prefix_len")) == _p("prefix_again"))
            names += ["prefix", "prefix_len", "prefix_again"]
        names.append("limit")
        cols = list(events.columns)[1:]
        stmt = select(*cols).where(and_(*where)).order_by(e.seq).limit(_p("limit"))
        # An explicit OFFSET: SQLite renders one whenever LIMIT is a parameter, as a parameter of its own.
        stmt = stmt.offset(literal_column("0"))
        return self._sql(stmt, *names)
