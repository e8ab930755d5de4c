"""Signal handlers that only set flags; the daemon loop reads them on its next tick.

SIGTERM (``systemctl stop``) and SIGINT (Ctrl-C) ask for a stop, SIGHUP (``systemctl reload``)
for a reload of ``batchd.toml``. A handler does nothing else: no logging (structlog and the
logging module take locks a handler could interrupt), no I/O, no ``STOPPING=1``. The loop logs,
notifies systemd and drains agents itself, where exceptions and locks behave normally.

:meth:`SignalFlags.wait` sleeps like the loop's tick but returns as soon as a signal arrives. It
relies on :func:`signal.set_wakeup_fd`: the interpreter's C-level handler writes a byte to a
socket we ``select`` on, so a signal that lands between checking the flags and going to sleep is
not missed, and the Python handler still only sets a flag.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["RELOAD_SIGNALS", "STOP_SIGNALS", "SignalFlags"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGHUP,)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class SignalFlags:
    """Flags set by SIGTERM/SIGINT (``stop_requested``) and SIGHUP (``reload_requested``).

    ``install()`` must run in the main thread (a Python rule for signal handlers);
    ``restore()`` puts back the handlers and wake-up descriptor that were there before.
    """

    def __init__(self) -> None:
        # The first stop signal's number: why we stop. Later ones only raise stop_count, which
        # lets the loop treat a second Ctrl-C as "stop now, do not wait for agents".
        self.stop_requested: int | None = None
        self.stop_count = 0
        self.reload_requested = False
        self._previous: dict[int, _Handler] = {}
        self._previous_wakeup_fd: int | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    @property
    def installed(self) -> bool:
        return self._wake_r is not None

    def install(self) -> SignalFlags:
        if self.installed:
            return self
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            # The C-level handler must never block on a full buffer; extra bytes are meaningless.
            sock.setblocking(False)
        # warn_on_full_buffer=False: a burst of signals filling the buffer is harmless here.
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_stop)
        for signum in RELOAD_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_reload)
        return self

    def restore(self) -> None:
        """Put back the previous handlers and wake-up fd; flags keep their values."""
        for signum, previous in self._previous.items():
            # getsignal() reports None for a handler not installed from Python: the default.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        if self._wake_r is not None and self._wake_w is not None:
            signal.set_wakeup_fd(-1 if self._previous_wakeup_fd is None else self._previous_wakeup_fd)
            self._wake_r.close()
            self._wake_w.close()
        self._wake_r = self._wake_w = None
        self._previous_wakeup_fd = None

    @property
    def pending(self) -> bool:
        """True when a stop or a reload is waiting for the loop."""
        return self.stop_requested is not None or self.reload_requested

    def take_reload(self) -> bool:
        """Read and clear ``reload_requested`` (one reload per SIGHUP burst)."""
        requested, self.reload_requested = self.reload_requested, False
        return requested

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, returning early when a signal arrives; returns pending."""
        if self.pending:
            return True
        if self._wake_r is None:  # not installed: nothing can wake us early
            time.sleep(max(timeout, 0.0))
            return self.pending
        # PEP 475 retries select() after a handler runs; the wake-up byte makes it return.
        select.select([self._wake_r], [], [], max(timeout, 0.0))
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(512):
                pass
        return self.pending

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested is None:
            self.stop_requested = signum
        self.stop_count += 1

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def __enter__(self) -> SignalFlags:
        return self.install()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()
