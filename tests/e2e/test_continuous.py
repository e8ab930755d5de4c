"""Continuous mode (issues 8 and 9): ``batchd run`` without ``--once`` on a repository with no plan.

Todo files are dropped into ``todos/`` one at a time while the daemon runs; each must be planned
automatically, run by its agent, verified, committed on its own (``chore(batchd): resolve todos
#N``) and pushed, noticed by the watcher (the periodic rescan is set far beyond the deadline). Then
SIGTERM stops the daemon with exit 0 and a log that verifies. One daemon session is shared by the
tests of this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import (
    batchd,
    commit_messages,
    events,
    git,
    leftover_processes,
    reap,
    start_daemon,
    status_json,
    tree_files,
)
from e2e_sample import TODOS, SampleTodo, build_sample

pytestmark = pytest.mark.timeout(300)

DROPPED = tuple(t for t in TODOS if t.todo_id in ("101", "102", "104"))
DEADLINE = 40.0  # seconds from a drop until its todo is complete and pushed
RESCAN = 600.0  # the periodic full scan must not be what finds the dropped files


@dataclass
class Session:
    root: Path
    remote: Path
    base: str
    pushed_after_each: dict[str, str] = field(default_factory=dict)  # todo id -> remote head then
    seconds: dict[str, float] = field(default_factory=dict)
    stop_code: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    leftovers: dict[int, str] = field(default_factory=dict)


def _drop(root: Path, todo: SampleTodo) -> None:
    # Written beside the folder and renamed in, as an editor or `mv` would: never seen half-written.
    staging = root / ".batchd" / f"drop-{todo.todo_id}.tmp"
    staging.parent.mkdir(exist_ok=True)
    staging.write_text(todo.render(), encoding="utf-8")
    os.replace(staging, root / "todos" / todo.filename)


def _state(root: Path, todo_id: str) -> str:
    todos = {t["id"]: t for t in status_json(root)["todos"]}
    return str(todos[todo_id]["state"]) if todo_id in todos else "unknown"


def _wait_pushed(root: Path, remote: Path, todo: SampleTodo, proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    want = f"todos/{todo.filename.replace('-ready-', '-complete-')}"
    while time.monotonic() - started < DEADLINE:
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}) before #{todo.todo_id} was done"
        if (
            (root / ".batchd" / "events.db").exists()
            and _state(root, todo.todo_id) == "complete"
            and want in tree_files(remote, "main")
        ):
            return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(
        f"#{todo.todo_id} was not complete and pushed within {DEADLINE}s (state {_state(root, todo.todo_id)})"
    )


def _wait_idle(root: Path, proc: subprocess.Popen[bytes]) -> None:
    """Pushed is not yet idle: the final check then records the verdict over every drop."""
    wanted = {t.todo_id for t in DROPPED}
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}) before it was idle"
        verdicts = [e["payload"] for e in events(root) if e["type"] == "run.completed"]
        if (
            verdicts
            and wanted <= set(verdicts[-1]["complete"])
            and status_json(root)["run"]["state"] == "completed"
        ):
            return
        time.sleep(0.3)
    raise AssertionError(f"the run did not complete over {sorted(wanted)} within {DEADLINE}s")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    folder = tmp_path_factory.mktemp("continuous")
    sample = build_sample(folder, todos=(), with_plan=False, rescan_interval=RESCAN)
    base = git(sample.root, "rev-parse", "main").strip()
    out = Session(sample.root, sample.remote, base)
    proc, _ = start_daemon(sample.root, once=False)
    try:
        for todo in DROPPED:
            _drop(sample.root, todo)
            out.seconds[todo.todo_id] = _wait_pushed(sample.root, sample.remote, todo, proc)
            out.pushed_after_each[todo.todo_id] = git(sample.remote, "rev-parse", "main").strip()
        _wait_idle(sample.root, proc)
        proc.send_signal(signal.SIGTERM)
        out.stop_code = proc.wait(timeout=30)
        out.log = events(sample.root)
        out.leftovers = leftover_processes(str(sample.root))
        yield out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap(str(folder))


def test_each_dropped_todo_gets_its_own_commit_in_drop_order(session: Session) -> None:
    """Every dropped todo is resolved by one `chore(batchd): resolve todos #N` commit, in drop order."""
    commits = commit_messages(session.root, "main", since=session.base)
    expected = [f"chore(batchd): resolve todos #{t.todo_id}" for t in DROPPED]
    assert [subject for subject, _, _ in commits] == expected
    for todo, (_, body, trailers) in zip(DROPPED, commits, strict=True):
        assert body == f"Resolved todos: #{todo.todo_id}"
        assert "Batchd-Run" in trailers


def test_each_todo_is_pushed_before_the_next_is_dropped(session: Session) -> None:
    """After each todo, the remote's main is that todo's commit: each is pushed on its own."""
    heads = list(session.pushed_after_each.values())
    assert len(set(heads)) == len(DROPPED)
    for todo, head in zip(DROPPED, heads, strict=True):
        subject = git(session.remote, "log", "-1", "--format=%s", head).strip()
        assert subject == f"chore(batchd): resolve todos #{todo.todo_id}"
    assert git(session.remote, "rev-parse", "main").strip() == git(session.root, "rev-parse", "main").strip()


def test_each_todo_was_planned_run_and_verified(session: Session) -> None:
    """The log shows each todo planned, its agent run, verified and accepted, then completed."""
    for todo in DROPPED:
        kinds = [e["type"] for e in session.log if e["stream"] == f"todo-{todo.todo_id}"]
        wanted = [
            "todo.queued",
            "todo.planned",
            "todo.agent_started",
            "todo.agent_finished",
            "todo.verifying",
            "todo.accepted",
            "todo.completed",
        ]
        assert [k for k in kinds if k in wanted] == wanted, kinds
    assert {f"app/{name}.py" for name in ("alpha", "beta", "gamma")} <= set(tree_files(session.root, "main"))


def test_sigterm_stops_the_idle_daemon_with_exit_0(session: Session) -> None:
    """SIGTERM on the idle daemon is a clean stop: exit 0, the run's last verdict covers every drop."""
    assert session.stop_code == 0
    verdicts = [e["payload"] for e in session.log if e["type"] == "run.completed"]
    assert verdicts, "no run.completed in the log"
    assert verdicts[-1]["success"] is True
    assert set(verdicts[-1]["complete"]) == {t.todo_id for t in DROPPED}
    assert verdicts[-1]["not_complete"] == []


def test_log_verifies_after_the_stop(session: Session) -> None:
    """`batchd audit verify` and `batchd replay --verify` pass on the log the session left."""
    audit = batchd(session.root, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    replay = batchd(session.root, "replay", "--verify")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_no_process_outlives_the_daemon(session: Session) -> None:
    """No agent or other child is left running after the stop."""
    assert session.leftovers == {}
