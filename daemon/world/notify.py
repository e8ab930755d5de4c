"""The systemd notification protocol (``sd_notify``), written by hand.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: an ``AF_UNIX`` datagram socket, a file
path or an abstract name written with a leading ``@``. Each message is newline-separated
``KEY=VALUE`` lines: ``READY=1`` once the daemon serves (after replay and reconciliation),
``STATUS=...`` for ``systemctl status``, ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC``
microseconds, ``STOPPING=1`` when shutting down. systemd's documentation endorses reimplementing
this instead of linking libsystemd; it is a ``sendto`` per message.

Outside systemd (no ``$NOTIFY_SOCKET``) every method is a no-op, so the daemon calls them
unconditionally. A failed send never raises: losing a status line must not stop the daemon, and a
lost watchdog ping ends in a restart by systemd, which is the right outcome for a broken socket.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)


class Notifier:
    """Sends ``sd_notify`` messages to the socket systemd gave us, or does nothing.

    ``maybe_ping(now)`` is meant to be called on every tick of the daemon's main loop with the
    loop's monotonic clock: a loop that hangs stops pinging, and systemd restarts the service.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        send_timeout: float = 1.0,
    ) -> None:
        self.address = address or None
        self.send_timeout = send_timeout
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._watchdog_pid = watchdog_pid
        self._last_ping: float | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``; unset means no-op."""
        return cls(
            environ.get("NOTIFY_SOCKET"),
            watchdog_usec=_parse_int(environ.get("WATCHDOG_USEC")),
            watchdog_pid=_parse_int(environ.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self) -> bool:
        """Tell systemd start-up is complete (``systemctl start`` returns, dependents start)."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        # A newline would start a new KEY=VALUE assignment: the status must stay one line.
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """Send one watchdog keep-alive now."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Tell systemd the daemon is shutting down (agents are being drained)."""
        return self.send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is ours.

        ``$WATCHDOG_PID`` names the process the watchdog is meant for; a child that inherited the
        environment (an agent, a forked helper) must not ping in its parent's name.
        """
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2_000_000

    def maybe_ping(self, now: float) -> bool:
        """Send ``WATCHDOG=1`` when at least the interval has passed since the last ping.

        ``now`` is the loop's monotonic clock (seconds). The first call pings at once. Returns
        whether a ping was sent (not whether it arrived).
        """
        interval = self.watchdog_interval()
        if interval is None or not self.enabled:
            return False
        if self._last_ping is not None and now - self._last_ping < interval:
            return False
        self._last_ping = now
        self.watchdog()
        return True

    def send(self, *lines: str) -> bool:
        """Send one message made of ``lines``; True if the datagram was handed to the kernel."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            # Linux abstract namespace: the name starts with a NUL byte instead of living on disk.
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            # systemd >= 253 also offers vsock:CID:PORT; not needed for a local daemon.
            self._warn_once("unsupported NOTIFY_SOCKET address", errno=None)
            return False
        try:
            # A fresh socket per message, as libsystemd does: no descriptor to leak into agents
            # and nothing to reconnect after systemd re-executes itself.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A datagram send blocks while the receiver's queue is full
                # (net.unix.max_dgram_qlen): bound it, a stuck systemd must not hang the loop.
                sock.settimeout(self.send_timeout)
                sock.sendto("\n".join(lines).encode(), address)
        except OSError as e:
            self._warn_once(str(e), errno=e.errno)
            return False
        return True

    def _warn_once(self, reason: str, *, errno: int | None) -> None:
        # Once per notifier: a broken socket would otherwise log on every loop tick.
        if self._warned:
            return
        self._warned = True
        log.warning("sd_notify_failed", socket=self.address, reason=reason, errno=errno)


def _parse_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
