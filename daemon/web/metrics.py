"""CONTRACT PLACEHOLDER (the metrics helper replaces it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from store import StoredEvent

__all__ = ["MetricsFold", "endpoint"]


class MetricsFold:
    """Counters folded from every event (attempts, durations, verify runs, commits, pushes, cost)."""

    def apply(self, event: StoredEvent) -> None:
        """Fold one event (types it does not count are ignored)."""


def endpoint(request: Request) -> Response:
    raise NotImplementedError
