"""CONTRACT PLACEHOLDER (the web-core helper replaces it): the token guard and the bind rule."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TokenMiddleware", "check_bind"]


class TokenMiddleware:
    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def check_bind(host: str, token: str | None) -> None:
    """Raise a UsageError when ``host`` is not loopback and no token is given."""
    raise NotImplementedError
