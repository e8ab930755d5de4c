"""Turns inotify events in the todos folder into settled, de-duplicated file names.

watchdog calls back on its own thread; the handler here only records names under a lock and wakes
the daemon loop, which sleeps in :meth:`TodoWatcher.wait` and takes the names with
:meth:`TodoWatcher.drain`. Nothing here reads a todo: an event only says *which name to rescan*,
and the scan is the truth (a deletion is reported like any change; the rescan finds it gone).

What events cannot promise, this module says out loud instead of hiding:

- inotify drops events when its kernel queue overflows, and files present before the watch starts
  produce none. :attr:`TodoWatcher.overflowed` is raised when watchdog logs trouble, when the
  watch dies (folder deleted or replaced) and when a watch is (re)attached; the daemon then runs a
  full scan (it also scans at start-up and every ``rescan_interval``).
- Start the watcher *before* the start-up scan, so nothing lands between the two unseen.

Usage from the daemon loop (``now`` comes from the same clock, :func:`time.monotonic` by default)::

    with TodoWatcher(todos_dir, ignore=lambda n: is_ignored(n, cfg.ignore)) as watcher:
        full_scan()
        while running:
            watcher.wait(timeout=1.0)
            if watcher.take_overflow():
                full_scan()
            for name in watcher.drain(time.monotonic()):
                rescan(name)
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

# One set of editor-temp rules for the watcher and the scanner (a name never reported is never read).
from daemon.intake.todofile import is_editor_temp

__all__ = ["TodoWatcher", "is_editor_temp"]

log = structlog.get_logger(__name__)

# Only what can change a todo. Opens and read-only closes are left out on purpose: the daemon
# reads every file it is told about, and hearing its own reads would make it loop.
_EVENT_FILTER = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
]

# A file seen written but not yet closed is held this long past its last event before it is
# reported anyway: close events are preferred, not required (mmap writes, truncate, hard links).
DEFAULT_OPEN_GRACE = 1.0
# While the folder is not watched (missing, deleted, watch failed), how often to try again.
_REATTACH_POLL = 0.5


@dataclass(slots=True)
class _Pending:
    last: float  # clock time of the name's latest event
    writing: bool  # modified or created since its last close: a writer may still hold it open


class _TroubleLog(logging.Handler):
    """Turns watchdog's own warnings (queue overflow, a failed rebuild) into a rescan request.

    watchdog tells no handler when the inotify queue overflows; it only logs. Any watchdog
    warning in the process counts: a needless full scan is cheap, a missed file is not.
    """

    def __init__(self, on_trouble: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_trouble = on_trouble

    def emit(self, record: logging.LogRecord) -> None:
        self._on_trouble(record.getMessage())


class TodoWatcher:
    """Watches one folder (not recursively) and hands out the names that changed in it.

    ``ignore(name)`` drops names that are not todos (the daemon passes its ignore globs in);
    editors' temporary files are dropped regardless. A name is handed out once its last event is
    ``settle`` seconds old, so a burst (created, modified, closed; an editor's rename dance) comes
    out as one name. The folder may not exist yet: it is watched as soon as it appears.
    """

    def __init__(
        self,
        folder: Path,
        *,
        ignore: Callable[[str], bool],
        settle: float = 0.05,
        open_grace: float = DEFAULT_OPEN_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self._ignore = ignore
        self._settle = settle
        # Without close events (not Linux) a written file would always wait out the grace.
        self._open_grace = max(open_grace, settle) if sys.platform.startswith("linux") else settle
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._poked = False  # wake() was called: the loop has something other than files to look at
        self._pending: dict[str, _Pending] = {}
        self._overflowed = False
        self._overflow_count = 0
        self._last_event_at: float | None = None
        self._observer: Any = None  # watchdog's observer; untyped (no stubs)
        self._watched: str | None = None  # resolved path of the attached watch, None when detached
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the watched folder
        self._detach_logged = False
        self._next_check = 0.0
        self._trouble = _TroubleLog(self._on_trouble)
        self._started = False

    # -- lifecycle (daemon thread) ------------------------------------------------------------

    def start(self) -> None:
        """Starts watching; a folder that does not exist yet is watched once it appears."""
        if self._started:
            return
        self._started = True
        logging.getLogger("watchdog").addHandler(self._trouble)
        self._attach(initial=True)
        self._next_check = self._clock() + _REATTACH_POLL

    def stop(self) -> None:
        """Stops watching and joins watchdog's threads; safe to call twice."""
        if not self._started:
            return
        self._started = False
        # Unhook first: watchdog may log while its threads wind down, and that is no lost event.
        logging.getLogger("watchdog").removeHandler(self._trouble)
        self._detach()
        self._wake.set()  # a loop blocked in wait() looks again and sees the stop

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def watching(self) -> bool:
        """True while an inotify watch is attached to the folder."""
        return self._watched is not None

    # -- what the daemon loop reads (daemon thread) -------------------------------------------

    @property
    def overflowed(self) -> bool:
        """Events may have been lost since the last :meth:`take_overflow`: run a full scan."""
        with self._lock:
            return self._overflowed

    @property
    def overflow_count(self) -> int:
        """How many times events may have been lost since start (for status and tests)."""
        with self._lock:
            return self._overflow_count

    @property
    def last_event_at(self) -> float | None:
        """Clock time of the last event watchdog delivered (ignored names included), or None."""
        with self._lock:
            return self._last_event_at

    def take_overflow(self) -> bool:
        """Returns whether events may have been lost, and clears the flag."""
        with self._lock:
            overflowed, self._overflowed = self._overflowed, False
            return overflowed

    def drain(self, now: float) -> set[str]:
        """Names whose last event is at least ``settle`` old; names still settling stay."""
        self._check_watch(now)
        with self._lock:
            ready = {name for name, p in self._pending.items() if now >= self._due(p)}
            for name in ready:
                del self._pending[name]
            return ready

    def wake(self) -> None:
        """Ends the current (or next) :meth:`wait` early: a job finished or an agent exited, and the
        loop should look at once rather than at the end of its tick. Safe from any thread, but not
        from a signal handler (it takes a lock)."""
        with self._lock:
            self._poked = True
            self._wake.set()

    def wait(self, timeout: float) -> bool:
        """Sleeps until a name is ready to drain or events may have been lost (True), until
        :meth:`wake` (False), or timeout (False).

        Wakes within milliseconds of the change that makes a name ready, never busy-loops while
        names settle, and keeps retrying a folder that is missing.
        """
        deadline = self._clock() + timeout
        while True:
            now = self._clock()
            self._check_watch(now)
            with self._lock:
                self._wake.clear()  # under the lock: a handler that records after this sets it again
                if self._poked:
                    self._poked = False
                    return False
                if self._overflowed or any(now >= self._due(p) for p in self._pending.values()):
                    return True
                next_due = min((self._due(p) for p in self._pending.values()), default=None)
            if now >= deadline or not self._started:
                return False
            nap = deadline - now
            if next_due is not None:
                nap = min(nap, next_due - now)
            if self._watched is None:
                nap = min(nap, _REATTACH_POLL)
            self._wake.wait(max(nap, 0.0))

    # -- watchdog's thread ---------------------------------------------------------------------

    def dispatch(self, event: Any) -> None:
        """watchdog's handler entry point (duck-typed: it only calls ``dispatch``)."""
        try:
            self._record(event)
        except Exception:  # an exception here would kill watchdog's thread: report it, ask for a rescan
            log.exception("watch_handler_failed", folder=str(self.folder))
            self._on_trouble("handler failed")

    def _record(self, event: Any) -> None:
        watched = self._watched
        kind: str = event.event_type
        src = os.fsdecode(event.src_path) if event.src_path else ""
        if kind == "deleted" and watched is not None and src == watched:
            # The folder itself is gone; watchdog stops this watch. Reattach when it comes back.
            log.warning("todos_dir_gone", folder=str(self.folder))
            self._on_trouble("folder deleted")
            return
        # (name, may still be open for writing): only a created or written file may be; the source
        # of a rename is gone and its destination arrives whole (editors save by rename).
        writing = kind in {"created", "modified"} and not event.is_directory
        names = [(self._name(src, watched), writing)]
        if kind == "moved":
            dest = os.fsdecode(event.dest_path) if event.dest_path else ""
            names.append((self._name(dest, watched), False))
        wanted = [(n, w) for n, w in names if n is not None and not is_editor_temp(n) and not self._ignore(n)]
        now = self._clock()
        with self._lock:
            self._last_event_at = now
            for name, still_writing in wanted:
                self._pending[name] = _Pending(last=now, writing=still_writing)
        if wanted:
            self._wake.set()

    def _on_trouble(self, reason: str) -> None:
        with self._lock:
            self._overflowed = True
            self._overflow_count += 1
        log.warning("watch_events_lost", folder=str(self.folder), reason=reason)
        self._wake.set()

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _name(path: str, watched: str | None) -> str | None:
        """The entry name of a path directly in the watched folder, else None (the folder itself)."""
        if not path:
            return None
        parent, name = os.path.split(path)
        if not name or (watched is not None and parent != watched):
            return None
        return name

    def _due(self, pending: _Pending) -> float:
        return pending.last + (self._open_grace if pending.writing else self._settle)

    def _check_watch(self, now: float) -> None:
        """Every so often: is the watch still alive and on the same folder? If not, reattach."""
        if not self._started or now < self._next_check:
            return
        self._next_check = now + _REATTACH_POLL
        if self._watched is not None and self._watch_healthy():
            return
        if self._watched is not None:
            self._detach()
        self._attach(initial=False)

    def _watch_healthy(self) -> bool:
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        if not any(emitter.is_alive() for emitter in observer.emitters):
            return False  # watchdog stops the emitter when the folder is deleted
        try:
            st = self.folder.stat()
        except OSError:
            return False
        # A folder moved away and another put in its place: the old watch follows the old inode.
        return (st.st_dev, st.st_ino) == self._identity

    def _attach(self, *, initial: bool) -> None:
        try:
            st = self.folder.stat()
            is_dir = stat.S_ISDIR(st.st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            if not self._detach_logged:
                self._detach_logged = True
                log.warning("todos_dir_missing", folder=str(self.folder), retry_every_s=_REATTACH_POLL)
            return
        resolved = str(self.folder.resolve())  # watch the folder a symlink points to, not the link
        observer = _new_observer()
        observer.start()
        try:
            observer.schedule(self, resolved, recursive=False, event_filter=_EVENT_FILTER)
        except OSError as e:
            observer.stop()
            observer.join()
            if not self._detach_logged:
                self._detach_logged = True
                log.warning("todos_watch_failed", folder=str(self.folder), errno=e.errno, error=str(e))
            return
        self._observer = observer
        self._identity = (st.st_dev, st.st_ino)
        self._watched = resolved
        self._detach_logged = False
        log.info("todos_watch_started", folder=str(self.folder), path=resolved)
        if not initial:
            self._on_trouble("watch attached")  # files that appeared before the watch made no events

    def _detach(self) -> None:
        observer, self._observer, self._watched = self._observer, None, None
        if observer is not None:
            observer.stop()
            observer.join()


def _new_observer() -> Any:
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver

        # Full events: a file moved in from outside is a move (complete), not a create (being written).
        return InotifyObserver(generate_full_events=True)
    from watchdog.observers import Observer  # pragma: no cover - other platforms have no close events

    return Observer()  # pragma: no cover
