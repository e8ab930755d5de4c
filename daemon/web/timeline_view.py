"""The timeline page (``/timeline?phase=N``): the fold of :mod:`daemon.web.timeline`, laid out as SVG.

The server draws the whole picture (rows of agent slots, then verify lanes, phase commit and push
markers on top, a time axis): it works with no JavaScript, and hovering a bar shows its SVG
``<title>``. ``static/timeline.js`` only adds a nicer tooltip. All geometry is computed here, in
Python, so the template is a plain loop that prints numbers and escaped text (autoescape: a todo
title is text inside ``<title>``, never markup).

:func:`timeline_context` is what ``_timeline.html`` needs; ``batchd report --html`` renders the same
partial with ``static=True`` (its bars link nowhere: the report has no todo pages).

A view is copied from the fold under the model's lock (:meth:`Timeline.view` reads one phase's
indexes only) and laid out after the lock is released, so a big picture never holds up the follower.
The all-phases view of a huge run would be megabytes of SVG nobody can read: past
:data:`MAX_DRAWN` items it draws the phases only, and says to zoom in.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from daemon.web.query import query_int
from daemon.web.render import page
from daemon.web.timeline import OUTCOMES, Timeline, TimelineView
from statemachine.economy import clock

__all__ = ["MAX_DRAWN", "layout", "timeline_context", "timeline_page"]

MAX_DRAWN = 4000  # bars + verify runs the all-phases view draws one by one (a phase view: all)

# Geometry (SVG user units = CSS pixels at width 100%).
WIDTH = 1200
LEFT = 84  # row labels
RIGHT = 12
PHASE_ROW = 20
MARKER_ROW = 18
ROW = 22
BAR = 16
AXIS = 26
PLOT = WIDTH - LEFT - RIGHT
MIN_WIDTH = 1.5  # a bar of a few ms stays visible (and clickable)

NICE_STEPS = (
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)
MAX_TICKS = 10

OUTCOME_LABELS = {
    "accepted": "accepted",
    "rejected": "rejected",
    "failed": "agent failed",
    "conflicted": "conflict",
    "running": "running",
    "waiting": "done, awaiting its verdict",
    "interrupted": "interrupted",
    "cancelled": "cancelled",
}


@dataclass(slots=True, frozen=True)
class DrawnBar:
    x: float
    y: float
    w: float
    todo: str  # the id key (for links and data-todo)
    shown: str  # the id as its file writes it
    attempt: int
    outcome: str
    href: str | None
    tip: str  # the <title>: id, title, attempt, duration, outcome, reason


@dataclass(slots=True, frozen=True)
class DrawnRun:
    x: float
    y: float
    w: float
    cls: str
    tip: str


@dataclass(slots=True, frozen=True)
class DrawnMarker:
    x: float
    kind: str
    tip: str


@dataclass(slots=True, frozen=True)
class DrawnPhase:
    number: int
    x: float
    w: float
    label: str
    tip: str
    href: str | None
    shade: bool  # every other phase is shaded behind the rows


@dataclass(slots=True, frozen=True)
class Tick:
    x: float
    label: str


@dataclass(slots=True, frozen=True)
class Row:
    y: float
    label: str
    kind: str  # slot | verify


@dataclass(slots=True, frozen=True)
class PhaseLink:
    number: int
    label: str
    href: str | None
    current: bool


@dataclass(slots=True, frozen=True)
class Layout:
    """Everything ``_timeline.html`` prints."""

    phase: int | None
    width: int
    height: int
    rows: tuple[Row, ...]
    rows_top: float
    rows_bottom: float
    axis_y: float
    bars: tuple[DrawnBar, ...]
    runs: tuple[DrawnRun, ...]
    markers: tuple[DrawnMarker, ...]
    phases: tuple[DrawnPhase, ...]
    ticks: tuple[Tick, ...]
    links: tuple[PhaseLink, ...]
    all_href: str | None
    summary: str  # set when the items were too many to draw one by one
    span_text: str  # "16:38:53 to 16:39:08 UTC (15.0s)"
    bar_count: int
    total_bars: int
    outcomes: tuple[tuple[str, str], ...]  # legend: (css outcome, label)
    empty: bool


def timeline_context(
    timeline: Timeline,
    *,
    phase: int | None = None,
    now: float | None = None,
    todo_base: str | None = None,
    phase_base: str | None = None,
    all_href: str | None = None,
) -> dict[str, Any]:
    """What ``_timeline.html`` needs, as ``{"tl": Layout}``.

    Defaults suit the self-contained report: bars link nowhere (``todo_base``: a prefix the todo's
    id is appended to), no phase zoom links (``phase_base``: a prefix the phase number is appended to). The
    caller must own ``timeline`` for the call (the page holds the model's lock only for the view)."""
    view = timeline.view(phase, now, limit=MAX_DRAWN)
    return {"tl": layout(view, todo_base=todo_base, phase_base=phase_base, all_href=all_href)}


def layout(
    view: TimelineView,
    *,
    todo_base: str | None = None,
    phase_base: str | None = None,
    all_href: str | None = None,
) -> Layout:
    """Coordinates and texts of one view (pure: no lock, no clock)."""
    slots, lanes = max(view.slots, 1), max(view.lanes, 1)
    rows_top = float(PHASE_ROW + MARKER_ROW)
    rows = [Row(rows_top + i * ROW, f"slot {i + 1}", "slot") for i in range(slots)]
    rows += [
        Row(rows_top + (slots + i) * ROW, "verify" if lanes == 1 else f"verify {i + 1}", "verify")
        for i in range(lanes)
    ]
    rows_bottom = rows_top + (slots + lanes) * ROW
    t0, t1 = view.t0, view.t1
    if t1 - t0 < 1.0:  # a picture of an instant still needs an axis
        t1 = t0 + 1.0
    scale = PLOT / (t1 - t0)

    def x_of(t: float) -> float:
        return round(LEFT + (t - t0) * scale, 1)

    def w_of(start: float, end: float) -> float:
        return round(max(MIN_WIDTH, (end - start) * scale), 1)

    summary = ""
    bars: list[DrawnBar] = []
    runs: list[DrawnRun] = []
    if view.summarized:
        summary = (
            f"{view.bar_count:,} agent attempts and {view.run_count:,} verify runs: "
            "too many to draw one by one; zoom to a phase to see each."
        )
    else:
        pad = (ROW - BAR) / 2
        for b in view.bars:
            end = b.end if b.end is not None else b.start
            shown, title = view.titles.get(b.todo_id, (b.todo_id, ""))
            bars.append(
                DrawnBar(
                    x=x_of(b.start),
                    y=rows_top + b.slot * ROW + pad,
                    w=w_of(b.start, end),
                    todo=b.todo_id,
                    shown=shown,
                    attempt=b.attempt,
                    outcome=b.outcome if b.outcome in OUTCOME_LABELS else "waiting",
                    href=None if todo_base is None else todo_base + quote(b.todo_id, safe=""),
                    tip=_bar_tip(shown, title, b.attempt, end - b.start, b.agent_time, b.outcome, b.reason),
                )
            )
        verify_top = rows_top + slots * ROW + pad
        for r in view.verify_runs:
            cls = (
                ("passed" if r.passed else "failed")
                + (" baseline" if r.baseline else "")
                + (" flaked" if r.flaked else "")
            )
            what = (
                "baseline (the base, no change)"
                if r.baseline
                else f"{r.todos} todo{'s' if r.todos != 1 else ''}"
            )
            verdict = ("passed" if r.passed else "failed") + (" (flaked)" if r.flaked else "")
            tip = f"verify {r.key}, run {r.run}: {what}\n{verdict} in {clock(r.end - r.start)}"
            runs.append(
                DrawnRun(
                    x=x_of(r.start), y=verify_top + r.lane * ROW, w=w_of(r.start, r.end), cls=cls, tip=tip
                )
            )
    markers = tuple(
        DrawnMarker(x=x_of(m.at), kind=m.kind, tip=_marker_tip(m.kind, m.phase, m.sha, m.detail))
        for m in view.markers
    )
    phases: list[DrawnPhase] = []
    for i, span in enumerate(view.phases):
        if span.start is None:
            continue  # planned, never started: nothing to place
        end = span.end if span.end is not None else t1
        w = w_of(span.start, end)
        label = f"Phase {span.number}"
        state = "skipped" if span.skipped else ("done" if span.end is not None else "at work")
        tip = f"{label}{': ' + span.title if span.title else ''}\n{state}, {clock(end - span.start)}"
        phases.append(
            DrawnPhase(
                number=span.number,
                x=x_of(span.start),
                w=w,
                label=label if w > 8 * len(label) else str(span.number) if w > 14 else "",
                tip=tip,
                href=None if phase_base is None else f"{phase_base}{span.number}",
                shade=i % 2 == 0,
            )
        )
    links = tuple(
        PhaseLink(n, f"Phase {n}", None if phase_base is None else f"{phase_base}{n}", n == view.phase)
        for n in view.all_phases
    )
    legend = tuple((o, OUTCOME_LABELS[o]) for o in OUTCOMES)
    return Layout(
        phase=view.phase,
        width=WIDTH,
        height=int(rows_bottom + AXIS),
        rows=tuple(rows),
        rows_top=rows_top,
        rows_bottom=rows_bottom,
        axis_y=rows_bottom,
        bars=tuple(bars),
        runs=tuple(runs),
        markers=markers,
        phases=tuple(phases),
        ticks=_ticks(t0, t1, x_of),
        links=links,
        all_href=all_href,
        summary=summary,
        span_text=f"{_stamp(t0, 1)} to {_stamp(view.t1, 1)} UTC ({clock(view.t1 - view.t0)})",
        bar_count=view.bar_count,
        total_bars=view.total_bars,
        outcomes=legend,
        empty=not view.bar_count and not view.run_count and not view.markers,
    )


def _bar_tip(
    shown: str, title: str, attempt: int, wall: float, agent: float | None, outcome: str, reason: str
) -> str:
    took = clock(wall) + (f" (agent {clock(agent)})" if agent else "")
    lines = [
        f"#{shown} {title}".rstrip(),
        f"attempt {attempt} · {took}",
        OUTCOME_LABELS.get(outcome, outcome),
    ]
    if reason:
        lines.append(reason)
    return "\n".join(lines)


def _marker_tip(kind: str, phase: int, sha: str, detail: str) -> str:
    what = {"committed": "committed", "pushed": "pushed", "push_failed": "push failed"}.get(kind, kind)
    return f"Phase {phase} {what}" + (f" {sha[:10]}" if sha else "") + (f" {detail}" if detail else "")


def _ticks(t0: float, t1: float, x_of: Any) -> tuple[Tick, ...]:
    span = t1 - t0
    step = next((s for s in NICE_STEPS if span / s <= MAX_TICKS), None)
    if step is None:  # longer than ten days: whole days
        step = 86400.0 * math.ceil(span / 86400 / MAX_TICKS)
    first = math.ceil(t0 / step) * step
    ticks = []
    t = first
    digits = 1 if step < 1 else 0
    while t <= t1 + 1e-9:
        ticks.append(Tick(x_of(t), _stamp(t, digits, days=span > 86400)))
        t = first + len(ticks) * step
    return tuple(ticks)


def _stamp(t: float, digits: int = 0, *, days: bool = False) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    text = moment.strftime("%m-%d %H:%M" if days else "%H:%M:%S")
    if digits and not days:
        text += f".{moment.microsecond // 100_000}"
    return text


def timeline_page(request: Request) -> Response:
    """``/timeline`` (every phase) or ``/timeline?phase=N`` (one phase, zoomed)."""
    model = request.app.state.model
    raw = request.query_params.get("phase", "").strip()
    phase: int | None = None
    if raw:
        if query_int(raw) is None:
            return page(
                request,
                "timeline.html",
                {"error": f"phase must be a phase number, not {raw!r}", "tl": None},
                status_code=400,
            )
        phase = query_int(raw)
    now = time.time()
    with model.lock:
        if phase is not None and phase not in model.timeline.phases:
            known = sorted(model.timeline.phases)
            error = f"this run has no phase {phase} (yet)" + (
                f"; its phases: {', '.join(map(str, known))}" if known else ""
            )
            return page(request, "timeline.html", {"error": error, "tl": None}, status_code=404)
        view = model.timeline.view(phase, now, limit=MAX_DRAWN)
        seq = model.last_seq  # the seq this view shows, read with it (see render.page)
    timeline_path = request.url_for("timeline").path
    todo_base = request.url_for("todo", todo_id="0").path[:-1]
    tl = layout(view, todo_base=todo_base, phase_base=f"{timeline_path}?phase=", all_href=timeline_path)
    return page(request, "timeline.html", {"tl": tl, "error": "", "last_seq": seq})
