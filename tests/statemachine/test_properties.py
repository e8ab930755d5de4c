"""Invariants over random valid histories (walks of the machines with random field values)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statemachine import InvalidTransition, Projection, replay, save_snapshot
from statemachine.projection import parse_stream
from statemachine.tables import NEXT_STATE
from store import EventLog
from tests.statemachine.builders import (
    ENTITIES,
    EVENT_FOR,
    histories,
    number,
    random_event,
    stored,
    triggers,
    write,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DB = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fold(rows: list[Any]) -> Projection:
    pr = Projection()
    pr.apply_all(rows)
    return pr


@FAST
@given(histories())
def test_replaying_twice_gives_identical_state(pairs: list[tuple[str, object]]) -> None:
    """The fold is deterministic: the same history gives the same projection."""
    rows = number(pairs)
    assert _fold(rows).to_json() == _fold(rows).to_json()


@FAST
@given(histories(), st.data())
def test_snapshot_at_any_point_plus_tail_equals_the_whole_fold(
    pairs: list[tuple[str, object]], data: st.DataObject
) -> None:
    """Cutting anywhere, a JSON round trip of the prefix's state plus the tail equals folding everything."""
    rows = number(pairs)
    cut = data.draw(st.integers(0, len(rows)))
    resumed = Projection.from_json(json.loads(json.dumps(_fold(rows[:cut]).to_json())))
    resumed.apply_all(rows[cut:])
    assert resumed == _fold(rows)


@FAST
@given(histories(), st.data())
def test_an_event_the_state_does_not_allow_is_rejected(
    pairs: list[tuple[str, object]], data: st.DataObject
) -> None:
    """After any valid history, an event whose trigger the entity's state lacks raises InvalidTransition."""
    pr = _fold(number(pairs))
    kind, stream, ids = data.draw(st.sampled_from(ENTITIES))
    state = pr.state_of(stream)
    refused = [t for t in triggers(kind) if (kind, state, t) not in NEXT_STATE]
    if not refused:
        return
    evt = data.draw(random_event(EVENT_FOR[(kind, data.draw(st.sampled_from(refused)))], ids))
    with pytest.raises(InvalidTransition) as info:
        pr.apply(stored(len(pairs) + 1, stream, evt))
    assert (info.value.stream, info.value.state, parse_stream(stream)[0]) == (stream, state, kind)


@DB
@given(histories(max_len=25), st.data())
def test_log_snapshot_plus_tail_equals_replay_from_zero(
    pairs: list[tuple[str, object]], data: st.DataObject
) -> None:
    """Through a real SQLite log: a snapshot saved at any seq, then more events, replays to the full fold."""
    cut = data.draw(st.integers(0, len(pairs)))
    with tempfile.TemporaryDirectory() as tmp, EventLog(Path(tmp) / "events.db") as log:
        write(log, pairs[:cut])
        save_snapshot(log, replay(log))
        write(log, pairs[cut:])
        assert replay(log) == replay(log, use_snapshot=False)


@DB
@given(histories(max_len=25), st.data())
def test_point_in_time_replay_equals_the_fold_of_the_prefix(
    pairs: list[tuple[str, object]], data: st.DataObject
) -> None:
    """replay(until=k) on a real log equals folding its first k rows, whatever snapshot exists."""
    with tempfile.TemporaryDirectory() as tmp, EventLog(Path(tmp) / "events.db") as log:
        write(log, pairs)
        rows = list(log.read())
        save_snapshot(log, replay(log, until=data.draw(st.integers(0, len(rows)))))
        k = data.draw(st.integers(0, len(rows)))
        assert replay(log, until=k) == _fold(rows[:k])
