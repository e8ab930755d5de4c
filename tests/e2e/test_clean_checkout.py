"""After a run the person's checkout is as the last commit left it: `git status --porcelain` is empty.

The last phase commit carries the status file with the run's verdict (the final check runs before
that commit), and the file written after the run is the same text, so nothing is left modified for
a person's `git stash` to catch. ``batchd run --once`` as a real process on the sample repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_harness import STATUS_FILE, git, reap, run_daemon
from e2e_sample import TODOS, build_sample

pytestmark = pytest.mark.timeout(300)


def porcelain(root: Path) -> str:
    return git(root, "status", "--porcelain", "--untracked-files=all")


def test_checkout_is_clean_after_a_run_with_a_plan(tmp_path: Path) -> None:
    """The sample's plan (two phases, 103 blocked): exit 1, nothing modified or left over, and the
    committed status file has the verdict naming 103."""
    sample = build_sample(tmp_path)
    try:
        run = run_daemon(sample.root)
    finally:
        reap(str(sample.root))
    assert run.returncode == 1, run.log_tail()
    assert porcelain(sample.root) == ""
    committed = git(sample.root, "show", f"HEAD:{STATUS_FILE}")
    verdict = next(ln for ln in committed.splitlines() if ln.startswith("- **Verdict:**"))
    assert "NOT COMPLETE" in verdict and "rejected: 103" in verdict


def test_checkout_is_clean_after_a_run_without_a_plan(tmp_path: Path) -> None:
    """Three auto-planned todos, all complete: exit 0, nothing modified, the committed file says SUCCESS."""
    todos = tuple(t for t in TODOS if t.todo_id in ("101", "102", "104"))
    sample = build_sample(tmp_path, todos=todos, with_plan=False)
    try:
        run = run_daemon(sample.root)
    finally:
        reap(str(sample.root))
    assert run.returncode == 0, run.log_tail()
    assert porcelain(sample.root) == ""
    assert "- **Verdict:** SUCCESS" in git(sample.root, "show", f"HEAD:{STATUS_FILE}")
