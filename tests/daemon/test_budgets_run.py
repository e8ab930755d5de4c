"""Budgets in real runs: ``batchd run --once`` on a real repository, agents a stand-in ``claude`` on
PATH (the preset) that does the todo's scripted change and prints Claude's JSON result with a cost.

A todo the test names in ``STAND_IN_HOLD`` stays running until the test lets it go, so the test can
see the budget reached while that agent still runs, and then its work accepted all the same.
"""

from __future__ import annotations

import json
import signal
import stat
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from procs import PY, DaemonProcess, base_env, batchd, git, projection, read_events, todo_name, todo_text

STAND_IN = """#!{python}
import json, os, subprocess, sys, time
from pathlib import Path
todo_id = os.environ["BATCHD_TODO_ID"]
rc = subprocess.run([{python!r}, "-m", "daemon.demo.agent", os.environ["BATCHD_TODO_PATH"]]).returncode
if todo_id in os.environ.get("STAND_IN_HOLD", "").split(","):
    release = Path(os.environ["STAND_IN_RELEASE"])
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
time.sleep(0.1)  # a little agent time
costs = dict(pair.split("=") for pair in os.environ.get("STAND_IN_COSTS", "").split(",") if pair)
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": "done",
                  "num_turns": 3, "session_id": "s-" + todo_id,
                  "total_cost_usd": float(costs.get(todo_id, "0.5"))}}))
sys.exit(rc)
"""

CHECK = "import pathlib, sys\nsys.exit(1 if pathlib.Path('bad.txt').exists() else 0)\n"


def writes(name: str) -> str:
    return f"write: [{{path: {name}, content: {name}}}]"


def budget_repo(
    tmp_path: Path,
    todos: Mapping[str, str],
    *,
    batchd_keys: str = "",
    agent_keys: str = "",
    hold: str = "",
    costs: str = "",
    max_attempts: int = 1,
    max_parallel: int = 2,
    schedule: str = "continuous",
    plan: str = "",
) -> tuple[Path, dict[str, str]]:
    """A committed repository with ``todos`` (id -> demo agent script), the claude preset, the check
    failing while ``bad.txt`` exists, no remote; returns it and the environment to run batchd in."""
    root = tmp_path / "repo"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text(STAND_IN.format(python=sys.executable), encoding="utf-8")
    claude.chmod(claude.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "Test"),
        ("user.email", "test@example.com"),
        ("commit.gpgsign", "false"),
    ):
        git(root, "config", key, value)
    (root / "check.py").write_text(CHECK, encoding="utf-8")
    (root / "todos").mkdir()
    (root / "todos" / ".gitkeep").write_text("", encoding="utf-8")
    for todo_id, script in todos.items():
        (root / "todos" / todo_name(todo_id)).write_text(todo_text(todo_id, script), encoding="utf-8")
    if plan:
        (root / "plans").mkdir()
        (root / "plans" / "PLAN.md").write_text(plan, encoding="utf-8")
    agent_env = {
        "STAND_IN_RELEASE": str(tmp_path / "release"),
        "STAND_IN_HOLD": hold,
        "STAND_IN_COSTS": costs,
        "BATCHD_DEMO_SPEED": "0",
    }
    env_toml = ", ".join(f"{k} = {json.dumps(v)}" for k, v in agent_env.items())
    (root / "batchd.toml").write_text(
        textwrap.dedent(
            f"""\
            [batchd]
            remote = ""
            max_parallel = {max_parallel}
            max_attempts = {max_attempts}
            stop_timeout = 2.0
            rescan_interval = 30
            schedule = "{schedule}"
            plan = "{"plans/PLAN.md" if plan else ""}"
            {batchd_keys}

            [agent]
            preset = "claude"
            timeout = 60.0
            sandbox = "none"
            env = {{ {env_toml} }}
            {agent_keys}

            [verify]
            commands = [{json.dumps([PY, "-B", "check.py"])}]
            retries = 0
            repair = true
            """
        ),
        encoding="utf-8",
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root, base_env(PATH=f"{bin_dir}:/usr/bin:/bin")


def started_ids(root: Path) -> list[str]:
    return [e.payload["todo_id"] for e in read_events(root) if e.type == "todo.agent_started"]


# One phase whose one batch has all three todos (the barrier plans them all, then runs two).
PLAN = "# Plan\n\n## Execution Phases\n\n### Phase 1: All\n- **Batch 1.1:** Todos 1, 2, 3\n"


def three_todos(tmp_path: Path, **config: str) -> tuple[Path, dict[str, str]]:
    """Todos 1 (costs $6), 2 (held running until released, $1) and 3; two slots: 1 and 2 start."""
    todos = {t: writes(f"out-{t}.txt") for t in ("1", "2", "3")}
    return budget_repo(tmp_path, todos, hold="2", costs="1=6,2=1,3=1", **config)


def run_held(
    root: Path,
    env: dict[str, str],
    start_daemon: Callable[..., DaemonProcess],
    release: Path,
) -> int:
    """``batchd run --once``: once the budget is reached, the held agent is still running; then it
    is let go. Returns the exit code."""
    daemon = start_daemon(root, "--once", env=env)
    daemon.wait_events("run.budget_reached", timeout=60)
    assert projection(root).todos["2"].state == "running"
    release.write_text("go", encoding="utf-8")
    return daemon.wait(timeout=60)


@pytest.mark.parametrize("schedule", ["continuous", "barrier"])
def test_the_cost_budget_stops_new_agents_and_ends_the_run_naming_it(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess], schedule: str
) -> None:
    """Under the barrier todo 3 was planned with the batch: it is put back, not left planned."""
    root, env = three_todos(tmp_path, batchd_keys="max_cost_usd = 5", schedule=schedule, plan=PLAN)
    assert run_held(root, env, start_daemon, tmp_path / "release") == 1
    verdict = projection(root).run.verdict
    assert verdict is not None and not verdict.success
    # The run's whole spend: $6 when the budget was reached, and the $1 of the agent that finished.
    assert verdict.detail == "stopped by [batchd] max_cost_usd: $7.00 of $5.00"
    assert dict(verdict.not_complete) == {"3": "not started: budget"}
    assert set(verdict.complete) == {"1", "2"}  # the agent running when the budget ran out: accepted
    assert (root / "out-2.txt").read_text(encoding="utf-8") == "out-2.txt"
    assert "3" not in started_ids(root)
    reached = [e.payload for e in read_events(root) if e.type == "run.budget_reached"]
    assert reached == [{"budget": "max_cost_usd", "limit": 5.0, "used": 6.0}]


def test_the_last_commits_status_file_names_the_budget(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """The run's last phase commit carries the verdict in its status file (checked before it is
    made): it says which budget stopped the run. (One phase: a run whose last phase is skipped
    records its verdict after its last commit, budget or not.)"""
    root, env = three_todos(tmp_path, batchd_keys="max_cost_usd = 5", plan=PLAN)
    assert run_held(root, env, start_daemon, tmp_path / "release") == 1
    committed = git(root, "show", "HEAD:plans/EXECUTION-STATUS.md")
    assert "stopped by [batchd] max_cost_usd: $7.00 of $5.00" in committed
    assert "not started: budget: 3" in committed


def test_the_agent_minutes_budget_counts_the_running_agent_and_ends_the_run(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """One slot: todo 2 runs (held) past 0.01 agent minutes; 1 and 3 never start."""
    todos = {t: writes(f"out-{t}.txt") for t in ("2", "1", "3")}
    root, env = budget_repo(tmp_path, todos, hold="2", batchd_keys="max_agent_minutes = 0.01", max_parallel=1)
    # Plan order is by id: make todo 2 the first to run by giving it the higher priority.
    first = root / "todos" / todo_name("2")
    first.rename(first.with_name(first.name.replace("-p2-", "-p1-")))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "todo 2 first")
    assert run_held(root, env, start_daemon, tmp_path / "release") == 1
    verdict = projection(root).run.verdict
    assert verdict is not None and not verdict.success
    assert verdict.detail.startswith("stopped by [batchd] max_agent_minutes: ")
    assert verdict.detail.endswith(" of 0.01 agent minutes")
    assert dict(verdict.not_complete) == {"1": "not started: budget", "3": "not started: budget"}
    assert verdict.complete == ("2",)
    assert started_ids(root) == ["2"]


def test_a_todo_that_keeps_being_rejected_is_blocked_at_its_cost_cap_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """Each attempt of todo 1 breaks the check and costs $1.50; the cap is $2: after the second
    attempt it is blocked, though max_attempts would allow a third. Todo 2 is done all the same."""
    todos = {"1": writes("bad.txt"), "2": writes("out-2.txt")}
    root, env = budget_repo(
        tmp_path,
        todos,
        costs="1=1.5,2=1",
        agent_keys="max_cost_usd_per_todo = 2",
        max_attempts=3,
    )
    done = batchd(root, "run", "--once", env=env, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    proj = projection(root)
    assert started_ids(root).count("1") == 2
    todo = proj.todos["1"]
    assert todo.state == "blocked"
    assert todo.reason == "its agents cost $3.00, [agent] max_cost_usd_per_todo is $2.00"
    assert proj.todos["2"].state == "complete"
    assert proj.run.verdict is not None
    assert dict(proj.run.verdict.not_complete) == {"1": "blocked: max_cost_usd_per_todo"}
    assert not [e for e in read_events(root) if e.type == "run.budget_reached"]


def test_without_budgets_the_same_run_does_everything(tmp_path: Path) -> None:
    todos = {t: writes(f"out-{t}.txt") for t in ("1", "2", "3")}
    root, env = budget_repo(tmp_path, todos, costs="1=6,2=1,3=1")
    done = batchd(root, "run", "--once", env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    proj = projection(root)
    assert proj.run.verdict is not None and proj.run.verdict.success
    assert sorted(started_ids(root)) == ["1", "2", "3"]
    assert proj.run.budget == ""
    assert sum(t.cost_usd for t in proj.todos.values()) == 8.0


def test_a_limit_raised_by_a_reload_lets_the_daemon_do_the_rest(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """``batchd run`` (no --once): the budget ends the run with its verdict; raising the limit and
    SIGHUP reopens it for the todo that waited, which is done; the spend is kept."""
    root, env = three_todos(tmp_path, batchd_keys="max_cost_usd = 5")
    daemon = start_daemon(root, env=env)
    daemon.wait_events("run.budget_reached", timeout=60)
    (tmp_path / "release").write_text("go", encoding="utf-8")
    daemon.wait_events("run.completed", timeout=60)
    verdict = projection(root).run.verdict
    assert verdict is not None and dict(verdict.not_complete) == {"3": "not started: budget"}
    config = root / "batchd.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("max_cost_usd = 5", "max_cost_usd = 50"))
    daemon.send(signal.SIGHUP)
    daemon.wait_events("run.completed", count=2, timeout=60)
    proj = projection(root)
    assert proj.run.verdict is not None and proj.run.verdict.success
    assert proj.todos["3"].state == "complete"
    assert sum(t.cost_usd for t in proj.todos.values()) == 8.0
    assert daemon.stop() == 0
