"""The dispatch fold takes exactly the event types registered for it."""

from __future__ import annotations

from statemachine.dispatch import DISPATCH_EVENTS, DISPATCH_TYPES


def test_every_dispatch_event_is_folded_by_its_registered_name() -> None:
    """A type registered but not folded would make the projection refuse the log."""
    assert {c.event_name for c in DISPATCH_EVENTS} == DISPATCH_TYPES  # type: ignore[attr-defined]
