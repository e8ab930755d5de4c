"""Event types by stable name and version, and the mapper between them and JSON payloads.

The log stores ``("todo.queued", 1, {...})``, never a Python import path, so a
class can move or be renamed without breaking an old log. When a payload
changes shape, bump the version and register a pure upcaster from the old
version; upcasters run before decoding, so replay always sees current classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from store.exceptions import BatchdError, UnknownEventType

JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]


@runtime_checkable
class RegisteredEvent(Protocol):
    event_name: ClassVar[str]
    event_version: ClassVar[int]


E = TypeVar("E")


class RegistryError(BatchdError):
    code = "registry_error"


def _thaw(value: Any) -> Any:
    """JSON has no tuples: decode lists back to tuples so frozen events stay hashable and compare equal."""
    if isinstance(value, list):
        return tuple(_thaw(v) for v in value)
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


class EventRegistry:
    """Maps stable event names to frozen dataclasses, with upcasters between versions."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Any]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._fields: dict[type[Any], tuple[str, ...]] = {}

    def register(self, name: str, version: int = 1) -> Callable[[type[E]], type[E]]:
        """Class decorator: ``@registry.register("todo.queued", 1)`` on a frozen dataclass."""

        def decorate(cls: type[E]) -> type[E]:
            if not dataclasses.is_dataclass(cls):
                raise RegistryError(f"{cls.__name__} must be a dataclass to be an event")
            params = cls.__dataclass_params__  # type: ignore[attr-defined]
            if not params.frozen:
                raise RegistryError(f"event {cls.__name__} must be frozen: the log is append-only")
            if name in self._by_name and self._by_name[name] is not cls:
                raise RegistryError(
                    f"event name {name!r} is already taken by {self._by_name[name].__name__}",
                    hint="event names are the log's contract: pick a new one",
                )
            cls.event_name = name  # type: ignore[attr-defined]
            cls.event_version = version  # type: ignore[attr-defined]
            self._by_name[name] = cls
            self._fields[cls] = tuple(f.name for f in dataclasses.fields(cls))
            return cls

        return decorate

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a pure function that turns a ``from_version`` payload into the next version's."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(name, from_version)] = fn
            return fn

        return decorate

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def cls_for(self, name: str) -> type[Any]:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventType(name=name, version=0) from None

    def encode(self, event: object) -> tuple[str, int, JsonDict]:
        cls = type(event)
        fields = self._fields.get(cls)
        if fields is None:
            raise RegistryError(
                f"{cls.__name__} is not a registered event type",
                hint="decorate it with @registry.register(name, version)",
            )
        payload = {f: getattr(event, f) for f in fields}
        return cls.event_name, cls.event_version, payload  # type: ignore[attr-defined]

    def decode(self, name: str, version: int, payload: Mapping[str, Any], *, seq: int | None = None) -> Any:
        cls = self._by_name.get(name)
        if cls is None:
            raise UnknownEventType(name=name, version=version, seq=seq)
        current: int = cls.event_version
        data = dict(payload)
        while version < current:
            up = self._upcasters.get((name, version))
            if up is None:
                raise UnknownEventType(name=name, version=version, seq=seq)
            data = up(data)
            version += 1
        if version > current:
            raise UnknownEventType(name=name, version=version, seq=seq)
        known = self._fields[cls]
        return cls(**{k: _thaw(v) for k, v in data.items() if k in known})


#: The process-wide registry; ``statemachine.events`` registers the domain events here.
registry = EventRegistry()
