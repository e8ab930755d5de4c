"""The append-only event log: the only source of truth of batchd.

One table of events, each with a sequence number, a stream and a version within it (unique
together: optimistic concurrency), a registered type, a JSON payload, a UTC timestamp and a SHA-256
hash chained over the previous event's hash; a ``head`` row in ``batchd_meta`` records the last seq
and hash, so removing events from the end is detected too.

Scopes: every row belongs to a repository scope (``EventLog(url, scope="...")``; ``""`` for an
SQLite log, which is its repository's own). Each scope is a complete log of its own: seq counts
from 1 without gaps per scope, stream versions, the head record, snapshots and the chain are per
scope, and every read, append, verify and follow sees only its own scope.

How the hash chain treats scope: the scope is **not** in an event's hashed bytes (so every v1 row,
migrated to scope ``""``, keeps its hash and a v1 log still verifies); instead each scope's chain
starts from its own genesis (:func:`store.hashing.genesis_hash`: all zeros for ``""``, a digest of
the name otherwise). Every hash depends on that first link, so moving events, or a whole scope's
events, into another scope breaks the chain at the first moved event.

Writers: on SQLite every append is one ``BEGIN IMMEDIATE`` transaction in WAL mode with
``synchronous=FULL``: when :meth:`EventLog.append` returns, the events are on disk, and readers in
other processes never block it. On PostgreSQL an append first takes its scope's advisory
transaction lock (see :mod:`store.backends`), so appends to one scope from any number of processes
and hosts queue up (gap-free seqs, one chain) while other scopes proceed, and once it has committed it
notifies its scope so :meth:`EventLog.follow` wakes at once instead of polling.

Why the notify comes after the commit and not inside the transaction: PostgreSQL serialises every
notifying transaction of the whole cluster on one lock, taken before the commit and held through its
WAL flush, so a NOTIFY inside the append would make appends to *different* scopes queue behind each
other's disk flushes. Sent afterwards, as an autocommit statement of its own that does not wait for
its own flush (``synchronous_commit`` off for it alone), the lock is held for microseconds. A notify
lost that way (the connection drops right after the commit) costs a follower at most its
``poll_interval``: it reads after every wait, woken or not.

SQLAlchemy opens connections, creates and migrates the tables (:mod:`store.migrations`) and parses
URLs; the hot paths (append, read, verify) run Core statements compiled once for the engine's
dialect (:mod:`store.statements`) on the DBAPI cursor, which costs a few microseconds a statement
instead of tens through the Core execution pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import PoolProxiedConnection

from store import backends, migrations, reading
from store.audit import AuditReport, head_mismatch, walk_chain
from store.exceptions import (
    BadScope,
    ConcurrencyError,
    LogCorrupted,
    ServerUnreachable,
    StoreError,
    StoreUnavailable,
)
from store.hashing import GENESIS_HASH, canonical_json, chain_hash, genesis_hash, json_str
from store.reading import Reader
from store.records import Append, Snapshot, StoredEvent, format_time, parse_time, url_for, utcnow
from store.registry import EventRegistry, RegistryError, registry
from store.schema import SCOPE_LENGTH
from store.sqlitefile import check_sqlite_file
from store.statements import NOTIFY_CHANNEL, Statements

# AuditReport, chain_hash and the records live in store.audit, store.hashing and store.records;
# importing them from here still works.
__all__ = [
    "GENESIS_HASH",
    "Append",
    "AuditReport",
    "EventLog",
    "Snapshot",
    "StoredEvent",
    "canonical_json",
    "chain_hash",
    "format_time",
    "parse_time",
    "url_for",
    "utcnow",
]

BUSY_TIMEOUT_MS = backends.BUSY_TIMEOUT_MS
READ_PAGE = reading.READ_PAGE
_APPEND_ATTEMPTS = 5

_loads = json.loads
_log = structlog.get_logger(__name__)


# (type name, type version, payload dict, payload JSON) of one event, encoded before the lock is taken.
_Encoded = tuple[str, int, dict[str, Any], str]
# (stream, expected version, encoded events): one stream's part of an append.
_Part = tuple[str, int | None, list[_Encoded]]


class EventLog:
    """Append, read and follow one scope's events; save and load its snapshots; verify its chain."""

    def __init__(
        self,
        path_or_url: str | Path,
        *,
        scope: str = "",
        reg: EventRegistry = registry,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.url = url_for(path_or_url)
        self.scope = _checked_scope(scope)
        self.registry = reg
        self._clock = clock
        parsed = make_url(self.url)
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        # One in-memory database is one connection: every use shares it, one at a time.
        self._memory = self._is_sqlite and backends.is_memory(parsed)
        self._path = backends.sqlite_path(parsed)
        self._server = None if self._is_sqlite else backends.server_of(parsed)
        self.location = backends.safe_location(parsed)
        if self._path is not None:
            check_sqlite_file(self._path)
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._genesis = genesis_hash(self.scope)
        self._lock_key = (backends.scope_lock_key(self.scope),)
        self._scope_arg = (self.scope,)
        self._lock = threading.RLock()
        self._writer: PoolProxiedConnection | None = None
        self._engine: Engine = backends.make_engine(
            parsed, memory=self._memory, on_file=self._path is not None
        )
        self._dbapi: Any = self._engine.dialect.loaded_dbapi
        self._sql = Statements(self._engine.dialect)
        self._open_schema()
        self._reader = Reader(
            scope=self.scope,
            location=self.location,
            sql=self._sql,
            cursor=self._read,
            translate=self._translate,
            listen=None if self._is_sqlite else self._listen,
        )

    # -- opening -----------------------------------------------------------------------------

    def _store_error(self, orig: BaseException) -> StoreError:
        return backends.store_error(orig, location=self.location, server=self._server, dbapi=self._dbapi)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Driver errors become store errors here, once; nothing above store/ sees sqlalchemy.exc."""
        try:
            yield
        except sa_exc.DBAPIError as e:
            raise self._store_error(e.orig or e) from e
        except self._dbapi.Error as e:
            raise self._store_error(e) from e

    @contextmanager
    def _schema_txn(self) -> Iterator[Connection]:
        """A transaction that may change the schema: SQLite's write lock, or PostgreSQL's schema lock."""
        with self._engine.connect().execution_options(batchd_write=True) as conn, conn.begin():
            if not self._is_sqlite:
                conn.exec_driver_sql(self._sql.lock.text, (backends.SCHEMA_LOCK_KEY,))
            yield conn

    def _open_schema(self) -> None:
        try:
            with self._translate():
                migrations.open_schema(self._engine, self.location, self._schema_txn)
        except BaseException:
            self._engine.dispose()
            raise

    def _listen(self) -> backends.Listener:
        return backends.Listener(self._engine, NOTIFY_CHANNEL, self.scope)

    def _writer_conn(self) -> PoolProxiedConnection:
        """One long-lived writer connection per process (SQLite's WAL-reset race needs no more than one)."""
        if self._writer is None:
            self._writer = self._engine.raw_connection()
        return self._writer

    def _drop_writer(self) -> None:
        if self._writer is not None:
            # A connection that fails to close is gone either way.
            with contextlib.suppress(Exception):
                self._writer.invalidate()
            self._writer = None

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction on the writer connection; rolled back if anything inside raises."""
        with self._lock:
            conn, cur = self._begin_write()
            try:
                yield cur
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except self._dbapi.Error:
                    # A connection that cannot roll back is broken: the next write opens a fresh one.
                    self._drop_writer()
                raise
            finally:
                cur.close()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A cursor for a few autocommit reads (each statement sees a consistent snapshot)."""
        with self._translate():
            if self._memory:
                with self._lock:
                    cur = self._writer_conn().cursor()
                    try:
                        yield cur
                    finally:
                        cur.close()
                return
            conn = self._engine.raw_connection()
            try:
                cur = conn.cursor()
                yield cur
                cur.close()
            finally:
                conn.close()  # back to the pool, which rolls back anything a non-SQLite driver began

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._engine.dispose()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending ---------------------------------------------------------------------------

    def append(
        self, stream: str, events_: Sequence[object], expected_version: int | None = None
    ) -> list[StoredEvent]:
        """Append events to one stream, all or none; durable when this returns.

        ``expected_version`` is the stream's version the caller decided on (0 for a new stream);
        if another writer got there first, :class:`ConcurrencyError` is raised and nothing is written.
        """
        if not events_:
            return []
        return self._append([(stream, expected_version, [self._encode(e) for e in events_])])

    def append_many(self, appends: Iterable[Append]) -> list[StoredEvent]:
        """Append to several streams in one transaction (an intent and the state it moves)."""
        encode = self._encode
        parts = [(a.stream, a.expected_version, [encode(e) for e in a.events]) for a in appends if a.events]
        if not parts:
            return []
        return self._append(parts)

    def _append(self, parts: list[_Part]) -> list[StoredEvent]:
        # The hot path: plain try/except instead of the _translate/_write context managers saves
        # a measurable share of a durable append (see bench/store.py).
        dbapi = self._dbapi
        for attempt in range(_APPEND_ATTEMPTS):
            with self._lock:
                with self._translate():
                    conn, cur = self._begin_write()
                try:
                    out = self._append_txn(cur, parts)
                    conn.commit()
                    if not self._is_sqlite:
                        self._notify(conn, cur)
                    return out
                except BaseException as e:
                    self._rollback(conn)
                    if isinstance(e, dbapi.IntegrityError):
                        # Only a backend without BEGIN IMMEDIATE can race here (SQLite serialises writers).
                        collided = e
                    elif isinstance(e, dbapi.Error):
                        raise self._store_error(e) from e
                    else:
                        raise
                finally:
                    cur.close()
            self._raise_if_stale(parts)
            if attempt == _APPEND_ATTEMPTS - 1:
                detail = f"append kept colliding: {collided}"
                raise StoreUnavailable(path=self.location, detail=detail) from collided
        raise AssertionError("unreachable")

    def _begin_write(self) -> tuple[PoolProxiedConnection, Any]:
        """Start a write on the writer connection: SQLite's write lock, or this scope's lock on
        PostgreSQL (see store.backends); the connection and a cursor in the open transaction.

        The writer is held for the log's life, so the pool's pre-ping never sees it again: when the
        server has ended it (a restart, pg_terminate_backend), the first statement fails. Nothing has
        been sent that could write then, so that one case is tried again, once, on a new connection.
        """
        for retry in (True, False):
            conn = self._writer_conn()
            cur = conn.cursor()
            try:
                if self._is_sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                else:
                    cur.execute(self._sql.lock.text, self._lock_key)
                return conn, cur
            except BaseException as e:
                cur.close()
                if retry and backends.is_disconnect(e, None if self._is_sqlite else self._dbapi):
                    self._drop_writer()
                    continue
                self._rollback(conn)
                raise
        raise AssertionError("unreachable")

    def _notify(self, conn: PoolProxiedConnection, cur: Any) -> None:
        """Wake this scope's followers, after the commit (see the module docstring for why).

        The events are committed whatever happens here, so a failure is not the append's: the append
        returns, a broken connection is replaced on the next write, and followers find the events at
        their next poll."""
        raw: Any = conn.dbapi_connection
        try:
            raw.autocommit = True
            try:
                cur.execute(self._sql.notify.text, self._scope_arg)
            finally:
                raw.autocommit = False
        except self._dbapi.Error as e:
            _log.warning("notify_failed", location=self.location, scope=self.scope, error=str(e))
            self._drop_writer()

    def _rollback(self, conn: PoolProxiedConnection) -> None:
        try:
            conn.rollback()
        except self._dbapi.Error:
            # A connection that cannot roll back is broken: the next write opens a fresh one.
            self._drop_writer()

    def _encode(self, event_: object) -> _Encoded:
        name, version, payload = self.registry.encode(event_)
        try:
            text = canonical_json(payload)
            text.encode("utf-8")  # a lone surrogate would otherwise fail inside the transaction
        except (TypeError, ValueError) as e:
            raise RegistryError(
                f"event {name!r} cannot be stored: its payload is not plain JSON ({e})",
                hint="use str, int, float, bool, None, lists/tuples and dicts of those in event fields",
            ) from e
        return name, version, payload, text

    def _raise_if_stale(self, parts: list[_Part]) -> None:
        for stream, expected, _ in parts:
            if expected is not None:
                actual = self.stream_version(stream)
                if actual != expected:
                    raise ConcurrencyError(stream=stream, expected=expected, actual=actual)

    def _append_txn(self, cur: Any, parts: list[_Part]) -> list[StoredEvent]:
        # One statement reads the last event, the recorded head and the first stream's version.
        scope = self.scope
        head_sql = self._sql.head
        cur.execute(head_sql.text, head_sql.args((scope, parts[0][0])))
        seq, prev, head, first_version = cur.fetchone()
        seq, prev = (int(seq), str(prev)) if seq is not None else (0, self._genesis)
        bad = head_mismatch(seq, prev, head)
        if bad is not None:
            raise LogCorrupted(path=self.location, seq=bad[0], detail=f"{bad[1]}; refusing to append")
        at = format_time(self._clock())
        enc_at = json_str(at)
        rows: list[tuple[Any, ...]] = []
        out: list[StoredEvent] = []
        versions: dict[str, int] = {parts[0][0]: int(first_version or 0)}
        sha256 = hashlib.sha256
        for stream, expected, items in parts:
            version = versions.get(stream)
            if version is None:
                version = self._stream_version_txn(cur, stream)
            if expected is not None and version != expected:
                raise ConcurrencyError(stream=stream, expected=expected, actual=version)
            enc_stream = json_str(stream)
            for name, type_version, payload, text in items:
                seq += 1
                version += 1
                # Same bytes as chain_hash(), with the constant parts encoded once per batch.
                enc_name, enc_text = json_str(name), json_str(text)
                body = f"[{seq},{enc_stream},{version},{enc_name},{type_version},{enc_text},{enc_at}]"
                digest = sha256((prev + body).encode("utf-8")).hexdigest()
                rows.append((scope, seq, stream, version, name, type_version, text, at, digest))
                out.append(StoredEvent(seq, stream, version, name, type_version, payload, at, digest))
                prev = digest
            versions[stream] = version
        insert = self._sql.insert.text
        if len(rows) == 1:
            cur.execute(insert, rows[0])
        else:
            cur.executemany(insert, rows)
        head_value = f"{seq}:{prev}"
        cur.execute(self._sql.set_head.text, (head_value, scope))
        if cur.rowcount != 1:
            cur.execute(self._sql.insert_meta.text, (scope, "head", head_value))
        return out

    def _stream_version_txn(self, cur: Any, stream: str) -> int:
        cur.execute(self._sql.stream_version.text, (self.scope, stream))
        return int(cur.fetchone()[0] or 0)

    # -- reading -----------------------------------------------------------------------------

    def stream_version(self, stream: str) -> int:
        with self._read() as cur:
            return self._stream_version_txn(cur, stream)

    def last_seq(self) -> int:
        with self._read() as cur:
            cur.execute(self._sql.last_seq.text, self._scope_arg)
            return int(cur.fetchone()[0] or 0)

    def read(
        self,
        *,
        since: int = 0,
        until: int | None = None,
        at: datetime | None = None,
        stream: str | None = None,
        stream_prefix: str | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredEvent]:
        """Events with ``since < seq <= until`` recorded no later than ``at``, in log order.

        Without ``until`` the read stops at the last event that existed when it started, so a
        reader that appends while iterating does not chase its own tail.
        """
        at_text = format_time(at) if at is not None else None
        return self._reader.read(
            since=since, until=until, at=at_text, stream=stream, stream_prefix=stream_prefix, limit=limit
        )

    def read_stream(self, stream: str, *, since_version: int = 0) -> list[StoredEvent]:
        return [e for e in self.read(stream=stream) if e.version > since_version]

    def follow(
        self,
        *,
        since: int = 0,
        poll_interval: float = 0.2,
        stop: Callable[[], bool] = lambda: False,
        stream: str | None = None,
        on_outage: Callable[[ServerUnreachable | None], None] | None = None,
    ) -> Iterator[StoredEvent]:
        """Tail the log: yield events after ``since`` as they are appended, until ``stop()`` is true.

        With nothing new it waits ``poll_interval`` seconds before looking again (SQLite), or until an
        append to this scope commits, ``poll_interval`` at most (PostgreSQL, LISTEN/NOTIFY). On
        PostgreSQL it survives the server going away and coming back (see :mod:`store.reading`),
        telling ``on_outage`` when it goes (why) and comes back (None).
        """
        return self._reader.follow(
            since=since, poll_interval=poll_interval, stop=stop, stream=stream, on_outage=on_outage
        )

    # -- snapshots ---------------------------------------------------------------------------

    def save_snapshot(self, name: str, seq: int, state: dict[str, Any]) -> None:
        """Keep ``state`` (a projection's JSON-able state after event ``seq``) as the latest snapshot,
        with its hash (checked at start-up, see :meth:`verify_tail`)."""
        text = canonical_json(state)
        scope = self.scope
        row = (scope, name, seq, text, format_time(self._clock()))
        key = _snapshot_key(name)
        sql = self._sql
        with self._translate(), self._write() as cur:
            cur.execute(sql.delete_snapshot.text, (scope, name))
            cur.execute(sql.insert_snapshot.text, row)
            cur.execute(sql.delete_meta.text, (scope, key))
            cur.execute(sql.insert_meta.text, (scope, key, _snapshot_digest(seq, text)))

    def load_snapshot(self, name: str) -> Snapshot | None:
        with self._read() as cur:
            cur.execute(self._sql.get_snapshot.text, (self.scope, name))
            row = cur.fetchone()
            cur.execute(self._sql.get_meta.text, (self.scope, _snapshot_key(name)))
            digest = cur.fetchone()
        if row is None:
            return None
        name_, seq, text, recorded_at = row
        check = (
            "unhashed"
            if digest is None
            else ("ok" if _snapshot_digest(int(seq), text) == digest[0] else "edited")
        )
        try:
            state = _loads(text)
        except ValueError as e:
            detail = f"snapshot {name!r} is not JSON"
            raise LogCorrupted(path=self.location, seq=int(seq), detail=detail) from e
        return Snapshot(name=name_, seq=int(seq), state=state, recorded_at=recorded_at, check=check)

    # -- audit -------------------------------------------------------------------------------

    def verify(self, progress: Callable[[int], None] | None = None, *, from_seq: int = 1) -> AuditReport:
        """Walk the hash chain from the first event (or from ``from_seq``, anchored on the stored hash
        of the event before it) to the recorded head; name the first seq that does not check out."""
        with self._read() as cur:
            if self._is_sqlite:
                cur.execute("PRAGMA quick_check(1)")
                integrity = cur.fetchone()[0]
                if integrity != "ok":
                    return AuditReport(checked=0, last_seq=0, first_bad_seq=1, problem=f"SQLite: {integrity}")
                # One read transaction: the head and the rows must come from the same moment.
                cur.execute("BEGIN")
            else:
                # The same on PostgreSQL: one snapshot for the whole transaction (the first statement).
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            sql = self._sql
            try:
                cur.execute(sql.get_head.text, self._scope_arg)
                head_row = cur.fetchone()
                head = head_row[0] if head_row else None
                prev = self._genesis
                if from_seq > 1:
                    cur.execute(sql.hash_at.text, (self.scope, from_seq - 1))
                    anchor = cur.fetchone()
                    if anchor is None:
                        problem = f"event {from_seq - 1} is missing"
                        return AuditReport(checked=0, last_seq=0, first_bad_seq=from_seq - 1, problem=problem)
                    prev = str(anchor[0])
                cur.execute(sql.events_from.text, (self.scope, from_seq))
                report = walk_chain(cur, head, progress, prev=prev, first_seq=from_seq)
            finally:
                if self._is_sqlite:
                    cur.execute("COMMIT")
        return report

    def verify_tail(
        self, snapshot: str, progress: Callable[[int], None] | None = None, *, whole: bool = False
    ) -> AuditReport:
        """What start-up checks: the latest snapshot's own hash, and the chain from it to the head
        (``whole``, or without a usable snapshot: the whole chain)."""
        snap = self.load_snapshot(snapshot)
        if snap is not None and snap.check == "edited":
            problem = f"the snapshot {snapshot!r} does not match its recorded hash (edited)"
            return AuditReport(checked=0, last_seq=0, first_bad_seq=snap.seq, problem=problem)
        usable = snap is not None and snap.check == "ok" and snap.seq > 0 and not whole
        return self.verify(progress, from_seq=snap.seq if usable and snap is not None else 1)


def _checked_scope(scope: str) -> str:
    if len(scope) > SCOPE_LENGTH:
        raise BadScope(scope=scope, detail=f"it is {len(scope)} characters long, more than {SCOPE_LENGTH}")
    if not scope.isprintable():
        raise BadScope(scope=scope, detail="it holds control characters")
    return scope


def _snapshot_key(name: str) -> str:
    return f"snapshot:{name}"


def _snapshot_digest(seq: int, text: str) -> str:
    return hashlib.sha256(f"{seq}\n{text}".encode()).hexdigest()
