"""The HTTP server of ``batchd serve``: uvicorn, with a clean stop, on a socket bound beforehand.

:func:`bind_socket` binds before anything slow happens, so a port in use is a clear UsageError
(exit 2) at once, and ``--port 0`` knows its port before the address is printed.
:class:`DashboardServer` is uvicorn's ``Server`` with two changes. Its shutdown first tells every SSE
stream to end (:meth:`LiveModel.close_streams`): uvicorn waits for open responses, and an event
stream never ends by itself. And its signal handler only sets flags and is installed by the caller
(before the fold); stock uvicorn re-raises the signal after its shutdown, so the process would die
of it instead of exiting 0 as a stop that was asked for should.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
from collections.abc import Iterator
from types import FrameType

import uvicorn

from daemon.exceptions import UsageError
from daemon.web.model import LiveModel

__all__ = ["DashboardServer", "bind_socket"]


class DashboardServer(uvicorn.Server):
    """uvicorn's server, which ends the model's SSE streams first when it stops and, on a signal,
    only sets its flags (no re-raise: ``batchd serve`` then exits 0)."""

    def __init__(self, config: uvicorn.Config, model: LiveModel) -> None:
        super().__init__(config)
        self.model = model
        self.stopped_by: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait for open responses
        self.should_exit = True
        self.stopped_by = sig

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # ``batchd serve`` installs handle_exit itself, before the fold; uvicorn's own capture would
        # re-raise the signal after shutdown, and the process would die of it instead of exiting 0.
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.model.close_streams()
        await super().shutdown(sockets=sockets)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket for ``host:port`` (port 0: a free one), or a UsageError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(
            f"--host {host!r} is not an address of this machine ({e.strerror})",
            hint="give an IP address (127.0.0.1, ::1, 0.0.0.0) or a name that resolves",
        ) from None
    family, _, _, _, address = infos[0]
    try:
        sock = socket.create_server(address[:2], family=family, backlog=128)
        # create_server's socket has proto 0, so asyncio does not set TCP_NODELAY on what it accepts:
        # every keep-alive response then waits ~40 ms for the client's delayed ACK. Accepted sockets
        # inherit it from the listening one.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use by another program",
                hint=f"stop it, or pick another port with --port (--port 0 picks a free one); "
                f"`ss -ltnp 'sport = :{port}'` shows which program holds it",
            ) from None
        raise UsageError(
            f"cannot listen on {host}:{port}: {e.strerror}",
            hint="ports below 1024 need privileges; give --port 8765 or --port 0",
        ) from None
