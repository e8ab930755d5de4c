"""The dashboard's read model: one projection and one timeline, kept current by one follower thread.

``batchd serve`` never appends on its own (control buttons append requests, as the CLI does, through
a connection of their own): it reads the log through the store. One thread follows the log
(:meth:`store.EventLog.follow`) and folds each new event into the projection (the same fold as
``status``) and the timeline; pages read both under :attr:`LiveModel.lock`. Every connected browser
shares this one fold, so a hundred open tabs cost the daemon one reader, not a hundred.

Subscribers (the SSE streams) are asyncio queues: the thread wakes each one with the newest seq,
coalesced, so a burst of a thousand events is one wake-up per subscriber, and the subscriber reads what
it missed from :meth:`LiveModel.recent`. They have a lock of their own, so adding one on the event
loop never waits for a page that holds the model's lock. :meth:`LiveModel.close_streams` (the server
stopping) puts :data:`CLOSED` in every queue, present and future: an SSE stream never ends by itself,
and uvicorn would wait for it.

When the log cannot be read for a while (:class:`~store.exceptions.StoreUnavailable`: a PostgreSQL
server restarting, a connection cut, a lock held too long) the follower closes its connection and
opens the log again, after :data:`RETRY_FIRST` seconds doubling up to :data:`RETRY_MAX`, for as long
as it takes: a dashboard left running outlives a database restart. Any other failure (a row that is
not JSON, a broken hash chain, an event the projection refuses: a log edited by hand) is for good:
retrying would fold the same bad event again. Either way :attr:`LiveModel.error` says why while the
model is not following (cleared once it follows again), :attr:`LiveModel.following` says whether it
is, and every subscriber is woken at each change to tell its page.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.exceptions import UsageError
from daemon.web.metrics import MetricsFold
from daemon.web.timeline import Timeline
from daemon.workspace import open_log
from statemachine.projection import Projection, replay
from store import EventLog, StoredEvent
from store.exceptions import StoreError, StoreUnavailable

__all__ = ["CLOSED", "RECENT", "RETRY_FIRST", "RETRY_MAX", "LiveModel"]

log = structlog.get_logger(__name__)

RECENT = 2000  # events kept for SSE clients that fell behind; further behind, they are told to reload
POLL_INTERVAL = 0.05  # seconds between reads of an idle log: an event reaches a page within ~0.1 s
RETRY_FIRST = 0.5  # seconds before the first try to open a log that became unavailable
RETRY_MAX = 10.0  # seconds between tries at most: a server back up is seen within that


class _Subscriber:
    __slots__ = ("loop", "pending", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self.pending = False  # a wake-up is on its way: a burst of events wakes it once


CLOSED = -1  # what a subscriber's queue receives when the server stops: end the stream


class LiveModel:
    """The projection and timeline of ``root``'s log (``db`` as ``--db`` takes it), live.

    ``start()`` folds what is in the log (the projection from its snapshot; the timeline and
    :attr:`metrics` from the start) and starts the follower; ``stop()`` ends it. Read
    :attr:`projection`, :attr:`timeline` and :attr:`metrics` only while holding :attr:`lock`.
    :attr:`error` says why the model is not following the log, while it is not (the pages then show
    the last state); :attr:`following` is True while it is.
    """

    def __init__(
        self,
        root: Path,
        db: str | None = None,
        *,
        poll_interval: float = POLL_INTERVAL,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.root = root
        self.db = db
        self.poll_interval = poll_interval
        self.lock = threading.RLock()
        self.projection = Projection()
        self.timeline = Timeline()
        self.metrics = MetricsFold()
        self.last_seq = 0
        self.error: str | None = None
        self.location = ""  # where the log is, as the store names it (never a password)
        self._following = False
        self._progress = progress
        self._recent: deque[StoredEvent] = deque(maxlen=RECENT)
        # Every event after this seq is in _recent: the seq the follower started from, then the seq
        # of the last event pushed out. (Not "the first kept seq - 1": seqs may have gaps, e.g. a
        # PostgreSQL sequence skips the numbers of rolled-back appends.)
        self._recent_floor = 0
        # Subscribers are added and removed on the event loop and woken from the follower thread:
        # a lock of their own, so neither ever waits for a page holding the model's lock.
        self._sub_lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()
        self._closed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: EventLog | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Fold the log as it is now, then follow it in a thread of its own.

        An exception from ``progress`` (a stop asked for during a long fold) ends the fold and
        propagates; nothing is left open."""
        self._log = open_log(self.root, self.db)
        self.location = self._log.location
        try:
            with self.lock:
                self.projection = replay(self._log)
                self.last_seq = self.projection.last_seq
                # Up to the projection's seq exactly: an event appended while the snapshot was
                # folded is left to the follower, which applies it to all three once.
                for n, event in enumerate(self._log.read(since=0, until=self.last_seq), 1):
                    self.timeline.apply(event)
                    self.metrics.apply(event)
                    if self._progress is not None and n % 10_000 == 0:
                        self._progress(n)
                self._recent_floor = self.last_seq
        except BaseException:
            self._log.close()
            self._log = None
            raise
        self._following = True
        self._thread = threading.Thread(target=self._follow, name="batchd-serve-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.close_streams()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_log()
        self._following = False

    def open_log(self) -> EventLog:
        """A read connection of the caller's own (pages that read one stream's events), to close."""
        return open_log(self.root, self.db)

    # -- following -------------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        """True while the follower reads the log (False before start, while it waits to open the log
        again, and after a failure for good)."""
        return self._following

    def _follow(self) -> None:
        delay = RETRY_FIRST
        while not self._stopping.is_set():
            try:
                if self._log is None:
                    self._log = open_log(self.root, self.db)
                    self._log.last_seq()  # a read: the log is there again, not just its engine
                    self._set_following(None)
                    delay = RETRY_FIRST
                self._tail(self._log)
                return  # stop() was asked
            except (StoreUnavailable, UsageError) as e:
                # StoreUnavailable: the database went away (restart, cut connection). UsageError is
                # only raised by open_log again: an SQLite file moved away and not yet back.
                self._set_following(
                    f"the dashboard lost the log after event {self.last_seq} ({e.message}); "
                    f"trying again in {delay:g}s"
                )
                log.warning("serve_follow_retrying", last_seq=self.last_seq, retry_in=delay, error=e.message)
                self._close_log()
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX)
            except Exception as e:
                # The page keeps showing the last state it knew; the log and the SSE clients say why
                # it stopped moving (an edited or corrupted log): the same event would fail again.
                self._set_following(
                    f"the dashboard stopped following the log after event {self.last_seq}: {e}"
                )
                log.exception("serve_follow_failed", last_seq=self.last_seq)
                return

    def _tail(self, source: EventLog) -> None:
        def outage(error: StoreError | None) -> None:
            # The store reconnects by itself; meanwhile the pages and /metrics say they are not live.
            self._set_following(
                None
                if error is None
                else f"the dashboard lost the log after event {self.last_seq} ({error.message}); "
                "trying again until it is back"
            )

        for event in source.follow(
            since=self.last_seq,
            poll_interval=self.poll_interval,
            stop=self._stopping.is_set,
            on_outage=outage,
        ):
            with self.lock:
                if event.seq <= self.projection.last_seq:
                    continue
                self.projection.apply(event)
                self.timeline.apply(event)
                self.metrics.apply(event)
                if len(self._recent) == self._recent.maxlen:
                    self._recent_floor = self._recent[0].seq
                self._recent.append(event)
                self.last_seq = event.seq
            self._wake(event.seq)

    def _set_following(self, error: str | None) -> None:
        """Following again (``error`` None) or not, and why: every page is told."""
        if error is None and self._following and self.error is None:
            return
        # In this order: a reader that sees the error (or its absence) sees ``following`` agree.
        if error is None:
            self.error = None
            self._following = True
        else:
            self._following = False
            self.error = error
        if error is None:
            log.info("serve_follow_resumed", last_seq=self.last_seq)
        self._wake(self.last_seq)

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(Exception):  # a connection already broken is closed either way
                self._log.close()
            self._log = None

    def _wake(self, seq: int) -> None:
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.pending:
                continue
            sub.pending = True
            try:
                sub.loop.call_soon_threadsafe(self._deliver, sub, seq)
            except RuntimeError:  # its loop is closed: the client is gone
                with self._sub_lock:
                    self._subscribers.discard(sub)

    def _deliver(self, sub: _Subscriber, seq: int) -> None:
        sub.pending = False
        _put_newest(sub.queue, CLOSED if self._closed else max(seq, self.last_seq))

    # -- subscribers (SSE) -----------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[int]:
        """A queue (call from the event loop) that receives the newest seq after new events, or
        :data:`CLOSED` (-1) when the server stops (the stream should end)."""
        sub = _Subscriber(asyncio.get_running_loop())
        with self._sub_lock:
            self._subscribers.add(sub)
            closed = self._closed
        if closed:
            sub.queue.put_nowait(CLOSED)
        return sub.queue

    def unsubscribe(self, queue: asyncio.Queue[int]) -> None:
        with self._sub_lock:
            self._subscribers = {s for s in self._subscribers if s.queue is not queue}

    @property
    def subscriber_count(self) -> int:
        with self._sub_lock:
            return len(self._subscribers)

    def close_streams(self) -> None:
        """Tell every subscriber, now and later, to end its stream (the server is stopping: an open
        SSE response would keep uvicorn waiting for it). Callable from any thread."""
        with self._sub_lock:
            self._closed = True
            subscribers = list(self._subscribers)
        for sub in subscribers:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing waits on it
                sub.loop.call_soon_threadsafe(_put_newest, sub.queue, CLOSED)

    def recent(self, since: int) -> list[StoredEvent] | None:
        """The events after ``since`` that were followed, or None when they are no longer all kept
        (the client fell behind: it should reload the page)."""
        with self.lock:
            if since >= self.last_seq:
                return []
            if since < self._recent_floor:
                return None
            return [e for e in self._recent if e.seq > since]


def _put_newest(queue: asyncio.Queue[int], value: int) -> None:
    """Replace what the one-slot queue holds by ``value`` (the newest seq; CLOSED stays)."""
    if queue.full() and queue.get_nowait() == CLOSED:
        value = CLOSED
    queue.put_nowait(value)
