"""Invariants of the log under any sequence of appends (hypothesis)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Append, EventLog
from store.eventlog import canonical_json, chain_hash
from tests.pgserver import PgServer
from tests.store.events import REG, Noted

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
# One append: (which stream, which texts, pass the expected version or not), sometimes batched.
APPEND = st.tuples(st.integers(0, 3), st.lists(TEXT, min_size=1, max_size=3), st.booleans())
BATCHES = st.lists(st.lists(APPEND, min_size=1, max_size=3), min_size=1, max_size=8)


def apply_and_check(log: EventLog, batches: list[list[tuple[int, list[str], bool]]]) -> None:
    model: dict[str, list[str]] = {}
    order: list[tuple[str, str]] = []
    for batch in batches:
        running = {s: len(v) for s, v in model.items()}
        parts = []
        for idx, texts, check in batch:
            stream = f"s{idx}"
            expected = running.get(stream, 0) if check else None
            parts.append(Append(stream, [Noted(text=t) for t in texts], expected))
            running[stream] = running.get(stream, 0) + len(texts)
        log.append_many(parts)
        for part in parts:
            for ev in part.events:
                assert isinstance(ev, Noted)
                model.setdefault(part.stream, []).append(ev.text)
                order.append((part.stream, ev.text))

    everything = list(log.read())
    assert [e.seq for e in everything] == list(range(1, len(order) + 1))
    assert [(e.stream, e.payload["text"]) for e in everything] == order
    for stream, texts in model.items():
        got = log.read_stream(stream)
        assert [e.payload["text"] for e in got] == texts
        assert [e.version for e in got] == list(range(1, len(texts) + 1))
        assert log.stream_version(stream) == len(texts)
    assert log.verify().ok


@settings(max_examples=60, deadline=None)
@given(BATCHES)
def test_any_appends_read_back_in_order_in_memory(batches: list[list[tuple[int, list[str], bool]]]) -> None:
    """Any appends read back in order globally and per stream, seq and versions gap-free (memory)."""
    with EventLog("sqlite://", reg=REG) as log:
        apply_and_check(log, batches)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCHES)
def test_any_appends_read_back_in_order_on_file(batches: list[list[tuple[int, list[str], bool]]]) -> None:
    """Any appends read back in order globally and per stream, seq and versions gap-free (file)."""
    with tempfile.TemporaryDirectory() as tmp, EventLog(Path(tmp) / "e.db", reg=REG) as log:
        apply_and_check(log, batches)


# A fresh database per example costs a CREATE DATABASE: a few examples, the invariant is the same.
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCHES)
def test_any_appends_read_back_in_order_on_postgres(
    pg_server: PgServer, batches: list[list[tuple[int, list[str], bool]]]
) -> None:
    """Any appends read back in order globally and per stream, seq and versions gap-free (PostgreSQL)."""
    with pg_server.fresh_database() as url, EventLog(url, reg=REG) as log:
        apply_and_check(log, batches)


@given(st.text(st.characters(exclude_categories=("Cs",))), st.text(st.characters(exclude_categories=("Cs",))))
def test_chain_hash_is_sha256_of_canonical_json(stream: str, payload: str) -> None:
    """chain_hash hashes exactly the canonical JSON of the event's fields after the previous hash."""
    prev = "ab" * 32
    fields = [7, stream, 3, "test.noted", 1, payload, "2026-01-01T00:00:00.000000Z"]
    expected = hashlib.sha256((prev + canonical_json(fields)).encode("utf-8")).hexdigest()
    assert chain_hash(prev, 7, stream, 3, "test.noted", 1, payload, fields[-1]) == expected
