"""A coordinator and workers as real processes: a repository with a bare remote, a clone per worker,
``batchd worker`` subprocesses, and (where the machine allows it) a network namespace per worker that
reaches the coordinator's PostgreSQL and the remote only over a veth pair.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from procs import PY, DaemonProcess, JsonLogged, base_env, git, make_repo, wait_for

from daemon.workspace import open_log
from store.eventlog import StoredEvent


def fleet_repo(
    root: Path,
    todos: dict[str, str],
    *,
    db: str,
    local_slots: int = 0,
    lease: float = 3.0,
    max_parallel: int = 4,
    speed: str = "1",
) -> Path:
    """``make_repo`` whose batchd.toml hands agents to workers (``local_slots``) through a bare remote
    beside it, with the log at ``db``; returns the remote's path."""
    make_repo(root, todos, max_parallel=max_parallel, speed=speed)
    config = root / "batchd.toml"
    text = config.read_text(encoding="utf-8").replace(
        'remote = ""',
        f'remote = "origin"\nlocal_slots = {local_slots}\nlease_seconds = {lease}\ndb = {json.dumps(db)}',
    )
    config.write_text(text, encoding="utf-8")
    git(root, "commit", "-qam", "hand agents to workers")
    remote = root.parent / f"{root.name}-remote.git"
    git(root.parent, "clone", "-q", "--bare", str(root), str(remote))
    git(root, "remote", "add", "origin", str(remote))
    git(root, "fetch", "-q", "origin")
    return remote


def worker_clone(remote: str, dest: Path) -> Path:
    """A worker host's own clone of the remote (its identity set, as a person's would be)."""
    git(dest.parent, "clone", "-q", remote, str(dest))
    git(dest, "config", "user.name", "Worker")
    git(dest, "config", "user.email", "worker@example.com")
    return dest


def log_events(root: Path) -> list[StoredEvent]:
    """Every event of the repository's log (as the CLI opens it: batchd.toml's db and scope)."""
    log = open_log(root, must_exist=False)
    try:
        return list(log.read())
    finally:
        log.close()


def of_type(events: Sequence[StoredEvent], type_: str) -> list[StoredEvent]:
    return [e for e in events if e.type == type_]


def wait_event(
    root: Path, type_: str, *, count: int = 1, timeout: float = 30.0, **payload: Any
) -> list[StoredEvent]:
    def check() -> list[StoredEvent] | None:
        found = [
            e
            for e in of_type(log_events(root), type_)
            if all(e.payload.get(k) == v for k, v in payload.items())
        ]
        return found if len(found) >= count else None

    return wait_for(check, timeout=timeout, what=f"{count} event(s) {type_} {payload or ''}")


class WorkerProcess(JsonLogged):
    """``batchd worker`` as a subprocess (optionally inside a network namespace)."""

    def __init__(
        self,
        clone: Path,
        *,
        name: str,
        db: str,
        slots: int = 1,
        netns: str = "",
        env: Mapping[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.clone, self.name = clone, name
        self.log_path = clone.parent / f"worker-{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        argv = [
            PY,
            "-m",
            "daemon",
            "worker",
            "-C",
            str(clone),
            "--db",
            db,
            "--name",
            name,
            "--slots",
            str(slots),
            "--log-level",
            "debug",
        ]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        argv = [*wrap, *argv]  # e.g. a UTS namespace of its own: another host name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else base_env(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_logged(self, event: str, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            return self.logged(event) or None

        return wait_for(check, timeout=timeout, what=f"log line {event!r} of worker {self.name}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once continued
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def kill_claimed_agents(root: Path) -> None:
    """Teardown: every agent group a worker recorded in ``root``'s log is killed."""
    with contextlib.suppress(Exception):
        for e in of_type(log_events(root), "agent.lease_renewed"):
            if e.payload.get("pgid"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(e.payload["pgid"]), signal.SIGKILL)


class Fleet:
    """A repository handing every agent to workers (lease 3 s, the log a SQLite file they share),
    its bare remote, and the workers started on clones of it."""

    def __init__(self, tmp: Path, todos: dict[str, str], start: Callable[..., DaemonProcess]) -> None:
        self.tmp, self.start = tmp, start
        self.root = tmp / "repo"
        self.db = str(self.root / ".batchd" / "events.db")
        self.remote = fleet_repo(self.root, todos, db=".batchd/events.db", lease=3.0)
        self.workers: list[WorkerProcess] = []

    def worker(
        self,
        name: str,
        slots: int = 1,
        env: Mapping[str, str] | None = None,
        *,
        clone_name: str = "",
        wrap: Sequence[str] = (),
    ) -> WorkerProcess:
        clone = self.tmp / (clone_name or name)
        if not clone.exists():
            worker_clone(str(self.remote), clone)
        w = WorkerProcess(clone, name=name, db=self.db, slots=slots, env=env, wrap=wrap)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        kill_claimed_agents(self.root)


# --- hosts of their own: network namespaces -----------------------------------------------------

_NS_COUNTER = itertools.count(1)


def netns_available() -> str:
    """Why network namespaces cannot be made here ("" when they can)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    name = f"btprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return ""


@contextlib.contextmanager
def netns() -> Iterator[tuple[str, str]]:
    """A network namespace joined to this one by a veth pair: (its name, this side's address, which
    is all it can reach)."""
    n = next(_NS_COUNTER)
    tag = f"{os.getpid() % 10000}x{n}"
    name, host_if, ns_if = f"bt{tag}", f"bth{tag}", f"btn{tag}"
    subnet = 16 + (os.getpid() * 7 + n) % 200
    here, there = f"10.213.{subnet}.1", f"10.213.{subnet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{here}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{there}/30", "dev", ns_if)
        ip("netns", "exec", name, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, here
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


class Forwarder:
    """TCP on ``0.0.0.0:port`` relayed to ``127.0.0.1:target`` (the test server listens on loopback
    only; a namespace reaches it through this, over its veth)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        # A side reset (a worker killed with kill -9) ends this connection, nothing else.
        with (
            contextlib.suppress(OSError),
            client,
            socket.create_connection(("127.0.0.1", self.target)) as upstream,
        ):
            pair = {client: upstream, upstream: client}
            while not self.stopped:
                ready, _, _ = select.select(list(pair), [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)

    def close(self) -> None:
        self.stopped = True
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self.server.close()


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[int]:
    """``git daemon`` serving the repositories under ``base`` (pushes allowed) on every address.

    This listens itself, on a port the kernel picks, and runs ``git daemon --inetd`` on each
    connection: a port probed free and then handed to ``git daemon --port`` can be taken in between
    by another test session running at the same time."""
    server = socket.create_server(("0.0.0.0", 0))
    served: list[subprocess.Popen[bytes]] = []
    argv = ["git", "daemon", "--inetd", f"--base-path={base}", "--export-all", "--enable=receive-pack"]

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                served.append(
                    subprocess.Popen([*argv, str(base)], stdin=conn, stdout=conn, stderr=subprocess.DEVNULL)
                )

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        # shutdown wakes the accept() under way (close alone leaves it blocked on Linux).
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=10)
        for proc in served:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
