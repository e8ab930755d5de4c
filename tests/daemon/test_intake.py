"""The todos folder as the daemon sees it: real files, real inotify, real SQLite log.

Each test drives the daemon's own intake path (watcher -> settle -> scan -> events) on a temporary
repository and checks the events and states that reach the log.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.engine import intake
from daemon.engine.runner import Daemon
from daemon.intake.todofile import is_ignored
from daemon.intake.watcher import TodoWatcher

READY = """---
status: ready
priority: p2
---
# {title}

Do the thing.
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    (root / "todos").mkdir()
    (root / "batchd.toml").write_text('[verify]\ncommands = [["true"]]\n', encoding="utf-8")
    return root


@pytest.fixture
def daemon(repo: Path) -> Iterator[Daemon]:
    d = Daemon(load_config(repo))
    d.load()
    yield d
    d.close()


@pytest.fixture
def watcher(repo: Path) -> Iterator[TodoWatcher]:
    w = TodoWatcher(repo / "todos", ignore=is_ignored, settle=0.02)
    w.start()
    yield w
    w.stop()


def pump(d: Daemon, w: TodoWatcher, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """The daemon loop's intake part, until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the change never reached the log"
        if (w.wait(0.05) or w.take_overflow()) and w.drain(time.monotonic()):
            intake.rescan(d)


def state(d: Daemon, todo_id: str) -> str:
    todo = d.proj.todos.get(todo_id)
    return str(todo.state) if todo is not None else "unknown"


def types(d: Daemon, todo_id: str) -> list[str]:
    return [e.type for e in d.log.read(stream=f"todo-{todo_id}")]


def write(repo: Path, name: str, title: str = "A todo") -> Path:
    path = repo / "todos" / name
    path.write_text(READY.format(title=title), encoding="utf-8")
    return path


def test_new_ready_file_is_queued(daemon: Daemon, watcher: TodoWatcher, repo: Path) -> None:
    """Dropping a -ready- file queues it (todo.queued) with its title and priority."""
    write(repo, "101-ready-p2-add-thing.md", "Add the thing")
    pump(daemon, watcher, lambda: state(daemon, "101") == "ready")
    todo = daemon.proj.todos["101"]
    assert (todo.title, todo.priority, todo.path) == (
        "Add the thing",
        "p2",
        "todos/101-ready-p2-add-thing.md",
    )
    assert types(daemon, "101") == ["todo.queued"]


def test_pending_file_is_recorded_not_queued(daemon: Daemon, watcher: TodoWatcher, repo: Path) -> None:
    """A -pending- file is recorded (todo.recorded) but not queued."""
    write(repo, "102-pending-p3-later.md")
    pump(daemon, watcher, lambda: "102" in daemon.proj.todos)
    assert state(daemon, "102") == "pending"
    assert types(daemon, "102") == ["todo.recorded"]


def test_renaming_pending_to_ready_queues_it(daemon: Daemon, watcher: TodoWatcher, repo: Path) -> None:
    """Renaming pending -> ready is a person queueing the todo."""
    path = write(repo, "103-pending-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "103") == "pending")
    path.rename(repo / "todos" / "103-ready-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "103") == "ready")
    last = list(daemon.log.read(stream="todo-103"))[-1]
    assert (last.type, last.payload["by"]) == ("todo.queued", "person")


def test_person_renaming_ready_to_complete_completes_without_running(
    daemon: Daemon, watcher: TodoWatcher, repo: Path
) -> None:
    """A person renaming ready -> complete marks it complete; no agent ever starts."""
    path = write(repo, "104-ready-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "104") == "ready")
    path.rename(repo / "todos" / "104-complete-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "104") == "complete")
    assert types(daemon, "104") == ["todo.queued", "todo.completed"]
    assert list(daemon.log.read(stream="todo-104"))[-1].payload["by"] == "person"


def test_renaming_complete_to_ready_requeues(daemon: Daemon, watcher: TodoWatcher, repo: Path) -> None:
    """complete -> ready re-queues a finished todo."""
    path = write(repo, "105-complete-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "105") == "complete")
    path.rename(repo / "todos" / "105-ready-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "105") == "ready")


def test_deleting_a_todo_that_has_not_started_cancels_it(
    daemon: Daemon, watcher: TodoWatcher, repo: Path
) -> None:
    """Deleting a queued todo's file cancels it."""
    path = write(repo, "106-ready-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "106") == "ready")
    path.unlink()
    pump(daemon, watcher, lambda: state(daemon, "106") == "cancelled")


def test_editing_before_start_updates_it(daemon: Daemon, watcher: TodoWatcher, repo: Path) -> None:
    """Editing a queued todo records todo.updated with the new title and digest."""
    write(repo, "107-ready-p2-x.md", "Old title")
    pump(daemon, watcher, lambda: state(daemon, "107") == "ready")
    old_digest = daemon.proj.todos["107"].digest
    write(repo, "107-ready-p2-x.md", "New title")
    pump(daemon, watcher, lambda: daemon.proj.todos["107"].title == "New title")
    assert daemon.proj.todos["107"].digest != old_digest
    assert types(daemon, "107")[-1] == "todo.updated"


def test_malformed_file_is_invalid_with_reason_and_fixed_later(
    daemon: Daemon, watcher: TodoWatcher, repo: Path
) -> None:
    """Bad YAML becomes todo.invalid with a reason and a hint; the fixed file is queued."""
    path = repo / "todos" / "108-ready-p2-x.md"
    path.write_text("---\nstatus: [ready\n---\n# X\n", encoding="utf-8")
    pump(daemon, watcher, lambda: state(daemon, "108") == "invalid")
    invalid = list(daemon.log.read(stream="todo-108"))[-1]
    assert invalid.type == "todo.invalid"
    assert "YAML" in invalid.payload["reason"] or "front matter" in invalid.payload["reason"]
    assert invalid.payload["hint"]
    write(repo, "108-ready-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "108") == "ready")


def test_dependency_cycle_names_the_cycle(daemon: Daemon, repo: Path) -> None:
    """Two todos depending on each other are both invalid, and the reason names the cycle."""
    for todo_id, dep in (("120", "121"), ("121", "120")):
        (repo / "todos" / f"{todo_id}-ready-p2-x.md").write_text(
            f"---\ndependencies: [{dep}]\n---\n# T\n", encoding="utf-8"
        )
    intake.rescan(daemon)
    assert state(daemon, "120") == state(daemon, "121") == "invalid"
    reason = daemon.proj.todos["120"].reason
    assert "120" in reason and "121" in reason and "->" in reason


def test_own_rename_after_a_phase_commit_is_not_a_persons_action(daemon: Daemon, repo: Path) -> None:
    """Once the log says a todo is complete, its -complete- file (batchd's rename) adds no event."""
    path = write(repo, "109-complete-p2-x.md")
    intake.rescan(daemon)
    assert state(daemon, "109") == "complete"
    before = daemon.proj.last_seq
    path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")  # touched, same content
    intake.rescan(daemon)
    assert daemon.proj.last_seq == before


def test_ignored_and_editor_files_are_not_todos(daemon: Daemon, watcher: TodoWatcher, repo: Path) -> None:
    """README.md, .gitkeep, TEMPLATE*.md and editor temp files never become todos."""
    for name in ("README.md", ".gitkeep", "TEMPLATE-todo.md", ".110-ready-p2-x.md.swp", "4913"):
        (repo / "todos" / name).write_text("x", encoding="utf-8")
    write(repo, "111-ready-p2-x.md")
    pump(daemon, watcher, lambda: state(daemon, "111") == "ready")
    assert set(daemon.proj.todos) == {"111"}


def test_files_present_before_start_are_found_by_the_start_scan(repo: Path) -> None:
    """A todo dropped while the daemon was down is picked up by the start-up scan."""
    write(repo, "112-ready-p2-x.md")
    d = Daemon(load_config(repo))
    try:
        d.load()
        intake.rescan(d)
        assert state(d, "112") == "ready"
    finally:
        d.close()


def test_a_scan_after_restart_adds_nothing_new(repo: Path) -> None:
    """Replaying the log and rescanning an unchanged folder appends no event (no duplicates)."""
    write(repo, "113-ready-p2-x.md")
    d = Daemon(load_config(repo))
    d.load()
    intake.rescan(d)
    seq = d.proj.last_seq
    d.close()
    again = Daemon(load_config(repo))
    try:
        again.load()
        intake.rescan(again)
        assert again.proj.last_seq == seq
    finally:
        again.close()
