"""The todo page (its file, every event of its stream, each attempt) and its logs served whole.

A todo is named in the URL as a person writes it (``0282``, ``282``, ``todo-282``: the CLI's one
reading, :func:`daemon.cli.todoids.known_todo`); the page links use the id as its file name writes
it. The attempts are rebuilt from the todo's own stream: ``todo.agent_started`` opens one, and the
events after it (finished, failed, rejected, conflicted, accepted, completed) say how it went. An
event that names no attempt (``todo.accepted``) belongs to the one that started last.

Each attempt shows the end of its agent's log (:data:`files.TAIL_BYTES`, linked to the whole), the
diff of its change (the accepted commit if it got in, else the agent's own) and, when the checks
rejected it, their output: the whole saved verify log if there is one, else the end the event kept.
The logs are served by :func:`agent_log` and :func:`verify_log` from the paths
:class:`~daemon.workspace.Workspace` gives (never a path from the request), through
:func:`files.open_regular` (no links, regular files only), as ``text/plain`` that a browser must not
sniff into HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from daemon.cli.todoids import known_todo
from daemon.exceptions import BatchdError
from daemon.intake.todofile import MAX_TODO_BYTES
from daemon.web import files
from daemon.web.model import LiveModel
from daemon.web.pagedata import EventRow, event_row
from daemon.web.render import page
from daemon.workspace import Workspace
from statemachine import events as ev
from statemachine.economy import clock, cost_text
from statemachine.projection import Projection
from store import StoredEvent

__all__ = ["agent_log", "find_todo", "not_found", "todo_page", "verify_log"]

TEXT = "text/plain; charset=utf-8"
NOSNIFF = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
PAGE_DIFF_LIMIT = 256 * 1024  # bytes of each attempt's diff on the page


class TodoNotFound(BatchdError):
    """The URL names no todo the log knows."""


def find_todo(proj: Projection, text: str) -> str:
    """The key of the todo ``text`` names (any id form a person types, or the key itself)."""
    if text in proj.todos:  # the key as the log has it (an invalid file's ``file:<name>`` too)
        return text
    try:
        return known_todo(proj, text)
    except BatchdError as e:
        raise TodoNotFound(e.message, hint=e.hint) from None


def not_found(request: Request, message: str, hint: str = "") -> Response:
    return page(request, "_notfound.html", {"message": message, "hint": hint}, status_code=404)


@dataclass(slots=True)
class Attempt:
    """One attempt of the todo, as its events tell it."""

    number: int
    started_at: str = ""
    outcome: str = "running"
    reason: str = ""
    duration: str = ""
    cost: str = ""
    agent_commit: str = ""
    accepted_commit: str = ""
    command: str = ""  # the check that rejected it
    output_tail: str = ""  # the end of that check's output, as the event kept it
    failure_detail: str = ""  # why its agent failed, and the end of its output then
    log_tail: str = ""
    events: list[int] = field(default_factory=list)

    @property
    def change(self) -> str:
        """The commit that is its change: what got in if it did, else what the agent made."""
        return self.accepted_commit or self.agent_commit


_OUTCOMES = {
    "todo.agent_finished": "agent done",
    "todo.verifying": "verifying",
    "todo.accepted": "accepted",
    "todo.completed": "complete",
    "todo.rejected": "rejected",
    "todo.conflicted": "conflicted",
    "todo.agent_failed": "agent failed",
    "todo.agent_interrupted": "interrupted",
}


def attempts_of(events: list[StoredEvent]) -> list[Attempt]:
    """The attempts of one todo's stream, oldest first."""
    found: dict[int, Attempt] = {}
    current: Attempt | None = None
    for e in events:
        p = e.payload
        number = p.get("attempt")
        if e.type == "todo.agent_started" and isinstance(number, int):
            current = found.setdefault(number, Attempt(number))
            current.started_at = e.recorded_at
            current.outcome = "running"
        elif isinstance(number, int) and number in found:
            current = found[number]
        if current is None or e.type not in _OUTCOMES:
            continue
        current.events.append(e.seq)
        if e.type == "todo.completed" and current.outcome != "accepted":
            continue  # completed by a person, or after a later attempt: not this one's outcome
        current.outcome = _OUTCOMES[e.type]
        _fill(current, e.type, p)
    return [found[n] for n in sorted(found)]


def _fill(a: Attempt, kind: str, p: dict[str, Any]) -> None:
    if isinstance(p.get("duration"), int | float) and p["duration"]:
        a.duration = clock(float(p["duration"]))
    if p.get("cost_usd") is not None:
        simulated = bool(isinstance(p.get("summary"), dict) and p["summary"].get("simulated"))
        a.cost = cost_text(float(p["cost_usd"]), simulated, short=True)
    if kind == "todo.agent_finished":
        a.agent_commit = str(p.get("commit") or "")
    elif kind == "todo.accepted":
        a.accepted_commit = str(p.get("commit") or "")
    elif kind == "todo.rejected":
        a.reason = str(p.get("reason") or "")
        a.command = " ".join(str(c) for c in p.get("command") or ())
        a.output_tail = str(p.get("output_tail") or "")
    elif kind in ("todo.agent_failed", "todo.conflicted", "todo.agent_interrupted"):
        a.reason = str(p.get("reason") or "")
        a.failure_detail = str(p.get("detail") or "")
        a.log_tail = str(p.get("log_tail") or "")


def _file_context(root: Path, path: str) -> dict[str, Any]:
    """The todo's file as it is in the repository now (if it still is)."""
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts:
        return {"missing": "the log names no file inside the repository"}
    try:
        text, cut = files.read_capped(root / rel, MAX_TODO_BYTES)
    except files.FileRefused as e:
        return {"missing": "it is no longer in the repository" if e.missing else e.message}
    return {"text": text, "truncated": cut}


def _logs_context(root: Path, key: str, a: Attempt) -> dict[str, Any]:
    ws = Workspace(root)
    ctx: dict[str, Any] = {"attempt": a}
    for name, path in (("agent", ws.agent_log(key, a.number)), ("verify", ws.verify_log(key, a.number))):
        try:
            ctx[name] = files.read_tail(path)
        except files.FileRefused as e:
            ctx[name] = None
            ctx[f"{name}_error"] = "" if e.missing else e.message
    ctx["diff"] = files.git_show(root, a.change, limit=PAGE_DIFF_LIMIT) if a.change else None
    return ctx


def todo_page(request: Request) -> Response:
    model: LiveModel = request.app.state.model
    text = request.path_params["todo_id"]
    with model.lock:
        proj = model.projection
        try:
            key = find_todo(proj, text)
        except TodoNotFound as e:
            return not_found(request, e.message, e.hint)
        todo = proj.todos[key]
        shown = proj.shown(key)
        seq = model.last_seq  # read with the data: a page never claims a seq it does not show
        info: dict[str, Any] = {
            "id": shown,
            "key": key,
            "title": todo.title,
            "state": str(todo.state),
            "path": todo.path,
            "priority": todo.priority,
            "attempt": todo.attempt,
            "batch": todo.batch,
            "phase": todo.phase,
            "reason": todo.reason,
            "action": todo.action,
            "review": todo.review,
            "dependencies": [proj.shown(d) for d in todo.dependencies],
            "files_reverted": list(todo.files_reverted),
        }
    log = model.open_log()
    try:
        stream = list(log.read(stream=ev.todo_stream(key)))
    finally:
        log.close()
    with model.lock:
        rows: list[EventRow] = [event_row(model.projection, e) for e in stream]
    attempts = attempts_of(stream)
    # Reading the files and running git happen outside the lock: the follower never waits for them.
    logs = [_logs_context(model.root, key, a) for a in reversed(attempts)] if key.isdigit() else []
    return page(
        request,
        "todo.html",
        {
            "todo": info,
            "file": _file_context(model.root, info["path"]),
            "events": rows,
            "attempts": logs,
            "last_seq": seq,
        },
    )


def _serve(request: Request, which: str) -> Response:
    model: LiveModel = request.app.state.model
    attempt: int = request.path_params["attempt"]
    with model.lock:
        try:
            key = find_todo(model.projection, request.path_params["todo_id"])
        except TodoNotFound as e:
            return PlainTextResponse(f"{e.message}\n", status_code=404, headers=NOSNIFF)
    ws = Workspace(model.root)
    if not key.isdigit() or attempt < 1:  # only todos with a number ever ran an agent
        return PlainTextResponse(f"no {which} log for todo {key}\n", status_code=404, headers=NOSNIFF)
    path = ws.agent_log(key, attempt) if which == "agent" else ws.verify_log(key, attempt)
    try:
        fh = files.open_regular(path)
    except files.FileRefused as e:
        status = 404 if e.missing else 403
        what = "agent output" if which == "agent" else "saved verify output"
        message = f"no {what} for todo {key} attempt {attempt}" if e.missing else e.message
        return PlainTextResponse(f"{message}\n", status_code=status, headers=NOSNIFF)
    return StreamingResponse(files.iter_file(fh), media_type=TEXT, headers=NOSNIFF)


def agent_log(request: Request) -> Response:
    """The whole output of one attempt's agent (``batchd logs ID --attempt N``)."""
    return _serve(request, "agent")


def verify_log(request: Request) -> Response:
    """The whole output of the check that rejected one attempt (``batchd logs ID --verify``)."""
    return _serve(request, "verify")
