"""CONTRACT PLACEHOLDER (the pages helper replaces it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "agent_log",
    "control",
    "events_page",
    "failed_page",
    "run_page",
    "status_json",
    "todo_page",
    "verify_log",
]


def run_page(request: Request) -> Response:
    raise NotImplementedError


todo_page = agent_log = verify_log = failed_page = events_page = status_json = run_page


async def control(request: Request) -> Response:
    raise NotImplementedError
