"""follow(): tailing the log while another thread or process appends, on SQLite and PostgreSQL.

SQLite followers poll; PostgreSQL followers wait for the appender's NOTIFY (the poll interval is only
a fallback), which the last test shows with an interval no test would live to see.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from store import EventLog
from tests.store.events import REG, Noted

ROOT = Path(__file__).resolve().parents[2]


def test_follow_yields_a_writer_threads_events_in_order(log: EventLog) -> None:
    """Events appended by another thread arrive through follow() in seq order, then stop() ends it."""
    log.append("a", [Noted(text="before", n=-1)])
    done = threading.Event()

    def writer() -> None:
        for n in range(30):
            log.append("a", [Noted(text="live", n=n)])

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    for ev in log.follow(poll_interval=0.005, stop=done.is_set):
        seen.append(ev)
        if len(seen) == 31:
            done.set()
    thread.join()
    assert [e.seq for e in seen] == list(range(1, 32))
    assert [e.payload["n"] for e in seen] == list(range(-1, 30))


def test_follow_starts_after_since(log: EventLog) -> None:
    """follow(since=n) begins with event n + 1."""
    log.append("a", [Noted(text=str(n)) for n in range(5)])
    stream = log.follow(since=3, poll_interval=0.005)
    assert [next(stream).seq, next(stream).seq] == [4, 5]


def test_stop_ends_an_idle_follow(log: EventLog) -> None:
    """An idle follow() returns once stop() turns true."""
    calls = iter([False, False, True])
    assert list(log.follow(poll_interval=0.001, stop=lambda: next(calls))) == []


def appender(target: str, count: int) -> subprocess.Popen[bytes]:
    """Another process appending ``count`` events to stream ``remote``, one transaction each."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.child", "loop", target, "remote", str(count)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def test_follow_sees_another_process_appending(backend: str) -> None:
    """A follower in this process sees every event another process appends, in order."""
    with EventLog(backend, reg=REG) as log:
        proc = appender(backend, 20)
        seen = []
        try:
            for ev in log.follow(poll_interval=0.01, stop=lambda: len(seen) >= 20):
                seen.append(ev)
        finally:
            assert proc.wait(timeout=30) == 0
    assert [e.payload["n"] for e in seen] == list(range(20))
    assert [e.seq for e in seen] == list(range(1, 21))


@pytest.mark.timeout(90)
def test_follow_on_postgres_is_woken_by_notify_not_by_polling(pg_url: str) -> None:
    """On PostgreSQL a follower whose poll interval is an hour still gets another process's events
    as they are appended: it waits on LISTEN, and each append NOTIFYs (a polling follower would
    hang here until the test's timeout)."""
    with EventLog(pg_url, reg=REG) as log:
        log.append("local", [Noted(text="before")])
        follower = log.follow(poll_interval=3600)
        assert next(follower).payload["text"] == "before"  # following (and listening) from here on
        proc = appender(pg_url, 5)
        try:
            got = [next(follower).payload["n"] for _ in range(5)]
        finally:
            follower.close()
            assert proc.wait(timeout=30) == 0
    assert got == list(range(5))


def test_follow_filters_by_stream(log: EventLog) -> None:
    """follow(stream=) yields only that stream's events."""
    log.append("a", [Noted(text="a")])
    log.append("b", [Noted(text="b")])
    log.append("a", [Noted(text="a2")])
    stream = log.follow(stream="a", poll_interval=0.005)
    assert [next(stream).payload["text"], next(stream).payload["text"]] == ["a", "a2"]
