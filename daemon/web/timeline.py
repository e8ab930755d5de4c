"""The timeline of a run, folded from its events (pure: no clock, no I/O). CONTRACT PLACEHOLDER:
the timeline helper replaces this module; only ``Timeline()`` and ``Timeline.apply`` are relied on."""

from __future__ import annotations

from store import StoredEvent

__all__ = ["Timeline"]


class Timeline:
    def apply(self, event: StoredEvent) -> None:
        """Fold one event (any type: the ones it does not draw are ignored)."""
