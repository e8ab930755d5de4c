"""The plan's trailing batch-less phases run last, after any auto-planned phase, numbered in run order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from procs import add_plan, base_env, batchd, git, make_repo, projection

PLAN = """### Phase 1: First (Batch 1.1)
- **Batch 1.1:** Todos 1, 2

### Phase 2: Hardening
- Final integration testing

### Phase 3: Release notes
- nothing to run

## Commit Messages by Phase
- **Phase 1:** `feat: phase 1`
- **Phase 2:** `chore: complete phase 2 - hardening`
- **Phase 3:** `docs: phase 3`
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of a plan naming todos 1 and 2, with todo 3 ready but not in the plan."""
    root = make_repo(
        tmp_path_factory.mktemp("final") / "repo",
        {str(n): f"write: [{{path: f{n}.txt, content: x}}]" for n in (1, 2, 3)},
    )
    add_plan(root, PLAN)
    done = batchd(root, "run", "--once", env=base_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def test_auto_planned_phase_runs_before_the_final_phases(finished: Path) -> None:
    """Phase commits on main, oldest first: the plan's phase, the auto phase, then both final phases."""
    subjects = git(finished, "log", "--format=%s", "-4").splitlines()[::-1]
    assert subjects == [
        "feat: phase 1",
        "chore(batchd): resolve todos #3",
        "chore: complete phase 2 - hardening",
        "docs: phase 3",
    ]


def test_phase_numbers_follow_the_order_they_ran_in(finished: Path) -> None:
    """The auto phase is 2, the final phases 3 and 4: numbers follow the run, as `plan show` says."""
    phases = projection(finished).phases
    assert [(n, phases[n].title, phases[n].final) for n in sorted(phases)] == [
        (1, "First", False),
        (2, "Auto-planned todos", False),
        (3, "Hardening", True),
        (4, "Release notes", True),
    ]


def test_plan_show_printed_the_same_phases_before_the_run(tmp_path: Path) -> None:
    """`batchd plan show --json` numbers and titles the phases as the daemon then runs them."""
    root = make_repo(tmp_path / "repo", {str(n): "exit: 0" for n in (1, 2, 3)})
    add_plan(root, PLAN)
    shown = json.loads(batchd(root, "plan", "show", "--json").stdout)
    assert [(p["number"], p["title"]) for p in shown["phases"]] == [
        (1, "First"),
        (2, "Auto-planned todos"),
        (3, "Hardening"),
        (4, "Release notes"),
    ]


def test_the_verdict_is_recorded_once_by_the_first_final_phase(finished: Path) -> None:
    """Only the first final phase runs the integration check; the run completes once, with success."""
    proj = projection(finished)
    assert proj.run.verdict is not None and proj.run.verdict.success
    assert all(t.state == "complete" for t in proj.todos.values())
