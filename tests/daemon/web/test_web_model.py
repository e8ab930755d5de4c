"""The dashboard's live model: it follows the log, wakes subscribers coalesced, and says when a
client fell too far behind. Real SQLite logs (copies of the demo run), a real follower thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import wait_for, write_unreadable_row
from sqlalchemy.engine import make_url

from daemon.web.model import CLOSED, RECENT, LiveModel
from daemon.workspace import open_log
from statemachine import events as ev
from store import EventLog
from tests.pgserver import PgServer


@pytest.fixture
def model(demo_copy: Path) -> Iterator[LiveModel]:
    live = LiveModel(demo_copy, poll_interval=0.01)
    live.start()
    yield live
    live.stop()


def append(root: Path, count: int) -> list[int]:
    with EventLog(root / ".batchd" / "events.db") as log:
        stored = log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason=f"r{n}") for n in range(count)])
    return [s.seq for s in stored]


def test_start_folds_the_whole_log(model: LiveModel, demo_copy: Path) -> None:
    """At start the model shows the log as it is: its last seq and the run's state."""
    with EventLog(demo_copy / ".batchd" / "events.db") as log:
        assert model.last_seq == log.last_seq()
    with model.lock:
        assert model.projection.todos  # the demo's todos


def test_model_follows_appends(model: LiveModel, demo_copy: Path) -> None:
    """An event appended by another process's connection is folded in and kept for the streams."""
    before = model.last_seq
    (seq,) = append(demo_copy, 1)
    wait_for(lambda: model.last_seq == seq, "the model to follow the append")
    recent = model.recent(before)
    assert recent is not None
    assert [e.seq for e in recent] == [seq]
    assert recent[0].type == "control.pause"


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the wake-ups other threads hand it."""

    wakeups = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:
        self.wakeups += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def test_a_burst_wakes_a_subscriber_once(model: LiveModel, demo_copy: Path) -> None:
    """A burst of events costs the event loop one wake-up per subscriber, carrying the newest seq."""

    async def scenario() -> tuple[int, int]:
        queue = model.subscribe()
        try:
            # The loop is kept busy (no await) while the follower folds the whole burst, as a loop
            # serving other clients would be: every wake-up after the first must coalesce.
            seqs = append(demo_copy, 50)
            deadline = time.monotonic() + 15
            while model.last_seq != seqs[-1]:
                assert time.monotonic() < deadline, "the model did not follow the burst"
                time.sleep(0.01)
            got = await asyncio.wait_for(queue.get(), timeout=15)
            return got - seqs[-1], queue.qsize()
        finally:
            model.unsubscribe(queue)

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        assert runner.run(scenario()) == (0, 0)
        loop = runner.get_loop()
        assert isinstance(loop, CountingLoop)
        assert loop.wakeups == 1


def test_recent_is_none_when_the_client_is_behind_the_start(model: LiveModel) -> None:
    """A page older than what the model followed (before its start) is told to reload."""
    assert model.recent(model.last_seq - 1) is None
    assert model.recent(model.last_seq) == []


def test_recent_is_none_once_the_kept_events_moved_past(model: LiveModel, demo_copy: Path) -> None:
    """Past RECENT events behind, a client must reload; one within reach gets what it missed."""
    start = model.last_seq
    seqs = append(demo_copy, RECENT + 10)
    wait_for(lambda: model.last_seq == seqs[-1], "the model to follow", timeout=60)
    assert model.recent(start) is None
    assert model.recent(seqs[9]) is not None
    assert model.recent(seqs[8]) is None
    tail = model.recent(seqs[-6])
    assert tail is not None
    assert [e.seq for e in tail] == seqs[-5:]


def test_unsubscribe_stops_the_wake_ups(model: LiveModel) -> None:
    """A stream that ends leaves nothing behind in the model."""

    async def scenario() -> tuple[int, int]:
        queue = model.subscribe()
        during = model.subscriber_count
        model.unsubscribe(queue)
        return during, model.subscriber_count

    assert asyncio.run(scenario()) == (1, 0)


def test_close_streams_ends_every_subscriber_now_and_later(model: LiveModel) -> None:
    """At server stop every open stream, and any that opens after, receives CLOSED."""

    async def scenario() -> tuple[int, int]:
        queue = model.subscribe()
        model.close_streams()
        first = await asyncio.wait_for(queue.get(), timeout=15)
        late = model.subscribe()
        second = await asyncio.wait_for(late.get(), timeout=15)
        model.unsubscribe(queue)
        model.unsubscribe(late)
        return first, second

    assert asyncio.run(scenario()) == (CLOSED, CLOSED)


def test_stop_asked_during_the_fold_leaves_nothing_open(demo_copy: Path) -> None:
    """A progress callback that raises (Ctrl-C during a long fold) ends start() with no thread."""
    append(demo_copy, 10_000)  # the fold reports progress every 10,000 events

    class Stop(Exception):
        pass

    def progress(_n: int) -> None:
        raise Stop

    live = LiveModel(demo_copy, progress=progress)
    with pytest.raises(Stop):
        live.start()
    assert live._thread is None
    assert live._log is None
    live.stop()  # harmless


def allow_connections(pg_server: PgServer, database: str, allowed: bool) -> None:
    pg_server.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')


def test_a_database_gone_for_a_while_is_followed_again(
    demo_copy: Path, pg_server: PgServer, pg_url: str
) -> None:
    """The PostgreSQL server drops the dashboard's connections and refuses new ones for a while (a
    restart): the model says why and keeps trying; once the database is back it follows the log
    again, with no event missed and the error gone."""
    database = make_url(pg_url).database
    assert database
    with open_log(demo_copy, pg_url, must_exist=False) as log:
        log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason="before")])
    model = LiveModel(demo_copy, pg_url, poll_interval=0.01)
    model.start()
    try:
        assert model.following and model.error is None
        allow_connections(pg_server, database, False)
        try:
            pg_server.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )
            wait_for(lambda: model.error is not None, "the model to lose the log")
            assert not model.following
            assert "trying again" in model.error
        finally:
            allow_connections(pg_server, database, True)
        with open_log(demo_copy, pg_url) as log:
            (stored,) = log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason="after")])
        wait_for(lambda: model.last_seq == stored.seq, "the model to follow the log again")
        assert model.following and model.error is None
        recent = model.recent(stored.seq - 1)
        assert recent is not None and [e.payload["reason"] for e in recent] == ["after"]
    finally:
        model.stop()


def test_a_log_edited_for_good_is_not_tried_again(demo_copy: Path) -> None:
    """A row that is not JSON is no outage: the model stops following and says why, for good."""
    model = LiveModel(demo_copy, poll_interval=0.01)
    model.start()
    try:
        write_unreadable_row(demo_copy, model.last_seq + 1)
        wait_for(lambda: model.error is not None, "the model to stop")
        assert "stopped following the log" in model.error
        assert not model.following
        assert model._thread is not None
        model._thread.join(timeout=10)
        assert not model._thread.is_alive()  # no retry loop left running
    finally:
        model.stop()
