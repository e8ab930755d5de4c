"""CONTRACT PLACEHOLDER (the timeline helper replaces it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["timeline_page"]


def timeline_page(request: Request) -> Response:
    raise NotImplementedError
