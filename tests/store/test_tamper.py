"""Tamper evidence: edits made behind the store's back are named by verify(), on both backends.

On SQLite the edits come from the sqlite3 CLI (another process, as an attacker or a careless admin
would make them); on PostgreSQL from a connection of their own, committed before the store looks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store import EventLog, LogCorrupted
from tests.pgserver import PgServer
from tests.store.conftest import is_postgres
from tests.store.events import REG, Noted


def run_sql(db: Path, sql: str) -> None:
    """Edit the file from another process, as an attacker or a careless admin would."""
    cli = shutil.which("sqlite3")
    if cli is not None:
        argv = [cli, str(db), sql]
    else:  # the CLI is not installed: python's own sqlite3 module in a subprocess does the same
        code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2])"
        argv = [sys.executable, "-c", code, str(db), sql]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Tamper:
    """Runs SQL statements (``;``-separated) against the log behind the store's back."""

    def __init__(self, request: pytest.FixtureRequest, target: str) -> None:
        self.request = request
        self.target = target

    def __call__(self, sql: str) -> None:
        if not is_postgres(self.target):
            run_sql(Path(self.target), sql)
            return
        server: PgServer = self.request.getfixturevalue("pg_server")
        server.execute_script(sql, url=self.target)


@pytest.fixture
def five(backend: str) -> str:
    """A closed log of five events over two streams."""
    with EventLog(backend, reg=REG) as log:
        for n in range(5):
            log.append(f"s{n % 2}", [Noted(text=f"event {n + 1}", n=n)])
    return backend


@pytest.fixture
def tamper(request: pytest.FixtureRequest, five: str) -> Tamper:
    return Tamper(request, five)


def verify(db: str) -> tuple[int | None, str]:
    with EventLog(db, reg=REG) as log:
        report = log.verify()
    return report.first_bad_seq, report.problem


def names_the_log(message: str, target: str) -> bool:
    """An error names the SQLite file, or the PostgreSQL database (its URL's database name)."""
    if not is_postgres(target):
        return target in message
    from sqlalchemy.engine import make_url

    return str(make_url(target).database) in message


def audit_verify(target: str, folder: Path) -> list[str]:
    """`batchd audit verify` of the log (its events are unscoped: --repo-id "")."""
    command = ["audit", "verify", "--db", target, "--repo-id", "", "-C", str(folder)]
    return [sys.executable, "-m", "daemon", *command]


def test_untouched_log_verifies(five: str) -> None:
    """The fixture log verifies before anyone touches it."""
    assert verify(five) == (None, "")


def test_edited_payload_is_named(five: str, tamper: Tamper) -> None:
    """A payload changed in place fails its hash at that seq."""
    tamper("""UPDATE batchd_events SET payload = '{"n":2,"text":"forged"}' WHERE seq = 3;""")
    bad, problem = verify(five)
    assert bad == 3
    assert "hash" in problem


def test_deleted_middle_row_is_named(five: str, tamper: Tamper) -> None:
    """A row removed from the middle is reported as the missing seq."""
    tamper("DELETE FROM batchd_events WHERE seq = 3;")
    assert verify(five) == (3, "event 3 is missing (next present is 4)")


def test_deleted_last_row_is_named(five: str, tamper: Tamper) -> None:
    """A row removed from the end is caught by the recorded head."""
    tamper("DELETE FROM batchd_events WHERE seq = 5;")
    bad, problem = verify(five)
    assert bad == 5
    assert "removed" in problem


def test_swapped_rows_are_named(five: str, tamper: Tamper) -> None:
    """Two rows swapping their seq break the chain at the lower one."""
    tamper(
        "UPDATE batchd_events SET seq = -2 WHERE seq = 2;"
        "UPDATE batchd_events SET seq = 2 WHERE seq = 4;"
        "UPDATE batchd_events SET seq = 4 WHERE seq = -2;",
    )
    assert verify(five)[0] == 2


def test_removed_head_record_is_named(five: str, tamper: Tamper) -> None:
    """Deleting the head record too (to hide a truncation) is reported at the last event."""
    tamper("DELETE FROM batchd_events WHERE seq = 5; DELETE FROM batchd_meta WHERE key = 'head';")
    bad, problem = verify(five)
    assert bad == 4
    assert "head is missing" in problem


def test_append_refuses_to_extend_a_truncated_log(five: str, tamper: Tamper) -> None:
    """An append after the last row was removed raises LogCorrupted instead of hiding the gap."""
    tamper("DELETE FROM batchd_events WHERE seq = 5;")
    with EventLog(five, reg=REG) as log, pytest.raises(LogCorrupted) as info:
        log.append("s0", [Noted(text="after")])
    assert info.value.seq == 5
    assert verify(five)[0] == 5


def test_unparseable_payload_on_read_names_the_seq(five: str, tamper: Tamper) -> None:
    """A payload that is not JSON any more raises LogCorrupted with its seq when read."""
    tamper("UPDATE batchd_events SET payload = 'not json' WHERE seq = 2;")
    with EventLog(five, reg=REG) as log, pytest.raises(LogCorrupted) as info:
        list(log.read())
    assert info.value.seq == 2
    assert names_the_log(str(info.value), five)


@pytest.mark.parametrize(
    ("sql", "bad_seq"),
    [
        ("UPDATE batchd_events SET payload = replace(payload, 'event 3', 'event 9') WHERE seq = 3", 3),
        ("DELETE FROM batchd_events WHERE seq = 2", 2),
        (
            "UPDATE batchd_events SET seq = 99 WHERE seq = 4; "
            "UPDATE batchd_events SET seq = 4 WHERE seq = 5; "
            "UPDATE batchd_events SET seq = 5 WHERE seq = 99",
            4,
        ),
    ],
    ids=["edited", "deleted", "reordered"],
)
def test_cli_audit_verify_exits_1_naming_the_first_bad_seq(
    five: str, tamper: Tamper, sql: str, bad_seq: int, tmp_path: Path
) -> None:
    """`batchd audit verify` on a tampered log exits 1 and names the first bad sequence number."""
    assert (
        subprocess.run(
            audit_verify(five, tmp_path),
            check=False,
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    tamper(sql)
    done = subprocess.run(
        audit_verify(five, tmp_path),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"sequence {bad_seq}" in done.stderr
