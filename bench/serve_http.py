"""The processes of ``bench.serve`` and how it talks to them: the daemon-like writer, the dashboard
served by uvicorn (its CPU time, a pause for the baseline), and an SSE client in a thread.

Kept apart from the measurements (``bench.serve``) so each module has one job; the processes
themselves are :mod:`bench.serve_worker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from store import EventLog

__all__ = ["START_WAIT", "WAIT", "Served", "SseClient", "Writer", "caught_up", "server"]

WAIT = 30.0  # seconds: deadline for a server to start answering, an event to arrive, a writer to end
START_WAIT = 600.0  # seconds: the fold of a million events on a loaded 2-core machine


def _worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.serve_worker", *args]


@dataclass
class Writer:
    """Where the next writer goes on (new phases and todos only: every step is a valid move)."""

    db: Path
    phase: int
    todo: int
    seed: int = 16

    def run(self, seconds: float, pace: float = 0.0) -> dict[str, Any]:
        args = ["write", str(self.db), "--phase", str(self.phase), "--todo", str(self.todo)]
        args += ["--seconds", str(seconds), "--seed", str(self.seed), "--pace", str(pace)]
        self.seed += 1
        done = subprocess.run(
            _worker(*args), capture_output=True, text=True, timeout=seconds + WAIT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the writer failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        self.phase, self.todo = result["phase"], result["todo"]
        result["rate"] = result["appends"] / result["seconds"]
        return result


@dataclass
class Served:
    """The dashboard's process: its address, its start figures, and its pid (for CPU time, pauses)."""

    base: str
    info: dict[str, Any]
    pid: int

    def cpu(self) -> float:
        """CPU seconds (user + system) the process used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The process stopped (SIGSTOP): for the writer's baseline, as if no dashboard ran, without
        a restart that would fold the whole log again. It follows the log between reads of a page
        (``READ_PAGE`` rows a transaction), so it almost never holds a read snapshot while stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)


@contextlib.contextmanager
def server(root: Path, db: Path) -> Iterator[Served]:
    """The real app served by uvicorn in a process of its own."""
    started = time.perf_counter()
    proc = subprocess.Popen(_worker("serve", str(root), str(db)), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # after the fold: blocks for as long as the fold takes
        if not line:
            raise RuntimeError(f"the server exited ({proc.wait()}) before serving")
        info: dict[str, Any] = json.loads(line)
        base = f"http://127.0.0.1:{info['port']}"
        deadline = time.monotonic() + START_WAIT
        while True:
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(f"{base}/static/style.css", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not answer")
            time.sleep(0.05)
        info["ready_seconds"] = time.perf_counter() - started
        yield Served(base, info, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SseClient:
    """One ``/api/stream`` reader in a thread: the moment each event's ``id:`` line arrived."""

    def __init__(self, base: str, since: int) -> None:
        self.url = f"{base}/api/stream?since={since}"
        self.seen: dict[int, float] = {}
        self.last = since
        self.status: int | None = None
        self.error: str | None = None
        self._cond = threading.Condition()
        self._client = httpx2.Client(timeout=httpx2.Timeout(WAIT, read=None))
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)
        self._closing = False

    def __enter__(self) -> SseClient:
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self.status is not None or self.error is not None, timeout=WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._client.close()  # ends the read the thread is blocked in
        self._thread.join(timeout=WAIT)

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url) as response:
                with self._cond:
                    self.status = response.status_code
                    self._cond.notify_all()
                if response.status_code != 200:
                    return
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        arrived = time.perf_counter()
                        seq = int(line[3:].strip())
                        with self._cond:
                            self.seen[seq] = arrived
                            self.last = max(self.last, seq)
                            self._cond.notify_all()
        except Exception as e:  # noqa: BLE001 (closing the client mid-read ends here too)
            with self._cond:
                if not self._closing:
                    self.error = f"{type(e).__name__}: {e}"
                self._cond.notify_all()

    def wait_for(self, seq: int, timeout: float = WAIT) -> float | None:
        """When event ``seq`` (or a later one: the stream coalesces nothing, but be lenient) arrived."""
        with self._cond:
            self._cond.wait_for(lambda: self.last >= seq or self.error is not None, timeout=timeout)
            if self.last < seq:
                return None
            return self.seen.get(seq, self.seen.get(self.last))


def caught_up(base: str, db: Path) -> int:
    """The log's last seq once ``/metrics`` says the dashboard folded it, else -1 (after WAIT s).

    A stream asked for events after a seq the dashboard has not reached yet is told to reload, so
    a client connects only once the dashboard has caught up with the writer."""
    with EventLog(db) as log:
        last = log.last_seq()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = httpx2.get(f"{base}/metrics", timeout=WAIT).text
        for line in text.splitlines():
            if line.startswith("batchd_last_event_seq ") and float(line.split()[1]) >= last:
                return last
        time.sleep(0.02)
    return -1
