"""bench.serve at a tiny scale: its log builder writes valid runs and its whole measurement runs.

The figures themselves are not asserted (timing depends on the machine): only that every part of
the bench ran against the real app over real HTTP and that what it measured adds up (every append
was seen by the SSE client and folded by the dashboard).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench import serve, serve_log
from daemon.web import pages, sse, timeline_view
from statemachine.projection import replay
from store import EventLog

TODOS = 400  # two phases: every rare path of the builder comes up once (restart, flake, push failure)


def placeholder(module: object) -> bool:
    """A module the contract left for another helper, not written yet: its pages answer 500."""
    return "CONTRACT PLACEHOLDER" in (getattr(module, "__doc__", "") or "")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-serve-cache")


@pytest.fixture(scope="module")
def report(cache: Path) -> dict[str, Any]:
    """One tiny run of ``--json`` (about twenty seconds)."""
    out = io.StringIO()
    argv = ["--todos", str(TODOS), "--requests", "3", "--appends", "5", "--seconds", "0.5", "--rounds", "1"]
    with contextlib.redirect_stdout(out):
        assert serve.main([*argv, "--cache", str(cache), "--json"]) == 0
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed


def test_the_built_log_replays_and_has_every_path_of_a_run(cache: Path, report: dict[str, Any]) -> None:
    """The builder's events are moves the projection's tables accept, and they include the rare
    ones the dashboard must draw: interrupted agents, rejections, conflicts, blocks, flakes, a
    failed push, a daemon restart."""
    db, meta = serve.cached_log(TODOS, 16, cache)
    assert meta == {k: report["log"][k] for k in meta}
    with EventLog(db) as log:
        types = Counter(e.type for e in log.read())
        flaked = any(e.payload.get("flaked") for e in log.read() if e.type == "batch.verify_run")
        assert replay(log, use_snapshot=False).last_seq == meta["events"] == sum(types.values())
    for kind in (
        "todo.agent_interrupted",
        "todo.agent_failed",
        "todo.rejected",
        "todo.conflicted",
        "todo.blocked",
        "phase.push_failed",
        "run.stopping",
    ):
        assert types[kind] > 0, kind
    assert types["todo.queued"] == TODOS
    assert flaked


def test_a_cached_log_is_used_again(cache: Path, report: dict[str, Any]) -> None:
    """A second run does not build again: the same file, untouched."""
    db, _ = serve.cached_log(TODOS, 16, cache)
    before = db.stat().st_mtime_ns
    again, _ = serve.cached_log(TODOS, 16, cache)
    assert again == db and db.stat().st_mtime_ns == before


def test_a_writer_that_never_restarts_the_daemon_touches_no_run_stream() -> None:
    """The writer may be stopped between any two steps: it must never leave the run stopping."""
    stages = serve_log.phase_stages(1, 1, 200, random.Random(1), restarts=False)
    streams = {a.stream for _, appends in stages for a in appends}
    assert "run" not in streams


def test_every_page_was_measured_over_http(report: dict[str, Any]) -> None:
    owners = {"/": pages, "/failed": pages, "/static/style.css": None, "/metrics": None}
    for page in report["pages"]:
        owner = timeline_view if page["path"].startswith("/timeline") else owners[page["path"]]
        if owner is not None and placeholder(owner):
            continue  # not written yet on this branch: measured once merged
        assert page["status"] == 200, page["path"]
        assert len(page["ms"]) == 3 and page["size"] > 0


def test_every_append_reached_the_sse_client(report: dict[str, Any]) -> None:
    if placeholder(sse):
        pytest.skip("the SSE endpoint is not written on this branch")
    assert report["sse"]["error"] is None
    assert len(report["sse"]["ms"]) == 5
    assert report["rates"]["client_kept_up"] is True


def test_the_writer_ran_in_every_mode_and_the_dashboard_followed_it(report: dict[str, Any]) -> None:
    """Each mode's writer appended, and ``/metrics`` reached the log's last event at the end."""
    if placeholder(sse):
        pytest.skip("the SSE endpoint is not written on this branch")
    for mode in serve.MODES:
        (rate,) = report["rates"]["rates"][mode]
        assert rate > 0, mode
    assert report["followed"] is True


def test_the_table_shows_each_aim(report: dict[str, Any]) -> None:
    text = "\n".join(serve.render(report))
    assert "dashboard start:" in text
    if not placeholder(pages):
        assert "< 300 ms" in text
    if not placeholder(sse):
        assert "aim p99 < 200 ms" in text and "aim < 5%" in text
