"""CONTRACT PLACEHOLDER (the metrics helper replaces it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["endpoint"]


def endpoint(request: Request) -> Response:
    raise NotImplementedError
