"""The records the timeline fold keeps and its views hand out (see :mod:`daemon.web.timeline`).

Slotted dataclasses: a 100,000-todo run keeps ~110,000 bars in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["OUTCOMES", "Bar", "Marker", "PhaseSpan", "TimelineView", "VerifyRun", "event_time"]

# Every outcome a bar can have, in the legend's order. "waiting": the agent is done, no verdict yet.
OUTCOMES = ("accepted", "rejected", "failed", "conflicted", "running", "waiting", "interrupted", "cancelled")


def event_time(recorded_at: str) -> float:
    """Seconds since the epoch of a ``recorded_at`` (``2026-12-02T16:38:53.660043Z``, UTC).

    ``fromisoformat`` takes the ``Z`` since Python 3.11 and is ~20 times faster than ``strptime``:
    this runs for every drawn event of a million-event log."""
    return datetime.fromisoformat(recorded_at).timestamp()


@dataclass(slots=True)
class Bar:
    """One agent attempt. ``end`` is None while its agent runs."""

    todo_id: str
    attempt: int
    slot: int
    start: float
    phase: int | None
    batch: str
    end: float | None = None
    outcome: str = "running"
    reason: str = ""
    agent_time: float | None = None  # the agent's own run time, as recorded (the bar is wall time)
    verdict_at: float | None = None


@dataclass(slots=True, frozen=True)
class VerifyRun:
    """One pass of the verify commands over a tree (``baseline``: the base, with no change)."""

    key: str
    run: int
    lane: int
    start: float
    end: float
    phase: int | None
    passed: bool
    baseline: bool
    todos: int  # how many candidates the tree held
    flaked: bool = False


@dataclass(slots=True, frozen=True)
class Marker:
    """A moment: ``committed``, ``pushed`` or ``push_failed`` of a phase."""

    kind: str
    phase: int
    at: float
    sha: str = ""
    detail: str = ""


@dataclass(slots=True)
class PhaseSpan:
    number: int
    title: str = ""
    start: float | None = None
    end: float | None = None
    skipped: bool = False


@dataclass(slots=True, frozen=True)
class TimelineView:
    """What one picture shows: copies, safe to read after the model's lock is released.

    Running bars are copied with ``end`` set to the drawing time (``now``, else the last event's
    time), so nothing here changes under the reader. ``t0``/``t1``: the span of time it covers."""

    phase: int | None
    bars: tuple[Bar, ...]
    verify_runs: tuple[VerifyRun, ...]
    markers: tuple[Marker, ...]
    phases: tuple[PhaseSpan, ...]
    titles: dict[str, tuple[str, str]]  # todo id -> (shown id, title), for the bars drawn
    slots: int  # rows of agent slots (the most agents that ever ran at once)
    lanes: int  # rows of verify runs
    t0: float
    t1: float
    total_bars: int = 0  # bars of the whole run (for "N attempts in all")
    all_phases: tuple[int, ...] = field(default=())  # every phase known, for the zoom links
    summarized: bool = False  # too many to draw: ``bars`` and ``verify_runs`` are left empty
    bar_count: int = 0  # bars in this view (drawn or not)
    run_count: int = 0
