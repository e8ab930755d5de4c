"""The run page, the Failed/Blocked table, the event stream and /api/status, served on a real demo run.

Every page is checked against the log it shows (read back through the store and the CLI), and
against hostile content: a todo titled with markup is shown as text everywhere.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from daemon.web import pagedata
from daemon.workspace import open_log
from statemachine import events as ev
from statemachine.projection import Projection, replay
from store import StoredEvent

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ATTR = '"><img src=x onerror=alert(2)>'


def projection_of(root: Path) -> Projection:
    log = open_log(root)
    try:
        return replay(log)
    finally:
        log.close()


def all_events(root: Path, **kwargs: object) -> list[StoredEvent]:
    log = open_log(root)
    try:
        return list(log.read(**kwargs))  # type: ignore[arg-type]
    finally:
        log.close()


def rows(page: str, tag: str, attr: str) -> list[str]:
    """The values of ``attr`` of every ``<tag class=...>`` row on a page, in page order."""
    return re.findall(rf'<{tag}[^>]*\b{attr}="([^"]*)"', page)


def add_hostile_todo(root: Path) -> None:
    """A todo queued with a title and reason that are markup (as a todo file or an agent could write)."""
    log = open_log(root)
    try:
        log.append(
            ev.todo_stream("999"),
            [
                ev.TodoQueued(
                    todo_id="999",
                    path=f"todos/999-ready-p2-{HOSTILE_ATTR}.md",
                    title=HOSTILE,
                    priority="p2",
                    digest="0" * 40,
                )
            ],
        )
        log.append(
            ev.todo_stream("999"), [ev.TodoBlocked(todo_id="999", reason=HOSTILE_ATTR, action=HOSTILE)]
        )
    finally:
        log.close()


# -- the run page --------------------------------------------------------------------------------


def test_run_page_lists_every_todo_with_its_state(client: TestClient, demo_root: Path) -> None:
    """The run page lists every todo of the demo run, each with the state the log gives it."""
    proj = projection_of(demo_root)
    page = client.get("/")
    assert page.status_code == 200
    shown = dict(re.findall(r'<tr class="todo" data-todo="([^"]*)" data-state="([^"]*)"', page.text))
    assert shown == {proj.shown(k): str(t.state) for k, t in proj.todos.items()}


def test_run_page_shows_state_verdict_and_counts(client: TestClient, demo_root: Path) -> None:
    """The run's state, its verdict (as the status file words it) and the todo count per state."""
    proj = projection_of(demo_root)
    text = html.unescape(client.get("/").text)
    assert proj.run.verdict is not None
    assert "NOT COMPLETE" in text and f"{len(proj.run.verdict.complete)} complete" in text
    assert f"Run {proj.run.run_id}" in re.sub(r"<[^>]+>", "", text)
    counts: dict[str, int] = {}
    for todo in proj.todos.values():
        counts[str(todo.state)] = counts.get(str(todo.state), 0) + 1
    found = dict(re.findall(r'\?state=([a-z_]+)">.*?<span class="n">(\d+)</span>', text))
    assert {s: int(n) for s, n in found.items()} == counts


def test_run_page_shows_each_phase_commit_and_push(client: TestClient, demo_root: Path) -> None:
    """Every phase's commit and push: the sha committed and that it was pushed."""
    proj = projection_of(demo_root)
    page = client.get("/").text
    phases = re.findall(r'<tr class="phase" data-phase="(\d+)">(.*?)</tr>', page, flags=re.S)
    assert [int(n) for n, _ in phases] == [
        p.number for p in sorted(proj.phases.values(), key=lambda p: (p.final, p.number))
    ]
    for number, row in phases:
        phase = proj.phases[int(number)]
        assert phase.head_sha and phase.head_sha[:10] in row
        assert "pushed" in row and phase.pushed_sha[:10] in row


def test_run_page_shows_agent_time_and_cost(client: TestClient, demo_root: Path) -> None:
    """Agent time and cost as `batchd status` counts them (the demo's cost is marked simulated)."""
    data = json.loads(client.get("/api/status").text)
    cost = data["run"]["agent"]["cost_usd"]
    text = html.unescape(client.get("/").text)
    assert f"${cost:.2f} (simulated" in text
    assert "Waste ratio" in text


def test_run_page_has_pause_and_resume_buttons_and_a_timeline_link(client: TestClient) -> None:
    """The pause and resume buttons (bound by live.js) and the place of the timeline."""
    page = client.get("/").text
    assert '<button type="button" class="control" data-control="pause">' in page
    assert '<button type="button" class="control" data-control="resume">' in page
    assert 'id="timeline-slot"' in page and 'href="http://127.0.0.1/timeline"' in page


def test_run_page_filtered_by_state_lists_only_that_state(client: TestClient, demo_root: Path) -> None:
    """`/?state=blocked` lists the blocked todos only (how a run of 100,000 todos is browsed)."""
    proj = projection_of(demo_root)
    page = client.get("/", params={"state": "blocked"}).text
    states = set(rows(page, "tr", "data-state"))
    assert states == {"blocked"}
    assert sorted(rows(page, 'tr class="todo"', "data-todo")) == sorted(
        proj.shown(t.todo_id) for t in proj.todos_in("blocked")
    )


def test_run_page_fragment_is_the_main_block_only(client: TestClient) -> None:
    """With X-Batchd-Fragment (live.js's refresh) the run page is its main block, no <html> around it."""
    page = client.get("/", headers={"X-Batchd-Fragment": "1"}).text
    assert "<html" not in page and 'data-control="pause"' in page


def test_hostile_title_is_escaped_on_every_page(
    demo_copy: Path, client_for: Callable[..., TestClient]
) -> None:
    """A todo titled `<script>alert(1)</script>` (and a reason that breaks out of attributes) is shown
    as text on the run, Failed/Blocked, todo and event pages: never as markup."""
    add_hostile_todo(demo_copy)
    client = client_for(demo_copy)
    for url in ("/", "/failed", "/todo/999", "/events", "/events?stream=todo-999"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert "<script>alert" not in page.text, url
        assert "<img src=x" not in page.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, url


# -- the Failed/Blocked table ------------------------------------------------------------------------


def status_file_rows(root: Path) -> list[list[str]]:
    text = (root / "plans" / "EXECUTION-STATUS.md").read_text(encoding="utf-8")
    table = text.split("## Failed/Blocked Todos", 1)[1].split("\n## ", 1)[0]
    lines = [
        line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Todo ID")
    ]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def test_failed_page_is_the_status_files_table(client: TestClient, demo_root: Path) -> None:
    """The Failed/Blocked page has the status file's rows: same todos, descriptions and reasons."""
    expected = status_file_rows(demo_root)
    assert expected, "the demo run leaves blocked todos"
    page = client.get("/failed")
    assert page.status_code == 200
    found = re.findall(r'<tr class="failed" data-todo="([^"]*)">(.*?)</tr>', page.text, flags=re.S)
    assert [todo_id for todo_id, _ in found] == [row[0] for row in expected]
    for (_, row), (_, description, reason, _, _) in zip(found, expected, strict=True):
        cells = html.unescape(re.sub(r"\s+", " ", row))
        assert description in cells
        assert reason.replace("\\|", "|").removesuffix("…")[:200] in cells


def test_failed_page_has_a_retry_button_per_row(client: TestClient) -> None:
    """Each failed or blocked todo has a retry button naming it."""
    page = client.get("/failed").text
    ids = rows(page, 'tr class="failed"', "data-todo")
    assert ids and rows(page, 'button type="button" class="control" data-control="retry"', "data-todo") == ids


# -- the event stream ------------------------------------------------------------------------------


def test_events_page_is_newest_first(client: TestClient, demo_root: Path) -> None:
    """The event page shows the newest events first, a page of them."""
    events = all_events(demo_root)
    seqs = [int(s) for s in rows(client.get("/events", params={"limit": 50}).text, "tr", "data-seq")]
    assert seqs == [e.seq for e in reversed(events)][:50]


def test_events_pages_cover_the_log_once(client: TestClient, demo_root: Path) -> None:
    """Following "older events" from the newest page visits every event once, in order."""
    seen: list[int] = []
    url: str | None = "/events?limit=37"
    while url:
        page = client.get(url).text
        seen += [int(s) for s in rows(page, "tr", "data-seq")]
        older = re.search(r'<a class="older" href="([^"]*)"', page)
        url = html.unescape(older.group(1)) if older else None
    assert seen == [e.seq for e in reversed(all_events(demo_root))]


def test_events_filtered_by_stream_and_type_prefix(client: TestClient, demo_root: Path) -> None:
    """`stream=` keeps one stream (a todo by its id as typed), `type=` a type prefix (`todo.agent_`)."""
    expected = [
        e.seq for e in reversed(all_events(demo_root, stream="todo-282")) if e.type.startswith("todo.agent_")
    ]
    page = client.get("/events", params={"stream": "0282", "type": "todo.agent_", "limit": 1000}).text
    assert [int(s) for s in rows(page, "tr", "data-seq")] == expected


def test_events_rare_type_is_found_across_the_log(client: TestClient, demo_root: Path) -> None:
    """A type that occurs once (run.started, at the start of the log) is found from the newest page."""
    first = next(e for e in all_events(demo_root) if e.type == "run.started")
    page = client.get("/events", params={"type": "run.started"}).text
    assert [int(s) for s in rows(page, "tr", "data-seq")] == [first.seq]
    assert '<a class="older"' not in page


def test_events_rows_link_todo_streams_and_carry_the_payload(client: TestClient, demo_root: Path) -> None:
    """Each row of a todo's stream links to its todo page, and the payload is there as JSON."""
    event = next(e for e in all_events(demo_root, stream="todo-282") if e.type == "todo.rejected")
    page = client.get("/events", params={"before": event.seq + 1, "limit": 1}).text
    assert 'href="http://127.0.0.1/todo/282"' in page
    payload = re.search(r'<pre class="payload">(.*?)</pre>', page, flags=re.S)
    assert payload is not None
    assert json.loads(html.unescape(payload.group(1))) == event.payload


# -- /api/status -----------------------------------------------------------------------------------


def test_api_status_is_what_status_json_prints(client: TestClient, demo_root: Path) -> None:
    """/api/status answers exactly what `batchd status --json` prints for the same log, and says
    whether the dashboard is following the log."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "-C", str(demo_root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer = client.get("/api/status")
    assert answer.headers["content-type"] == "application/json"
    data = answer.json()
    assert data.pop("serve") == {
        "following": True,
        "error": None,
        "log": str(demo_root / ".batchd" / "events.db"),
    }
    assert data == json.loads(done.stdout)


def test_events_search_for_a_rare_type_goes_on_page_by_page(
    client: TestClient, demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page reads a bounded part of the log: a type not found there gives a page that says how far
    it searched and links on, and following the links finds every match, each once."""
    monkeypatch.setattr(pagedata, "SCAN_MAX", 50)
    expected = [e.seq for e in reversed(all_events(demo_root)) if e.type.startswith("phase.pushed")]
    seen: list[int] = []
    pages = 0
    url: str | None = "/events?type=phase.pushed&limit=100"
    while url:
        page = client.get(url).text
        pages += 1
        seen += [int(s) for s in rows(page, "tr", "data-seq")]
        older = re.search(r'<a class="older" href="([^"]*)"', page)
        url = html.unescape(older.group(1)) if older else None
    assert seen == expected
    assert pages >= len(all_events(demo_root)) // 50


def test_run_page_follows_new_events(demo_copy: Path, client_for: Callable[..., TestClient]) -> None:
    """A todo queued after the page was first served is on the next one, with the counts updated."""
    client = client_for(demo_copy)
    before = client.get("/").text
    assert 'data-todo="999"' not in before
    model = client.app.state.model  # type: ignore[attr-defined]
    seq = model.last_seq
    add_hostile_todo(demo_copy)
    deadline = time.monotonic() + 10
    while model.last_seq < seq + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    after = client.get("/").text
    assert 'data-todo="999" data-state="blocked"' in after
    total = len(projection_of(demo_copy).todos)
    assert f"{total} todos:" in after
