"""``/api/stream``: the log's new events as Server-Sent Events, which ``static/live.js`` follows.

A client says the last seq its page shows (``?since=SEQ``, or the ``Last-Event-ID`` header that
``EventSource`` sends by itself when it reconnects; the header wins, being newer). The stream sends
every event after it as an SSE event ``log`` (``id`` = its seq, data = JSON ``{seq, stream, type,
recorded_at, summary}``), then waits for the model's wake-up and sends what came since. The browser
re-fetches the page's ``main`` on a ``log`` event: the events only say *that* and roughly *what*
changed, the page itself is the truth. When the model no longer keeps every event after the client's
seq (it fell more than :data:`~daemon.web.model.RECENT` events behind, or its seq is not from this
log), the stream sends ``reload`` and ends. When the model stopped following (an edited log), one
``stale`` event carries the reason.

Ends: a client that disconnects (sse-starlette cancels the generator), a server that stops
(:meth:`LiveModel.close_streams` puts ``CLOSED`` in every queue, so uvicorn never waits on an open
stream), and a client that stops reading (``send_timeout``). The subscription is dropped in
``finally``, whichever way it ends.

The events after a seq are read, and their summaries written, in a worker thread: they need the
model's lock, which a page may hold while it renders a big timeline, and the event loop that
feeds every stream must never wait for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from daemon.cli.view import describe_event
from daemon.web.model import CLOSED, LiveModel
from store import StoredEvent

__all__ = ["PING", "RETRY_MS", "SEND_TIMEOUT", "stream", "summary"]

PING = 15  # seconds between keep-alive comments (proxies drop silent connections)
RETRY_MS = 1000  # how soon EventSource reconnects after the stream ends or breaks
SEND_TIMEOUT = 30.0  # seconds a send may block before a client that stopped reading is dropped
SUMMARY_MAX = 200  # characters


async def stream(request: Request) -> Response:
    model: LiveModel = request.app.state.model
    try:
        since = _since(request, model)
    except ValueError:
        return PlainTextResponse("since must be a sequence number (?since=SEQ)\n", status_code=400)
    return EventSourceResponse(
        _events(model, since), ping=PING, send_timeout=SEND_TIMEOUT, headers={"Cache-Control": "no-store"}
    )


def _since(request: Request, model: LiveModel) -> int:
    header = request.headers.get("last-event-id", "").strip()
    if header.isdigit():
        return int(header)
    text = request.query_params.get("since")
    if text is None or text == "":
        return model.last_seq
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


async def _events(model: LiveModel, since: int) -> AsyncIterator[ServerSentEvent | bytes]:
    # Subscribed before the first read: an event appended in between wakes the queue, not lost.
    queue = model.subscribe()
    try:
        yield ServerSentEvent(comment="batchd event stream", retry=RETRY_MS)
        seq = since
        told_error = False
        while True:
            batch = await run_in_threadpool(_batch, model, seq)
            if batch is None:
                yield ServerSentEvent(data=json.dumps({"since": seq}), event="reload")
                return
            chunk, newest = batch
            if chunk:
                yield chunk
                seq = newest
            if model.error is not None and not told_error:
                told_error = True
                yield ServerSentEvent(data=json.dumps({"error": model.error}), event="stale")
            if await queue.get() == CLOSED:
                return
    finally:
        model.unsubscribe(queue)


def _batch(model: LiveModel, since: int) -> tuple[bytes, int] | None:
    """The ``log`` events after ``since``, encoded as one chunk, and the newest seq in it; or None
    when the client must reload.

    One chunk per wake-up, not one send per event: a burst of a thousand events is one write, and a
    client that hung up mid-burst costs one failed write, not a thousand (each of which asyncio
    would log)."""
    with model.lock:
        if since > model.last_seq:
            return None  # a seq this log never reached: the page is from another log
        events = model.recent(since)
        if events is None:
            return None
        chunk = b"".join(
            ServerSentEvent(data=_data(model, e), event="log", id=str(e.seq)).encode() for e in events
        )
        return chunk, events[-1].seq if events else since


def _data(model: LiveModel, event: StoredEvent) -> str:
    return json.dumps(
        {
            "seq": event.seq,
            "stream": event.stream,
            "type": event.type,
            "recorded_at": event.recorded_at,
            "summary": summary(model, event),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def summary(model: LiveModel, event: StoredEvent) -> str:
    """One short line about ``event`` (call under ``model.lock``): the terminal view's text for the
    notable ones, else the type and its payload's fields."""
    try:
        text = describe_event(model.projection, event.type, event.payload)
    except (KeyError, TypeError, ValueError, AttributeError):
        text = None  # a payload of an older or odd shape: its fields say enough
    if text is None:
        fields = _fields(event.payload)
        text = f"{event.type} {fields}" if fields else event.type
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _fields(payload: dict[str, Any]) -> str:
    parts = []
    for key, value in payload.items():
        if value in ("", (), [], {}, None):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        text = " ".join(text.split())
        parts.append(f"{key}={text[:60] + '…' if len(text) > 60 else text}")
    return " ".join(parts)
