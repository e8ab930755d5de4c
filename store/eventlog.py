"""The append-only event log: the only source of truth of batchd.

One table of events, each with a global sequence number, a stream and a
version within it (unique together: optimistic concurrency), a registered type,
a JSON payload, a UTC timestamp and a SHA-256 hash chained over the previous
event's hash; a ``head`` row in ``batchd_meta`` records the last seq and hash, so
removing events from the end is detected too. On SQLite (the default) every
append is one ``BEGIN IMMEDIATE`` transaction in WAL mode with
``synchronous=FULL``: when :meth:`EventLog.append` returns, the events are on
disk, and readers in other processes never block it.

SQLAlchemy opens connections (pragmas in one ``connect`` listener), creates the
tables from :mod:`store.schema` and parses URLs; the hot paths (append, read,
verify) run prepared driver SQL on the DBAPI connection, which costs a few
microseconds a statement instead of tens through the Core execution pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import PoolProxiedConnection, StaticPool

from store.audit import AuditReport, head_mismatch, walk_chain
from store.exceptions import (
    ConcurrencyError,
    LogCorrupted,
    NotADatabase,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from store.hashing import GENESIS_HASH, canonical_json, chain_hash, json_str
from store.registry import EventRegistry, RegistryError, registry
from store.schema import SCHEMA_VERSION, meta, metadata
from store.sqlitefile import check_sqlite_file
from store.sqltext import Statements

# AuditReport and chain_hash live in store.audit and store.hashing; importing them from here still works.
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

BUSY_TIMEOUT_MS = 30_000
#: Rows fetched per read transaction: long reads never pin one WAL snapshot (which would stop checkpoints).
READ_PAGE = 2000
_APPEND_ATTEMPTS = 5

_loads = json.loads


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC, so text order is time order."""
    # isoformat is twice as fast as strftime and zero-pads the year; "+00:00" becomes "Z".
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class StoredEvent(NamedTuple):
    """One row of the log, as read back.

    A NamedTuple rather than a frozen dataclass: replay builds a million of these, and a tuple is
    made about five times faster (0.5 us against 2.4 us here), which is a fifth of replay's time.
    """

    seq: int
    stream: str
    version: int
    type: str
    type_version: int
    payload: dict[str, Any]
    recorded_at: str
    hash: str

    @property
    def time(self) -> datetime:
        return parse_time(self.recorded_at)

    def decode(self, reg: EventRegistry = registry) -> Any:
        """The domain event this row holds, upcast to the current version of its class."""
        return reg.decode(self.type, self.type_version, self.payload, seq=self.seq)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "type_version": self.type_version,
            "payload": self.payload,
            "recorded_at": self.recorded_at,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Append:
    """One stream's part of an atomic append. ``expected_version=None`` appends without a check."""

    stream: str
    events: Sequence[object]
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    name: str
    seq: int
    state: dict[str, Any]
    recorded_at: str
    check: str = "ok"  # against the hash saved with it: ok | unhashed (an older batchd) | edited


# (type name, type version, payload dict, payload JSON) of one event, encoded before the lock is taken.
_Encoded = tuple[str, int, dict[str, Any], str]
# (stream, expected version, encoded events): one stream's part of an append.
_Part = tuple[str, int | None, list[_Encoded]]


def _is_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or _is_memory(url) or (url.database or "").startswith("file:"):
        return None
    return Path(url.database or "")


def url_for(path_or_url: str | Path) -> str:
    """Accept a plain path (SQLite) or any SQLAlchemy URL."""
    text = str(path_or_url)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"


class EventLog:
    """Append, read and follow events; save and load projection snapshots; verify the chain."""

    def __init__(
        self,
        path_or_url: str | Path,
        *,
        reg: EventRegistry = registry,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.url = url_for(path_or_url)
        self.registry = reg
        self._clock = clock
        parsed = make_url(self.url)
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        # One in-memory database is one connection: every use shares it, one at a time.
        self._memory = self._is_sqlite and _is_memory(parsed)
        self._path = _sqlite_path(parsed)
        self.location = str(self._path) if self._path else parsed.render_as_string()
        if self._path is not None:
            check_sqlite_file(self._path)
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._writer: PoolProxiedConnection | None = None
        self._engine = self._make_engine()
        self._dbapi: Any = self._engine.dialect.loaded_dbapi
        self._sql = Statements(self._engine.dialect.paramstyle)
        self._open_schema()

    # -- opening -----------------------------------------------------------------------------

    def _make_engine(self) -> Engine:
        if not self._is_sqlite:
            return create_engine(self.url)
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if self._memory:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(self.url, **kwargs)
        on_file = self._path is not None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: object) -> None:
            # We issue BEGIN ourselves: pysqlite's implicit BEGIN would defer the write lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # Wait for another process's short write instead of failing with "database is locked".
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if on_file:
                # WAL: readers never block the writer, the writer never blocks readers.
                cur.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit that returned survives power loss, not just a process crash.
            cur.execute("PRAGMA synchronous = FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front, so check-then-create cannot be raced.
            write = conn.get_execution_options().get("batchd_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _store_error(self, orig: BaseException) -> StoreError:
        """The one place a driver error becomes a store error."""
        text = str(orig)
        if "not a database" in text or "file is encrypted" in text:
            return NotADatabase(path=self.location, detail=text)
        if "malformed" in text or "corrupt" in text:
            return LogCorrupted(path=self.location, seq=None, detail=text)
        return StoreUnavailable(path=self.location, detail=text)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Driver errors become store errors here, once; nothing above store/ sees sqlalchemy.exc."""
        try:
            yield
        except sa_exc.DBAPIError as e:
            raise self._store_error(e.orig or e) from e
        except self._dbapi.Error as e:
            raise self._store_error(e) from e

    def _open_schema(self) -> None:
        with self._translate():
            with self._engine.connect() as conn, conn.begin():
                tables = set(inspect(conn).get_table_names())
                if tables:
                    self._check_schema(conn, tables)
                    return
            # Empty: create under the write lock, checking again (another process may have just done it).
            with self._engine.connect().execution_options(batchd_write=True) as conn, conn.begin():
                tables = set(inspect(conn).get_table_names())
                if tables:
                    self._check_schema(conn, tables)
                    return
                metadata.create_all(conn)
                conn.execute(meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])

    def _check_schema(self, conn: Connection, tables: set[str]) -> None:
        if meta.name not in tables:
            names = ", ".join(sorted(tables))
            detail = f"it is an SQLite database of something else (tables: {names})"
            raise NotADatabase(path=self.location, detail=detail)
        row = conn.execute(meta.select().where(meta.c.key == "schema_version")).first()
        try:
            found = int(row.value) if row else 0
        except ValueError:
            found = 0
        if found < 1:
            raise NotADatabase(path=self.location, detail="its batchd_meta table has no valid schema version")
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(path=self.location, found=found, supported=SCHEMA_VERSION)
        missing = {t.name for t in metadata.sorted_tables} - tables
        if missing:
            raise LogCorrupted(path=self.location, seq=None, detail=f"tables {sorted(missing)} are missing")
        # Migrations from older versions go here, each a small step (found -> found + 1).

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
            conn = self._writer_conn()
            cur = conn.cursor()
            try:
                if self._is_sqlite:
                    cur.execute("BEGIN IMMEDIATE")
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
                conn = self._writer_conn()
                cur = conn.cursor()
                try:
                    if self._is_sqlite:
                        cur.execute("BEGIN IMMEDIATE")
                    out = self._append_txn(cur, parts)
                    conn.commit()
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
        cur.execute(self._sql.head, (parts[0][0],))
        seq, prev, head, first_version = cur.fetchone()
        seq, prev = (int(seq), str(prev)) if seq is not None else (0, GENESIS_HASH)
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
                rows.append((seq, stream, version, name, type_version, text, at, digest))
                out.append(StoredEvent(seq, stream, version, name, type_version, payload, at, digest))
                prev = digest
            versions[stream] = version
        if len(rows) == 1:
            cur.execute(self._sql.insert, rows[0])
        else:
            cur.executemany(self._sql.insert, rows)
        head_value = (f"{seq}:{prev}",)
        cur.execute(self._sql.set_head, head_value)
        if cur.rowcount != 1:
            cur.execute(self._sql.insert_head, head_value)
        return out

    def _stream_version_txn(self, cur: Any, stream: str) -> int:
        cur.execute(self._sql.stream_version, (stream,))
        return int(cur.fetchone()[0] or 0)

    # -- reading -----------------------------------------------------------------------------

    def stream_version(self, stream: str) -> int:
        with self._read() as cur:
            return self._stream_version_txn(cur, stream)

    def last_seq(self) -> int:
        with self._read() as cur:
            cur.execute(self._sql.last_seq)
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
        sql, params = self._sql.select_events(
            at=format_time(at) if at is not None else None, stream=stream, stream_prefix=stream_prefix
        )
        remaining = limit
        last = since
        ceiling = until
        location = self.location
        while remaining is None or remaining > 0:
            page = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            with self._read() as cur:
                if ceiling is None:
                    cur.execute(self._sql.last_seq)
                    ceiling = int(cur.fetchone()[0] or 0)
                cur.execute(sql, (last, ceiling, *params, page))
                rows = cur.fetchall()
            for seq, stream_, version, type_, type_version, payload, recorded_at, digest in rows:
                try:
                    data = _loads(payload)
                except ValueError as e:
                    raise LogCorrupted(path=location, seq=seq, detail=f"payload is not JSON ({e})") from e
                yield StoredEvent(seq, stream_, version, type_, type_version, data, recorded_at, digest)
            if len(rows) < page:
                return
            last = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def read_stream(self, stream: str, *, since_version: int = 0) -> list[StoredEvent]:
        return [e for e in self.read(stream=stream) if e.version > since_version]

    def follow(
        self,
        *,
        since: int = 0,
        poll_interval: float = 0.2,
        stop: Callable[[], bool] = lambda: False,
        stream: str | None = None,
    ) -> Iterator[StoredEvent]:
        """Tail the log: yield events after ``since`` as they are appended, until ``stop()`` is true."""
        last = since
        while not stop():
            got = False
            for ev in self.read(since=last, stream=stream):
                last = ev.seq
                got = True
                yield ev
                if stop():
                    return
            if not got:
                time.sleep(poll_interval)

    # -- snapshots ---------------------------------------------------------------------------

    def save_snapshot(self, name: str, seq: int, state: dict[str, Any]) -> None:
        """Keep ``state`` (a projection's JSON-able state after event ``seq``) as the latest snapshot,
        with its hash (checked at start-up, see :meth:`verify_tail`)."""
        text = canonical_json(state)
        row = (name, seq, text, format_time(self._clock()))
        key = _snapshot_key(name)
        with self._translate(), self._write() as cur:
            cur.execute(self._sql.delete_snapshot, (name,))
            cur.execute(self._sql.insert_snapshot, row)
            cur.execute(self._sql.delete_meta, (key,))
            cur.execute(self._sql.insert_meta, (key, _snapshot_digest(seq, text)))

    def load_snapshot(self, name: str) -> Snapshot | None:
        with self._read() as cur:
            cur.execute(self._sql.get_snapshot, (name,))
            row = cur.fetchone()
            cur.execute(self._sql.get_meta, (_snapshot_key(name),))
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
            try:
                cur.execute(self._sql.get_head)
                head_row = cur.fetchone()
                head = head_row[0] if head_row else None
                prev = GENESIS_HASH
                if from_seq > 1:
                    cur.execute(self._sql.hash_at, (from_seq - 1,))
                    anchor = cur.fetchone()
                    if anchor is None:
                        problem = f"event {from_seq - 1} is missing"
                        return AuditReport(checked=0, last_seq=0, first_bad_seq=from_seq - 1, problem=problem)
                    prev = str(anchor[0])
                cur.execute(self._sql.events_from, (from_seq,))
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


def _snapshot_key(name: str) -> str:
    return f"snapshot:{name}"


def _snapshot_digest(seq: int, text: str) -> str:
    return hashlib.sha256(f"{seq}\n{text}".encode()).hexdigest()
