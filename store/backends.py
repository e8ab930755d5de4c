"""What differs between the store's two backends, SQLite and PostgreSQL, kept out of the log's logic.

- Opening: SQLite's pragmas live in one ``connect`` listener; PostgreSQL engines use psycopg 3 with
  the positional ``%s`` paramstyle, so every compiled statement takes a plain tuple (as on SQLite).
- Naming: where a log lives, as a user reads it (:func:`safe_location`: a path; or the server's host,
  port and database, never a password, whether in the URL's userinfo or in its query).
- Errors: driver errors become store errors in :func:`store_error`, once, classified by the driver's
  exception class and the server's SQLSTATE (never by a class's name).
- Connections after a server restart: the pool pings a connection before handing it out
  (``pool_pre_ping``, which ``Engine.raw_connection()`` goes through too), so reads never meet a dead
  pooled connection. The log's long-lived writer connection is never checked out again, so the log
  itself retries a write once when its *first* statement meets a lost connection (see
  :func:`is_disconnect`): nothing can have been written then. A failure later in the transaction is
  never retried, since its COMMIT may have reached the server.
- Writer serialisation on PostgreSQL: one advisory transaction lock per scope (:func:`scope_lock_key`),
  taken first in every write transaction, so two processes appending to one scope queue up while
  appends to different scopes never wait on each other. Advisory rather than ``SELECT ... FOR UPDATE``
  of the head row: a scope's first append has no row to lock yet.
- Waking followers on PostgreSQL: after an append commits, the writer sends ``pg_notify('batchd_events',
  scope)`` as a statement of its own (see ``EventLog._notify``); :class:`Listener` holds a connection of
  its own that LISTENs, so a follower sleeps until then. A notify that is lost (the connection drops
  between the commit and the notify, a listener reconnecting) only delays a follower until its
  ``poll_interval`` runs out: it reads after every wait, woken or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from store.exceptions import (
    DriverMissing,
    LogCorrupted,
    NotADatabase,
    ServerUnreachable,
    StoreError,
    StoreUnavailable,
)

BUSY_TIMEOUT_MS = 30_000

#: Driver modules by SQLAlchemy driver name, and the batchd extra that installs each.
_DRIVERS = {"psycopg": ("psycopg", "postgres"), "psycopg2": ("psycopg2", ""), "asyncpg": ("asyncpg", "")}


@dataclass(frozen=True, slots=True)
class Server:
    """Where a server-based log lives, as a user names it (never with the password)."""

    host: str
    port: int
    database: str
    user: str

    def __str__(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def server_of(url: URL) -> Server:
    """The host, port and database libpq will use for ``url`` (a socket folder counts as the host)."""
    query = url.query

    def one(name: str) -> str:
        value = query.get(name, "")
        return value if isinstance(value, str) else (value[0] if value else "")

    host = url.host or one("host") or "/var/run/postgresql"
    port_text = one("port")
    port = url.port or (int(port_text) if port_text.isdigit() else 5432)
    user = url.username or one("user") or "(default user)"
    return Server(host=host, port=port, database=url.database or url.username or "", user=user)


def safe_location(url: str | URL) -> str:
    """Where a log lives, for every message, status file and page that shows it: an SQLite file's path,
    or ``postgresql://user@host:port/database``. Built from parts, so no password can be in it, neither
    the URL's own (``user:secret@``) nor a query's (``?password=secret``, ``sslpassword``)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if path is not None:
            return str(path)
        # In memory or a file: URI; the query of a file: URI cannot carry a password SQLite reads.
        return f"sqlite:///{parsed.database or ''}" if parsed.database else "sqlite://"
    return str(server_of(parsed))


def make_engine(url: URL, *, memory: bool, on_file: bool) -> Engine:
    """An engine for the log: SQLite with its pragmas and our own BEGIN; others positional."""
    if url.get_backend_name() != "sqlite":
        try:
            # lock_timeout: like SQLite's busy timeout, a writer waits 30 s for a scope's lock, then fails.
            options = {"options": f"-c lock_timeout={BUSY_TIMEOUT_MS}"}
            # pre_ping: a pooled connection the server dropped (a restart, pg_terminate_backend) is
            # replaced at checkout instead of failing the read that got it.
            return create_engine(url, paramstyle="format", connect_args=options, pool_pre_ping=True)
        except ImportError as e:
            module, extra = _DRIVERS.get(url.get_driver_name(), (e.name or url.get_driver_name(), ""))
            raise DriverMissing(url=safe_location(url), module=module, extra=extra) from e
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        # We issue BEGIN ourselves: pysqlite's implicit BEGIN would defer the write lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # Wait for another process's short write instead of failing with "database is locked".
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if on_file:
            # WAL: readers never block the writer, the writer never blocks readers.
            _enter_wal(dbapi_conn, cur)
        # FULL: a commit that returned survives power loss, not just a process crash.
        cur.execute("PRAGMA synchronous = FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so check-then-create cannot be raced.
        write = conn.get_execution_options().get("batchd_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enter_wal(dbapi_conn: Any, cur: Any) -> None:
    """Switch a file log to WAL, waiting like the busy timeout for another process to let go.

    Leaving a rollback journal (a v1 log, a new file) needs an exclusive lock, and SQLite answers
    "database is locked" at once instead of calling the busy handler when another connection is
    mid-read or mid-migration, so the wait is ours. A log already in WAL never meets this."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except dbapi_conn.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


# PostgreSQL error classes that mean "this connection cannot be had": authorization (28) and no such
# database (3D) refuse an open; connection exceptions (08) and operator intervention (57P: shutdown,
# pg_terminate_backend, starting up) mean the server went away or is coming back.
_REFUSED_STATES = ("28", "3D")
_LOST_STATES = ("08", "57P")


def is_disconnect(orig: BaseException, dbapi: Any) -> bool:
    """True when ``orig`` says the server is gone or going (down, restarting, ended our session), so
    trying again on a new connection may work; False for refusals, SQL errors and everything else.

    libpq's own failures (connection refused, server closed the connection) carry no SQLSTATE."""
    if dbapi is None or not isinstance(orig, dbapi.OperationalError):
        return False
    state = getattr(orig, "sqlstate", None)
    return state is None or state.startswith(_LOST_STATES)


def store_error(
    orig: BaseException, *, location: str, server: Server | None, dbapi: Any = None
) -> StoreError:
    """The one place a driver error becomes a store error (``dbapi``: the driver's module)."""
    text = str(orig)
    if server is None:
        if "not a database" in text or "file is encrypted" in text:
            return NotADatabase(path=location, detail=text)
        if "malformed" in text or "corrupt" in text:
            return LogCorrupted(path=location, seq=None, detail=text)
        return StoreUnavailable(path=location, detail=text)
    state = getattr(orig, "sqlstate", None) or ""
    lost = is_disconnect(orig, dbapi)
    # A refusal arrives as the driver's OperationalError at connect; the class is the server's verdict.
    refused = dbapi is not None and isinstance(orig, dbapi.Error) and state.startswith(_REFUSED_STATES)
    if lost or refused:
        # libpq's text names the socket or address it tried and why; its hint lines are for psql users.
        reason = " ".join(line.strip() for line in text.splitlines() if line.strip() and "HINT" not in line)
        return ServerUnreachable(
            path=location,
            host=server.host,
            port=server.port,
            database=server.database,
            reason=reason,
            lost=lost,
        )
    return StoreUnavailable(path=location, detail=text)


def scope_lock_key(scope: str) -> int:
    """The advisory lock of one scope's writers: a signed 64-bit number from the scope's name.

    Two scopes sharing a key (odds 2^-64) would only make their writers take turns.
    """
    digest = hashlib.sha256(f"batchd.scope:{scope}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: The advisory lock of schema changes (creating tables, migrating): one database-wide key.
SCHEMA_LOCK_KEY = scope_lock_key("\x00schema")


class Listener:
    """A connection of its own that LISTENs on the log's channel and wakes for one scope's appends."""

    def __init__(self, engine: Engine, channel: str, scope: str) -> None:
        raw = engine.raw_connection()
        # Detached: this connection ends with the follower and never returns to the pool in autocommit.
        raw.detach()
        self._raw = raw
        conn: Any = raw.dbapi_connection
        self._conn = conn
        self._scope = scope
        try:
            conn.autocommit = True
            conn.execute(f"LISTEN {channel}")
        except BaseException:
            self.close()
            raise

    def wait(self, timeout: float) -> bool:
        """Block until an append to our scope commits (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            woke = False
            for note in self._conn.notifies(timeout=left, stop_after=1):
                woke = woke or note.payload == self._scope
            if woke:
                # Drain what else arrived: one read catches up on all of it.
                for _ in self._conn.notifies(timeout=0):
                    pass
                return True

    def close(self) -> None:
        # A connection that fails to close is gone either way.
        with contextlib.suppress(Exception):
            self._raw.close()


def sqlite_path(url: URL) -> Path | None:
    db = url.database or ""
    if url.get_backend_name() != "sqlite" or is_memory(url) or db.startswith("file:"):
        return None
    return Path(db)


def is_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db
