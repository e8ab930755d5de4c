"""``/metrics``: the run in the Prometheus text format, for the operators of a batchd service.

Two halves. :class:`MetricsFold` is folded from every event by :class:`~daemon.web.model.LiveModel`
(at start over the whole log, then live), so it must cost O(1) an event: it keeps plain counters,
sums and histogram bucket counts in dicts, and copies the ``recorded_at`` text of the newest events
without parsing it (a 100,000-todo log is about a million events). :class:`RunCollector` turns the
fold, and the projection's current counts, into metric families at scrape time, under the model's
lock; nothing is kept in prometheus_client's own metric objects, so the numbers are always exactly
the log's, after a restart of ``batchd serve`` too (counters are rebuilt from the log, never reset
by a restart while the log lasts).

Each app has a :class:`~prometheus_client.CollectorRegistry` of its own, never the process-wide
default one: two apps in one process (tests, ``report``) never share or double-register series.

The daemon's heartbeat: the daemon writes no periodic event and its systemd watchdog pings only
systemd, so what says a daemon is alive is its lock (``.batchd/daemon.service.lock``, held with
``flock`` for the life of the process: :func:`daemon.service.lock.holder`), exported as
``batchd_daemon_up``, beside the age of the newest event the daemon wrote (requests appended by the
CLI or the dashboard's buttons are not the daemon's) and how often a daemon attached or crashed.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.requests import Request
from starlette.responses import Response

from daemon.service.lock import holder
from daemon.workspace import Workspace
from statemachine.tables import RunState, TodoState
from store import StoredEvent
from store.records import seconds_since

if TYPE_CHECKING:
    from daemon.web.model import LiveModel

__all__ = [
    "AGENT_BUCKETS",
    "AGENT_OUTCOMES",
    "VERIFY_BUCKETS",
    "MetricsFold",
    "RunCollector",
    "endpoint",
    "registry_for",
    "render",
]

#: Seconds. An agent takes seconds (a no-op, a crash at start) to an hour (the usual timeout).
AGENT_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600)
#: Seconds. A check runs from under a second (a lint) to half an hour (a big test suite).
VERIFY_BUCKETS: tuple[float, ...] = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800)

#: Each agent outcome event and its ``outcome`` label.
AGENT_OUTCOMES: dict[str, str] = {
    "todo.agent_finished": "finished",
    "todo.agent_failed": "failed",
    "todo.agent_interrupted": "interrupted",
}
_VERDICTS = {"todo.accepted": "accepted", "todo.rejected": "rejected", "todo.conflicted": "conflicted"}
#: Appended by the CLI or the dashboard (a person), not by the daemon: not its heartbeat.
_REQUESTS = frozenset({"control.retry", "control.cancel", "control.pause", "control.resume", "control.push"})
_SIMPLE = {
    "phase.committed": "phase_commits",
    "phase.pushed": "pushes",
    "phase.push_failed": "push_failures",
    "run.daemon_attached": "daemon_attaches",
    "run.daemon_crashed": "daemon_crashes",
}
_TODO_STATES = frozenset(str(s) for s in TodoState)
_MAX_REASONS = 64  # distinct failure reasons kept as labels; more (a hostile log) fold into "other"


def _seconds(value: Any) -> float | None:
    """A duration or cost from a payload, or None when it is not a finite number >= 0: a hand-edited
    log must not stop the fold (it runs in the follower thread) nor put NaN into a sum."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


class _Histogram:
    """Bucket counts (not cumulative), sum and count: one ``bisect`` an observation."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf only)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = less or equal).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))  # "1.0", as prometheus_client writes bounds
        out.append(("+Inf", self.count))
        return out


class MetricsFold:
    """Counters folded from every event (attempts, durations, verify runs, commits, pushes, cost).

    O(1) an event: one dictionary look-up of its type, then a few additions. Read it only under the
    model's lock (the follower thread folds into it).
    """

    def __init__(self) -> None:
        self.events = 0
        self.last_seq = 0
        self.last_recorded_at = ""  # the newest event's time, as stored (parsed only at scrape time)
        self.last_daemon_recorded_at = ""  # the newest event the daemon wrote
        self.attempts: Counter[str] = Counter()  # outcome -> attempts
        self.failures: Counter[str] = Counter()  # todo.agent_failed reason -> attempts
        self.durations = {outcome: _Histogram(AGENT_BUCKETS) for outcome in AGENT_OUTCOMES.values()}
        self.cost_usd = 0.0
        self.verdicts: Counter[str] = Counter()  # accepted | rejected | conflicted -> todos judged
        self.verify_runs: Counter[tuple[str, str]] = Counter()  # (outcome, baseline) -> runs
        self.verify_durations = _Histogram(VERIFY_BUCKETS)
        self.counts: Counter[str] = Counter()  # the _SIMPLE names -> events

    def apply(self, event: StoredEvent) -> None:
        """Fold one event (types it does not count are ignored)."""
        self.events += 1
        self.last_seq = event.seq
        self.last_recorded_at = event.recorded_at
        kind = event.type
        if kind not in _REQUESTS:
            self.last_daemon_recorded_at = event.recorded_at
        outcome = AGENT_OUTCOMES.get(kind)
        if outcome is not None:
            self._agent(outcome, event.payload)
        elif kind == "batch.verify_run":
            self._verify_run(event.payload)
        elif kind in _VERDICTS:
            self.verdicts[_VERDICTS[kind]] += 1
        elif kind in _SIMPLE:
            self.counts[_SIMPLE[kind]] += 1

    def _agent(self, outcome: str, payload: dict[str, Any]) -> None:
        self.attempts[outcome] += 1
        duration = _seconds(payload.get("duration"))
        if duration is not None:
            self.durations[outcome].observe(duration)
        cost = _seconds(payload.get("cost_usd"))
        if cost is not None:
            self.cost_usd += cost
        if outcome == "failed":
            reason = payload.get("reason")
            reason = reason if isinstance(reason, str) and reason else "unknown"
            if reason not in self.failures and len(self.failures) >= _MAX_REASONS:
                reason = "other"
            self.failures[reason] += 1

    def _verify_run(self, payload: dict[str, Any]) -> None:
        # A run that was red and then green on the same tree passed, but only by a re-run: a flake.
        if payload.get("flaked") is True:
            outcome = "flaked"
        elif payload.get("passed") is True:
            outcome = "passed"
        else:
            outcome = "failed"
        baseline = "true" if payload.get("baseline") is True else "false"
        self.verify_runs[outcome, baseline] += 1
        duration = _seconds(payload.get("duration"))
        if duration is not None:
            self.verify_durations.observe(duration)


def _age(recorded_at: str, now: datetime) -> float | None:
    if not recorded_at:
        return None
    try:
        return seconds_since(recorded_at, now)
    except ValueError:  # a time not written by the store (a hand-edited log): no age rather than a 500
        return None


class RunCollector:
    """The metric families of one model's log, built at each scrape from the fold and the projection."""

    def __init__(self, model: LiveModel) -> None:
        self.model = model

    def collect(self) -> Iterator[Metric]:
        model = self.model
        now = datetime.now(UTC)
        with model.lock:
            fold = model.metrics
            states = Counter(str(todo.state) for todo in model.projection.todos.values())
            run_state = str(model.projection.run.state)
            families = list(_fold_families(fold, now))
        yield from _state_families(states, run_state)
        yield from families
        # Outside the lock: reading /proc/locks is I/O, and the follower must not wait for it.
        up = GaugeMetricFamily(
            "batchd_daemon_up",
            "1 while a batchd daemon holds this repository's lock (.batchd/daemon.service.lock), else 0.",
        )
        up.add_metric([], 1.0 if holder(Workspace(model.root).lock_path) is not None else 0.0)
        yield up
        following = GaugeMetricFamily(
            "batchd_serve_following",
            "1 while this batchd serve follows the log, 0 while it cannot read it (retrying, or stopped "
            "on a log it cannot fold: its pages then show an older state).",
        )
        following.add_metric([], 1.0 if model.following else 0.0)
        yield following


def _state_families(states: Counter[str], run_state: str) -> Iterator[Metric]:
    todos = GaugeMetricFamily(
        "batchd_todos", "Todos in each state (as batchd status counts them).", labels=["state"]
    )
    for todo_state in TodoState:  # every state, 0 too: a series that vanishes reads as "no data"
        todos.add_metric([str(todo_state)], states.get(str(todo_state), 0))
    for name, n in sorted(states.items()):  # a state a later batchd added: still counted
        if name not in _TODO_STATES:
            todos.add_metric([name], n)
    yield todos
    run = GaugeMetricFamily(
        "batchd_run_state", "1 for the state the run is in, 0 for the others.", labels=["state"]
    )
    for state in RunState:
        run.add_metric([str(state)], 1.0 if run_state == str(state) else 0.0)
    yield run


def _fold_families(fold: MetricsFold, now: datetime) -> Iterator[Metric]:
    attempts = CounterMetricFamily(
        "batchd_agent_attempts",
        "Agent attempts that ended, by outcome: finished (exited 0 with a change), failed, interrupted "
        "(lost to a stop or crash of the daemon; run again).",
        labels=["outcome"],
    )
    for outcome in AGENT_OUTCOMES.values():
        attempts.add_metric([outcome], fold.attempts[outcome])
    yield attempts
    failures = CounterMetricFamily(
        "batchd_agent_failures",
        "Failed agent attempts by reason (exit, timeout, no_change, ...).",
        labels=["reason"],
    )
    for reason, n in sorted(fold.failures.items()):
        failures.add_metric([reason], n)
    yield failures
    durations = HistogramMetricFamily(
        "batchd_agent_attempt_duration_seconds",
        "How long each ended agent attempt ran, by outcome.",
        labels=["outcome"],
    )
    for outcome, hist in fold.durations.items():
        durations.add_metric([outcome], hist.buckets(), hist.total)
    yield durations
    cost = CounterMetricFamily(
        "batchd_agent_cost_usd", "Agent cost in US dollars, as the agents reported it."
    )
    cost.add_metric([], fold.cost_usd)
    yield cost
    verdicts = CounterMetricFamily(
        "batchd_todo_verdicts", "Changes judged by verification, by verdict.", labels=["verdict"]
    )
    for verdict in _VERDICTS.values():
        verdicts.add_metric([verdict], fold.verdicts[verdict])
    yield verdicts
    runs = CounterMetricFamily(
        "batchd_verify_runs",
        "Verify runs (one pass of the checks over one tree) by outcome: passed, failed, flaked (red "
        "then green on the same tree); baseline=true for runs on a batch's base alone.",
        labels=["outcome", "baseline"],
    )
    for outcome in ("passed", "failed", "flaked"):
        for baseline in ("false", "true"):
            runs.add_metric([outcome, baseline], fold.verify_runs[outcome, baseline])
    yield runs
    verify_durations = HistogramMetricFamily(
        "batchd_verify_run_duration_seconds", "How long each verify run took."
    )
    verify_durations.add_metric([], fold.verify_durations.buckets(), fold.verify_durations.total)
    yield verify_durations
    for name, key, text in (
        ("batchd_phase_commits", "phase_commits", "Phase commits made (phase.committed)."),
        ("batchd_pushes", "pushes", "Pushes of a phase that went out (phase.pushed)."),
        ("batchd_push_failures", "push_failures", "Pushes of a phase that failed (phase.push_failed)."),
        ("batchd_daemon_attaches", "daemon_attaches", "Times a daemon process took over the run."),
        ("batchd_daemon_crashes", "daemon_crashes", "Unexpected errors that stopped the daemon."),
    ):
        family = CounterMetricFamily(name, text)
        family.add_metric([], fold.counts[key])
        yield family
    events = CounterMetricFamily("batchd_events", "Events in the log (all streams).")
    events.add_metric([], fold.events)
    yield events
    seq = GaugeMetricFamily("batchd_last_event_seq", "The sequence number of the newest event.")
    seq.add_metric([], fold.last_seq)
    yield seq
    for name, recorded_at, text in (
        (
            "batchd_last_event_age_seconds",
            fold.last_recorded_at,
            "Seconds since the newest event was recorded.",
        ),
        (
            "batchd_daemon_last_event_age_seconds",
            fold.last_daemon_recorded_at,
            "Seconds since the newest event the daemon wrote (requests of people left out).",
        ),
    ):
        gauge = GaugeMetricFamily(name, text)
        age = _age(recorded_at, now)
        if age is not None:  # an empty log has no age: no sample rather than a made-up one
            gauge.add_metric([], age)
        yield gauge


_registries_lock = threading.Lock()


def registry_for(model: LiveModel, state: Any) -> CollectorRegistry:
    """The app's own registry (kept on ``app.state``), made at the first scrape."""
    with _registries_lock:
        registry: CollectorRegistry | None = getattr(state, "metrics_registry", None)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(RunCollector(model))
            state.metrics_registry = registry
        return registry


def render(model: LiveModel, state: Any) -> bytes:
    """The exposition text of ``model`` (what ``/metrics`` serves)."""
    return generate_latest(registry_for(model, state))


def endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format (0.0.4, which every Prometheus reads)."""
    state = request.app.state
    return Response(render(state.model, state), media_type=CONTENT_TYPE_PLAIN_0_0_4)
