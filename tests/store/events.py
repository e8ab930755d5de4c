"""Test event types, registered on their own registry so the global one stays the domain's."""

from __future__ import annotations

from dataclasses import dataclass

from store import EventRegistry

REG = EventRegistry()


@REG.register("test.noted", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class Noted:
    text: str
    n: int = 0


@REG.register("test.tagged", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class Tagged:
    tags: tuple[str, ...] = ()
    extra: dict[str, int] | None = None
