"""`batchd plan show` shows the phases the daemon then runs: the same numbers, titles and batches for
the plan's phases, the auto-planned todos (one phase per automatic batch) and the final phases."""

from __future__ import annotations

import json
from pathlib import Path

from procs import add_plan, base_env, batchd, make_repo, projection, todo_name, todo_text

from daemon.engine.continuous import is_group

PLAN = """### Phase 1: First
- **Batch 1.1:** Todos 1, 2

### Phase 2: Hardening
- Final integration testing
"""


def test_plan_show_phases_equal_the_phases_the_daemon_runs(tmp_path: Path) -> None:
    """Auto-planned 3 and 4 (4 depends on 3: two automatic batches) after a plan's phase: plan show's
    phases and batches before the run equal the daemon's after it (the continuous policy's
    verification groups aside: they are how it verifies, not what was planned)."""
    root = make_repo(
        tmp_path / "repo", {str(n): f"write: [{{path: f{n}.txt, content: x}}]" for n in (1, 2, 3)}
    )
    four = todo_text("4", "write: [{path: f4.txt, content: x}]")
    (root / "todos" / todo_name("4")).write_text("---\ndependencies: [3]\n---\n" + four, encoding="utf-8")
    add_plan(root, PLAN)
    shown = json.loads(batchd(root, "plan", "show", "--json").stdout)
    expected = [
        (p["number"], p["title"], [[t["id"] for t in b["todos"]] for b in p["batches"]])
        for p in shown["phases"]
    ]
    done = batchd(root, "run", "--once", env=base_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    proj = projection(root)
    ran = [
        (
            n,
            proj.phases[n].title,
            [list(proj.batches[k].planned_ids) for k in proj.phases[n].batches if not is_group(k)],
        )
        for n in sorted(proj.phases)
    ]
    assert ran == expected
    assert [title for _, title, _ in ran] == [
        "First",
        "Auto-planned todos",
        "Auto-planned todos",
        "Hardening",
    ]
