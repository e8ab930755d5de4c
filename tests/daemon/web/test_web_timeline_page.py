"""The timeline page (/timeline) on the real demo run, and its partial as the report renders it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from daemon.web.model import LiveModel
from daemon.web.render import env
from daemon.web.timeline import Timeline
from daemon.web.timeline_view import layout, timeline_context
from daemon.workspace import open_log
from statemachine import events as ev
from store import StoredEvent

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
DEADLINE = 10.0  # seconds to wait for the follower to fold an appended event (normally ~0.1 s)


@dataclass
class DrawnBar:
    todo: str
    attempt: int
    classes: set[str]
    href: str | None
    title: str = ""


class Svg(HTMLParser):
    """The bars of a page as a browser builds them: each rect.bar, the link around it, its <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[DrawnBar] = []
        self.links: list[str | None] = []
        self.rect: DrawnBar | None = None  # the bar whose element is open
        self.title: DrawnBar | None = None  # the bar whose <title> is open

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a":
            self.links.append(a.get("href"))
        elif tag == "rect" and "data-todo" in a:
            href = self.links[-1] if self.links else None
            classes = set((a.get("class") or "").split())
            self.rect = DrawnBar(str(a["data-todo"]), int(a["data-attempt"] or 0), classes, href)
            self.bars.append(self.rect)
        elif tag == "title":
            self.title = self.rect

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.links:
            self.links.pop()
        elif tag == "title":
            self.title = None
        elif tag == "rect":
            self.rect = None

    def handle_data(self, data: str) -> None:
        if self.title is not None:
            self.title.title += data


def bars_of(html: str) -> list[DrawnBar]:
    parser = Svg()
    parser.feed(html)
    return parser.bars


def outcome(bar: DrawnBar) -> str:
    (cls,) = [c for c in bar.classes if c.startswith("outcome-")]
    return cls.removeprefix("outcome-")


def events_of(model: LiveModel) -> list[StoredEvent]:
    log = model.open_log()
    try:
        return list(log.read())
    finally:
        log.close()


def test_the_timeline_draws_one_bar_per_agent_attempt(client: TestClient, demo_model: LiveModel) -> None:
    """Every todo.agent_started of the run is one bar, no more, no fewer."""
    started = Counter(
        (e.payload["todo_id"], e.payload["attempt"])
        for e in events_of(demo_model)
        if e.type == "todo.agent_started"
    )
    response = client.get("/timeline")
    assert response.status_code == 200
    assert Counter((b.todo, b.attempt) for b in bars_of(response.text)) == started


def test_each_bar_links_to_its_todos_page(client: TestClient) -> None:
    """A bar is a link to /todo/ID: a click on it opens the todo."""
    bars = bars_of(client.get("/timeline").text)
    assert bars and all(b.href == f"/todo/{b.todo}" for b in bars)


def test_bars_are_coloured_by_the_outcome_the_log_recorded(client: TestClient, demo_model: LiveModel) -> None:
    """Rejected, conflicted and failed attempts, and each accepted todo's last attempt, carry their class."""
    expected: dict[tuple[str, int], str] = {}
    last: dict[str, int] = {}
    for e in events_of(demo_model):
        p = e.payload
        if e.type == "todo.agent_started":
            last[p["todo_id"]] = p["attempt"]
        elif e.type in ("todo.rejected", "todo.conflicted", "todo.agent_failed"):
            expected[(p["todo_id"], p["attempt"])] = e.type.removeprefix("todo.").replace("agent_", "")
        elif e.type == "todo.accepted":
            expected[(p["todo_id"], last[p["todo_id"]])] = "accepted"
    drawn = {(b.todo, b.attempt): outcome(b) for b in bars_of(client.get("/timeline").text)}
    assert {k: drawn[k] for k in expected} == expected
    assert {"rejected", "conflicted", "failed", "accepted"} <= set(expected.values())  # the demo has each


def test_a_bars_title_names_its_todo_attempt_duration_and_reason(client: TestClient) -> None:
    """Hovering a bar (no JavaScript) shows its id, title, attempt, duration and why it ended so."""
    (conflict,) = [b for b in bars_of(client.get("/timeline").text) if outcome(b) == "conflicted"]
    lines = conflict.title.splitlines()
    assert lines[0].startswith(f"#{conflict.todo} ") and len(lines[0]) > len(conflict.todo) + 2
    assert lines[1].startswith(f"attempt {conflict.attempt} · ") and lines[1].endswith("s)")
    assert lines[2:] == ["conflict", lines[3]] and lines[3].startswith("lost a conflict to #")


def phase_of_bars(model: LiveModel) -> dict[tuple[str, int], int]:
    events = events_of(model)
    batch_phase = {e.payload["key"]: e.payload["phase"] for e in events if e.type == "batch.planned"}
    return {
        (e.payload["todo_id"], e.payload["attempt"]): batch_phase[e.payload["batch"]]
        for e in events
        if e.type == "todo.agent_started"
    }


def test_zooming_to_a_phase_shows_only_that_phases_bars(client: TestClient, demo_model: LiveModel) -> None:
    """/timeline?phase=N draws the attempts of that phase's batches, all of them and nothing else."""
    phases = phase_of_bars(demo_model)
    for number in sorted(set(phases.values())):
        drawn = {(b.todo, b.attempt) for b in bars_of(client.get(f"/timeline?phase={number}").text)}
        assert drawn == {k for k, p in phases.items() if p == number}, number


def test_the_whole_timeline_links_to_each_phases_zoom(client: TestClient) -> None:
    """The timeline offers a link per phase of the run (the demo has five)."""
    text = client.get("/timeline").text
    assert all(f'href="/timeline?phase={n}"' in text for n in range(1, 6))


def test_verify_runs_commits_and_pushes_are_all_drawn(client: TestClient, demo_model: LiveModel) -> None:
    """Each verify run is a box on the verify row, each phase commit and push a marker."""
    kinds = Counter(e.type for e in events_of(demo_model))
    text = client.get("/timeline").text
    assert text.count('<rect class="vrun ') - 3 == kinds["batch.verify_run"]  # 3: the legend's
    assert text.count('<g class="marker marker-committed"') == kinds["phase.committed"]
    assert text.count('<g class="marker marker-pushed"') == kinds["phase.pushed"]


def test_the_timeline_has_a_baseline_an_axis_and_a_legend(client: TestClient) -> None:
    """The demo's baseline run is marked as one; the time axis has ticks; the legend is there."""
    text = client.get("/timeline").text
    assert text.count('class="vrun passed baseline"') > 1  # the legend's and the demo's
    assert 'class="tl-tick"' in text and 'class="tl-legend"' in text


def test_a_phase_that_is_not_a_number_is_a_400(client: TestClient) -> None:
    """?phase=abc is refused with a message, not a server error."""
    response = client.get("/timeline?phase=abc")
    assert response.status_code == 400 and "phase must be a phase number" in response.text


def test_a_phase_the_run_does_not_have_is_a_404_naming_its_phases(client: TestClient) -> None:
    """?phase=99 on a five-phase run says which phases there are."""
    response = client.get("/timeline?phase=99")
    assert response.status_code == 404 and "its phases: 1, 2, 3, 4, 5" in response.text


def test_a_fragment_request_gets_the_svg_without_the_page_around_it(client: TestClient) -> None:
    """live.js swaps main#live with the fragment: it must hold the picture and no <html>."""
    response = client.get("/timeline?phase=2", headers={"X-Batchd-Fragment": "1"})
    assert "<svg" in response.text and "<html" not in response.text


def test_the_page_loads_the_tooltip_script_which_is_served(client: TestClient) -> None:
    """timeline.js is referenced by the page and served from /static."""
    assert "/static/timeline.js" in client.get("/timeline").text
    script = client.get("/static/timeline.js")
    assert script.status_code == 200 and "addEventListener" in script.text


def append(root: Path, *events: object) -> None:
    """Append to todo 900's stream through the store, as batchd would."""
    log = open_log(root)
    try:
        log.append(ev.todo_stream("900"), events)
    finally:
        log.close()


def add_todo(root: Path, title: str) -> None:
    """A new todo 900 in the demo's phase 4 (its batch 4.1)."""
    path = "todos/900-ready-p2-x.md"
    queued = ev.TodoQueued(todo_id="900", path=path, title=title, priority="p2", digest="d")
    append(root, queued, ev.TodoPlanned(todo_id="900", batch="4.1", phase=4))


def start_agent(root: Path) -> None:
    """Todo 900's first attempt starts."""
    started = ev.AgentStarted(
        todo_id="900", attempt=1, batch="4.1", worktree="w", branch="b", base_sha="s", log_path="l"
    )
    append(root, started)


def test_hostile_titles_are_text_inside_the_bars_title(
    demo_copy: Path, client_for: Callable[..., TestClient]
) -> None:
    """A todo titled with markup shows as text in the SVG <title>; no tag of it reaches the page."""
    add_todo(demo_copy, HOSTILE)
    start_agent(demo_copy)
    text = client_for(demo_copy).get("/timeline?phase=4").text
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "#900 &lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    (bar,) = [b for b in bars_of(text) if b.todo == "900"]
    assert bar.title.splitlines()[0] == f"#900 {HOSTILE}"


def test_a_running_attempt_appears_as_a_running_bar_while_the_page_is_open(
    demo_copy: Path, client_for: Callable[..., TestClient]
) -> None:
    """An agent started after the dashboard came up is drawn (running, blue) once the log has it."""
    add_todo(demo_copy, "a new todo")
    client = client_for(demo_copy)
    assert not [b for b in bars_of(client.get("/timeline").text) if b.todo == "900"]
    start_agent(demo_copy)
    deadline = time.monotonic() + DEADLINE
    while True:
        bars = [b for b in bars_of(client.get("/timeline").text) if b.todo == "900"]
        if bars or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [outcome(b) for b in bars] == ["running"]


@pytest.fixture(scope="module")
def demo_timeline(demo_root: Path) -> Timeline:
    timeline = Timeline()
    log = open_log(demo_root)
    try:
        for e in log.read():
            timeline.apply(e)
    finally:
        log.close()
    return timeline


def render_static(timeline: Timeline, **kwargs: Any) -> str:
    return env.get_template("_timeline.html").render(static=True, **timeline_context(timeline, **kwargs))


def test_the_report_partial_links_bars_to_anchors_of_the_report(demo_timeline: Timeline) -> None:
    """With static=True and a todo_base (a file with todo sections) bars link to #todo-ID anchors,
    never to the server."""
    text = render_static(demo_timeline, todo_base="#todo-")
    bars = bars_of(text)
    assert len(bars) == len(demo_timeline.bars)
    assert all(b.href == f"#todo-{b.todo}" for b in bars)
    assert 'href="/' not in text and "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_report_partial_can_draw_bars_with_no_links(demo_timeline: Timeline) -> None:
    """By default (the report, which has no todo sections) bars link nowhere."""
    ctx = timeline_context(demo_timeline)
    text = env.get_template("_timeline.html").render(static=True, **ctx)
    assert bars_of(text) and all(b.href is None for b in bars_of(text))


def test_too_many_items_for_the_whole_run_are_summed_up_with_a_hint_to_zoom(demo_timeline: Timeline) -> None:
    """Past the drawing limit the all-phases view says how many attempts there are instead."""
    tl = layout(demo_timeline.view(limit=5))
    assert tl.bars == () and "zoom to a phase" in tl.summary


def test_a_phase_view_is_drawn_whole_past_the_limit(demo_timeline: Timeline) -> None:
    """Zooming is how one sees each attempt: a phase is never summed up."""
    tl = layout(demo_timeline.view(phase=1, limit=1))
    assert len(tl.bars) == len(demo_timeline.view(phase=1).bars) > 1 and tl.summary == ""


def test_an_empty_log_draws_an_empty_picture() -> None:
    """A run with no events yet renders (a timeline with nothing on it), it does not fail."""
    text = env.get_template("_timeline.html").render(static=True, **timeline_context(Timeline()))
    assert "No agent has started yet." in text and "<svg" in text
