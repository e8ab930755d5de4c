"""PostgreSQL databases that cannot be a usable log are refused at open with a store error naming the
server (host or socket folder, port), the database and the server's own reason, never a driver error.

(The SQLite files that are not a log are in test_bad_files.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from store import EventLog, NotADatabase, SchemaTooNew, StoreError, safe_location
from store.schema import SCHEMA_VERSION
from tests.pgserver import PASSWORD, PASSWORD_USER, PgServer, free_port
from tests.store.events import REG, Noted

ROOT = Path(__file__).resolve().parents[2]


def open_error(url: str) -> StoreError:
    with pytest.raises(StoreError) as info:
        EventLog(url, reg=REG).close()
    return info.value


def assert_names_the_server(error: StoreError, *, host: str, port: int, database: str) -> None:
    message = str(error)
    assert host in message
    assert str(port) in message
    assert database in message
    assert error.hint


def test_refused_connection_names_host_port_and_database() -> None:
    """A port where no server listens raises a store error naming host, port, database and 'refused'."""
    port = free_port()
    error = open_error(f"postgresql+psycopg://batchd@127.0.0.1:{port}/the_log")
    assert_names_the_server(error, host="127.0.0.1", port=port, database="the_log")
    assert "refused" in str(error).lower()


def test_missing_socket_folder_names_it(tmp_path: Path) -> None:
    """A socket folder with no server in it is named, with the port and database."""
    folder = tmp_path / "no-server-here"
    folder.mkdir()
    error = open_error(f"postgresql+psycopg://batchd@/the_log?host={folder}&port=5999")
    assert_names_the_server(error, host=str(folder), port=5999, database="the_log")


def test_missing_database_names_it(pg_server: PgServer) -> None:
    """A database that does not exist on a running server is named with the server's reason."""
    url = make_url(pg_server.url("no_such_log_db"))
    error = open_error(url.render_as_string(hide_password=False))
    host, port = str(url.query["host"]), int(str(url.query["port"]))
    assert_names_the_server(error, host=host, port=port, database="no_such_log_db")
    assert "does not exist" in str(error)


def test_wrong_password_is_refused_without_showing_it(pg_server: PgServer, pg_url: str) -> None:
    """A wrong password raises a store error with the server's reason, and the password is not in it."""
    if pg_server.tcp_port is None:
        pytest.skip(f"needs the private server's {PASSWORD_USER} role (BATCHD_TEST_PG_URL is set)")
    database = str(make_url(pg_url).database)
    error = open_error(pg_server.tcp_url(database, user=PASSWORD_USER, password="wrong-horse-77"))
    assert_names_the_server(error, host="127.0.0.1", port=pg_server.tcp_port, database=database)
    assert "password authentication failed" in str(error)
    assert "wrong-horse-77" not in str(error) + repr(error.to_dict())


def test_right_password_opens_the_log(pg_server: PgServer, pg_url: str) -> None:
    """The same role with its password opens the log over TCP (so the refusal above is the password's)."""
    if pg_server.tcp_port is None:
        pytest.skip(f"needs the private server's {PASSWORD_USER} role (BATCHD_TEST_PG_URL is set)")
    database = str(make_url(pg_url).database)
    pg_server.execute(f"GRANT ALL ON SCHEMA public TO {PASSWORD_USER}", database=database)
    url = pg_server.tcp_url(database, user=PASSWORD_USER, password=PASSWORD)
    with EventLog(url, reg=REG) as log:
        log.append("a", [Noted(text="over tcp")])
        assert log.last_seq() == 1


def test_unrelated_database_is_refused_listing_its_tables(pg_server: PgServer, pg_url: str) -> None:
    """A database of something else raises NotADatabase listing its tables, and is left as it was."""
    database = str(make_url(pg_url).database)
    pg_server.execute("CREATE TABLE recipes (name TEXT)", database=database)
    with pytest.raises(NotADatabase, match="recipes") as info:
        EventLog(pg_url, reg=REG)
    assert database in str(info.value)
    tables = pg_server.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", database=database
    )
    assert tables == [("recipes",)]


def test_newer_schema_is_refused_on_postgres(pg_server: PgServer, pg_url: str) -> None:
    """A PostgreSQL log with a schema_version newer than this code raises SchemaTooNew naming the database."""
    with EventLog(pg_url, reg=REG) as log:
        log.append("a", [Noted(text="x")])
    database = str(make_url(pg_url).database)
    pg_server.execute("UPDATE batchd_meta SET value = '99' WHERE key = 'schema_version'", database=database)
    with pytest.raises(SchemaTooNew) as info:
        EventLog(pg_url, reg=REG)
    assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)
    assert database in str(info.value)


def test_reopening_a_postgres_log_keeps_its_events(pg_url: str) -> None:
    """A PostgreSQL log closed and opened again reads the same events and verifies."""
    with EventLog(pg_url, reg=REG) as log:
        log.append("a", [Noted(text="x" * 300, n=n) for n in range(300)])
    with EventLog(pg_url, reg=REG) as log:
        assert log.last_seq() == 300
        assert [e.payload["n"] for e in log.read()] == list(range(300))
        assert log.verify().ok


def test_postgres_url_without_psycopg_says_what_to_install() -> None:
    """A postgresql+psycopg URL where psycopg is not installed is a store error saying
    pip install 'batchd[postgres]' (a process where importing psycopg fails, as on a bare install)."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from store import EventLog, StoreError\n"
        "try:\n"
        "    EventLog('postgresql+psycopg://batchd@127.0.0.1:1/x')\n"
        "except StoreError as e:\n"
        "    print(type(e).__name__, '|', e.render())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'batchd[postgres]'" in done.stdout


SECRETS = ("userinfo-secret", "query-secret", "ssl-secret")
SECRET_URL = "postgresql+psycopg://batchd:userinfo-secret@127.0.0.1:{port}/the_log?password=query-secret&sslpassword=ssl-secret"


def test_no_password_is_shown_where_a_log_is_named() -> None:
    """safe_location, which every store message, status file and page uses to name a log, shows the
    server, port and database and no password: not the URL's own, not one in its query."""
    shown = safe_location(SECRET_URL.format(port=5999))
    assert shown == "postgresql://batchd@127.0.0.1:5999/the_log"
    assert safe_location("sqlite:////srv/batchd/events.db") == "/srv/batchd/events.db"
    assert safe_location("sqlite://") == "sqlite://"


def test_refused_connection_shows_no_password_of_the_url() -> None:
    """A server that cannot be reached is named without any password the URL carried."""
    error = open_error(SECRET_URL.format(port=free_port()))
    shown = error.render() + repr(error.to_dict())
    assert "127.0.0.1" in shown and "the_log" in shown
    assert [s for s in SECRETS if s in shown] == []


def test_missing_driver_shows_no_password_of_the_url() -> None:
    """'pip install batchd[postgres]' for a URL with passwords in its userinfo and query shows neither."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from store import EventLog, StoreError\n"
        "try:\n"
        f"    EventLog({SECRET_URL.format(port=1)!r})\n"
        "except StoreError as e:\n"
        "    print(type(e).__name__, '|', e.render(), e.to_dict())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DriverMissing |")
    assert "127.0.0.1" in done.stdout
    assert [s for s in SECRETS if s in done.stdout] == []
