"""Event types by name and version: upcasting before decoding, unknown types named with their seq."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from store import EventLog, EventRegistry, UnknownEventType
from store.registry import RegistryError
from tests.store.events import REG, Noted


def test_upcaster_runs_before_decoding(tmp_path: Any) -> None:
    """A v1 row is upcast to v2 by the registered upcaster, then decoded into the v2 class."""
    old = EventRegistry()

    @old.register("test.renamed", 1)
    @dataclass(frozen=True, slots=True, kw_only=True)
    class RenamedV1:
        name: str

    with EventLog(tmp_path / "e.db", reg=old) as log:
        log.append("a", [RenamedV1(name="x")])

    new = EventRegistry()

    @new.register("test.renamed", 2)
    @dataclass(frozen=True, slots=True, kw_only=True)
    class RenamedV2:
        title: str
        source: str

    @new.upcaster("test.renamed", 1)
    def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"title": data["name"], "source": "v1"}

    with EventLog(tmp_path / "e.db", reg=new) as log:
        (stored,) = log.read()
    assert stored.type_version == 1
    assert stored.decode(new) == RenamedV2(title="x", source="v1")


def test_unknown_type_names_the_seq(log: EventLog) -> None:
    """Decoding a type this registry does not know raises UnknownEventType with the row's seq."""
    log.append("a", [Noted(text="1"), Noted(text="2")])
    stored = list(log.read())[1]
    with pytest.raises(UnknownEventType) as info:
        stored.decode(EventRegistry())
    assert (info.value.name, info.value.seq) == ("test.noted", 2)
    assert "sequence 2" in str(info.value)


def test_missing_upcaster_is_an_unknown_version(log: EventLog) -> None:
    """A row at an old version with no upcaster path raises UnknownEventType, not a TypeError."""
    log.append("a", [Noted(text="1")])
    (stored,) = log.read()
    newer = EventRegistry()

    @newer.register("test.noted", 3)
    @dataclass(frozen=True, slots=True, kw_only=True)
    class NotedV3:
        text: str

    with pytest.raises(UnknownEventType) as info:
        stored.decode(newer)
    assert (info.value.version, info.value.seq) == (1, 1)


def test_unregistered_class_cannot_be_appended(log: EventLog) -> None:
    """Appending an instance of an unregistered class raises RegistryError and writes nothing."""

    @dataclass(frozen=True)
    class Stray:
        x: int

    with pytest.raises(RegistryError):
        log.append("a", [Stray(x=1)])
    assert log.last_seq() == 0


def test_lone_surrogate_is_refused_before_writing(log: EventLog) -> None:
    """A string that cannot be UTF-8 encoded is refused as a RegistryError, not a driver error."""
    with pytest.raises(RegistryError):
        log.append("a", [Noted(text="\ud800")])
    assert log.last_seq() == 0


def test_test_events_stay_off_the_global_registry() -> None:
    """The test registry is separate: the domain registry does not see test.* names."""
    from store import registry

    assert "test.noted" in REG.names()
    assert not [n for n in registry.names() if n.startswith("test.")]
