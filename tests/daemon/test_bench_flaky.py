"""bench.flaky with a few trials: its figures are those of real runs of the real search.

A flake rate of 0 (no flakes: the search must be exact) and of 0.9 (a test that nearly always fails:
today's one re-run must wrongly reject good todos), so the figures differ from row to row for a reason
a hard-coded table could not know. The seeds fix every trial, so the printed table (run in two
processes) and the JSON (run in this one) must agree.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from bench import flaky, flaky_report
from bench.flaky_world import make_runner, make_world, run_trial
from daemon.world.checks import FlakePolicy
from daemon.world.verify import VerifyRun

ARGS = ["--trials", "3", "--flake-rates", "0,0.9", "--culprits", "0,1", "--seed", "5"]


def rows_by(report: dict[str, Any]) -> dict[tuple[float, int, str], dict[str, Any]]:
    return {(r["flake_rate"], r["k"], r["method"]): r for r in report["rows"]}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One ``--json`` run in this process (about 15 seconds)."""
    out = io.StringIO()
    # A module fixture runs before the per-test reset of logging (tests/conftest.py): the benchmark
    # configures structlog in this process, so its configuration is put back here.
    saved = structlog.get_config()
    try:
        with contextlib.redirect_stdout(out):
            assert flaky.main([*ARGS, "--json", "--processes", "1"]) == 0
    finally:
        structlog.configure(**saved)
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed


def test_every_row_is_the_sum_of_its_trials(report: dict[str, Any]) -> None:
    """Precision, recall, wrong rejections and runs per batch are computed from the per-trial records."""
    assert len(report["rows"]) == 2 * 2 * len(flaky_report.METHODS)
    for row in report["rows"]:
        trials = row["per_trial"]
        assert len(trials) == row["trials"] == 3
        rejected = sum(len(t["rejected"]) for t in trials)
        caught = sum(len(set(t["rejected"]) & set(t["culprits"])) for t in trials)
        culprits = sum(len(t["culprits"]) for t in trials)
        assert (row["rejected"], row["rejected_culprits"], row["culprits"]) == (rejected, caught, culprits)
        assert row["precision"] == (pytest.approx(caught / rejected, abs=1e-6) if rejected else None)
        assert row["recall"] == (pytest.approx(caught / culprits, abs=1e-6) if culprits else None)
        assert row["wrong_per_batch"] == pytest.approx((rejected - caught) / 3, abs=1e-6)
        assert row["runs_per_batch"] == pytest.approx(sum(t["command_runs"] for t in trials) / 3, abs=1e-6)


def test_each_trial_has_its_k_culprits_and_rejects_them(report: dict[str, Any]) -> None:
    """A culprit always fails, and a flake only ever fails falsely: every culprit is rejected."""
    for row in report["rows"]:
        for t in row["per_trial"]:
            assert len(t["culprits"]) == row["k"]
            assert set(t["culprits"]) <= set(t["rejected"])
            assert t["accepted"] + len(t["rejected"]) == 10


def test_without_flakes_every_method_rejects_exactly_the_culprits(report: dict[str, Any]) -> None:
    """At f = 0 nothing is wrongly rejected, and a clean batch costs one run of one tree."""
    for (f, k, method), row in rows_by(report).items():
        if f != 0:
            continue
        assert row["wrong_per_batch"] == 0, method
        if k == 0:
            assert row["runs_per_batch"] == row["steps_per_batch"] == 1
        else:
            assert row["precision"] == row["recall"] == 1
            assert row["runs_per_batch"] > row["steps_per_batch"]  # the culprit's red is confirmed


def test_a_test_failing_nine_times_in_ten_makes_one_rerun_reject_good_todos(report: dict[str, Any]) -> None:
    """At f = 0.9 a good batch is red twice in a row 81% of the time: today's rule rejects good todos."""
    row = rows_by(report)[(0.9, 0, flaky_report.RETRIES_1)]
    assert row["wrong_per_batch"] > 0
    assert row["precision"] == 0


def test_the_printed_table_shows_the_same_figures_from_two_processes(report: dict[str, Any]) -> None:
    """The text report, its rows run in two processes, prints the JSON's figures for every row."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert flaky.main([*ARGS, "--processes", "2"]) == 0
    text = out.getvalue()
    lines = {
        line[: flaky_report.FIGURES_AT]: line[flaky_report.FIGURES_AT :].split()[:5]
        for line in text.splitlines()
    }
    for (f, k, method), row in rows_by(report).items():
        shown = lines[flaky_report.row_label(f, k, method)]
        expected = [flaky_report.percent(row["precision"]), flaky_report.percent(row["recall"])]
        expected += [
            f"{row['wrong_per_batch']:.3f}",
            f"{row['runs_per_batch']:.2f}",
            f"{row['steps_per_batch']:.2f}",
        ]
        assert shown == expected, (f, k, method)
    assert "wall time" in text


def test_a_trial_counts_every_execution_of_the_command(tmp_path: Path) -> None:
    """The runs a trial reports are the script's executions, re-runs included, as CommandRuns add them."""
    world = make_world(tmp_path)
    runner = make_runner(FlakePolicy(fixed=1), stream=world.stream, style="pytest")
    seen: list[int] = []

    def count(run: VerifyRun) -> None:
        seen.append(sum(t.runs for t in run.result.tries))

    trial = run_trial(
        world, runner, seed=0, stream_seed=3, culprits=frozenset({4}), flake_rate=0.0, on_run=count
    )
    assert trial.rejected == ("5",)
    assert trial.steps == len(seen)
    assert trial.command_runs == sum(seen) > trial.steps
