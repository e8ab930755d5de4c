"""The demo scenario end to end (issue 9): ``batchd run --once`` as a subprocess on the demo project,
with the real scripted agent, real git and a real bare remote, checked against
``daemon/demo/scenario.py``.

One run (about half a minute) is shared by every test of this module; each test checks one
outcome of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Outcome, collect_outcome, commit_messages, events, git, reap, run_daemon, status_json
from rich.console import Console

from daemon.cli.summary import print_summary, summarize
from daemon.demo.project import DemoProject, build_demo
from daemon.demo.scenario import (
    ALL_TODO_IDS,
    EXPECTED_ATTEMPTS,
    EXPECTED_BLOCKED,
    EXPECTED_COMPLETE,
    EXPECTED_CONFLICTED_ONCE,
    EXPECTED_REJECTED_ONCE,
    EXPECTED_TIMED_OUT_ONCE,
    PHASE_MESSAGES,
    PHASES,
)
from daemon.workspace import open_log
from statemachine.projection import replay

pytestmark = pytest.mark.timeout(300)

AGENT_TIMEOUT = 2.0  # seconds: 283's agent hangs until it


@dataclass
class DemoRun:
    project: DemoProject
    base: str  # main before the run
    outcome: Outcome
    log: list[dict[str, Any]]
    status: dict[str, Any]


@pytest.fixture(scope="module", params=["barrier", "continuous"])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    """The demo's scenario under each scheduling policy, each held to the same outcome."""
    folder = tmp_path_factory.mktemp(f"demo-{request.param}")
    project = build_demo(folder / "project", speed=0, agent_timeout=AGENT_TIMEOUT, schedule=request.param)
    base = git(project.root, "rev-parse", "main").strip()
    try:
        runs = [run_daemon(project.root)]
        outcome = collect_outcome(project.root, project.remote, runs, base=base)
        yield DemoRun(project, base, outcome, events(project.root), status_json(project.root))
    finally:
        reap(str(folder))


def _files(tree: dict[str, str], todo_id: str) -> list[str]:
    return [p for p in tree if p.startswith(f"todos/{todo_id}-")]


def test_run_once_exits_1_because_two_todos_are_blocked(demo: DemoRun) -> None:
    """The verdict is not success (267 and 282 are blocked, as the scenario means): exit code 1."""
    assert demo.outcome.exit_code == 1, demo.outcome.runs[-1].log_tail()
    verdict = demo.status["run"]["verdict"]
    assert verdict["success"] is False
    assert verdict["checks_green"] is True
    assert set(verdict["not_complete"]) == set(EXPECTED_BLOCKED)
    assert set(verdict["complete"]) == EXPECTED_COMPLETE


def test_the_expected_todos_are_complete_in_the_log(demo: DemoRun) -> None:
    """26 todos complete and the two failures blocked, per the log."""
    states = {t["id"]: t["state"] for t in demo.status["todos"]}
    assert set(states) == ALL_TODO_IDS
    assert {i for i, s in states.items() if s == "complete"} == EXPECTED_COMPLETE
    assert {i for i, s in states.items() if s == "blocked"} == set(EXPECTED_BLOCKED)


def test_complete_todos_are_renamed_in_the_checkout(demo: DemoRun) -> None:
    """Each complete todo is a -complete- file in the checkout; the blocked ones stay -ready-."""
    todos = demo.project.todos_dir
    assert demo.outcome.complete_files == EXPECTED_COMPLETE
    for todo_id in EXPECTED_BLOCKED:
        assert [p.name.split("-")[1] for p in todos.glob(f"{todo_id}-*.md")] == ["ready"]


def test_complete_todos_are_renamed_in_the_commit_and_pushed(demo: DemoRun) -> None:
    """The remote's main holds every complete todo as -complete- (status in front matter too)."""
    remote, tree = demo.project.remote, demo.outcome.remote_tree
    for todo_id in EXPECTED_COMPLETE:
        (path,) = _files(tree, todo_id)
        assert "-complete-" in path
        assert "\nstatus: complete\n" in git(remote, "show", f"main:{path}")
    for todo_id in EXPECTED_BLOCKED:
        (path,) = _files(tree, todo_id)
        assert "-ready-" in path


def test_the_remote_has_exactly_the_target_branch(demo: DemoRun) -> None:
    """Pushed: the bare remote's main is the checkout's main, whose tree the checkout holds."""
    assert demo.outcome.remote_head == demo.outcome.head
    assert git(demo.project.root, "rev-parse", "HEAD").strip() == demo.outcome.head
    changed = git(demo.project.root, "status", "--porcelain", "--untracked-files=all").splitlines()
    # Only the status file (rewritten after the last commit) may differ from the commit.
    assert [line[3:] for line in changed] in ([], ["plans/EXECUTION-STATUS.md"])


def test_blocked_changes_are_not_on_the_target_branch(demo: DemoRun) -> None:
    """Neither 282's surge pricing nor 267's audit log reached main; the accepted changes did."""
    tree, remote = demo.outcome.tree, demo.project.remote
    assert "tests/test_surge_pricing.py" not in tree
    assert "scheduling/audit.py" not in tree
    assert "surge" not in git(remote, "show", "main:scheduling/pricing.py")
    assert "tests/test_durations.py" in tree  # 277
    assert "tests/test_buffers.py" in tree  # 278, resolved on the new head


def test_failed_blocked_table_names_reason_and_reverted_files(demo: DemoRun) -> None:
    """EXECUTION-STATUS.md lists 267 (agent exit) and 282 (broke the tests, files reverted) as blocked."""
    failed = demo.outcome.failed
    assert set(failed) == set(EXPECTED_BLOCKED)
    _, reason_267, reverted_267, action_267 = failed["267"]
    assert reason_267.startswith("blocked: attempts exhausted (2/2): agent exit")
    assert "exited with code 1" in reason_267
    assert reverted_267 == "—"
    assert "batchd retry 267" in action_267
    _, reason_282, reverted_282, action_282 = failed["282"]
    assert reason_282.startswith("blocked: attempts exhausted (2/2): broke")
    assert "unittest discover -s tests -q" in reason_282
    assert reverted_282 == "scheduling/pricing.py, tests/test_surge_pricing.py"
    assert "batchd retry 282" in action_282


def test_one_commit_per_phase_with_the_seed_messages(demo: DemoRun) -> None:
    """Five commits, one per phase, with the seed's subjects, `Resolved todos` bodies and trailers."""
    commits = commit_messages(demo.project.root, "main", since=demo.base)
    assert [subject for subject, _, _ in commits] == [PHASE_MESSAGES[p.number] for p in PHASES]
    run_id = demo.status["run"]["id"]
    for phase, (_, body, trailers) in zip(PHASES, commits, strict=True):
        assert trailers == {"Batchd-Run": run_id, "Batchd-Phase": str(phase.number)}
        resolved = {t for batch in phase.batches for t in batch.todos} - EXPECTED_BLOCKED.keys()
        if resolved:
            assert body.startswith("Resolved todos: #")
            assert set(body.removeprefix("Resolved todos: ").replace("#", "").split(", ")) == resolved
        else:
            assert body == "No todos resolved."


def test_every_scenario_path_happened(demo: DemoRun) -> None:
    """Rejections, the conflict, the timeout and the attempts per todo are the scenario's."""
    attempts: dict[str, int] = {}
    rejected: dict[str, int] = {}
    conflicted: set[str] = set()
    timed_out: set[str] = set()
    for e in demo.log:
        p = e["payload"]
        if e["type"] == "todo.agent_started":
            attempts[p["todo_id"]] = attempts.get(p["todo_id"], 0) + 1
        elif e["type"] == "todo.rejected":
            rejected[p["todo_id"]] = rejected.get(p["todo_id"], 0) + 1
        elif e["type"] == "todo.conflicted":
            conflicted.add(p["todo_id"])
        elif e["type"] == "todo.agent_failed" and p["reason"] == "timeout":
            timed_out.add(p["todo_id"])
    assert attempts == EXPECTED_ATTEMPTS
    assert set(rejected) == EXPECTED_REJECTED_ONCE
    assert rejected["282"] == 2
    assert conflicted == EXPECTED_CONFLICTED_ONCE
    assert timed_out == EXPECTED_TIMED_OUT_ONCE


def test_audit_verify_is_clean(demo: DemoRun) -> None:
    """`batchd audit verify` exits 0 on the run's log."""
    assert demo.outcome.audit.returncode == 0, demo.outcome.audit.stdout + demo.outcome.audit.stderr


def test_replay_verify_is_clean(demo: DemoRun) -> None:
    """`batchd replay --verify` exits 0: replay from zero equals snapshot + tail."""
    assert demo.outcome.replay.returncode == 0, demo.outcome.replay.stdout + demo.outcome.replay.stderr


def test_nothing_happened_twice(demo: DemoRun) -> None:
    """No event that must be unique (acceptance, completion, phase steps, run verdict) is duplicated."""
    assert demo.outcome.duplicates == {}
    assert demo.outcome.event_types["phase.committed"] == len(PHASES)
    assert demo.outcome.event_types["phase.pushed"] == len(PHASES)
    assert demo.outcome.event_types["run.completed"] == 1


def test_no_agent_process_is_left(demo: DemoRun) -> None:
    """Every agent (including 283's hung one, killed at its timeout) is gone when the daemon exits."""
    assert demo.outcome.leftovers == {}


def test_each_phase_commit_renames_its_resolved_todos(demo: DemoRun) -> None:
    """A phase's commit is the one that renames its resolved todos to -complete- (and no others)."""
    root = demo.project.root
    shas = git(root, "rev-list", "--reverse", f"{demo.base}..main").split()
    for phase, sha in zip(PHASES, shas, strict=True):
        added = git(root, "diff-tree", "--no-commit-id", "-r", "--name-only", "--diff-filter=A", sha)
        renamed_ids = {Path(p).name.split("-")[0] for p in added.splitlines() if "-complete-" in p}
        resolved = {t for batch in phase.batches for t in batch.todos} - EXPECTED_BLOCKED.keys()
        assert renamed_ids == resolved, f"phase {phase.number}"


def test_the_scripted_agents_cost_is_shown_as_simulated(demo: DemoRun) -> None:
    """No LLM ran: the run summary, `status --json` and the status file say the cost is simulated."""
    root = demo.project.root
    log = open_log(root)
    try:
        proj = replay(log)
    finally:
        log.close()
    console = Console(record=True, width=200, force_terminal=False, color_system=None)
    print_summary(console, summarize(proj))
    assert "(simulated: the demo's scripted agent)" in console.export_text()
    assert demo.status["run"]["agent"]["cost_simulated"] is True
    status_file = (root / "plans" / "EXECUTION-STATUS.md").read_text(encoding="utf-8")
    assert "- **Agent cost:** $" in status_file and "(simulated: the demo's scripted agent)" in status_file
