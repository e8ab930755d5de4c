"""Auditing the log: walking the hash chain and checking the recorded head.

Kept apart from :mod:`store.eventlog` so the rules of what counts as tampering read in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.hashing import GENESIS_HASH, chain_hash


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Result of walking the hash chain: ``first_bad_seq`` is None when the log checks out."""

    checked: int
    last_seq: int
    first_bad_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


def head_mismatch(last_seq: int, last_hash: str, head: str | None) -> tuple[int, str] | None:
    """(first bad seq, problem) when the recorded head disagrees with the last event, else None."""
    if head is None:
        return (last_seq, "the recorded head is missing (metadata removed)") if last_seq else None
    if head == f"{last_seq}:{last_hash}":
        return None
    text, _, _ = head.partition(":")
    head_seq = int(text) if text.isdigit() else -1
    if head_seq > last_seq:
        return last_seq + 1, f"the log ends at {last_seq} but its head is {head_seq} (events removed)"
    if 0 <= head_seq < last_seq:
        return head_seq + 1, f"the log runs past its head {head_seq} to {last_seq} (added outside batchd)"
    return last_seq, f"the last event {last_seq} does not match the recorded head {head!r} (edited)"


def walk_chain(
    cur: Any,
    head: str | None,
    progress: Callable[[int], None] | None,
    *,
    prev: str = GENESIS_HASH,
    first_seq: int = 1,
) -> AuditReport:
    """Check rows fetched from ``cur`` (seq order) against the chain, versions and the recorded head.

    From ``first_seq`` (with ``prev`` the stored hash of the event before it) only the rest of the
    chain is walked: a stream first seen there may start at any version, then must count up by one.
    """
    expected_seq = first_seq
    checked = 0
    versions: dict[str, int] = {}
    while rows := cur.fetchmany(5000):
        for seq, stream_, version, type_, type_version, payload, at, digest in rows:
            if seq != expected_seq:
                problem = f"event {expected_seq} is missing (next present is {seq})"
                return AuditReport(checked, expected_seq - 1, expected_seq, problem)
            if chain_hash(prev, seq, stream_, version, type_, type_version, payload, at) != digest:
                problem = "content does not match its hash (edited or moved)"
                return AuditReport(checked, seq - 1, seq, problem)
            before = versions.get(stream_, 0 if first_seq == 1 else version - 1)
            if version != before + 1:
                problem = f"stream {stream_!r} jumps to version {version} after {before}"
                return AuditReport(checked, seq - 1, seq, problem)
            versions[stream_] = version
            prev = digest
            checked += 1
            expected_seq += 1
            if progress is not None and checked % 10_000 == 0:
                progress(checked)
    last = expected_seq - 1
    bad = head_mismatch(last, prev, head)
    if bad is not None:
        return AuditReport(checked, last, bad[0], bad[1])
    return AuditReport(checked, last)
