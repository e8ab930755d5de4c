"""The append-only event log: the only source of truth of batchd.

One table of events, each with a global sequence number, a stream and a
version within it (unique together: optimistic concurrency), a registered type,
a JSON payload, a UTC timestamp and a SHA-256 hash chained over the previous
event's hash. On SQLite (the default) every append is one ``BEGIN IMMEDIATE``
transaction in WAL mode with ``synchronous=FULL``: when :meth:`EventLog.append`
returns, the events are on disk, and readers in other processes never block it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from store.exceptions import (
    ConcurrencyError,
    LogCorrupted,
    NotADatabase,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from store.registry import EventRegistry, registry
from store.schema import SCHEMA_VERSION, events, meta, metadata, snapshots

GENESIS_HASH = "0" * 64

# The append path runs these on every event: plain driver SQL skips SQLAlchemy's per-call compile cost.
# Written in pysqlite's "?" style; _driver_sql() rewrites them for a driver with another paramstyle.
_SQL_LAST = f"SELECT seq, hash FROM {events.name} ORDER BY seq DESC LIMIT 1"
_SQL_STREAM_VERSION = f"SELECT max(version) FROM {events.name} WHERE stream = ?"
_SQL_SET_META = f"UPDATE {meta.name} SET value = ? WHERE key = ?"
_SQL_INSERT = (
    f"INSERT INTO {events.name} (seq, stream, version, type, type_version, payload, recorded_at, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(
    prev_hash: str, seq: int, stream: str, version: int, type_: str, type_version: int, payload: str, at: str
) -> str:
    """The hash of one event: covers its position (seq) so deleting or reordering rows breaks the chain."""
    body = canonical_json([seq, stream, version, type_, type_version, payload, at])
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the log, as read back."""

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


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Result of walking the hash chain: ``first_bad_seq`` is None when the log checks out."""

    checked: int
    last_seq: int
    first_bad_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


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
        self._path = _sqlite_path(self.url)
        self.location = str(self._path) if self._path else make_url(self.url).render_as_string()
        self._is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        if self._path is not None:
            self._check_file(self._path)
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.RLock()
        self._writer: Connection | None = None
        self._engine = self._make_engine()
        style = self._engine.dialect.paramstyle
        self._sql = {
            k: (v.replace("?", "%s") if style in ("format", "pyformat") else v)
            for k, v in {
                "last": _SQL_LAST,
                "stream_version": _SQL_STREAM_VERSION,
                "set_meta": _SQL_SET_META,
                "insert": _SQL_INSERT,
            }.items()
        }
        self._open_schema()

    # -- opening -----------------------------------------------------------------------------

    def _check_file(self, path: Path) -> None:
        """Refuse what is not an SQLite file before SQLite half-opens it (it only fails at the first query)."""
        if not path.exists() or path.stat().st_size == 0:
            return
        if path.is_dir():
            raise NotADatabase(path=str(path), detail="it is a directory")
        with path.open("rb") as fh:
            header = fh.read(100)
        if not header.startswith(SQLITE_HEADER):
            raise NotADatabase(path=str(path), detail="its first bytes are not an SQLite header")
        if len(header) < 100:
            raise NotADatabase(path=str(path), detail="it is truncated inside the SQLite header")

    def _make_engine(self) -> Engine:
        if not self._is_sqlite:
            return create_engine(self.url, future=True)
        # One connection per use: SQLite connections are cheap, and short ones keep other processes' views fresh.
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if self._path is None:
            kwargs["poolclass"] = NullPool
        engine = create_engine(self.url, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            # We issue BEGIN ourselves (see _on_begin): pysqlite's implicit BEGIN would defer the write lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # Wait for another process's short write instead of failing with "database is locked".
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self._path is not None:
                # WAL: readers never block the writer, the writer never blocks readers.
                cur.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit that returned survives power loss, not just a process crash.
            cur.execute("PRAGMA synchronous = FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front, so read-then-write (seq, hash) cannot be raced.
            write = conn.get_execution_options().get("batchd_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Driver errors become store errors here, once; nothing above store/ sees sqlalchemy.exc."""
        try:
            yield
        except StoreError:
            raise
        except sa_exc.OperationalError as e:
            text = str(e.orig)
            if "locked" in text or "busy" in text:
                raise StoreUnavailable(path=self.location, detail=text) from e
            if "malformed" in text or "not a database" in text:
                raise NotADatabase(path=self.location, detail=text) from e
            raise StoreUnavailable(path=self.location, detail=text) from e
        except sa_exc.DatabaseError as e:
            raise NotADatabase(path=self.location, detail=str(e.orig)) from e

    def _open_schema(self) -> None:
        with self._translate(), self._write() as conn:
            tables = set(inspect(conn).get_table_names())
            if meta.name in tables:
                row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
                found = int(row[0]) if row else 0
                if found > SCHEMA_VERSION:
                    raise SchemaTooNew(path=self.location, found=found, supported=SCHEMA_VERSION)
                if found < 1:
                    raise NotADatabase(path=self.location, detail="its batchd_meta table has no schema version")
                # Migrations from older versions go here, each a small step (found -> found + 1).
                return
            if tables:
                raise NotADatabase(
                    path=self.location,
                    detail=f"it is an SQLite database of something else (tables: {', '.join(sorted(tables))})",
                )
            metadata.create_all(conn)
            conn.execute(meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One long-lived writer connection per process (SQLite's WAL-reset race needs no more than one)."""
        with self._write_lock:
            if self._writer is None or self._writer.closed:
                self._writer = self._engine.connect()
                self._writer.execution_options(batchd_write=True)
            conn = self._writer
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                # A failed transaction may leave the connection unusable; a fresh one is cheap.
                conn.close()
                self._writer = None
                raise

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._translate(), self._engine.connect() as conn, conn.begin():
            yield conn

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._engine.dispose()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending ---------------------------------------------------------------------------

    def append(self, stream: str, events_: Sequence[object], expected_version: int | None = None) -> list[StoredEvent]:
        """Append events to one stream, all or none; durable when this returns.

        ``expected_version`` is the stream's version the caller decided on (0 for a new stream);
        if another writer got there first, :class:`ConcurrencyError` is raised and nothing is written.
        """
        return self.append_many([Append(stream, events_, expected_version)])

    def append_many(self, appends: Iterable[Append]) -> list[StoredEvent]:
        """Append to several streams in one transaction (an intent and the state it moves)."""
        batch = [a for a in appends if a.events]
        if not batch:
            return []
        encoded = [(a, [self.registry.encode(e) for e in a.events]) for a in batch]
        for attempt in range(5):
            try:
                with self._translate(), self._write() as conn:
                    return self._append_txn(conn, encoded)
            except sa_exc.IntegrityError as e:
                # Only a non-SQLite backend can race here (SQLite serialises on BEGIN IMMEDIATE).
                self._raise_if_stale(encoded)
                if attempt == 4:
                    raise StoreUnavailable(path=self.location, detail=f"append kept colliding: {e.orig}") from e
        raise AssertionError("unreachable")

    def _raise_if_stale(self, encoded: list[tuple[Append, list[tuple[str, int, dict[str, Any]]]]]) -> None:
        for a, _ in encoded:
            if a.expected_version is not None:
                actual = self.stream_version(a.stream)
                if actual != a.expected_version:
                    raise ConcurrencyError(stream=a.stream, expected=a.expected_version, actual=actual)

    def _append_txn(
        self, conn: Connection, encoded: list[tuple[Append, list[tuple[str, int, dict[str, Any]]]]]
    ) -> list[StoredEvent]:
        last = conn.exec_driver_sql(self._sql["last"]).first()
        seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS_HASH)
        at = format_time(self._clock())
        rows: list[dict[str, Any]] = []
        out: list[StoredEvent] = []
        for a, items in encoded:
            version = self._stream_version_txn(conn, a.stream)
            if a.expected_version is not None and version != a.expected_version:
                raise ConcurrencyError(stream=a.stream, expected=a.expected_version, actual=version)
            for name, type_version, payload in items:
                seq += 1
                version += 1
                text = canonical_json(payload)
                digest = chain_hash(prev, seq, a.stream, version, name, type_version, text, at)
                rows.append(
                    {
                        "seq": seq,
                        "stream": a.stream,
                        "version": version,
                        "type": name,
                        "type_version": type_version,
                        "payload": text,
                        "recorded_at": at,
                        "hash": digest,
                    }
                )
                out.append(StoredEvent(seq, a.stream, version, name, type_version, payload, at, digest))
                prev = digest
        conn.exec_driver_sql(self._sql["insert"], [tuple(r.values()) for r in rows])
        self._set_meta_txn(conn, "head", f"{seq}:{prev}")
        return out

    def _stream_version_txn(self, conn: Connection, stream: str) -> int:
        value = conn.exec_driver_sql(self._sql["stream_version"], (stream,)).scalar()
        return int(value or 0)

    def _set_meta_txn(self, conn: Connection, key: str, value: str) -> None:
        updated = conn.exec_driver_sql(self._sql["set_meta"], (value, key)).rowcount
        if not updated:
            conn.execute(meta.insert(), [{"key": key, "value": value}])

    # -- reading -----------------------------------------------------------------------------

    def stream_version(self, stream: str) -> int:
        with self._read() as conn:
            return self._stream_version_txn(conn, stream)

    def last_seq(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.max(events.c.seq))).scalar() or 0)

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
        """Events with ``since < seq <= until`` recorded no later than ``at``, in log order."""
        query = select(events).where(events.c.seq > since).order_by(events.c.seq)
        if until is not None:
            query = query.where(events.c.seq <= until)
        if at is not None:
            query = query.where(events.c.recorded_at <= format_time(at))
        if stream is not None:
            query = query.where(events.c.stream == stream)
        if stream_prefix is not None:
            query = query.where(events.c.stream.startswith(stream_prefix, autoescape=True))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            result = conn.execution_options(yield_per=2000).execute(query)
            loads = json.loads
            for seq, stream_, version, type_, type_version, payload, recorded_at, digest in result:
                try:
                    data = loads(payload)
                except ValueError as e:
                    raise LogCorrupted(path=self.location, seq=seq, detail=f"payload is not JSON ({e})") from e
                yield StoredEvent(seq, stream_, version, type_, type_version, data, recorded_at, digest)

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
            if not got:
                time.sleep(poll_interval)

    # -- snapshots ---------------------------------------------------------------------------

    def save_snapshot(self, name: str, seq: int, state: dict[str, Any]) -> None:
        """Keep ``state`` (a projection's JSON-able state after event ``seq``) as the latest snapshot."""
        row = {"name": name, "seq": seq, "state": canonical_json(state), "recorded_at": format_time(self._clock())}
        with self._translate(), self._write() as conn:
            conn.execute(snapshots.delete().where(snapshots.c.name == name))
            conn.execute(snapshots.insert(), [row])

    def load_snapshot(self, name: str) -> Snapshot | None:
        with self._read() as conn:
            row = conn.execute(select(snapshots).where(snapshots.c.name == name)).first()
        if row is None:
            return None
        try:
            state = json.loads(row.state)
        except ValueError as e:
            raise LogCorrupted(path=self.location, seq=int(row.seq), detail=f"snapshot {name!r} is not JSON") from e
        return Snapshot(name=row.name, seq=int(row.seq), state=state, recorded_at=row.recorded_at)

    # -- audit -------------------------------------------------------------------------------

    def verify(self, progress: Callable[[int], None] | None = None) -> AuditReport:
        """Walk the hash chain from the first event; name the first sequence number that does not check out."""
        prev = GENESIS_HASH
        expected_seq = 1
        checked = 0
        query = select(events).order_by(events.c.seq)
        with self._read() as conn:
            if self._is_sqlite:
                integrity = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar()
                if integrity != "ok":
                    return AuditReport(checked=0, last_seq=0, first_bad_seq=1, problem=f"SQLite: {integrity}")
            head_row = conn.execute(select(meta.c.value).where(meta.c.key == "head")).first()
            for seq, stream_, version, type_, type_version, payload, at, digest in conn.execution_options(
                yield_per=5000
            ).execute(query):
                if seq != expected_seq:
                    problem = f"event {expected_seq} is missing (next present is {seq})"
                    return AuditReport(checked, expected_seq - 1, expected_seq, problem)
                if chain_hash(prev, seq, stream_, version, type_, type_version, payload, at) != digest:
                    return AuditReport(checked, seq - 1, seq, "content does not match its hash (edited or moved)")
                prev = digest
                checked += 1
                expected_seq += 1
                if progress is not None and checked % 10_000 == 0:
                    progress(checked)
        last = expected_seq - 1
        if head_row is not None:
            head_seq, _, head_hash = str(head_row[0]).partition(":")
            if int(head_seq) != last or head_hash != prev:
                problem = f"the log ends at {last} but its recorded head is event {head_seq} (events removed from the end)"
                return AuditReport(checked, last, last + 1, problem)
        return AuditReport(checked, last)
