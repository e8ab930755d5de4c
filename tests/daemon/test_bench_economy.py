"""bench.economy --quick: both ways run with real daemons and stand-in agents; its numbers add up.

Which todo wins a conflict depends on timing, so the numbers themselves are not asserted: only that
every agent-minute is classed once, the ratios are the ones of the minutes shown, and the aims are
judged on them.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest

from bench import economy
from bench.economy_agent import keep_both

TOLERANCE = 0.05  # agent-minutes: what rounding to 2 places leaves in a sum


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One run of ``--quick --json`` for the module's tests (it takes half a minute)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert economy.main(["--quick", "--json"]) == 0
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed


def test_both_ways_run_the_quick_plan_to_its_end(report: dict[str, Any]) -> None:
    assert set(report["ways"]) == {"redo", "new"}
    assert report["ways"]["redo"]["conflicts"] == "redo" and report["ways"]["redo"]["resume"] is False
    assert report["ways"]["new"]["conflicts"] == "merge" and report["ways"]["new"]["resume"] is True
    for way in report["ways"].values():
        (run,) = way["runs"]
        assert run["accepted"] + len(run["not_accepted"]) == report["todos"] == 15
        assert run["agent_runs"] >= report["todos"]


def test_every_agent_minute_and_run_is_classed_once(report: dict[str, Any]) -> None:
    for way in report["ways"].values():
        (run,) = way["runs"]
        classed = run["useful_minutes"] + run["failed_minutes"] + run["wasted_minutes"]
        assert classed == pytest.approx(run["reported_minutes"], abs=TOLERANCE)
        assert sum(run["attempts"].values()) == run["agent_runs"]
        assert run["useful_minutes"] > 0


def test_redo_pays_for_both_broken_first_attempts_as_failed(report: dict[str, Any]) -> None:
    """Without resume a rejected attempt's change is not carried on: each breaking todo's first
    attempt is failed."""
    (run,) = report["ways"]["redo"]["runs"]
    assert run["attempts"]["failed"] == 2
    assert run["failed_minutes"] > 0


def test_ratios_and_aims_are_those_of_the_minutes(report: dict[str, Any]) -> None:
    redo, new = (report["ways"][name]["total"] for name in ("redo", "new"))
    for run in (redo, new):
        assert run["waste_ratio"] == pytest.approx(run["wasted_minutes"] / run["useful_minutes"], abs=1e-3)
    if new["wasted_minutes"] > 0:
        expected = redo["wasted_minutes"] / new["wasted_minutes"]
        assert report["wasted_redo_over_new"] == pytest.approx(expected, rel=1e-2)
    else:
        assert report["wasted_redo_over_new"] is None
    assert report["aim_waste_ratio"] == (new["waste_ratio"] <= economy.AIM_WASTE_RATIO)
    less = (
        redo["wasted_minutes"] > 0
        and redo["wasted_minutes"] >= economy.AIM_LESS_WASTED * new["wasted_minutes"]
    )
    assert report["aim_less_wasted"] == less


def test_the_totals_are_the_sums_of_the_runs(report: dict[str, Any]) -> None:
    for way in report["ways"].values():
        (run,) = way["runs"]
        assert {k: v for k, v in run.items() if k != "seed"} == way["total"]


def test_the_text_report_shows_each_way_the_ratio_and_the_aims() -> None:
    def outcome(way: str, wasted: float) -> economy.Outcome:
        minutes = {"useful": 100.0, "failed": 10.0, "wasted": wasted}
        attempts = {"useful": 15, "failed": 2, "wasted": 3}
        return economy.Outcome(way, 1, minutes, minutes, attempts, 110 + wasted, 20, 15, ())

    lines = economy.text_report([outcome("redo", 30.0), outcome("new", 4.0)], economy.QUICK_BATCHES)
    text = "\n".join(lines)
    assert "1 redo        100.0    10.0    30.0   30.0%" in text
    assert "1 new         100.0    10.0     4.0    4.0%" in text
    assert "redo / new: 7.50x" in text
    assert "<= 5%: met (4.0%); at least 3x less wasted than redo: met" in text


def test_the_stand_in_resolves_a_conflict_by_keeping_both_sides() -> None:
    text = "head\n<<<<<<< ours\na\n||||||| base\n=======\nb\n>>>>>>> theirs\ntail\n"
    assert keep_both(text) == "head\na\nb\ntail\n"
