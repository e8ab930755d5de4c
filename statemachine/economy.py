"""What agent time and cost bought: every attempt of every todo classed, from the projection alone.

The one definition of the accounting that ``batchd status`` (text and ``--json``), the status file,
the run summary and the benchmark show; nothing here reads a clock or a file (``now`` is given).

An attempt is

- **useful**: its change was accepted, or it lost a conflict and its change was carried into the
  resolve attempt (``AttemptRecord.kept``: the next attempt's workspace really started from it), so
  its agent time was not thrown away;
- **failed**: its agent failed (error, timeout, no change) or verification rejected its change (also
  when the repair goes on from that change: the issue's rule, a rejection is the price of a todo
  that did not work);
- **wasted**: work that was fine, or might have been, and was paid for again: it lost a conflict and
  was redone from scratch, it was lost to a crash or a stop (interrupted), or its finished change was
  never judged (its file was edited or cancelled meanwhile);
- **pending**: not judged yet: its agent is running, or its change waits for verification.

``useful + failed + wasted + pending`` is all the agent time spent (``minutes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

from statemachine.tables import TodoState
from statemachine.views import AttemptRecord, TodoView

if TYPE_CHECKING:
    from statemachine.projection import Projection

__all__ = [
    "CLASSES",
    "FAILED",
    "PENDING",
    "USEFUL",
    "WASTED",
    "ClassedAttempt",
    "RunEconomy",
    "TodoEconomy",
    "attempt_class",
    "budget_amount",
    "budget_text",
    "clock",
    "cost_text",
    "minutes_text",
    "ratio_text",
    "run_economy",
    "running_seconds",
    "summary_text",
    "summed_economy",
    "todo_economy",
    "todo_json",
]

USEFUL = "useful"
FAILED = "failed"
WASTED = "wasted"
PENDING = "pending"
CLASSES = (USEFUL, FAILED, WASTED, PENDING)

# The outcomes (``AttemptRecord.outcome``) whose agent time is paid again though nobody did wrong;
# agent_failed and rejected are failed. Issue 14's "redone for a flake" joins here under its own
# outcome name ("flaked" is reserved for it).
WASTED_OUTCOMES = frozenset({"conflicted", "interrupted", "flaked"})

# Outcomes of the attempts that have no record (yet): see :func:`todo_economy`.
RUNNING = "running"
AWAITING = "awaiting verification"
DISCARDED = "discarded"  # it finished, and its change was dropped before verification judged it

_JUDGING = (TodoState.AGENT_DONE, TodoState.VERIFYING)
_EPSILON = 1e-6  # seconds: what rounding leaves when the records add up to the todo's total


def attempt_class(record: AttemptRecord) -> str:
    """useful, failed or wasted. An outcome this module does not know (a later batchd's) is failed:
    it is not known to have been useful, nor known to have been paid for twice."""
    if record.outcome == "accepted" or (record.kept and record.outcome == "conflicted"):
        return USEFUL
    if record.outcome in WASTED_OUTCOMES:
        return WASTED
    return FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassedAttempt:
    attempt: int
    outcome: str  # the record's, or running / awaiting verification / discarded
    kind: str  # useful | failed | wasted | pending
    minutes: float
    cost_usd: float | None  # None: its agent reported no cost
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TodoEconomy:
    """One todo's agent time (minutes, summed over all its attempts) and cost, by class."""

    todo_id: str
    minutes: float
    cost_usd: float | None  # None when no attempt of it reported a cost
    useful_minutes: float
    failed_minutes: float
    wasted_minutes: float
    pending_minutes: float
    attempts: tuple[ClassedAttempt, ...]
    simulated: bool  # its agent said its cost is made up (the demo's scripted agent)

    def count(self, kind: str) -> int:
        return sum(1 for a in self.attempts if a.kind == kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEconomy:
    """The run's totals; ``waste_ratio`` = wasted / useful agent-minutes (None: nothing useful yet)."""

    minutes: float
    cost_usd: float | None
    useful_minutes: float
    failed_minutes: float
    wasted_minutes: float
    pending_minutes: float
    attempts: Mapping[str, int]  # class -> how many attempts
    waste_ratio: float | None
    simulated: bool  # some agent's cost is made up: the total is too
    todos: Mapping[str, TodoEconomy]

    def as_json(self) -> dict[str, object]:
        """The run's totals for ``status --json`` (the per-todo ones go with each todo)."""
        return {
            "minutes": _round(self.minutes),
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 4),
            "cost_simulated": self.simulated,
            "useful_minutes": _round(self.useful_minutes),
            "failed_minutes": _round(self.failed_minutes),
            "wasted_minutes": _round(self.wasted_minutes),
            "pending_minutes": _round(self.pending_minutes),
            "attempts": dict(self.attempts),
            "waste_ratio": None if self.waste_ratio is None else round(self.waste_ratio, 4),
        }


def todo_json(e: TodoEconomy) -> dict[str, object]:
    """One todo's accounting for ``status --json``."""
    return {
        "minutes": _round(e.minutes),
        "cost_usd": None if e.cost_usd is None else round(e.cost_usd, 4),
        "cost_simulated": e.simulated,
        "useful_minutes": _round(e.useful_minutes),
        "failed_minutes": _round(e.failed_minutes),
        "wasted_minutes": _round(e.wasted_minutes),
        "attempts": [
            {"attempt": a.attempt, "outcome": a.outcome, "class": a.kind, "minutes": _round(a.minutes)}
            for a in e.attempts
        ],
    }


def _round(minutes: float) -> float:
    return round(minutes, 4)  # to the hundredth of a second: a short agent does not read as none


def running_seconds(t: TodoView, now: datetime | None) -> float:
    """How long the todo's agent has run by ``now`` (0 without a clock, or when it does not run)."""
    if now is None or t.state != TodoState.RUNNING or not t.agent_started_at:
        return 0.0
    try:
        started = datetime.fromisoformat(t.agent_started_at)
    except ValueError:
        return 0.0
    if started.tzinfo is None or now.tzinfo is None:
        return 0.0
    return max(0.0, (now - started).total_seconds())


def todo_economy(t: TodoView, *, now: datetime | None = None) -> TodoEconomy:
    """Every attempt of ``t`` classed. The records (``t.history``) say how each judged attempt ended;
    the todo's totals (``agent_seconds``, ``cost_usd``) hold every agent that ended, so what the
    records do not account for is the last agent's, not judged: awaiting verification while the todo
    is there, else discarded. A running agent counts with its time so far when ``now`` is given."""
    classed = [
        ClassedAttempt(
            attempt=r.attempt,
            outcome=r.outcome,
            kind=attempt_class(r),
            minutes=max(0.0, r.duration) / 60,
            cost_usd=r.cost_usd,
            reason=r.reason,
        )
        for r in t.history
    ]
    recorded = sum(max(0.0, r.duration) for r in t.history)
    recorded_cost = sum(r.cost_usd or 0.0 for r in t.history)
    rest = t.agent_seconds - recorded
    if rest > _EPSILON:
        judging = t.state in _JUDGING
        rest_cost = t.cost_usd - recorded_cost
        cost = rest_cost if rest_cost > _EPSILON else t.last_cost_usd
        classed.append(
            ClassedAttempt(
                attempt=t.attempt,
                outcome=AWAITING if judging else DISCARDED,
                kind=PENDING if judging else WASTED,
                minutes=rest / 60,
                cost_usd=cost,
            )
        )
    if t.state == TodoState.RUNNING:
        running = running_seconds(t, now)
        classed.append(
            ClassedAttempt(
                attempt=t.attempt, outcome=RUNNING, kind=PENDING, minutes=running / 60, cost_usd=None
            )
        )
    by_kind = {kind: sum(a.minutes for a in classed if a.kind == kind) for kind in CLASSES}
    costs = [c for c in (t.last_cost_usd, *(r.cost_usd for r in t.history)) if c is not None]
    return TodoEconomy(
        todo_id=t.todo_id,
        minutes=sum(by_kind.values()),
        # A negative cost is an agent's nonsense (or a trick): it never makes another todo's cost
        # disappear from the run's total.
        cost_usd=max(0.0, t.cost_usd) if costs or t.cost_usd else None,
        useful_minutes=by_kind[USEFUL],
        failed_minutes=by_kind[FAILED],
        wasted_minutes=by_kind[WASTED],
        pending_minutes=by_kind[PENDING],
        attempts=tuple(classed),
        simulated=t.cost_simulated,
    )


def run_economy(proj: Projection, *, now: datetime | None = None) -> RunEconomy:
    """The run's accounting: every todo the projection knows."""
    return summed_economy({t.todo_id: todo_economy(t, now=now) for t in proj.todos.values()})


def summed_economy(each: Mapping[str, TodoEconomy]) -> RunEconomy:
    """The run's accounting from each todo's (:func:`todo_economy`): a caller that keeps those
    between two states of the log (the dashboard) sums them again without classing every attempt."""
    # One pass with plain accumulators (left to right, from 0, as sum() adds): the dashboard sums
    # 100,000 todos for every live refresh of its run page.
    minutes: float = 0
    useful: float = 0
    failed: float = 0
    wasted: float = 0
    pending: float = 0
    cost: float = 0
    any_cost = simulated = False
    attempts = dict.fromkeys(CLASSES, 0)
    for e in each.values():
        minutes += e.minutes
        useful += e.useful_minutes
        failed += e.failed_minutes
        wasted += e.wasted_minutes
        pending += e.pending_minutes
        if e.cost_usd is not None:
            cost += e.cost_usd
            any_cost = True
        simulated = simulated or e.simulated
        for a in e.attempts:
            if a.kind in attempts:
                attempts[a.kind] += 1
    return RunEconomy(
        minutes=minutes,
        cost_usd=cost if any_cost else None,
        useful_minutes=useful,
        failed_minutes=failed,
        wasted_minutes=wasted,
        pending_minutes=pending,
        attempts=MappingProxyType(attempts),
        waste_ratio=wasted / useful if useful > 0 else None,
        simulated=simulated,
        todos=MappingProxyType(each),
    )


# --- how a person reads it ------------------------------------------------------------------------

SIMULATED = "simulated: the demo's scripted agent"


def cost_text(cost: float | None, simulated: bool, *, short: bool = False) -> str:
    """``$1.03``; a made-up cost says so (``$1.03 (simulated: …)``, ``short``: ``$1.03 (simulated)``);
    ``—`` when no agent reported one."""
    if cost is None:
        return "—"
    text = f"${cost:.2f}"
    if simulated:
        text += " (simulated)" if short else f" ({SIMULATED})"
    return text


def clock(seconds: float) -> str:
    """``4.2s`` under a minute, ``3m 07s`` under an hour, ``2h 05m`` beyond."""
    if seconds < 60:
        return f"{max(0.0, seconds):.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def minutes_text(minutes: float) -> str:
    """Agent-minutes as a person reads a duration (agents that ran side by side add up)."""
    return clock(minutes * 60)


def ratio_text(ratio: float | None) -> str:
    """``4.0%``, or what it means that there is none."""
    return "— (nothing useful yet)" if ratio is None else f"{ratio:.1%}"


def summary_text(e: RunEconomy) -> str:
    """``14m 12s: useful 12m 00s, failed 1m 12s, wasted 1m 00s (waste ratio 8.3%)``."""
    parts = [
        f"useful {minutes_text(e.useful_minutes)}",
        f"failed {minutes_text(e.failed_minutes)}",
        f"wasted {minutes_text(e.wasted_minutes)}",
    ]
    if e.pending_minutes > 0:
        parts.append(f"not judged yet {minutes_text(e.pending_minutes)}")
    return f"{minutes_text(e.minutes)}: {', '.join(parts)} (waste ratio {ratio_text(e.waste_ratio)})"


def budget_amount(budget: str, used: float, limit: float) -> str:
    """What a run budget came to, in its unit: ``$5.20 of $5.00``, ``31.25 of 30 agent minutes``."""
    if budget == "max_cost_usd":
        return f"${used:.2f} of ${limit:.2f}"
    return f"{used:.2f} of {limit:g} agent minutes"


def budget_text(budget: str, detail: str) -> str:
    """Which run budget stopped new agents: ``[batchd] max_cost_usd reached ($5.20 of $5.00)``
    (``detail`` is the projection's, with its unit)."""
    if not budget:
        return ""
    used = f" ({detail})" if detail else ""
    return f"[batchd] {budget} reached{used}: no new agent starts"
