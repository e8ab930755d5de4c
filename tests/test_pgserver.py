"""The tests' private PostgreSQL server (tests/pgserver.py): skipped or failed when there is none,
one per test session, and stopped even when the session is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgserver import ENV_REQUIRE, ENV_URL, PgServer

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = """
import pytest
import tests.pgserver as pgserver

if {hide_binaries}:
    pgserver.find_bindir = lambda: None


@pytest.fixture(scope="session")
def pg_server():
    yield from pgserver.session_server()
"""

# A session that records where its server lives, then waits to be killed. The record is renamed
# into place: the test polls for the file and must never read it half written (it once read it
# empty, between the create and the write).
RECORDING_TEST = """
import os
import time
from pathlib import Path


def test_holds_the_server(pg_server):
    pid = (pg_server.folder / "data" / "postmaster.pid").read_text().split()[0]
    line = f"{pg_server.folder} {pg_server.tcp_port} {pid}"
    Path("where.tmp").write_text(line + "\\n")
    os.replace("where.tmp", "where.txt")
    time.sleep(600)
"""


def session(folder: Path, test: str, *, hide_binaries: bool, **env: str) -> subprocess.Popen[str]:
    """Another pytest session in ``folder`` with the tests' server fixture and one test file."""
    folder.mkdir(exist_ok=True)
    (folder / "conftest.py").write_text(CONFTEST.format(hide_binaries=hide_binaries))
    (folder / "test_one.py").write_text(test)
    environ = {k: v for k, v in os.environ.items() if k not in (ENV_URL, ENV_REQUIRE)}
    environ.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_one.py"],
        cwd=folder,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(what: str, condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet, in a container whose init does not, is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def killed_later() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_no_server_binary_skips_saying_what_to_install(tmp_path: Path) -> None:
    """Without initdb/pg_ctl and without BATCHD_TEST_PG_URL, PostgreSQL tests are skipped, the reason
    saying how to get a server."""
    proc = session(tmp_path, "def test_needs(pg_server):\n    pass\n", hide_binaries=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "1 skipped" in out
    assert "apt-get install postgresql" in out
    assert ENV_URL in out


def test_no_server_binary_fails_where_postgres_is_required(tmp_path: Path) -> None:
    """With BATCHD_REQUIRE_PG=1 (CI), the same tests fail instead of being skipped."""
    test = "def test_needs(pg_server):\n    pass\n"
    proc = session(tmp_path, test, hide_binaries=True, **{ENV_REQUIRE: "1"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "skipped" not in out
    assert f"{ENV_REQUIRE}=1" in out


def test_a_second_session_gets_a_server_of_its_own(
    pg_server: PgServer, tmp_path: Path, killed_later: list[subprocess.Popen[str]]
) -> None:
    """Two test sessions at once on one machine each run their own server (folder and port)."""
    if pg_server.folder is None:
        pytest.skip(f"{ENV_URL} is set: no private server here")
    killed_later.append(session(tmp_path, RECORDING_TEST, hide_binaries=False))
    where = tmp_path / "where.txt"
    wait_for("the other session's server", where.exists)
    folder, port, _ = where.read_text().split()
    assert int(port) != pg_server.tcp_port
    assert Path(folder) != pg_server.folder
    assert pg_server.execute("SELECT 1") == [(1,)]


def test_a_killed_session_still_stops_its_server(
    tmp_path: Path, killed_later: list[subprocess.Popen[str]]
) -> None:
    """A test session killed with SIGKILL (no teardown runs) leaves no server running and no folder."""
    proc = session(tmp_path, RECORDING_TEST, hide_binaries=False)
    killed_later.append(proc)
    where = tmp_path / "where.txt"
    wait_for("the session's server", lambda: where.exists() or proc.poll() is not None, timeout=90)
    assert where.exists(), proc.communicate()[0]
    folder, _, pid = where.read_text().split()
    assert alive(int(pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for("the server to stop", lambda: not alive(int(pid)))
    wait_for("its folder to be removed", lambda: not Path(folder).exists())
