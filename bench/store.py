"""Event store throughput against raw ``sqlite3`` doing the same durable work on the same file system.

Run ``python -m bench.store`` (or ``--quick`` for a smoke run). Each measurement alternates rounds
of the raw baseline and of :class:`store.EventLog` so drift in fsync latency hits both alike; a rate
is total rows over total time. The raw side uses the same tables (created from ``store.schema``)
and the same pragmas (WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` per commit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from store import Append, EventLog, EventRegistry
from store.schema import events as events_table

REG = EventRegistry()


@REG.register("bench.ping", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    n: int
    stream: str
    note: str


STREAMS = 10
NOTE = "x" * 60

_E = events_table.name
# No scope: rows land in the default scope "", as the store's own (an SQLite log's) do.
_INSERT = (
    f"INSERT INTO {_E} (seq, stream, version, type, type_version, payload, recorded_at, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _payload(n: int) -> dict[str, object]:
    return {"n": n, "stream": f"s-{n % STREAMS}", "note": NOTE}


def _ping(n: int) -> Ping:
    return Ping(n=n, stream=f"s-{n % STREAMS}", note=NOTE)


def _raw_connect(path: Path) -> sqlite3.Connection:
    """The baseline connection: the store's schema, made once through the store, then plain sqlite3."""
    EventLog(path, reg=REG).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class RawWriter:
    def __init__(self, path: Path) -> None:
        self.conn = _raw_connect(path)
        self.seq = 0

    def _row(self, n: int) -> tuple[object, ...]:
        self.seq += 1
        # The version is the seq here: unique per stream is all the constraint needs.
        return (self.seq, f"s-{n % STREAMS}", self.seq, "bench.ping", 1, json.dumps(_payload(n)), "t", "h")

    def single(self, start: int, count: int) -> None:
        cur = self.conn.cursor()
        for n in range(start, start + count):
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(_INSERT, self._row(n))
            cur.execute("COMMIT")

    def batch(self, start: int, count: int, size: int) -> None:
        cur = self.conn.cursor()
        for b in range(start, start + count * size, size):
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany(_INSERT, [self._row(n) for n in range(b, b + size)])
            cur.execute("COMMIT")

    def read(self) -> int:
        loads = json.loads
        count = 0
        columns = "seq, stream, version, type, type_version, payload, recorded_at, hash"
        sql = f"SELECT {columns} FROM {_E} ORDER BY seq"
        for row in self.conn.execute(sql):
            loads(row[5])
            count += 1
        return count


class StoreWriter:
    def __init__(self, path: Path) -> None:
        self.log = EventLog(path, reg=REG)
        self.versions = dict.fromkeys((f"s-{i}" for i in range(STREAMS)), 0)

    def single(self, start: int, count: int) -> None:
        for n in range(start, start + count):
            stream = f"s-{n % STREAMS}"
            self.log.append(stream, [_ping(n)], expected_version=self.versions[stream])
            self.versions[stream] += 1

    def batch(self, start: int, count: int, size: int) -> None:
        for b in range(start, start + count * size, size):
            by_stream: dict[str, list[object]] = {}
            for n in range(b, b + size):
                by_stream.setdefault(f"s-{n % STREAMS}", []).append(_ping(n))
            appends = [Append(s, evs, self.versions[s]) for s, evs in by_stream.items()]
            self.log.append_many(appends)
            for s, evs in by_stream.items():
                self.versions[s] += len(evs)

    def read(self) -> int:
        count = 0
        for _ev in self.log.read():
            count += 1
        return count


@dataclass
class Result:
    name: str
    rows: int
    raw_s: float
    store_s: float

    @property
    def raw_rate(self) -> float:
        return self.rows / self.raw_s

    @property
    def store_rate(self) -> float:
        return self.rows / self.store_s

    @property
    def ratio(self) -> float:
        return self.store_rate / self.raw_rate


def _alternate(rounds: int, raw: Callable[[int], None], store: Callable[[int], None]) -> tuple[float, float]:
    raw_s = store_s = 0.0
    for r in range(rounds):
        t0 = time.perf_counter()
        raw(r)
        t1 = time.perf_counter()
        store(r)
        t2 = time.perf_counter()
        raw_s += t1 - t0
        store_s += t2 - t1
    return raw_s, store_s


def run(workdir: Path, *, quick: bool) -> list[Result]:
    # Many short alternating rounds: fsync latency drifts (and other load comes and goes) within seconds.
    rounds = 6 if quick else 30
    singles = 40 if quick else 100  # per round and side
    batches, size = (1, 1000) if quick else (2, 1000)  # per round and side
    read_rounds = 3 if quick else 7

    raw = RawWriter(workdir / "raw.db")
    st = StoreWriter(workdir / "store.db")
    results = []
    try:
        step = singles
        raw_s, store_s = _alternate(
            rounds, lambda r: raw.single(r * step, step), lambda r: st.single(r * step, step)
        )
        results.append(Result("durable single-event appends", rounds * singles, raw_s, store_s))

        base = rounds * singles
        per = batches * size
        raw_s, store_s = _alternate(
            rounds,
            lambda r: raw.batch(base + r * per, batches, size),
            lambda r: st.batch(base + r * per, batches, size),
        )
        results.append(Result(f"batched appends ({size}/txn)", rounds * per, raw_s, store_s))

        total = raw.read()
        assert total == st.read() == raw.seq, "both logs must hold the same rows"
        raw_s, store_s = _alternate(
            read_rounds, lambda _r: raw.read() and None, lambda _r: st.read() and None
        )
        results.append(Result("read + JSON decode (all rows)", read_rounds * total, raw_s, store_s))
    finally:
        raw.conn.close()
        st.log.close()
    return results


def render(results: list[Result]) -> str:
    head = f"{'measurement':<34} {'rows':>8} {'raw rows/s':>12} {'EventLog rows/s':>16} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.name:<34} {r.rows:>8} {r.raw_rate:>12,.0f} {r.store_rate:>16,.0f} {r.ratio:>6.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds), for CI smoke tests")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        print(f"databases in {workdir} (sqlite {sqlite3.sqlite_version})")
        print(render(run(workdir, quick=args.quick)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
