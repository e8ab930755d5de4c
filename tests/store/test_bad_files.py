"""Files that are not a usable event log are refused at open with a named error, the path and a hint.

SQLite only: these are about files (PostgreSQL's bad databases are in test_bad_databases.py)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from store import EventLog, LogCorrupted, NotADatabase, SchemaTooNew, StoreError
from store.schema import SCHEMA_VERSION
from tests.store.events import REG, Noted


@pytest.fixture
def real_db(tmp_path: Path) -> Path:
    """A closed log spanning many pages (closing checkpoints the WAL into the file)."""
    path = tmp_path / "real.db"
    with EventLog(path, reg=REG) as log:
        log.append("a", [Noted(text="x" * 300, n=n) for n in range(300)])
    assert not path.with_name("real.db-wal").exists()
    return path


def cut_copy(src: Path, size: int) -> Path:
    dst = src.with_name(f"cut-{size}.db")
    shutil.copyfile(src, dst)
    with dst.open("r+b") as fh:
        fh.truncate(size)
    return dst


def assert_names_file_and_hint(error: StoreError, path: Path) -> None:
    assert str(path) in str(error)
    assert error.hint
    assert "how to fix" in str(error)


def test_text_file_is_not_a_database(tmp_path: Path) -> None:
    """A text file raises NotADatabase naming the file."""
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 10)
    with pytest.raises(NotADatabase) as info:
        EventLog(path, reg=REG)
    assert_names_file_and_hint(info.value, path)


def test_directory_is_not_a_database(tmp_path: Path) -> None:
    """A directory where the log should be raises NotADatabase."""
    with pytest.raises(NotADatabase, match="directory") as info:
        EventLog(tmp_path, reg=REG)
    assert_names_file_and_hint(info.value, tmp_path)


def test_unrelated_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite database of something else raises NotADatabase listing its tables."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(NotADatabase, match="recipes") as info:
        EventLog(path, reg=REG)
    assert_names_file_and_hint(info.value, path)


def test_newer_schema_is_refused(real_db: Path) -> None:
    """A log whose schema_version is newer than this code raises SchemaTooNew with both versions."""
    conn = sqlite3.connect(real_db)
    conn.execute("UPDATE batchd_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        EventLog(real_db, reg=REG)
    assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)
    assert_names_file_and_hint(info.value, real_db)


def test_truncated_database_is_refused_at_open(real_db: Path) -> None:
    """A copy cut in half raises LogCorrupted at open, before any query."""
    cut = cut_copy(real_db, real_db.stat().st_size // 2)
    with pytest.raises(LogCorrupted, match="truncated") as info:
        EventLog(cut, reg=REG)
    assert info.value.seq is None
    assert_names_file_and_hint(info.value, cut)


def test_database_cut_on_a_page_boundary_is_refused(real_db: Path) -> None:
    """A copy cut at a whole number of pages is still seen as truncated."""
    cut = cut_copy(real_db, 4096 * 3)
    with pytest.raises(LogCorrupted, match="truncated"):
        EventLog(cut, reg=REG)


def test_database_cut_inside_the_header_is_refused(real_db: Path) -> None:
    """A copy cut inside the 100-byte header raises LogCorrupted."""
    cut = cut_copy(real_db, 60)
    with pytest.raises(LogCorrupted, match="header"):
        EventLog(cut, reg=REG)


def test_garbage_after_a_valid_header_is_a_store_error(real_db: Path) -> None:
    """A file with an SQLite header and garbage pages raises a store error, never a driver error."""
    path = real_db.with_name("garbage.db")
    path.write_bytes(real_db.read_bytes()[:100] + bytes(range(256)) * 400)
    with pytest.raises(StoreError) as info:
        log = EventLog(path, reg=REG)
        list(log.read())
    assert isinstance(info.value, (NotADatabase, LogCorrupted))
    assert str(path) in str(info.value)


def test_empty_file_becomes_a_new_log(tmp_path: Path) -> None:
    """A zero-byte file is treated as a new, empty log."""
    path = tmp_path / "empty.db"
    path.touch()
    with EventLog(path, reg=REG) as log:
        log.append("a", [Noted(text="first")])
        assert log.last_seq() == 1


def test_reopening_a_log_keeps_its_events(real_db: Path) -> None:
    """A log closed and opened again reads the same events and verifies."""
    with EventLog(real_db, reg=REG) as log:
        assert log.last_seq() == 300
        assert log.verify().ok
