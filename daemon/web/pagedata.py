"""What the run, Failed/Blocked and event pages show, computed from the projection and the log.

Plain functions of a :class:`~statemachine.projection.Projection` (read under the model's lock by the
caller) or of an :class:`~store.EventLog`, returning template contexts of plain values: the
templates only lay them out, and ``batchd report --html`` can build the same run page from a
projection of its own. The wording is the CLI's and the status file's (``verdict_line``,
``phase_result``, ``failed_rows``, ``describe_event``, the economy texts), never a second copy.

A run of 100,000 todos stays cheap to show: the run page counts todos by state and lists at most
:data:`TODO_ROWS` of them (one state at a time, by the counts' links), and the event page reads the
log backwards in windows of sequence numbers, never the whole log.
"""

from __future__ import annotations

import heapq
import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.cli.control import run_detail, verdict_data
from daemon.cli.view import NOTABLE, describe_event
from daemon.engine.statusfile import failed_rows, phase_result, review_items, verdict_line
from statemachine.economy import (
    RunEconomy,
    TodoEconomy,
    budget_text,
    clock,
    cost_text,
    minutes_text,
    ratio_text,
    summed_economy,
    todo_economy,
)
from statemachine.ids import id_order
from statemachine.projection import Projection
from statemachine.tables import TodoState
from store import EventLog, StoredEvent
from store.records import seconds_since

__all__ = [
    "EVENTS_LIMIT",
    "EVENTS_MAX",
    "TODO_ROWS",
    "EventRow",
    "EventsQuery",
    "event_row",
    "event_summary",
    "events_window",
    "failed_context",
    "run_context",
]

TODO_ROWS = 200  # todos listed on the run page; the rest are counted (and listed per state)
EVENTS_LIMIT = 100  # events per page of the event stream
EVENTS_MAX = 1000
SCAN_MAX = 50_000  # events one page reads at most: a rare type is searched for page by page
# The states in the order a person reads a run: at work, then done, then what went wrong.
STATE_ORDER = tuple(TodoState)


def run_context(proj: Projection, now: datetime, *, state: str | None = None) -> dict[str, Any]:
    """The run page: state, verdict, phases (commits, pushes), todo counts, agent time, running agents."""
    run = proj.run
    economy = economy_of(proj, now)
    counts = Counter(str(t.state) for t in proj.todos.values())
    wanted = [t for t in proj.todos.values() if state is None or t.state == state]
    listed = heapq.nsmallest(TODO_ROWS, wanted, key=lambda t: id_order(t.todo_id))
    running = proj.todos_in(TodoState.RUNNING)
    verdict = run.verdict
    return {
        "run": {
            "id": run.run_id,
            "state": str(run.state),
            "paused": run.paused,
            "branch": run.branch,
            "base_sha": run.base_sha,
            "started_at": run.started_at,
            "pid": run.pid,
            "detail": run_detail(proj),
            "sandbox": run.sandbox,
            "remote_url": run.remote_url,
            "budget": budget_text(run.budget, run.budget_detail),
            "request_url": run.request_url,
        },
        "verdict": verdict_data(proj),
        "verdict_text": verdict_line(verdict, proj) if verdict is not None else "",
        "phases": [
            {
                "number": p.number,
                "title": p.title,
                "state": str(p.state),
                "final": p.final,
                "batches": list(p.batches),
                "commits": list(p.commits) or ([p.head_sha] if p.head_sha else []),
                "head": p.head_sha,
                "pushed": p.pushed_sha,
                "push_failed": p.push_failed_reason,
                "result": phase_result(p),
            }
            for p in sorted(proj.phases.values(), key=lambda p: (p.final, p.number))
        ],
        "counts": [(s, counts[s]) for s in STATE_ORDER if counts[s]]
        + [(s, n) for s, n in sorted(counts.items()) if s not in STATE_ORDER],
        "total": len(proj.todos),
        "state_filter": state,
        "todos": [_todo_row(proj, t.todo_id, economy.todos[t.todo_id].minutes) for t in listed],
        "todos_more": len(wanted) - len(listed),
        "running": [
            {
                "id": proj.shown(t.todo_id),
                "title": t.title,
                "attempt": t.attempt,
                "batch": t.batch,
                "pid": t.pid,
                "elapsed": clock(seconds_since(t.agent_started_at)),
            }
            for t in running
        ],
        "economy": {
            "minutes": minutes_text(economy.minutes),
            "useful": minutes_text(economy.useful_minutes),
            "failed": minutes_text(economy.failed_minutes),
            "wasted": minutes_text(economy.wasted_minutes),
            "pending": minutes_text(economy.pending_minutes) if economy.pending_minutes > 0 else "",
            "attempts": dict(economy.attempts),
            "waste_ratio": ratio_text(economy.waste_ratio),
            "cost": cost_text(economy.cost_usd, economy.simulated),
        },
        "review": [(proj.shown(t), n, what) for t, n, what in review_items(proj)[:TODO_ROWS]],
    }


class _EconomyCache:
    """:func:`run_economy`, kept between two states of the log: each todo's accounting is classed
    again only when what it is computed from changed (or its agent runs, whose time grows with the
    clock), then all are summed. Classing every attempt of 100,000 todos costs seconds; a live run
    page is asked for after every event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = 0  # id() of the projection the entries are of: another log starts afresh
        self._each: dict[str, tuple[tuple[object, ...], TodoEconomy]] = {}

    def economy(self, proj: Projection, now: datetime) -> RunEconomy:
        with self._lock:
            if self._owner != id(proj):
                self._owner, self._each = id(proj), {}
            each: dict[str, TodoEconomy] = {}
            for key, t in proj.todos.items():
                # Every field todo_economy reads; history only grows, so its length stands for it.
                mark = (
                    t.state,
                    t.attempt,
                    len(t.history),
                    t.agent_seconds,
                    t.cost_usd,
                    t.last_cost_usd,
                    t.cost_simulated,
                )
                kept = self._each.get(key)
                if kept is None or kept[0] != mark or t.state == TodoState.RUNNING:
                    kept = (mark, todo_economy(t, now=now))
                    self._each[key] = kept
                each[key] = kept[1]
            if len(self._each) > len(each):
                self._each = {k: self._each[k] for k in each}
        return summed_economy(each)


_economies = _EconomyCache()


def economy_of(proj: Projection, now: datetime) -> RunEconomy:
    """The run's accounting (:func:`statemachine.economy.run_economy`), computed incrementally."""
    return _economies.economy(proj, now)


def _todo_row(proj: Projection, key: str, minutes: float) -> dict[str, Any]:
    todo = proj.todos[key]
    return {
        "id": proj.shown(key),
        "state": str(todo.state),
        "title": todo.title or todo.path,
        "attempt": todo.attempt,
        "batch": todo.batch,
        "phase": todo.phase,
        "minutes": minutes_text(minutes) if minutes > 0 else "",
        "reason": todo.reason,
    }


def failed_context(proj: Projection) -> dict[str, Any]:
    """The Failed/Blocked table, row for row the status file's."""
    return {"rows": failed_rows(proj)}


# -- the event stream --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsQuery:
    """The event page's filters: one stream, a type prefix (``todo.`` or ``todo.rejected``), and
    a page of ``limit`` events before seq ``before`` (None: the newest)."""

    stream: str = ""
    type: str = ""
    before: int | None = None
    limit: int = EVENTS_LIMIT


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    recorded_at: str
    stream: str
    todo_id: str  # the todo whose stream it is, as its file writes the id ("" for other streams)
    type: str
    summary: str
    payload: str  # indented JSON


def events_window(log: EventLog, query: EventsQuery) -> tuple[list[StoredEvent], int | None]:
    """The page of events ``query`` asks for, newest first, and the ``before`` of the next (older)
    page (None: this is the last).

    The store reads forwards; a page is found by reading windows of sequence numbers backwards from
    ``before``, each twice the last, until ``limit`` events match: a page of the newest events of a
    busy log costs one small window, a rare type a few more. A page reads at most :data:`SCAN_MAX`
    events: past that it shows what it found and links on to where it stopped, so a type found
    nowhere in a million events costs each page a fraction of a second, not the whole log."""
    top = (query.before if query.before is not None else log.last_seq() + 1) - 1
    found: list[StoredEvent] = []
    window = max(query.limit * 2, 64)
    scanned = 0
    stream = query.stream or None
    while top > 0 and len(found) <= query.limit and scanned < SCAN_MAX:
        low = max(0, top - min(window, SCAN_MAX - scanned))
        chunk = [
            e
            for e in log.read(since=low, until=top, stream=stream)
            if not query.type or e.type.startswith(query.type)
        ]
        found.extend(reversed(chunk))
        scanned += top - low
        top = low
        window *= 2
    page = found[: query.limit]
    if len(found) > query.limit:
        return page, page[-1].seq
    return page, (top + 1 if top > 0 else None)


def event_row(proj: Projection, event: StoredEvent) -> EventRow:
    """One row of the event page: the event's headline as the live view words it, else its fields."""
    key = event.stream.removeprefix("todo-") if event.stream.startswith("todo-") else ""
    return EventRow(
        seq=event.seq,
        recorded_at=event.recorded_at,
        stream=event.stream,
        todo_id=proj.shown(key) if key else "",
        type=event.type,
        summary=event_summary(proj, event),
        payload=json.dumps(event.payload, indent=2, ensure_ascii=False, sort_keys=True),
    )


SUMMARY_MAX = 200  # characters of a summary: the whole event is its JSON, one click away


def event_summary(proj: Projection, event: StoredEvent) -> str:
    """One short line about ``event``: the terminal view's headline for the notable ones, else the
    fields that say what it was about ("" when none has a value). The one wording of an event, for
    the event and todo pages and the SSE stream alike.

    A payload of an odd shape (an older batchd's, a hand-edited log's, a field missing or of another
    type) falls back to its fields: a page never fails on what one event holds."""
    try:
        text = describe_event(proj, event.type, event.payload) if event.type in NOTABLE else None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        text = None
    if text is None:
        text = _fields(event.payload)
    text = " ".join(text.split())  # one line, whatever a title or a reason holds
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


# The fields that say what an event was about, in the order they are shown; the rest is in its JSON.
_SUMMARY_FIELDS = ("attempt", "batch", "key", "number", "reason", "detail", "outcome", "by")
_SHA_FIELDS = ("commit", "sha", "head_sha")


def _fields(payload: dict[str, Any]) -> str:
    if not isinstance(payload, dict):  # a row edited by hand to hold a list or a number
        return ""
    parts = []
    for name in _SUMMARY_FIELDS:
        value = payload.get(name)
        if value not in (None, "", [], {}):
            text = str(value).replace("\n", " ")
            parts.append(f"{name} {text[:80] + '…' if len(text) > 80 else text}")
    parts.extend(f"{name} {str(payload[name])[:10]}" for name in _SHA_FIELDS if payload.get(name))
    return ", ".join(parts)
