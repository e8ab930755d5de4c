"""CONTRACT PLACEHOLDER (the web-core helper replaces it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["stream"]


async def stream(request: Request) -> Response:
    raise NotImplementedError
