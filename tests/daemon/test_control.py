"""Control requests (`batchd pause`, `resume`, `cancel`, `retry`) against a running daemon, and with none.

The CLI appends to the log's ``control`` stream and prints the running daemon's answer; how fast the
daemon answers is read from the log itself (request and effect are both stamped there), so a slow
CLI start on a busy machine does not blur it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from procs import (
    DaemonProcess,
    batchd,
    make_repo,
    read_events,
    status_json,
    todo_name,
    todo_states,
    todo_text,
)

from store.eventlog import StoredEvent


def quick(name: str) -> str:
    return f"write: [{{path: {name}, content: done}}]"


def slow(name: str, seconds: float) -> str:
    """Sleeps ``seconds`` when the repository's config sets BATCHD_DEMO_SPEED=1."""
    return f"sleep: {seconds}\n{quick(name)}"


# Long enough for a `batchd` command started when the agent spawns to land before it exits, even on
# a busy machine where the CLI takes seconds to start; otherwise the next todo could already run.
AGENT_SECONDS = 4.0

# Fails its first attempt (blocked at max_attempts = 1); a second attempt succeeds.
FAILS_ONCE = "exit: 1\nattempts: {2: {exit: 0, write: [{path: fixed.txt, content: fixed}]}}"


def first(events: list[StoredEvent], type_: str) -> StoredEvent:
    return next(e for e in events if e.type == type_)


def seconds_between(a: StoredEvent, b: StoredEvent) -> float:
    return (datetime.fromisoformat(b.recorded_at) - datetime.fromisoformat(a.recorded_at)).total_seconds()


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def started(root: Path) -> list[tuple[str, int]]:
    return [
        (e.payload["todo_id"], e.payload["attempt"])
        for e in read_events(root)
        if e.type == "todo.agent_started"
    ]


def test_pause_holds_new_agents_until_resume(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`batchd pause` pauses the run within a second and no new agent starts; `batchd resume` goes on."""
    root = make_repo(
        tmp_path / "repo",
        {"1": slow("one.txt", AGENT_SECONDS), "2": quick("two.txt")},
        max_parallel=1,
        speed="1",
    )
    daemon = start_daemon(root)
    daemon.wait_events("todo.agent_spawned")
    assert ok(batchd(root, "pause")).startswith("pause: done")
    daemon.wait_events("run.paused")
    events = read_events(root)
    assert seconds_between(first(events, "control.pause"), first(events, "run.paused")) < 1.0
    assert status_json(root)["run"]["state"] == "paused"
    # The running agent is let finish; unpaused, the next todo's agent would start within a second.
    daemon.wait_events("todo.agent_finished", timeout=30)
    time.sleep(1.0)
    assert started(root) == [("1", 1)]
    assert ok(batchd(root, "resume")).startswith("resume: done")
    daemon.wait_events("run.resumed")
    daemon.wait_events("run.completed", timeout=30)
    assert todo_states(root) == {"1": "complete", "2": "complete"}


def test_cancel_a_queued_todo(tmp_path: Path, start_daemon: Callable[..., DaemonProcess]) -> None:
    """`batchd cancel ID` on a todo still waiting for its turn cancels it; its agent never runs."""
    root = make_repo(
        tmp_path / "repo",
        {"1": slow("one.txt", AGENT_SECONDS), "2": quick("two.txt")},
        max_parallel=1,
        speed="1",
    )
    daemon = start_daemon(root)
    daemon.wait_events("todo.agent_spawned")
    assert ok(batchd(root, "cancel", "2")).startswith("cancel #2: done")
    (handled,) = daemon.wait_events("control.handled")
    assert handled.payload["outcome"] == "done", handled.payload
    daemon.wait_events("run.completed", timeout=30)
    assert todo_states(root) == {"1": "complete", "2": "cancelled"}
    assert started(root) == [("1", 1)]


def test_retry_a_blocked_todo_with_the_daemon_running(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`batchd retry ID` on a blocked todo makes a running daemon run it again (attempt 2) to completion."""
    root = make_repo(tmp_path / "repo", {"1": FAILS_ONCE, "2": quick("two.txt")}, max_attempts=1)
    daemon = start_daemon(root)
    daemon.wait_events("run.completed", timeout=30)
    assert todo_states(root) == {"1": "blocked", "2": "complete"}
    ok(batchd(root, "retry", "1"))
    daemon.wait_events("run.completed", count=2, timeout=30)
    assert todo_states(root) == {"1": "complete", "2": "complete"}
    assert started(root) == [("1", 1), ("2", 1), ("1", 2)]


def test_a_request_made_with_no_daemon_is_acted_on_at_the_next_start(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`batchd retry` with no daemon running is recorded; the next `batchd run --once` runs the todo."""
    root = make_repo(tmp_path / "repo", {"1": FAILS_ONCE, "2": quick("two.txt")}, max_attempts=1)
    assert start_daemon(root, "--once").wait(timeout=60) == 1  # todo 1 blocked: the run is not complete
    out = ok(batchd(root, "retry", "1"))
    assert out.startswith("retry #1: queued: no daemon is running"), out
    assert [e.type for e in read_events(root)][-1] == "control.retry"
    rerun = start_daemon(root, "--once")
    assert rerun.wait(timeout=60) == 0, rerun.log_path.read_text()
    assert todo_states(root) == {"1": "complete", "2": "complete"}
    assert started(root)[-1] == ("1", 2)


def test_a_pause_survives_a_restart(tmp_path: Path, start_daemon: Callable[..., DaemonProcess]) -> None:
    """A run paused, then stopped with SIGTERM, is still paused after the next start until resumed."""
    root = make_repo(tmp_path / "repo", {"1": quick("one.txt")}, max_parallel=1, speed="1")
    ok(batchd(root, "pause"))  # recorded with no daemon running
    daemon = start_daemon(root)
    daemon.wait_events("run.paused")
    assert daemon.stop() == 0
    again = start_daemon(root)
    again.wait_events("run.daemon_attached", count=2)
    time.sleep(1.0)
    assert status_json(root)["run"]["state"] == "paused"
    assert started(root) == []
    ok(batchd(root, "resume"))
    again.wait_events("run.completed", timeout=30)
    assert todo_states(root) == {"1": "complete"}


def answered_twice(root: Path) -> None:
    """Returns once the daemon has answered two requests made one after the other: every step it
    takes in a tick runs between two answers, so whatever it was going to do with what it had seen
    before the first request, it has done. (Each request is a repeated pause, refused.)"""
    for _ in range(2):
        done = batchd(root, "pause")
        assert done.returncode == 1 and "refused: the run is paused already" in done.stderr, done


def test_a_refused_request_says_why_and_exits_1(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A running daemon's refusal is printed with its reason (exit 1), also as JSON with --json."""
    root = make_repo(tmp_path / "repo", {"1": quick("one.txt")})
    daemon = start_daemon(root)
    daemon.wait_events("run.completed", timeout=30)
    done = batchd(root, "retry", "1")
    assert done.returncode == 1, done
    assert "retry #1: refused: todo #1 is complete" in done.stderr
    as_json = batchd(root, "resume", "--json")
    assert as_json.returncode == 1, as_json
    answer = json.loads(as_json.stdout)
    assert (answer["request"], answer["outcome"], answer["detail"]) == (
        "resume",
        "refused",
        "nothing is paused",
    )


def test_pause_while_idle_holds_a_dropped_todo_until_resume(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`batchd pause` on a daemon idling for new todos is done; a todo dropped then waits (no agent,
    the run stays completed) until `batchd resume`, then it runs to completion."""
    root = make_repo(tmp_path / "repo", {"1": quick("one.txt")})
    daemon = start_daemon(root)
    daemon.wait_events("run.completed", timeout=30)
    assert ok(batchd(root, "pause")).startswith("pause: done")
    (root / "todos" / todo_name("2")).write_text(todo_text("2", quick("two.txt")), encoding="utf-8")
    daemon.wait_events("todo.queued", count=2)
    answered_twice(root)
    assert started(root) == [("1", 1)]
    run = status_json(root)["run"]
    assert (run["state"], run["detail"]) == ("completed", "requested with batchd pause")
    assert "run.reopened" not in [e.type for e in read_events(root)]
    assert ok(batchd(root, "resume")).startswith("resume: done")
    daemon.wait_events("run.completed", count=2, timeout=30)
    assert todo_states(root) == {"1": "complete", "2": "complete"}
    assert started(root) == [("1", 1), ("2", 1)]


def test_run_once_on_a_paused_idle_run_with_todos_waiting_exits_3(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A pause queued after the run completed holds a todo dropped later; `run --once` then ends
    with exit 3 naming the pause and the waiting todo, not with exit 0 on the old verdict."""
    root = make_repo(tmp_path / "repo", {"1": quick("one.txt")})
    assert start_daemon(root, "--once").wait(timeout=60) == 0
    assert "queued" in ok(batchd(root, "pause"))
    (root / "todos" / todo_name("2")).write_text(todo_text("2", quick("two.txt")), encoding="utf-8")
    again = start_daemon(root, "--once")
    assert again.wait(timeout=60) == 3
    assert "the run is paused (requested with batchd pause) and todos wait: 2" in again.log_path.read_text()
    assert todo_states(root)["2"] == "ready"


def test_retry_blocked_retries_every_blocked_todo(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`batchd retry --blocked` asks for a retry of each blocked todo, prints each answer, and a running
    daemon runs them again to completion."""
    root = make_repo(
        tmp_path / "repo", {"1": FAILS_ONCE, "2": FAILS_ONCE, "3": quick("three.txt")}, max_attempts=1
    )
    daemon = start_daemon(root)
    daemon.wait_events("run.completed", timeout=30)
    assert todo_states(root) == {"1": "blocked", "2": "blocked", "3": "complete"}
    out = ok(batchd(root, "retry", "--blocked"))
    assert out.splitlines() == [
        "retry #1: done: queued for attempt 2",
        "retry #2: done: queued for attempt 2",
    ]
    daemon.wait_events("run.completed", count=2, timeout=30)
    assert todo_states(root) == {"1": "complete", "2": "complete", "3": "complete"}


def test_an_unknown_id_is_refused_before_anything_is_recorded(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`batchd retry 112` where the log knows no such todo exits 1 at once, names the close ids it
    knows, and appends nothing."""
    root = make_repo(tmp_path / "repo", {"12": quick("a.txt"), "13": quick("b.txt")})
    assert start_daemon(root, "--once").wait(timeout=60) == 0
    before = read_events(root)[-1].seq
    for command in ("retry", "cancel"):
        done = batchd(root, command, "112")
        assert done.returncode == 1, done
        assert "no todo #112 in the log" in done.stderr and "did you mean #12?" in done.stderr
    assert read_events(root)[-1].seq == before


def test_a_request_with_no_daemon_running_is_queued_with_json(tmp_path: Path) -> None:
    """With no daemon running, `--json` says the request is queued for the next start (exit 0)."""
    root = make_repo(tmp_path / "repo", {"1": quick("one.txt")})
    answer = json.loads(ok(batchd(root, "pause", "--json")))
    assert (answer["request"], answer["outcome"]) == ("pause", "queued")
    assert [e.type for e in read_events(root)] == ["control.pause"]
