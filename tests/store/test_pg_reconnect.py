"""A PostgreSQL log outlives its connections: a follower whose LISTEN session is ended, or whose server
restarts, comes back and yields what was appended meanwhile; an append after every session of the
database was ended, or after a restart, succeeds; an append while the server is down names the server.

The restarts stop the session's private server for a moment (``PgServer.down``); with an outside
server (``BATCHD_TEST_PG_URL``) those tests are skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from store import EventLog, ServerUnreachable, StoredEvent
from tests.pgserver import PgServer
from tests.store.events import REG, Noted

DEADLINE = 60.0
OTHERS = "datname = current_database() AND pid <> pg_backend_pid()"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def admin(pg_url: str) -> Iterator[Callable[[str], list[Any]]]:
    """Run one autocommit statement on a connection of the test's own, behind the store's back."""
    engine = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def run(sql: str) -> list[Any]:
        conn: Connection
        with engine.connect() as conn:
            result = conn.exec_driver_sql(sql)
            return [tuple(r) for r in result] if result.returns_rows else []

    yield run
    engine.dispose()


def listener_pids(admin: Callable[[str], list[Any]]) -> list[int]:
    sql = f"SELECT pid FROM pg_stat_activity WHERE {OTHERS} AND left(query, 6) = 'LISTEN'"
    return [pid for (pid,) in admin(sql)]


@dataclass
class Follower:
    """``log.follow`` on a thread of its own (polling only hourly: only a notify or a reconnect's read
    can bring an event), keeping what it yielded and what it raised."""

    log: EventLog
    seen: list[StoredEvent] = field(default_factory=list)
    failed: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self.log.follow(poll_interval=3600, stop=self.stop.is_set):
                self.seen.append(ev)
        except BaseException as e:  # the test reports it
            self.failed.append(e)

    def texts(self) -> list[str]:
        return [str(e.payload["text"]) for e in self.seen if e.stream == "s"]

    def wait_for(self, count: int) -> None:
        wait_until(lambda: len(self.seen) >= count or bool(self.failed), f"{count} events followed")
        assert self.failed == []

    def close(self) -> None:
        """Stop it: an hourly follower checks ``stop()`` when it wakes, so wake it with an append."""
        self.stop.set()
        if self.thread.is_alive():
            self.log.append("wake", [Noted(text="wake")])
        self.thread.join(timeout=DEADLINE)
        assert not self.thread.is_alive(), "the follower did not stop"


def test_follow_survives_its_listening_session_being_ended(
    pg_url: str, admin: Callable[[str], list[Any]]
) -> None:
    """A follower whose LISTEN connection is ended by the server (pg_terminate_backend) listens again and
    yields the next append, instead of dying with a connection error."""
    with EventLog(pg_url, reg=REG) as log:
        follower = Follower(log)
        try:
            log.append("s", [Noted(text="before")])
            follower.wait_for(1)
            wait_until(lambda: len(listener_pids(admin)) == 1, "the follower to LISTEN")
            (old,) = listener_pids(admin)
            assert admin(f"SELECT pg_terminate_backend({old}, 60000)") == [(True,)]
            wait_until(lambda: listener_pids(admin) not in ([], [old]), "the follower to LISTEN again")
            log.append("s", [Noted(text="after")])
            follower.wait_for(2)
        finally:
            follower.close()
    assert follower.texts() == ["before", "after"]


def test_follow_survives_a_server_restart_warning_once(pg_server: PgServer, pg_url: str) -> None:
    """A follower keeps trying while the server is down (one warning, however long), and after the
    restart yields what was appended, with a log line saying it is back."""
    with EventLog(pg_url, reg=REG) as log, structlog.testing.capture_logs() as logs:
        follower = Follower(log)
        try:
            log.append("s", [Noted(text="before")])
            follower.wait_for(1)
            with pg_server.down():
                # Several tries while down (the backoff doubles from 0.05 s): still one warning.
                wait_until(lambda: any(e["event"] == "follow_reconnecting" for e in logs), "the warning")
                time.sleep(0.5)  # lets it try again; the assertion below holds however long this is
            log.append("s", [Noted(text="after restart")])
            follower.wait_for(2)
            wait_until(lambda: any(e["event"] == "follow_reconnected" for e in logs), "the all-clear")
        finally:
            follower.close()
    assert follower.texts() == ["before", "after restart"]
    warnings = [e for e in logs if e["event"] == "follow_reconnecting"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"


def test_follow_says_it_is_back_before_the_first_event_after_an_outage(
    pg_server: PgServer, pg_url: str
) -> None:
    """``on_outage(None)`` comes before the first event read after the server is back: a follower
    showing the log (the dashboard) is never seen with new events while it still says it is lost."""
    order: list[str] = []
    stop = threading.Event()
    with EventLog(pg_url, reg=REG) as log:

        def run() -> None:
            told = lambda error: order.append("lost" if error is not None else "back")  # noqa: E731
            for ev in log.follow(poll_interval=3600, stop=stop.is_set, on_outage=told):
                order.append(str(ev.payload["text"]))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            log.append("s", [Noted(text="before")])
            wait_until(lambda: order == ["before"], "the first event")
            with pg_server.down():
                wait_until(lambda: "lost" in order, "the outage to be noticed")
                time.sleep(1.0)  # its backoff grows past the append below: the next read brings it
            log.append("s", [Noted(text="after")])
            wait_until(lambda: "after" in order, "the event after the outage")
        finally:
            stop.set()
            log.append("wake", [Noted(text="wake")])
            thread.join(timeout=DEADLINE)
    assert order[:4] == ["before", "lost", "back", "after"]


def test_append_after_every_session_was_ended_succeeds(
    pg_url: str, admin: Callable[[str], list[Any]]
) -> None:
    """After every connection to the log's database is ended (an operator's pg_terminate_backend, a
    failover), the next append and read work: the writer's lost connection is replaced before its
    transaction begins, pooled read connections are pinged before use."""
    with EventLog(pg_url, reg=REG) as log:
        log.append("s", [Noted(text="first")])
        assert [e.seq for e in log.read()] == [1]
        admin(f"SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity WHERE {OTHERS}")
        assert admin(f"SELECT count(*) FROM pg_stat_activity WHERE {OTHERS}") == [(0,)]
        (second,) = log.append("s", [Noted(text="second")], expected_version=1)
        assert second.seq == 2
        assert [e.payload["text"] for e in log.read()] == ["first", "second"]
        assert log.verify().ok


def test_append_after_a_server_restart_succeeds(pg_server: PgServer, pg_url: str) -> None:
    """A log opened before the server restarted appends, reads and verifies after it, no reopening."""
    with EventLog(pg_url, reg=REG) as log:
        log.append("s", [Noted(text="first")])
        log.save_snapshot("p", 1, {"n": 1})
        with pg_server.down():
            pass
        log.append("s", [Noted(text="second")], expected_version=1)
        log.save_snapshot("p", 2, {"n": 2})
        assert [e.seq for e in log.read()] == [1, 2]
        snap = log.load_snapshot("p")
        assert snap is not None and snap.state == {"n": 2}


def test_append_while_the_server_is_down_names_the_server(pg_server: PgServer, pg_url: str) -> None:
    """An append while the server is down fails with a message naming its host, port and database,
    that it cannot be reached, and none of SQLite's hints (a write lock, a full disk)."""
    url = make_url(pg_url)
    with EventLog(pg_url, reg=REG) as log:
        log.append("s", [Noted(text="first")])
        with pg_server.down(), pytest.raises(ServerUnreachable) as info:
            log.append("s", [Noted(text="lost")])
        error = info.value
        assert error.lost
        assert (error.host, error.port, error.database) == (
            url.query["host"],
            int(str(url.query["port"])),
            url.database,
        )
        assert "cannot be reached" in str(error)
        assert str(url.database) in str(error) and str(error.port) in str(error)
        assert "write lock" not in error.render() and "createdb" not in error.render()
        assert [e.payload["text"] for e in log.read()] == ["first"]
