"""The ASGI app of ``batchd serve``: routes, the token guard, static files and the live model.

Each page's endpoint lives in the module of its job (``pages``: run, todo, failed, events, control;
``timeline_view``; ``sse``; ``metrics``); this module only wires them. Endpoints that read the model
are plain functions (Starlette runs them in its thread pool), so a page waiting for the model's lock
never stalls the event loop that feeds the SSE streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from daemon.web import metrics, pages, sse, timeline_view
from daemon.web.auth import LoopbackHostMiddleware, SecurityHeadersMiddleware, TokenMiddleware, token_problem
from daemon.web.model import LiveModel

__all__ = ["create_app"]


def create_app(
    model: LiveModel, *, token: str | None = None, start_model: bool = True, loopback: bool = True
) -> Starlette:
    """The dashboard of ``model``'s log. ``token``: every request must carry it (see ``auth``).
    ``start_model``: start (and at shutdown stop) the model with the app; False when the caller
    manages it (tests that fold a model once for many apps). ``loopback``: the server listens on a
    loopback address, so only loopback names are accepted in the Host header (DNS rebinding)."""
    if token:
        problem = token_problem(token)
        if problem is not None:
            raise ValueError(problem)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if start_model:
            model.start()
        try:
            yield
        finally:
            if start_model:
                model.stop()

    routes = [
        Route("/", pages.run_page, name="run"),
        Route("/timeline", timeline_view.timeline_page, name="timeline"),
        Route("/todo/{todo_id}", pages.todo_page, name="todo"),
        Route("/todo/{todo_id}/log/{attempt:int}", pages.agent_log, name="agent_log"),
        Route("/todo/{todo_id}/verify/{attempt:int}", pages.verify_log, name="verify_log"),
        Route("/failed", pages.failed_page, name="failed"),
        Route("/events", pages.events_page, name="events"),
        Route("/control/{action}", pages.control, methods=["POST"], name="control"),
        Route("/api/status", pages.status_json, name="status_json"),
        Route("/api/stream", sse.stream, name="stream"),
        Route("/metrics", metrics.endpoint, name="metrics"),
        Mount("/static", StaticFiles(packages=[("daemon.web", "static")]), name="static"),
    ]
    # Outermost first: a request with a foreign Host is refused before its token is even looked at.
    middleware = [Middleware(SecurityHeadersMiddleware)]
    if loopback:
        middleware.append(Middleware(LoopbackHostMiddleware))
    if token:
        middleware.append(Middleware(TokenMiddleware, token=token))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.model = model
    app.state.token = token
    return app
