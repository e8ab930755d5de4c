"""``/api/stream``: the log's new events as Server-Sent Events, which ``static/live.js`` follows.

A client says the last seq its page shows (``?since=SEQ``, or the ``Last-Event-ID`` header that
``EventSource`` sends by itself when it reconnects; the header wins, being newer). The stream sends
every event after it as an SSE event ``log`` (``id`` = its seq, data = JSON ``{seq, stream, type,
recorded_at, summary}``), then waits for the model's wake-up and sends what came since. The browser
re-fetches the page's ``main`` on a ``log`` event: the events only say *that* and roughly *what*
changed, the page itself is the truth. When the model no longer keeps every event after the client's
seq (it fell more than :data:`~daemon.web.model.RECENT` events behind, or its seq is not from this
log), the stream sends ``reload`` and ends. When the model stops following (a database gone for a
while, an edited log), a ``stale`` event carries the reason; when it follows again, ``live``.

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

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from daemon.web.model import CLOSED, LiveModel
from daemon.web.pagedata import event_summary
from store import StoredEvent

__all__ = ["PING", "RETRY_MS", "SEND_TIMEOUT", "stream"]

PING = 15  # seconds between keep-alive comments (proxies drop silent connections)
RETRY_MS = 1000  # how soon EventSource reconnects after the stream ends or breaks
SEND_TIMEOUT = 30.0  # seconds a send may block before a client that stopped reading is dropped


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
        told: str | None = None  # the model's error this page was told last (None: it is live)
        while True:
            batch = await run_in_threadpool(_batch, model, seq)
            if batch is None:
                yield ServerSentEvent(data=json.dumps({"since": seq}), event="reload")
                return
            chunk, newest = batch
            if chunk:
                yield chunk
                seq = newest
            error = model.error
            if error != told:
                # Each change: why the page stopped moving (a retry, a log edited for good), and
                # `live` once the model follows the log again.
                told = error
                if error is None:
                    yield ServerSentEvent(data="{}", event="live")
                else:
                    yield ServerSentEvent(data=json.dumps({"error": error}), event="stale")
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
            # The event page's wording (under the model's lock, as the projection is read).
            "summary": event_summary(model.projection, event) or event.type,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
