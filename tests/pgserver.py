"""A private PostgreSQL server for one test session, and a fresh empty database for each test.

Which server:

- ``BATCHD_TEST_PG_URL`` set (``postgresql+psycopg://user@host:port/db``, a user that may CREATE
  DATABASE): that server; nothing is started or stopped.
- else the machine's server binaries (``initdb``/``pg_ctl`` on PATH, else the newest
  ``/usr/lib/postgresql/*/bin``): ``initdb`` into a new temporary folder, ``pg_ctl start`` on a unix
  socket folder of its own and a free loopback port, ``fsync=off`` (the data is thrown away). Several
  suites on one machine each get their own folder and port (a port taken between our probe and the
  server's bind is retried with another). ``initdb`` and ``postgres`` refuse to run as root, so as
  root they run as the ``postgres`` user (the Debian package makes it) or else ``nobody``; as anyone
  else, as that user.
- no binary at all: the tests that need PostgreSQL are skipped saying so, or fail when
  ``BATCHD_REQUIRE_PG=1`` (``.ci/run`` sets it: CI must not pass by skipping them).

Stopping: the session's teardown stops the server (``pg_ctl -m immediate``) and removes its folder.
A session killed outright (SIGKILL, a CI timeout) runs no teardown, so a small watcher process, started
before ``initdb`` in a session of its own, holds the read end of a pipe whose write end only the test
process holds: when that process ends, however it ends, the watcher reads end-of-file, stops the
server and removes the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest

ENV_URL = "BATCHD_TEST_PG_URL"
ENV_REQUIRE = "BATCHD_REQUIRE_PG"
SUPERUSER = "batchd"
#: A role that must give a password over TCP (scram), for the wrong-password test.
PASSWORD_USER = "batchd_pw"
PASSWORD = "right-horse-battery"
_START_ATTEMPTS = 4

NO_SERVER = (
    "PostgreSQL tests need a server: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin and "
    f"{ENV_URL} is not set. Install the Debian package `postgresql` (apt-get install postgresql), or "
    f"set {ENV_URL}=postgresql+psycopg://USER@HOST:PORT/DB for a server whose USER may CREATE DATABASE"
)

# The watcher: waits for end-of-file on stdin (the test process is gone), then stops the server
# (argv in argv[1], as JSON, run as uid/gid argv[2:4] when given) and removes the folder argv[4].
_WATCHER = """
import json, os, shutil, subprocess, sys
sys.stdin.buffer.read()
stop, uid, gid, base = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if os.path.isdir(os.path.join(base, "data")):
    who = {} if uid < 0 else {"user": uid, "group": gid, "extra_groups": []}
    subprocess.run(stop, cwd=base, capture_output=True, timeout=120, check=False, **who)
shutil.rmtree(base, ignore_errors=True)
"""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PATH first (Debian links them from
    /usr/local/bin on some images), else the newest /usr/lib/postgresql/N/bin."""
    candidates: list[Path] = []
    found = shutil.which("initdb")
    if found is not None:
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    """A loopback port free right now (another process may take it before the server binds: retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conf_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class PgServer:
    """A running server: how to reach it, and how to make and drop databases on it."""

    #: A SQLAlchemy URL of the server (any database on it): per-test URLs replace the database.
    base_url: str
    #: Reachable over TCP as ``host:port`` (``None`` for an outside server given by URL).
    tcp_port: int | None = None
    #: True when this session started it (so the password role exists and it can be stopped).
    private: bool = False
    #: The private server's folder (data, socket, log), removed when it stops.
    folder: Path | None = None
    #: The private server itself, for tests that stop and start it (``None`` for an outside server).
    control: PrivateServer | None = None
    _names: Iterator[int] = field(default_factory=count)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped (``pg_ctl stop -m fast``: every session is ended) for the block, then
        started again on the same port and socket, whatever the block raised."""
        if self.control is None:
            pytest.skip(f"{ENV_URL} is set: an outside server is not ours to stop")
        self.control.halt()
        try:
            yield
        finally:
            self.control.resume()

    def url(self, database: str, **changes: Any) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.base_url).set(database=database, **changes).render_as_string(hide_password=False)

    def tcp_url(self, database: str, *, user: str = SUPERUSER, password: str | None = None) -> str:
        """The database over TCP (``user@127.0.0.1:port``), not the unix socket."""
        from sqlalchemy.engine import URL

        assert self.tcp_port is not None, "only a private server is known to listen on 127.0.0.1"
        return URL.create(
            "postgresql+psycopg",
            username=user,
            password=password,
            host="127.0.0.1",
            port=self.tcp_port,
            database=database,
        ).render_as_string(hide_password=False)

    def execute(self, sql: str, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` in autocommit on its own connection, as an administrator (or an attacker)
        working behind the store's back; returns the rows, if any."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        url = self.url(database) if database is not None else self.base_url
        engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                result = conn.exec_driver_sql(sql)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def execute_script(self, script: str, *, url: str) -> None:
        """Run ``;``-separated statements (no ``;`` inside literals) in one transaction on ``url``,
        each on its own: psycopg prepares a statement with parameters and refuses several at once."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                for statement in filter(None, (part.strip() for part in script.split(";"))):
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def create_database(self) -> str:
        """A new empty database from template0; its name is unique across processes and machines
        sharing one outside server."""
        name = f"batchd_t{os.getpid()}_{next(self._names)}_{secrets.token_hex(3)}"
        self.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even if a test left a connection open (a follower, an unclosed log)."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A URL of a new empty database, dropped afterwards."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


class PrivateServer:
    """initdb, start and stop one throwaway server in a folder of its own."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.uid, self.gid = self._unprivileged()
        self.base = Path(tempfile.mkdtemp(prefix="batchd-pg-", dir=self._parent()))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.logfile = self.base / "server.log"
        if self.uid >= 0:
            os.chown(self.base, self.uid, self.gid)
        self.sock.mkdir()
        if self.uid >= 0:
            os.chown(self.sock, self.uid, self.gid)
        self.port = 0
        # Before anything else exists to leak: the watcher cleans up after a killed session.
        self.watcher = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHER,
                json.dumps(self._pg_ctl("-m", "immediate", "-w", "stop")),
                str(self.uid),
                str(self.gid),
                str(self.base),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test's terminal must not kill it first
        )

    def _parent(self) -> str | None:
        """The temporary folder, unless the server's user cannot reach into it (a TMPDIR under
        /root, say): then /tmp."""
        if self.uid < 0:
            return None
        here = Path(tempfile.gettempdir()).resolve()
        reachable = all(folder.stat().st_mode & 0o001 for folder in (here, *here.parents))
        return None if reachable else "/tmp"

    @staticmethod
    def _unprivileged() -> tuple[int, int]:
        """(-1, -1) when we are not root; else the user the server runs as."""
        if os.geteuid() != 0:
            return -1, -1
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return entry.pw_uid, entry.pw_gid
        raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run initdb")

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        who: dict[str, Any] = (
            {} if self.uid < 0 else {"user": self.uid, "group": self.gid, "extra_groups": []}
        )
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run(
            argv, cwd=self.base, env=env, capture_output=True, text=True, timeout=timeout, check=False, **who
        )

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        if self.uid >= 0:
            os.chown(path, self.uid, self.gid)

    def init(self) -> None:
        done = self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # a throwaway cluster: nothing to make durable
            ]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        # Trust on the socket and on loopback, except one role that must give its password over TCP.
        self._write(
            self.data / "pg_hba.conf",
            "local all all trust\n"
            f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n",
        )
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as fh:
            fh.write("\ninclude 'batchd_test.conf'\n")

    def start(self) -> None:
        """Start on a free port; a port someone else bound meanwhile is retried with another."""
        problems = []
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            # Settings in a file, not `pg_ctl -o`: pg_ctl hands -o to a shell, which would split a
            # temporary folder's name with spaces in it.
            self._write(
                self.data / "batchd_test.conf",
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = {_conf_quote(str(self.sock))}\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 100\n"
                "shared_buffers = 32MB\n",
            )
            done = self._run(self._pg_ctl("-l", str(self.logfile), "-w", "-t", "60", "start"))
            if done.returncode == 0:
                return
            log = self.logfile.read_text(encoding="utf-8", errors="replace") if self.logfile.exists() else ""
            problems.append(f"port {self.port}: {done.stdout}{done.stderr}{log[-2000:]}")
            if "Address already in use" not in log:
                break
        raise RuntimeError("pg_ctl start failed:\n" + "\n".join(problems))

    def halt(self) -> None:
        """Stop the server for a while, keeping its folder and port (see :meth:`resume`)."""
        done = self._run(self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop"))
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed:\n{done.stdout}{done.stderr}")

    def resume(self) -> None:
        """Start the halted server again on the port it had."""
        done = self._run(self._pg_ctl("-l", str(self.logfile), "-w", "-t", "60", "start"))
        if done.returncode != 0:
            log = self.logfile.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}{log}")

    def stop(self) -> None:
        """Stop the server and remove its folder (the watcher does both; we just let it go)."""
        if self.watcher.stdin is not None:
            self.watcher.stdin.close()
        try:
            self.watcher.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self._run(self._pg_ctl("-m", "immediate", "-w", "stop"))
            shutil.rmtree(self.base, ignore_errors=True)


def _required() -> bool:
    return os.environ.get(ENV_REQUIRE, "") not in ("", "0")


def _unavailable(why: str) -> None:
    """Skip the test that asked for PostgreSQL, or fail it where CI requires PostgreSQL."""
    if _required():
        pytest.fail(f"{why} ({ENV_REQUIRE}=1: these tests must run here)", pytrace=False)
    pytest.skip(why)


def _with_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("PostgreSQL tests need psycopg 3: pip install -e '.[test]' (it brings batchd[postgres])")


def session_server() -> Iterator[PgServer]:
    """The session fixture's body: an outside server by URL, or a private one started here."""
    _with_psycopg()
    outside = os.environ.get(ENV_URL, "")
    if outside:
        yield PgServer(base_url=outside)
        return
    bindir = find_bindir()
    if bindir is None:
        _unavailable(NO_SERVER)
        return
    from sqlalchemy.engine import URL

    server = PrivateServer(bindir)
    try:
        server.init()
        server.start()
        pg = PgServer(
            base_url=URL.create(
                "postgresql+psycopg",
                username=SUPERUSER,
                database="postgres",
                query={"host": str(server.sock), "port": str(server.port)},
            ).render_as_string(hide_password=False),
            tcp_port=server.port,
            private=True,
            folder=server.base,
            control=server,
        )
        pg.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
        yield pg
    finally:
        server.stop()
