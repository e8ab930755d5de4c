"""bench.workers --quick: a coordinator with no slots of its own and fleets of 1 and 2 real workers
on one shared log, each fleet completing every todo; the report's numbers are there and sane (no
timing ratio is asserted: a loaded 2-core machine would make it flake)."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest

from bench import workers

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One quick run of the bench for the module's tests (it takes half a minute)."""
    out = io.StringIO()  # module scope: capsys is a test's, so stdout is caught here
    with contextlib.redirect_stdout(out):
        code = workers.main(["--quick", "--json"])
    data: dict[str, Any] = json.loads(out.getvalue())
    data["exit_code"] = code
    return data


def test_quick_bench_completes_every_todo_in_every_fleet(report: dict[str, Any]) -> None:
    """Exit 0, and each fleet (1 and 2 workers) completed all its todos, one claim each at least."""
    assert report["exit_code"] == 0
    assert [f["workers"] for f in report["fleets"]] == [1, 2]
    for fleet in report["fleets"]:
        assert fleet["complete"], fleet
        assert fleet["completed"] == fleet["on_main"] == fleet["todos"] == report["todos"]
        assert fleet["claims"] >= fleet["todos"] and fleet["reported"] >= fleet["todos"]


def test_quick_bench_reports_sane_numbers(report: dict[str, Any]) -> None:
    """Positive makespans and claim rates, waits under a lease, and a ratio only against 1 worker."""
    one, two = report["fleets"]
    assert one["ratio"] == 1.0 and two["ratio"] > 0
    assert set(report["aims"]) == {"2"}
    for fleet in report["fleets"]:
        assert fleet["makespan"] > report["sleep"] * fleet["todos"] / (2 * fleet["workers"])
        assert 0 < fleet["claims_per_second"] == pytest.approx(fleet["claims"] / fleet["makespan"], rel=0.01)
        assert 0 <= fleet["longest_wait"] < workers.LEASE
        assert 0 < fleet["utilisation"] <= 1
        assert fleet["coordinator_cpu"] > 0 and fleet["workers_cpu"] > 0
    assert report["log"]
