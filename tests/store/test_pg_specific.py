"""What only PostgreSQL does: writers serialised per scope by an advisory lock, appends to other scopes
not waiting, verify's one snapshot while others append, and follow woken by NOTIFY for its own scope."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from store import EventLog, StoredEvent
from store.backends import scope_lock_key
from tests.store.events import REG, Noted

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0

# A child appending COUNT events to STREAM of SCOPE, one transaction each, checked versions.
APPENDER = """
import sys
from store import EventLog
from tests.store.events import REG, Noted
url, scope, stream, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with EventLog(url, scope=scope, reg=REG) as log:
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range(count):
        log.append(stream, [Noted(text=stream, n=n)], expected_version=n)
"""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def admin(pg_url: str) -> Iterator[Connection]:
    """A connection of the test's own to the same database, behind the store's back."""
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def _appenders(pg_url: str, jobs: list[tuple[str, str, int]]) -> None:
    """Run one appender process per (scope, stream, count), all released at once; wait for them."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, pg_url, scope, stream, str(count)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for scope, stream, count in jobs
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.communicate(timeout=DEADLINE)
    assert [p.returncode for p in procs] == [0] * len(procs)


def test_processes_appending_to_one_scope_get_gap_free_seqs_and_one_chain(pg_url: str) -> None:
    """Two processes appending to one repository's scope (a third to another) interleave into seqs
    1..N with no gap, every stream's versions in order, and a chain that verifies, in both scopes."""
    _appenders(pg_url, [("shared", "one", 60), ("shared", "two", 60), ("other", "three", 40)])
    with (
        EventLog(pg_url, scope="shared", reg=REG) as shared,
        EventLog(pg_url, scope="other", reg=REG) as other,
    ):
        events = list(shared.read())
        assert [e.seq for e in events] == list(range(1, 121))
        for stream in ("one", "two"):
            assert [e.payload["n"] for e in events if e.stream == stream] == list(range(60))
        assert shared.verify().ok
        assert [e.seq for e in other.read()] == list(range(1, 41))
        assert other.verify().ok


def test_an_append_waits_for_its_scope_while_other_scopes_proceed(pg_url: str, admin: Connection) -> None:
    """While a transaction holds one repository's writer lock, an append there waits for it, and an
    append to another repository completes meanwhile; the waiting one lands once the lock is freed."""
    admin.begin()
    admin.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (scope_lock_key("busy"),))
    landed: list[StoredEvent] = []
    with EventLog(pg_url, scope="busy", reg=REG) as busy, EventLog(pg_url, scope="free", reg=REG) as free:
        waiter = threading.Thread(target=lambda: landed.extend(busy.append("s", [Noted(text="waited")])))
        waiter.start()
        try:

            def blocked() -> bool:
                rows = admin.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).scalar()
                return bool(rows)

            wait_until(blocked, "the busy scope's append to wait on its lock")
            (done,) = free.append("s", [Noted(text="not blocked")])
            assert done.seq == 1
            assert landed == []  # cannot have landed: its lock is still held
        finally:
            admin.rollback()
            waiter.join(timeout=DEADLINE)
        assert [e.payload["text"] for e in landed] == ["waited"]
        assert busy.verify().ok and free.verify().ok


def test_verify_sees_one_moment_while_another_process_appends(pg_url: str) -> None:
    """verify() run while another process keeps appending always reports a good log (the head and the
    rows it reads come from one snapshot, never a head older than the rows)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, pg_url, "busy", "s", "400"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        reports = []
        with EventLog(pg_url, scope="busy", reg=REG) as log:
            wait_until(lambda: log.last_seq() > 0, "the first append")
            while proc.poll() is None:
                reports.append(log.verify())
            reports.append(log.verify())
    finally:
        proc.communicate(timeout=DEADLINE)
    assert [r.problem for r in reports if not r.ok] == []
    assert reports[-1].checked == 400


def test_follow_is_woken_for_its_own_scope_and_never_yields_another(pg_url: str) -> None:
    """A follower of one repository (polling only hourly) sleeps through another repository's appends,
    yields none of them, and wakes for the first append to its own scope."""
    seen: list[StoredEvent] = []
    stop = threading.Event()
    with EventLog(pg_url, scope="mine", reg=REG) as mine, EventLog(pg_url, scope="theirs", reg=REG) as theirs:

        def follower() -> None:
            for ev in mine.follow(poll_interval=3600, stop=stop.is_set):
                seen.append(ev)
                stop.set()

        thread = threading.Thread(target=follower, daemon=True)
        thread.start()
        try:
            for n in range(5):
                theirs.append("s", [Noted(text="theirs", n=n)])
            mine.append("s", [Noted(text="mine")])
            thread.join(timeout=DEADLINE)
            assert not thread.is_alive(), "the follower was not woken by its scope's append"
        finally:
            stop.set()
    assert [(e.seq, e.payload["text"]) for e in seen] == [(1, "mine")]
