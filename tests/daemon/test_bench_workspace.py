"""The workspace benchmark stays runnable (its numbers are read by people, not asserted here)."""

from __future__ import annotations

import pytest

from bench import workspace as bench_workspace


def test_quick_bench_runs_and_prints_each_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m bench.workspace on a tiny repository prints the workspace, collection, agent and
    (with --deps) dependency rows."""
    argv = ["--quick", "--files", "60", "--folders", "6", "--reps", "2"]
    assert bench_workspace.main([*argv, "--deps", "--node-files", "100", "--venv-files", "20"]) == 0
    out = capsys.readouterr().out
    for row in (
        "agentspace.create + remove",
        "collect.collect from the workspace",
        "CheckRunner, no sandbox",
        "node_modules: deps.place, a folder of links",
        "verify run: reset_hard + deps.place",
    ):
        assert row in out
    assert "new / baseline:" in out
