"""One wording of an event for the event page, the todo page and the SSE stream, which never fails
on what a payload holds: a log written by an older batchd, or edited by hand, still shows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_server import SSEClient, served
from starlette.testclient import TestClient

from daemon.cli.view import describe_event
from daemon.web.pagedata import SUMMARY_MAX, event_summary
from statemachine import events as ev
from statemachine.projection import Projection, replay
from store import EventLog, EventRegistry, StoredEvent

ODD = EventRegistry()


@ODD.register("batch.verified", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedWithoutRuns:
    """batch.verified as no batchd writes it: no ``runs`` (the projection does not need it, the
    terminal view's headline does)."""

    key: str
    head_sha: str
    accepted: tuple[str, ...]
    rejected: tuple[str, ...] = ()
    conflicted: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def append_odd_batch(root: Path) -> StoredEvent:
    """A batch planned, started and verified, whose verified event lacks a field."""
    db = root / ".batchd" / "events.db"
    with EventLog(db) as log:
        stream = "batch-odd"
        log.append(stream, [ev.BatchPlanned(key="odd", phase=1, todo_ids=("282",))], expected_version=0)
        log.append(
            stream, [ev.BatchStarted(key="odd", base_sha="a" * 40, todo_ids=("282",))], expected_version=1
        )
    with EventLog(db, reg=ODD) as odd:
        (stored,) = odd.append(
            stream, [VerifiedWithoutRuns(key="odd", head_sha="b" * 40, accepted=("282",))], expected_version=2
        )
    return stored


def test_the_odd_payload_is_one_the_headline_fails_on(demo_copy: Path) -> None:
    """(The payload below really is odd: the terminal view's wording raises on it.)"""
    stored = append_odd_batch(demo_copy)
    with EventLog(demo_copy / ".batchd" / "events.db") as log:
        proj = replay(log)
    with pytest.raises(KeyError):
        describe_event(proj, stored.type, stored.payload)


def test_an_odd_payload_shows_its_fields_on_the_events_page(
    demo_copy: Path, client_for: Callable[..., TestClient]
) -> None:
    """The events page shows an event whose payload the headline cannot word, by its fields."""
    stored = append_odd_batch(demo_copy)
    client = client_for(demo_copy)
    page = client.get("/events?stream=batch-odd")
    assert page.status_code == 200
    assert f'data-seq="{stored.seq}"' in page.text
    assert "key odd, head_sha bbbbbbbbbb" in page.text


def test_an_odd_payload_is_summed_up_the_same_on_the_stream(demo_copy: Path) -> None:
    """The SSE stream words the event as the events page does (one function, one wording)."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, f"/api/stream?since={app.model.last_seq}")
        try:
            stored = append_odd_batch(demo_copy)
            got = client.next("log")
            while got.id != str(stored.seq):
                got = client.next("log")
        finally:
            client.close()
        with app.model.lock:
            expected = event_summary(app.model.projection, stored)
    assert json.loads(got.data)["summary"] == expected == "key odd, head_sha bbbbbbbbbb"


def stored_event(event_type: str, payload: object) -> StoredEvent:
    return StoredEvent(1, "control", 1, event_type, 1, payload, "2026-01-01T00:00:00.000000Z", "x")  # type: ignore[arg-type]


def test_a_payload_that_is_no_object_sums_up_to_nothing() -> None:
    """A row edited to hold a list, not an object: no summary, no error (its JSON is still shown)."""
    assert event_summary(Projection(), stored_event("phase.committed", [1, 2])) == ""


def test_a_summary_is_one_short_line() -> None:
    """A reason of many lines and thousands of characters is one line of at most SUMMARY_MAX."""
    text = event_summary(Projection(), stored_event("control.pause", {"reason": "line\n" * 5000}))
    assert "\n" not in text and len(text) <= SUMMARY_MAX
