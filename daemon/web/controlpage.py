"""``POST /control/{action}``: the dashboard's pause, resume, retry and cancel buttons.

A button appends exactly the request the CLI appends (:func:`daemon.cli.requests.build_request` and
:func:`~daemon.cli.requests.record_requests`, shared, not copied) through a log connection opened for
this request and closed after it, then answers what the CLI prints with ``--json``: the running
daemon's answer (waited for up to :data:`WAIT` seconds), or ``queued`` when no daemon runs.

Forgery: a control request must carry the header ``X-Batchd-Control: 1``. Our own script sets it; a
form on another web site cannot (a page can only add headers through a CORS preflight, which this
app never answers), so a visited page cannot pause a run (CSRF). The token, when one is set, is
checked before this by :mod:`daemon.web.auth`. The body (a form or JSON with ``todo_id``) is parsed
here, capped in size: no form library is needed for one field.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from daemon.cli.requests import TODO_ACTIONS, Answer, build_request, record_requests
from daemon.web.model import LiveModel
from daemon.web.todopage import TodoNotFound, find_todo

__all__ = ["CONTROL_HEADER", "WAIT", "control"]

CONTROL_HEADER = "x-batchd-control"
ACTIONS = ("pause", "resume", "retry", "cancel")  # the buttons; `batchd push` stays a CLI command
WAIT = 3.0  # seconds for the running daemon's answer (it answers within a tick unless busy)
MAX_BODY = 4096
REASON = "requested from the dashboard (batchd serve)"


def _error(status: int, message: str, hint: str = "") -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


async def _todo_text(request: Request) -> str | None:
    """The ``todo_id`` field of a JSON or form body (None: absent or unreadable)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data: Any = json.loads(text)
        except ValueError:
            return None
        value = data.get("todo_id") if isinstance(data, dict) else None
        return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    values = parse_qs(text).get("todo_id")
    return values[0] if values else None


def _record(model: LiveModel, action: str, todo_text: str | None) -> Answer | JSONResponse:
    with model.lock:
        proj = model.projection
        key = ""
        if action in TODO_ACTIONS:
            if not todo_text:
                return _error(400, f"{action} needs a todo_id", "send the field todo_id, e.g. 273")
            try:
                key = find_todo(proj, todo_text)
            except TodoNotFound as e:
                return _error(404, e.message, e.hint)
        request = build_request(action, proj, key, reason=REASON)
    log = model.open_log()
    try:
        return record_requests(log, model.root, [request], wait=WAIT)[0]
    finally:
        log.close()


async def control(request: Request) -> Response:
    action = request.path_params["action"]
    if action not in ACTIONS:
        return _error(404, f"no control action {action!r}", f"use one of {', '.join(ACTIONS)}")
    if request.headers.get(CONTROL_HEADER) != "1":
        return _error(
            403,
            "control requests need the header X-Batchd-Control: 1",
            "use the dashboard's buttons, or send the header (other web sites cannot: no forged requests)",
        )
    todo_text = await _todo_text(request) if action in TODO_ACTIONS else None
    answer = await run_in_threadpool(_record, request.app.state.model, action, todo_text)
    if isinstance(answer, Response):
        return answer
    return JSONResponse(asdict(answer))
