"""Helpers of the dashboard tests that need a real server: uvicorn on a free port (in a thread, or
``batchd serve`` as a subprocess) and an SSE client on a plain socket.

The SSE client speaks HTTP/1.1 on a socket of its own rather than through an HTTP library: the tests
need to see the stream end cleanly (the chunked body's last chunk), and to hang up at a moment they
choose (``close()`` shuts the socket down, which also wakes its reader thread).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from daemon.web.app import create_app
from daemon.web.auth import is_loopback
from daemon.web.model import LiveModel
from daemon.web.server import DashboardServer, bind_socket

PY = sys.executable
DEADLINE = 15.0  # seconds: generous, the machines are noisy; no test asserts a duration


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Served:
    model: LiveModel
    server: DashboardServer
    app: Starlette
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def served(root: Path, *, token: str | None = None, host: str = "127.0.0.1") -> Iterator[Served]:
    """``root``'s dashboard served by uvicorn (the server ``batchd serve`` runs) in a thread."""
    model = LiveModel(root)
    sock = bind_socket(host, 0)
    app = create_app(model, token=token, loopback=is_loopback(host))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=60)
    server = DashboardServer(config, model)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), "the server to start")
        assert server.started, "the server did not start"
        yield Served(model, server, app, sock.getsockname()[1], host)
    finally:
        server.should_exit = True
        thread.join(timeout=DEADLINE)
        assert not thread.is_alive(), "the server did not stop"


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEClient:
    """A GET of an event stream on a socket of its own; events arrive in :attr:`events`."""

    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    events: queue.Queue[SSEEvent | None] = field(default_factory=queue.Queue)  # None: the end
    ended_cleanly: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=DEADLINE)
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        status_line = self.file.readline().decode()
        self.status = int(status_line.split()[1])
        while (line := self.file.readline().decode().strip()) != "":
            key, _, value = line.partition(":")
            self.response_headers[key.strip().lower()] = value.strip()
        self.sock.settimeout(None)  # the reader waits as long as the stream is quiet
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size_line = self.file.readline()
            if not size_line:
                return  # the connection ended without the last chunk
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.file.readline()
                self.ended_cleanly = True
                return
            chunk = self.file.read(size)
            self.file.readline()
            yield chunk

    def _read(self) -> None:
        buffer = b""
        kind, data, event_id = "message", [], None
        try:
            for chunk in self._chunks():
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.rstrip(b"\r").decode()
                    if line == "":
                        if data or kind != "message":
                            self.events.put(SSEEvent(kind, "\n".join(data), event_id))
                        kind, data, event_id = "message", [], None
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            kind = value
                        elif name == "data":
                            data.append(value)
                        elif name == "id":
                            event_id = value
        except (OSError, ValueError):
            pass  # closed by close(): the test hung up
        finally:
            self.events.put(None)

    def next(self, kind: str, timeout: float = DEADLINE) -> SSEEvent:
        """The next event named ``kind`` (others are skipped); fails at the deadline or the end."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} event within {timeout}s")
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if got is None:
                raise AssertionError(f"the stream ended before a {kind!r} event")
            if got.event == kind:
                return got

    def wait_end(self, timeout: float = DEADLINE) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(DEADLINE)


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BATCHD_TOKEN"}
    env.update(PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    env.update(extra)
    return env


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    first_line: str
    stderr_lines: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None

    def start_draining(self) -> None:
        """Read stderr as it comes: a full pipe would block the server on its next log line."""
        assert self.proc.stderr is not None
        pipe = self.proc.stderr

        def drain() -> None:
            for line in pipe:
                self.stderr_lines.append(line)

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()

    def rest_of_stdout(self) -> str:
        """What the process printed after its first line (call once it exited)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def stderr(self) -> str:
        """Everything the process wrote on stderr (call once it exited)."""
        if self._drain is not None:
            self._drain.join(DEADLINE)
        return "".join(self.stderr_lines)

    @property
    def port(self) -> int:
        return int(self.first_line.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def stop(self, signum: int, timeout: float = DEADLINE) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve_process(args: list[str], env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """``batchd serve ARGS`` as a subprocess, once it printed its address (killed if still running)."""
    proc = subprocess.Popen(
        [PY, "-m", "daemon", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else serve_env(),
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=60):
                raise AssertionError("batchd serve printed no address within 60 s")
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=DEADLINE)
            raise AssertionError(f"batchd serve exited {proc.returncode} before serving:\n{err}")
        served = ServeProcess(proc, line.strip())
        served.start_draining()
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# A row put into the log behind the store's back whose payload is not JSON: an edited log, which no
# retry mends (the dashboard must stop following it and say so).
BAD_ROW = (
    "INSERT INTO batchd_events (seq, stream, version, type, type_version, payload, recorded_at, hash)"
    " VALUES (?, 'control', 9999, 'control.pause', 1, '{not json', '2026-01-01T00:00:00.000000Z', 'x')"
)


def write_unreadable_row(root: Path, seq: int) -> None:
    """Append :data:`BAD_ROW` as event ``seq`` of ``root``'s SQLite log, with sqlite3 itself."""
    db = sqlite3.connect(root / ".batchd" / "events.db")
    try:
        db.execute(BAD_ROW, (seq,))
        db.commit()
    finally:
        db.close()
