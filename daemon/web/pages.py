"""The dashboard's pages: the run, a todo, the Failed/Blocked table, the event stream, the status API.

Endpoints that read the model are plain functions: Starlette runs them in its thread pool, so a page
waiting for :attr:`LiveModel.lock` never stalls the event loop that feeds the live streams. Each
holds the lock only while it copies what it shows out of the projection (:mod:`daemon.web.pagedata`)
and reads the log and files through connections and handles of its own, outside it.

The todo page and its logs are in :mod:`daemon.web.todopage`, the control buttons in
:mod:`daemon.web.controlpage`; their endpoints are re-exported here, where ``app`` finds every page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from daemon.cli.control import status_data, verify_config
from daemon.web.controlpage import control
from daemon.web.model import LiveModel
from daemon.web.pagedata import (
    EVENTS_LIMIT,
    EVENTS_MAX,
    EventsQuery,
    economy_of,
    event_row,
    events_window,
    failed_context,
    run_context,
)
from daemon.web.query import query_int
from daemon.web.render import page
from daemon.web.todopage import agent_log, todo_page, verify_log
from statemachine.events import todo_stream
from statemachine.ids import user_id
from statemachine.tables import TodoState

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

_STATES = frozenset(str(s) for s in TodoState)


def run_page(request: Request) -> Response:
    model: LiveModel = request.app.state.model
    state = request.query_params.get("state")
    with model.lock:
        ctx = run_context(model.projection, datetime.now(UTC), state=state if state in _STATES else None)
        ctx["last_seq"] = model.last_seq  # the seq this data shows, read with it (see render.page)
    return page(request, "run.html", ctx)


def failed_page(request: Request) -> Response:
    model: LiveModel = request.app.state.model
    with model.lock:
        ctx = failed_context(model.projection)
        ctx["last_seq"] = model.last_seq
    return page(request, "failed.html", ctx)


def _int(text: str | None, default: int | None, low: int, high: int) -> int | None:
    number = query_int(text)
    return default if number is None else max(low, min(high, number))


def events_page(request: Request) -> Response:
    model: LiveModel = request.app.state.model
    params = request.query_params
    stream = params.get("stream", "").strip()
    key = user_id(stream) if stream else None
    query = EventsQuery(
        # A todo's stream by any id form a person types (282, 0282, todo-282), as `batchd events -s`.
        stream=todo_stream(key) if key is not None else stream,
        type=params.get("type", "").strip(),
        before=_int(params.get("before"), None, 1, 2**62),
        limit=_int(params.get("limit"), EVENTS_LIMIT, 1, EVENTS_MAX) or EVENTS_LIMIT,
    )
    # Read before the log: the page shows at least every event up to it, so the next one to come is
    # never taken as shown (see render.page).
    seq = model.last_seq
    log = model.open_log()
    try:
        found, older = events_window(log, query)
    finally:
        log.close()
    with model.lock:
        rows = [event_row(model.projection, e) for e in found]
    return page(request, "events.html", {"query": query, "rows": rows, "older": older, "last_seq": seq})


def status_json(request: Request) -> Response:
    """What ``batchd status --json`` prints."""
    model: LiveModel = request.app.state.model
    checks = verify_config(model.root)
    with model.lock:
        proj = model.projection
        data = status_data(proj, economy=economy_of(proj, datetime.now(UTC)), verify=checks)
        # Whether this is the log as it is now: a dashboard that lost its database says so.
        data["serve"] = {"following": model.following, "error": model.error, "log": model.location}
        # Written under the lock: the data holds lists of the projection's own, which the follower
        # changes as events come.
        body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})
