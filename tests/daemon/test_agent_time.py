"""What a person reads about agent time and cost: the status file's "Agent time" section and
per-todo columns, and ``batchd status`` (text and ``--json``) on a real event log.

The log is written from events (tests/statemachine/builders.py): todo 0001 loses a conflict and is
redone from scratch, then accepted; todo 0002's agent fails and then runs; the run stopped on its
cost budget. The scripted agent's cost is simulated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from procs import base_env, batchd

from daemon.config import default_config
from daemon.engine.statusfile import render_status
from daemon.workspace import DEFAULT_DB
from statemachine import Projection
from statemachine.tables import Kind
from store import EventLog
from tests.statemachine.builders import event, number, write

T = Kind.TODO
PATH_1 = "todos/0001-ready-p2-first.md"
PATH_2 = "todos/0002-ready-p2-second.md"


def _todo(tid: str, trigger: str, **fields: object) -> tuple[str, object]:
    return (f"todo-{tid}", event(T, trigger, {"todo_id": tid}, **fields))


def _queued(tid: str, path: str) -> list[tuple[str, object]]:
    return [
        _todo(tid, "queue", path=path, title=f"Todo {tid}"),
        _todo(tid, "plan", batch="1.1", phase=1),
        _todo(tid, "start_agent", batch="1.1", carried=""),
    ]


def _retry(tid: str, attempt: int) -> list[tuple[str, object]]:
    plain = {"carry": "", "session_id": "", "mode": "redo", "by": "daemon", "repair": ""}
    return [
        _todo(tid, "retry", next_attempt=attempt, **plain),
        _todo(tid, "plan", batch="1.1", phase=1),
        _todo(tid, "start_agent", batch="1.1", attempt=attempt, carried=""),
    ]


def _finished(tid: str, seconds: float, cost: float) -> tuple[str, object]:
    return _todo(tid, "agent_done", duration=seconds, cost_usd=cost, summary={"simulated": True})


EVENTS: list[tuple[str, object]] = [
    ("run", event(Kind.RUN, "start")),
    ("phase-1", event(Kind.PHASE, "plan", {"number": 1}, batches=("1.1",), title="One", final=False)),
    ("batch-1.1", event(Kind.BATCH, "plan", {"key": "1.1"}, phase=1, todo_ids=("1", "2"))),
    *_queued("1", PATH_1),
    _finished("1", 120.0, 0.4),
    _todo("1", "verify", batch="1.1"),
    _todo("1", "conflict", winner="0", files=("a.py",), attempt=1),
    *_retry("1", 2),
    _finished("1", 240.0, 0.6),
    _todo("1", "verify", batch="1.1"),
    _todo("1", "accept", batch="1.1"),
    *_queued("2", PATH_2),
    _todo("2", "agent_fail", duration=60.0, cost_usd=0.03, detail="boom", attempt=1),
    *_retry("2", 2),
    ("run", event(Kind.RUN, "budget", budget="max_cost_usd", limit=1.0, used=1.03)),
]


@pytest.fixture
def proj() -> Projection:
    pr = Projection()
    pr.apply_all(number(EVENTS))
    return pr


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    """A repository folder whose event log holds EVENTS."""
    (tmp_path / ".git").mkdir()  # the root batchd finds; status reads nothing of git
    db = tmp_path / DEFAULT_DB
    db.parent.mkdir(parents=True, exist_ok=True)
    log = EventLog(f"sqlite:///{db}")
    try:
        write(log, EVENTS)
    finally:
        log.close()
    return tmp_path


def _status_file(proj: Projection, root: Path) -> str:
    return render_status(proj, default_config(root, [["true"]]))


def _section(text: str) -> str:
    return text.split("## Agent time\n", 1)[1].split("\n## ", 1)[0]


def test_the_status_file_gives_agent_minutes_by_class(proj: Projection, tmp_path: Path) -> None:
    section = _section(_status_file(proj, tmp_path))
    assert (
        "- **Agent time:** 7m 00s: useful 4m 00s (1 attempt), failed 1m 00s (1 attempt), "
        "wasted 2m 00s (1 attempt)" in section
    )


def test_the_status_file_gives_the_waste_ratio(proj: Projection, tmp_path: Path) -> None:
    assert "- **Waste ratio:** 50.0% (wasted / useful agent-minutes)" in _section(
        _status_file(proj, tmp_path)
    )


def test_the_status_file_says_the_cost_is_simulated(proj: Projection, tmp_path: Path) -> None:
    section = _section(_status_file(proj, tmp_path))
    assert "- **Agent cost:** $1.03 (simulated: the demo's scripted agent)" in section


def test_the_status_file_names_the_budget_that_stopped_the_run(proj: Projection, tmp_path: Path) -> None:
    section = _section(_status_file(proj, tmp_path))
    assert "- **Stopped by a budget:** [batchd] max_cost_usd reached ($1.03 of $1.00)" in section


def test_the_status_file_gives_each_todos_time_waste_and_cost(proj: Projection, tmp_path: Path) -> None:
    text = _status_file(proj, tmp_path)
    assert "| Todo | Title | State | Attempts | Agent time | Wasted | Cost |" in text
    assert "| 0001 | Todo 1 | accepted | 2 | 6m 00s | 2m 00s | $1.00 (simulated) |" in text
    assert "| 0002 | Todo 2 | running | 1 | 1m 00s | — | $0.03 |" in text


def test_the_failed_attempts_say_what_their_agent_time_counted_as(proj: Projection, tmp_path: Path) -> None:
    audit = _status_file(proj, tmp_path).split("## Failed Attempts", 1)[1]
    assert "| 0001 | 1 | conflicted | conflicts with 0 on a.py | 2m 00s | wasted |" in audit
    assert "| 0002 | 1 | agent_failed | x: boom | 1m 00s | failed |" in audit


def test_a_conflicted_attempt_its_resolve_went_on_from_counts_as_useful(tmp_path: Path) -> None:
    """The resolve attempt's workspace started from the conflicted change (``carried``): that agent
    time was not thrown away. A rejection stays failed, even when its repair goes on from it."""
    resolved = [
        *EVENTS[:3],
        *_queued("1", PATH_1),
        _finished("1", 120.0, 0.4),
        _todo("1", "verify", batch="1.1"),
        _todo("1", "conflict", attempt=1, winner="0", files=("a.py",), resolution="resolve"),
        _todo("1", "retry", next_attempt=2, carry="abc", mode="resolve", by="daemon", session_id=""),
        _todo("1", "plan", batch="1.1", phase=1),
        _todo("1", "start_agent", batch="1.1", attempt=2, carried="abc"),
    ]
    pr = Projection()
    pr.apply_all(number(resolved))
    audit = _status_file(pr, tmp_path).split("## Failed Attempts", 1)[1]
    assert "| 0001 | 1 | conflicted | conflicts with 0 on a.py | 2m 00s | useful" in audit


def test_no_agent_time_section_before_any_agent_ran(tmp_path: Path) -> None:
    pr = Projection()
    pr.apply_all(number(EVENTS[:3]))
    assert "## Agent time" not in _status_file(pr, tmp_path)


def test_status_json_gives_the_runs_accounting(logged: Path) -> None:
    done = batchd(logged, "status", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]
    agent = run["agent"]
    assert (agent["useful_minutes"], agent["failed_minutes"], agent["wasted_minutes"]) == (4.0, 1.0, 2.0)
    assert (agent["waste_ratio"], agent["cost_usd"], agent["cost_simulated"]) == (0.5, 1.03, True)
    assert agent["pending_minutes"] > 0  # todo 0002's agent runs: its time so far, by the clock
    assert (run["budget"]["name"], run["budget"]["detail"]) == ("max_cost_usd", "$1.03 of $1.00")


def test_status_json_gives_each_todos_classed_attempts(logged: Path) -> None:
    todos = {t["id"]: t for t in json.loads(batchd(logged, "status", "--json").stdout)["todos"]}
    first = todos["0001"]["agent"]
    assert [(a["attempt"], a["outcome"], a["class"]) for a in first["attempts"]] == [
        (1, "conflicted", "wasted"),
        (2, "accepted", "useful"),
    ]
    assert (first["minutes"], first["cost_usd"]) == (6.0, 1.0)


def test_human_status_gives_agent_time_cost_and_the_budget(logged: Path) -> None:
    done = batchd(logged, "status", env=base_env(COLUMNS="250"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "budget: [batchd] max_cost_usd reached ($1.03 of $1.00): no new agent starts" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("agent time: "))
    assert "useful 4m 00s, failed 1m 00s, wasted 2m 00s" in line and "waste ratio 50.0%" in line
    assert "cost $1.03 (simulated: the demo's scripted agent)" in line
    # Todo 0002's cost came with a failure, which does not say simulated: each cost says it or not.
    assert "6m 00s, $1.00 (simulated)" in out
