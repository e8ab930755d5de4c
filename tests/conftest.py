"""Settings shared by every test package."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import structlog

from tests.pgserver import PgServer, session_server

TEST_IDENTITY = {
    "GIT_AUTHOR_NAME": "batchd tests",
    "GIT_AUTHOR_EMAIL": "tests@batchd.invalid",
    "GIT_COMMITTER_NAME": "batchd tests",
    "GIT_COMMITTER_EMAIL": "tests@batchd.invalid",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--crash-sweep",
        action="store_true",
        default=False,
        help="crash suite: kill the daemon after every event type and at random sequence numbers "
        "(slow); same as BATCHD_CRASH_SWEEP=1",
    )


@pytest.fixture(autouse=True, scope="session")
def git_identity() -> Iterator[None]:
    """Tests commit in throwaway repositories: give git an identity where the machine has none (CI)."""
    configured = subprocess.run(
        ["git", "config", "--global", "user.email"], capture_output=True, text=True, check=False
    ).stdout.strip()
    added = {} if configured else {k: v for k, v in TEST_IDENTITY.items() if k not in os.environ}
    os.environ.update(added)
    yield
    for key in added:
        os.environ.pop(key, None)


@pytest.fixture(autouse=True)
def structlog_config() -> Iterator[None]:
    """A test that configures logging (a CLI command or a benchmark run in-process, writing to the
    test's captured stream) must not leave later tests logging to a stream that is closed by then."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (see tests/pgserver.py): started on first use, stopped at the end."""
    yield from session_server()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty PostgreSQL database for one test (a SQLAlchemy URL), dropped after it."""
    with pg_server.fresh_database() as url:
        yield url
