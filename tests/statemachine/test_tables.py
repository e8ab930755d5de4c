"""Every declared transition, and every undeclared one, through the fold and through a live machine."""

from __future__ import annotations

import pytest

from statemachine import InvalidTransition, Projection
from statemachine.machines import LiveMachines
from statemachine.tables import EVENT_TRIGGERS, STATES, TRANSITIONS, Kind
from tests.statemachine.builders import (
    ENTITY,
    declared_rows,
    event,
    number,
    path_to,
    states,
    stored,
    undeclared_pairs,
)


def _fold_to(kind: Kind, state: str) -> tuple[Projection, int]:
    """A projection whose sample entity of ``kind`` reached ``state`` through real events."""
    path = path_to(kind, state)
    assert path is not None
    stream = ENTITY[kind][0]
    pr = Projection()
    pr.apply_all(number((stream, event(kind, t)) for t in path))
    assert pr.state_of(stream) == state
    return pr, len(path)


def _row_id(row: tuple[object, ...]) -> str:
    return "-".join(str(x) for x in row)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_state_is_reachable(kind: Kind) -> None:
    """Each state of each machine can be reached from its initial state through the table."""
    assert [s for s in states(kind) if path_to(kind, s) is None] == []


def test_every_event_type_maps_to_one_declared_trigger() -> None:
    """Each event type fires a trigger its machine declares."""
    declared = {(k, t.trigger) for k, rows in TRANSITIONS.items() for t in rows}
    assert [c for c, pair in EVENT_TRIGGERS.items() if pair not in declared] == []


@pytest.mark.parametrize(
    ("kind", "source", "trigger", "dest"), declared_rows(), ids=map(_row_id, declared_rows())
)
def test_declared_transition_fold_and_live_machine_agree(
    kind: Kind, source: str, trigger: str, dest: str
) -> None:
    """The fold and a live machine both take the row's event from its source state to its destination."""
    pr, seq = _fold_to(kind, source)
    stream = ENTITY[kind][0]
    live = LiveMachines().get(stream, kind, source)
    pr.apply(stored(seq + 1, stream, event(kind, trigger)))
    assert (pr.state_of(stream), live.fire(trigger)) == (dest, dest)


@pytest.mark.parametrize(
    ("kind", "state", "trigger"), undeclared_pairs(), ids=map(_row_id, undeclared_pairs())
)
def test_undeclared_pair_is_rejected_by_the_fold(kind: Kind, state: str, trigger: str) -> None:
    """An event the state does not declare raises InvalidTransition naming stream, state, event, seq."""
    pr, seq = _fold_to(kind, state)
    stream = ENTITY[kind][0]
    evt = stored(seq + 1, stream, event(kind, trigger))
    with pytest.raises(InvalidTransition) as info:
        pr.apply(evt)
    assert (info.value.stream, info.value.state, info.value.event, info.value.seq) == (
        stream,
        state,
        evt.type,
        seq + 1,
    )


@pytest.mark.parametrize(
    ("kind", "state", "trigger"), undeclared_pairs(), ids=map(_row_id, undeclared_pairs())
)
def test_undeclared_pair_is_rejected_by_the_live_machine(kind: Kind, state: str, trigger: str) -> None:
    """A live machine refuses the trigger with InvalidTransition (and ``may`` says no) in that state."""
    model = LiveMachines().get(ENTITY[kind][0], kind, state)
    assert not model.may(trigger)
    with pytest.raises(InvalidTransition) as info:
        model.fire(trigger, event=trigger)
    assert (info.value.stream, info.value.state, model.state) == (ENTITY[kind][0], state, state)


@pytest.mark.parametrize("kind", list(Kind))
def test_live_triggers_match_the_table(kind: Kind) -> None:
    """``get_triggers`` of the live machine lists, per state, exactly the table's triggers."""
    table = {(s, t) for k, s, t, _ in declared_rows() if k == kind}
    live = LiveMachines()
    got = {(str(s), t) for s in STATES[kind] for t in live.get(f"x-{s}", kind, str(s), keep=False).triggers()}
    assert got == table
