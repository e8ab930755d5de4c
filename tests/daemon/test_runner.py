"""daemon.engine.runner.Daemon: what it holds across ticks."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from procs import make_repo

from daemon.config import load_config
from daemon.engine.runner import Daemon
from daemon.exceptions import UsageError


def test_a_reload_asking_for_a_sandbox_that_cannot_run_keeps_the_old_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP with `sandbox = "bwrap"` where bubblewrap is missing: refused, old config and sandbox kept."""
    root = make_repo(tmp_path / "repo", {})
    d = Daemon(load_config(root))
    try:
        before = (d.config, d.sandbox)
        text = (root / "batchd.toml").read_text().replace("[agent]\n", '[agent]\nsandbox = "bwrap"\n')
        (root / "batchd.toml").write_text(text)
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(UsageError, match="bubblewrap"):
            d.reconfigure(load_config(root))
        assert (d.config, d.sandbox) == before
    finally:
        d.close()


def test_two_jobs_finishing_in_one_tick_each_report_once_even_when_a_callback_polls_again(
    tmp_path: Path,
) -> None:
    """A verify job's callback used to poll the jobs again from inside the poll: with a second job
    finished in the same tick, the outer poll removed it a second time and the daemon died (KeyError)."""
    root = make_repo(tmp_path / "repo", {})
    d = Daemon(load_config(root))
    reported: list[str] = []
    try:
        release = threading.Event()

        def work(name: str) -> str:
            release.wait(10)
            return name

        def first_done(result: str) -> None:
            reported.append(result)
            d.poll_jobs()  # a step that reaches the poll again, as finish_batch did

        d.submit("verify-1.1", lambda: work("verify"), first_done, lambda e: reported.append(repr(e)))
        d.submit("tidy-1", lambda: work("tidy"), reported.append, lambda e: reported.append(repr(e)))
        release.set()
        deadline = time.monotonic() + 10
        while not all(job.future.done() for job in d.jobs.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        d.poll_jobs()
        assert sorted(reported) == ["tidy", "verify"]
        assert not d.jobs
    finally:
        d.close()


def test_the_live_machine_refuses_planning_a_todo_before_its_dependency_is_accepted(tmp_path: Path) -> None:
    """The `plan` transition's condition is asked before the append: a step that tried to plan 2
    while its dependency 1 is only ready is refused with the condition named, and nothing is written."""
    from statemachine import events as ev
    from statemachine.exceptions import InvalidTransition

    root = make_repo(tmp_path / "repo", {})
    d = Daemon(load_config(root))
    try:
        d.load()
        for todo_id, deps in (("1", ()), ("2", ("1",))):
            queued = ev.TodoQueued(
                todo_id=todo_id, path=f"todos/{todo_id}.md", title=todo_id, priority="p2", digest=todo_id,
                dependencies=deps,
            )  # fmt: skip
            d.emit_one(ev.todo_stream(todo_id), queued)
        before = d.proj.last_seq
        with pytest.raises(InvalidTransition, match="dependencies_accepted is false"):
            d.emit_one(ev.todo_stream("2"), ev.TodoPlanned(todo_id="2", batch="1.1", phase=1))
        d.sync()
        assert (d.proj.last_seq, d.proj.todos["2"].state) == (before, "ready")
        d.emit_one(ev.todo_stream("1"), ev.TodoPlanned(todo_id="1", batch="1.1", phase=1))  # no dependency
    finally:
        d.close()
