"""Several real processes on one log: optimistic concurrency and interleaved writers (on an SQLite file
and on PostgreSQL), WAL readers and writers (SQLite only: the tests hold SQLite locks by hand)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from store import EventLog
from tests.store.events import REG, Noted

ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 20) -> list[str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out.split("\n")


def test_same_expected_version_from_two_processes_one_wins(backend: str, tmp_path: Path) -> None:
    """Two processes append to one stream expecting the same version: one ok, one ConcurrencyError."""
    with EventLog(backend, reg=REG) as log:
        log.append("todo:1", [Noted(text="first")], expected_version=0)
    go = tmp_path / "go"
    procs = [spawn("race", backend, str(go), "todo:1", "1") for _ in range(2)]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    results = sorted(finish(p)[0] for p in procs)
    assert results == ["conflict 2", "ok 2"]
    with EventLog(backend, reg=REG) as log:
        assert [e.version for e in log.read_stream("todo:1")] == [1, 2]
        assert log.verify().ok


def test_reader_process_is_not_blocked_by_an_open_write(file_log: EventLog, db_path: Path) -> None:
    """With WAL, another process opens and reads the log while a write transaction is held open."""
    file_log.append("a", [Noted(text="committed")])
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE batchd_meta SET value = value WHERE key = 'head'")
        started = time.monotonic()
        out = finish(spawn("read", str(db_path)), timeout=20)
        assert out[0] == "read 1 1"
        assert time.monotonic() - started < 10  # far below the 30 s busy timeout it would wait if blocked
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_writer_is_not_blocked_by_an_open_read(file_log: EventLog, db_path: Path) -> None:
    """With WAL, appends go through while another connection holds a read transaction."""
    file_log.append("a", [Noted(text="before")])
    reader = sqlite3.connect(db_path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM batchd_events").fetchone() == (1,)
        started = time.monotonic()
        file_log.append("a", [Noted(text="during")])
        assert time.monotonic() - started < 5
        # The reader keeps its snapshot until it ends its transaction.
        assert reader.execute("SELECT count(*) FROM batchd_events").fetchone() == (1,)
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert file_log.last_seq() == 2


def test_two_writer_processes_interleave_into_one_chain(backend: str) -> None:
    """Appends from two processes get unique gap-free seqs, each stream in order, and the chain verifies."""
    EventLog(backend, reg=REG).close()
    procs = [spawn("loop", backend, f"w{i}", "40") for i in range(2)]
    acked = [[int(line.split()[1]) for line in finish(p) if line] for p in procs]
    assert len(set(acked[0]) | set(acked[1])) == 80
    with EventLog(backend, reg=REG) as log:
        events = list(log.read())
        assert [e.seq for e in events] == list(range(1, 81))
        for i, seqs in enumerate(acked):
            mine = [e for e in events if e.stream == f"w{i}"]
            assert [e.seq for e in mine] == seqs
            assert [e.payload["n"] for e in mine] == list(range(40))
        assert log.verify().ok
