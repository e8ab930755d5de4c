"""Reading one scope's events in pages, and following them as they are appended.

:class:`Reader` is what :meth:`store.EventLog.read` and :meth:`store.EventLog.follow` run; it gets
from the log only what reading needs (its compiled statements, a cursor factory that translates
driver errors, and on PostgreSQL a way to open a :class:`store.backends.Listener`).

Pages: a read fetches :data:`READ_PAGE` rows per transaction, so a long read never pins one WAL
snapshot (which would stop SQLite's checkpoints).

Following on PostgreSQL, and what happens when the server goes away: the follower LISTENs before it
reads, so an append committed between the read and the wait still wakes the wait. When the
listening connection drops (a server restart, ``pg_terminate_backend``, a proxy restart), or a read
finds the server gone, the follower closes the listener, waits a moment and opens a new one, then
reads: that read catches up on every event appended while it was away (a notify sent then is lost,
the read is not). While the server stays unreachable it keeps trying, the wait doubling from
:data:`RECONNECT_FIRST` to :data:`RECONNECT_MAX` seconds (apart from ``poll_interval``: a follower
polling hourly must still come back soon after a restart), checking ``stop()`` all along, and logs
one warning per outage (``follow_reconnecting``), and ``follow_reconnected`` when it is back. Errors
that are not a lost server (a refused password, a dropped database, a corrupt row) end the follow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import structlog

from store.backends import Listener
from store.exceptions import LogCorrupted, ServerUnreachable
from store.records import StoredEvent
from store.statements import Statements

#: Rows fetched per read transaction.
READ_PAGE = 2000
#: The follower's first wait before reconnecting to a server that went away, and the longest.
RECONNECT_FIRST = 0.05
RECONNECT_MAX = 5.0
#: How often a reconnect wait checks ``stop()``.
_STOP_CHECK = 0.05

_loads = json.loads
_log = structlog.get_logger(__name__)


class Reader:
    """Reads and follows the events of one scope."""

    def __init__(
        self,
        *,
        scope: str,
        location: str,
        sql: Statements,
        cursor: Callable[[], AbstractContextManager[Any]],
        translate: Callable[[], AbstractContextManager[None]],
        listen: Callable[[], Listener] | None,
    ) -> None:
        self._scope = scope
        self._location = location
        self._sql = sql
        self._cursor = cursor
        self._translate = translate
        self._listen = listen

    def read(
        self,
        *,
        since: int,
        until: int | None,
        at: str | None,
        stream: str | None,
        stream_prefix: str | None,
        limit: int | None,
    ) -> Iterator[StoredEvent]:
        """Events with ``since < seq <= until`` (the last seq at the start, without ``until``)."""
        sql, params = self._sql.select_events(at=at, stream=stream, stream_prefix=stream_prefix)
        text = sql.text
        last_seq_sql = self._sql.last_seq.text
        scope = self._scope
        remaining = limit
        last = since
        ceiling = until
        location = self._location
        while remaining is None or remaining > 0:
            page = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            with self._cursor() as cur:
                if ceiling is None:
                    cur.execute(last_seq_sql, (scope,))
                    ceiling = int(cur.fetchone()[0] or 0)
                cur.execute(text, (scope, last, ceiling, *params, page))
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

    def follow(
        self,
        *,
        since: int,
        poll_interval: float,
        stop: Callable[[], bool],
        stream: str | None,
        on_outage: Callable[[ServerUnreachable | None], None] | None = None,
    ) -> Iterator[StoredEvent]:
        """Yield events after ``since`` as they are appended, until ``stop()`` is true (see the
        module docstring for waiting and reconnecting). ``on_outage`` is told when the server is
        lost (with why) and when it is back (None): a follower that shows the log (the dashboard)
        says it is not live meanwhile."""
        last = since
        listener: Listener | None = None
        outage: ServerUnreachable | None = None
        delay = RECONNECT_FIRST
        try:
            while not stop():
                try:
                    if self._listen is not None and listener is None:
                        with self._translate():
                            listener = self._listen()
                    got = False
                    for ev in self.read(
                        since=last, until=None, at=None, stream=stream, stream_prefix=None, limit=None
                    ):
                        if outage is not None:  # told before the first event after it, not after
                            outage, delay = None, self._reconnected(on_outage)
                        last = ev.seq
                        got = True
                        yield ev
                        if stop():
                            return
                    if outage is not None:
                        outage, delay = None, self._reconnected(on_outage)
                    if got:
                        continue
                    if listener is None:
                        time.sleep(poll_interval)
                    else:
                        with self._translate():
                            listener.wait(poll_interval)
                except ServerUnreachable as e:
                    if not e.lost:
                        raise
                    if listener is not None:
                        listener.close()
                        listener = None
                    if outage is None:
                        outage = e
                        _log.warning(
                            "follow_reconnecting", location=self._location, scope=self._scope, error=e.reason
                        )
                        if on_outage is not None:
                            on_outage(e)
                    _sleep_unless_stopped(delay, stop)
                    delay = min(delay * 2, RECONNECT_MAX)
        finally:
            if listener is not None:
                listener.close()

    def _reconnected(self, on_outage: Callable[[ServerUnreachable | None], None] | None) -> float:
        """The server answers again: say so (the caller shows it is live before any event it gets
        from now on); the reconnect delay starts over."""
        _log.info("follow_reconnected", location=self._location, scope=self._scope)
        if on_outage is not None:
            on_outage(None)
        return RECONNECT_FIRST


def _sleep_unless_stopped(seconds: float, stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _STOP_CHECK))
