"""``/metrics``: the demo run's numbers in the Prometheus text format, checked against its own log.

Every figure is read back with prometheus_client's own parser (what a Prometheus server reads) and
compared with what the log says, counted here independently of the fold (or with ``status --json``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import prometheus_client
import pytest
from live_server import write_unreadable_row
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.testclient import TestClient

from daemon.service.lock import DaemonLock
from daemon.web.app import create_app
from daemon.web.metrics import AGENT_BUCKETS, MetricsFold, _fold_families
from daemon.web.model import LiveModel
from daemon.workspace import Workspace
from statemachine import events as ev
from store import StoredEvent
from store.eventlog import parse_time

# A row edited by hand into something that is not JSON.
WAIT = 10.0  # seconds: the follower polls every 0.05 s; a deadline, not a sleep
# A loopback Host, as Prometheus on the same machine sends it (the dashboard answers only those).
LOCAL = "http://127.0.0.1:8765"


def scrape(client: TestClient) -> dict[str, list[Sample]]:
    """Every sample of ``/metrics`` by family name, as prometheus_client's parser reads them."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    (found,) = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


@pytest.fixture(scope="module")
def log_events(demo_model: LiveModel) -> list[StoredEvent]:
    events_log = demo_model.open_log()
    try:
        return list(events_log.read())
    finally:
        events_log.close()


@pytest.fixture
def client(demo_model: LiveModel) -> Iterator[TestClient]:
    """A client of the demo run's dashboard, scraping from this machine."""
    with TestClient(create_app(demo_model, start_model=False), base_url=LOCAL) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def families(demo_model: LiveModel) -> dict[str, list[Sample]]:
    """One scrape of the finished demo run (module-wide: the demo log no longer changes)."""
    with TestClient(create_app(demo_model, start_model=False), base_url=LOCAL) as test_client:
        return scrape(test_client)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.02)


def test_metrics_is_the_0_0_4_text_format_with_help_on_every_batchd_family(client: TestClient) -> None:
    """A Prometheus server scrapes it as the classic text format; every series says what it counts."""
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = list(text_string_to_metric_families(response.text))
    assert len(parsed) >= 15
    for family in parsed:
        assert family.name.startswith("batchd_"), family.name
        assert family.documentation, family.name


def test_metrics_are_not_in_the_process_wide_registry(client: TestClient) -> None:
    """The app keeps its own registry: two dashboards in one process never share series."""
    client.get("/metrics")
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not {n for n in names if n.startswith("batchd_")}


def test_todos_by_state_equal_the_counts_of_status_json(
    families: dict[str, list[Sample]], demo_root: Path
) -> None:
    """The gauge agrees with ``batchd status --json`` on every state, the zeros included."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "-C", str(demo_root)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode in (0, 1), done.stderr
    status = Counter(t["state"] for t in json.loads(done.stdout)["todos"])
    samples = families["batchd_todos"]
    exported = {s.labels["state"]: s.value for s in samples}
    assert sum(exported.values()) == sum(status.values()) > 0
    for state, n in exported.items():
        assert n == status.get(state, 0), state


def test_agent_attempts_equal_the_agent_outcomes_in_the_log(
    families: dict[str, list[Sample]], log_events: list[StoredEvent]
) -> None:
    """Each outcome's counter is the number of its events (finished, failed, interrupted)."""
    in_log = Counter(e.type for e in log_events)
    samples = families["batchd_agent_attempts"]
    for outcome in ("finished", "failed", "interrupted"):
        assert (
            value(samples, "batchd_agent_attempts_total", outcome=outcome) == in_log[f"todo.agent_{outcome}"]
        )
    assert in_log["todo.agent_finished"] > 0 and in_log["todo.agent_failed"] > 0  # the demo has both


def test_agent_failures_by_reason_equal_the_log(
    families: dict[str, list[Sample]], log_events: list[StoredEvent]
) -> None:
    in_log = Counter(e.payload["reason"] for e in log_events if e.type == "todo.agent_failed")
    exported = {s.labels["reason"]: s.value for s in families["batchd_agent_failures"]}
    assert exported == in_log


def test_the_duration_histogram_counts_and_sums_the_recorded_durations(
    families: dict[str, list[Sample]], log_events: list[StoredEvent]
) -> None:
    """Per outcome: count and sum are the log's; each bucket holds the attempts not longer than it."""
    samples = families["batchd_agent_attempt_duration_seconds"]
    for outcome in ("finished", "failed"):
        durations = [e.payload["duration"] for e in log_events if e.type == f"todo.agent_{outcome}"]
        name = "batchd_agent_attempt_duration_seconds"
        assert value(samples, f"{name}_count", outcome=outcome) == len(durations)
        assert value(samples, f"{name}_sum", outcome=outcome) == pytest.approx(sum(durations))
        for bound in AGENT_BUCKETS:
            le = str(float(bound))  # the parser writes bounds as floats
            expected = sum(1 for d in durations if d <= bound)
            assert value(samples, f"{name}_bucket", outcome=outcome, le=le) == expected
        assert value(samples, f"{name}_bucket", outcome=outcome, le="+Inf") == len(durations)


def test_verify_runs_by_outcome_and_baseline_equal_the_log(
    families: dict[str, list[Sample]], log_events: list[StoredEvent]
) -> None:
    def outcome(p: dict[str, object]) -> str:
        return "flaked" if p.get("flaked") else "passed" if p["passed"] else "failed"

    runs = [e.payload for e in log_events if e.type == "batch.verify_run"]
    in_log = Counter((outcome(p), str(bool(p.get("baseline"))).lower()) for p in runs)
    samples = families["batchd_verify_runs"]
    for out in ("passed", "failed", "flaked"):
        for baseline in ("true", "false"):
            got = value(samples, "batchd_verify_runs_total", outcome=out, baseline=baseline)
            assert got == in_log[out, baseline], (out, baseline)
    assert (
        in_log["failed", "false"] > 0 and in_log["passed", "true"] > 0
    )  # the demo rejects, and has baselines


@pytest.mark.parametrize(
    ("family", "event_type"),
    [
        ("batchd_phase_commits", "phase.committed"),
        ("batchd_pushes", "phase.pushed"),
        ("batchd_push_failures", "phase.push_failed"),
        ("batchd_daemon_attaches", "run.daemon_attached"),
    ],
)
def test_phase_and_daemon_counters_equal_their_events(
    families: dict[str, list[Sample]], log_events: list[StoredEvent], family: str, event_type: str
) -> None:
    in_log = sum(1 for e in log_events if e.type == event_type)
    assert value(families[family], f"{family}_total") == in_log


def test_cost_is_the_sum_of_what_the_agents_reported(
    families: dict[str, list[Sample]], log_events: list[StoredEvent]
) -> None:
    costs = [
        e.payload["cost_usd"]
        for e in log_events
        if e.type.startswith("todo.agent_") and e.payload.get("cost_usd") is not None
    ]
    assert costs
    assert value(families["batchd_agent_cost_usd"], "batchd_agent_cost_usd_total") == pytest.approx(
        sum(costs)
    )


def test_the_last_event_age_is_measured_from_its_recorded_time(
    client: TestClient, log_events: list[StoredEvent]
) -> None:
    """The age is now minus the newest event's ``recorded_at`` (a stuck daemon shows a growing age)."""
    newest = parse_time(log_events[-1].recorded_at)
    before = (datetime.now(UTC) - newest).total_seconds()
    samples = scrape(client)["batchd_last_event_age_seconds"]
    after = (datetime.now(UTC) - newest).total_seconds()
    assert before <= value(samples, "batchd_last_event_age_seconds") <= after


def test_daemon_up_is_0_when_no_daemon_holds_the_lock(families: dict[str, list[Sample]]) -> None:
    assert value(families["batchd_daemon_up"], "batchd_daemon_up") == 0


@pytest.fixture
def copy_client(demo_copy: Path) -> Iterator[TestClient]:
    """A client of a dashboard with a model of its own, of a copy of the demo run."""
    with TestClient(create_app(LiveModel(demo_copy)), base_url=LOCAL) as test_client:
        yield test_client


def test_daemon_up_is_1_while_a_process_holds_the_daemon_lock(
    demo_copy: Path, copy_client: TestClient
) -> None:
    """The heartbeat is the daemon's own flock: held, the gauge says up; let go, it says down."""
    with DaemonLock(Workspace(demo_copy).lock_path):
        assert value(scrape(copy_client)["batchd_daemon_up"], "batchd_daemon_up") == 1
    assert value(scrape(copy_client)["batchd_daemon_up"], "batchd_daemon_up") == 0


def test_a_request_appended_is_counted_but_is_not_the_daemons_heartbeat(
    demo_copy: Path, copy_client: TestClient
) -> None:
    """A person's ``pause`` makes the newest event young, not the daemon's last event."""
    first = scrape(copy_client)
    events_before = value(first["batchd_events"], "batchd_events_total")
    model: LiveModel = copy_client.app.state.model  # type: ignore[attr-defined]
    events_log = model.open_log()
    try:
        events_log.append(ev.CONTROL_STREAM, [ev.PauseRequested()])
    finally:
        events_log.close()
    wait_for(lambda: model.last_seq > events_before, "the follower folds the appended request")
    now = scrape(copy_client)
    assert value(now["batchd_events"], "batchd_events_total") == events_before + 1
    assert value(now["batchd_last_event_age_seconds"], "batchd_last_event_age_seconds") < 60
    daemon_age = value(now["batchd_daemon_last_event_age_seconds"], "batchd_daemon_last_event_age_seconds")
    assert daemon_age >= value(
        first["batchd_daemon_last_event_age_seconds"], "batchd_daemon_last_event_age_seconds"
    )


def _stored(seq: int, type_: str, payload: dict[str, object], recorded_at: str = "") -> StoredEvent:
    return StoredEvent(
        seq, "todo-1", seq, type_, 1, payload, recorded_at or "2026-01-01T00:00:00.000000Z", ""
    )


def test_a_hand_edited_payload_does_not_stop_the_fold() -> None:
    """Durations and costs that are not finite numbers are left out of sums, never raised on (the fold
    runs in the follower thread: an exception there would freeze the dashboard)."""
    fold = MetricsFold()
    hostile: list[object] = ["12", None, math.nan, math.inf, -5, True, {"x": 1}]
    for n, bad in enumerate(hostile, 1):
        fold.apply(_stored(n, "todo.agent_failed", {"duration": bad, "cost_usd": bad, "reason": bad}))
    assert fold.attempts["failed"] == len(hostile)
    assert fold.durations["failed"].count == 0 and fold.cost_usd == 0.0
    assert fold.failures == Counter({"unknown": len(hostile) - 1, "12": 1})


def test_failure_reasons_past_the_label_cap_fold_into_other() -> None:
    """A log with thousands of made-up reasons cannot blow up the number of series."""
    fold = MetricsFold()
    for n in range(1, 201):
        fold.apply(_stored(n, "todo.agent_failed", {"reason": f"made-up-{n}", "duration": 1.0}))
    assert len(fold.failures) <= 65
    assert sum(fold.failures.values()) == 200 and fold.failures["other"] > 0


def exposition(fold: MetricsFold) -> dict[str, list[Sample]]:
    """The fold's families written as /metrics writes them, and parsed back."""

    class Fold:
        def collect(self) -> Iterator[Metric]:
            return _fold_families(fold, datetime.now(UTC))

    registry = CollectorRegistry()
    registry.register(Fold())
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_a_reason_with_quotes_and_newlines_is_escaped_in_its_label() -> None:
    """An agent's hostile failure reason cannot forge a series or break the format."""
    reason = 'x"} 1\nbatchd_pushes_total 99\n'
    fold = MetricsFold()
    fold.apply(_stored(1, "todo.agent_failed", {"reason": reason, "duration": 1.0}))
    parsed = exposition(fold)
    assert [s.labels["reason"] for s in parsed["batchd_agent_failures"]] == [reason]
    assert value(parsed["batchd_pushes"], "batchd_pushes_total") == 0


def test_a_time_not_written_by_the_store_gives_no_age() -> None:
    """An unparsable ``recorded_at`` leaves the age out instead of failing the scrape."""
    fold = MetricsFold()
    fold.apply(_stored(1, "phase.committed", {}, recorded_at="yesterday"))
    parsed = exposition(fold)
    assert parsed["batchd_last_event_age_seconds"] == []
    assert value(parsed["batchd_phase_commits"], "batchd_phase_commits_total") == 1


def test_serve_following_is_1_while_the_log_is_followed(families: dict[str, list[Sample]]) -> None:
    """An alert on `batchd_serve_following == 0` finds a dashboard whose pages stopped moving."""
    assert value(families["batchd_serve_following"], "batchd_serve_following") == 1


def test_serve_following_is_0_once_the_log_cannot_be_folded(demo_copy: Path, copy_client: TestClient) -> None:
    """A row edited by hand into something that is not JSON stops the follower for good: 0."""
    model: LiveModel = copy_client.app.state.model  # type: ignore[attr-defined]
    write_unreadable_row(demo_copy, model.last_seq + 1)
    wait_for(lambda: model.error is not None, "the follower to stop")
    assert value(scrape(copy_client)["batchd_serve_following"], "batchd_serve_following") == 0
