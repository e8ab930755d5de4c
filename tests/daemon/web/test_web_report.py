"""``batchd report --html FILE``: one self-contained HTML file of the run and its timeline.

Every test runs the real command (a subprocess) on the real demo run of ``conftest.demo_root``, or on
a copy with events appended, and reads the file back with the standard library's HTML parser.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from procs import batchd

import statemachine.events as ev
from daemon.web import timeline_view
from daemon.web.report import build_report, static_url_for
from daemon.workspace import open_log
from statemachine.projection import replay
from store import StoredEvent

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Page(HTMLParser):
    """Every start tag of a document, with its attributes, and the text of its ``<script>``s."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data

    def elements(self, tag: str, *attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(k in a for k in attrs)]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def write_report(root: Path, out: Path) -> dict[str, object]:
    done = batchd(root, "report", "--html", str(out), "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def events_of(root: Path) -> list[StoredEvent]:
    log = open_log(root)
    try:
        return list(log.read(since=0))
    finally:
        log.close()


def attempts_of(root: Path) -> Counter[tuple[str, str]]:
    """(todo id key, attempt) of every agent start in the log."""
    return Counter(
        (e.payload["todo_id"], str(e.payload["attempt"]))
        for e in events_of(root)
        if e.type == "todo.agent_started"
    )


def add_hostile_todo(root: Path) -> None:
    """A todo titled with markup, queued, planned and with an agent running (a bar of its own)."""
    log = open_log(root)
    try:
        log.append(
            ev.todo_stream("999"),
            [
                ev.TodoQueued(
                    todo_id="999", path="todos/999-ready-p1-x.md", title=HOSTILE, priority="p1", digest="x"
                ),
                ev.TodoPlanned(todo_id="999", batch="9.1", phase=9),
                ev.AgentStarted(
                    todo_id="999",
                    attempt=1,
                    batch="9.1",
                    worktree="/nonexistent",
                    branch="batchd/999",
                    base_sha="0" * 40,
                    log_path=".batchd/logs/999-1.log",
                ),
            ],
            expected_version=0,
        )
    finally:
        log.close()


@pytest.fixture(scope="module")
def report(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """The demo run's report, written once for the read-only checks."""
    out = tmp_path_factory.mktemp("report") / "run.html"
    return out, write_report(demo_root, out)


def test_report_prints_path_size_and_events(demo_root: Path, report: tuple[Path, dict[str, object]]) -> None:
    """`--json` says where the file is, its size in bytes and how many events it shows."""
    out, data = report
    assert data == {"path": str(out), "bytes": out.stat().st_size, "events": len(events_of(demo_root))}


def test_report_says_where_it_wrote_without_json(demo_root: Path, tmp_path: Path) -> None:
    """Without --json the command prints the file's path and size."""
    out = tmp_path / "r.html"
    done = batchd(demo_root, "report", "--html", str(out))
    assert done.returncode == 0, done.stderr
    events = len(events_of(demo_root))
    assert done.stdout.strip() == f"{out}: {out.stat().st_size:,} bytes ({events:,} events)"


def test_report_is_an_html_document(report: tuple[Path, dict[str, object]]) -> None:
    """The file is one HTML document (doctype, head, body) that the HTML parser reads whole."""
    out, _ = report
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    page = parse(text)
    assert [t for t, _ in page.tags[:3]] == ["html", "head", "meta"]
    assert page.elements("body") and page.elements("main")


def test_report_lists_every_todo(demo_root: Path, report: tuple[Path, dict[str, object]]) -> None:
    """Each todo of the run has its row (with the id as its files write it) in the report."""
    out, _ = report
    log = open_log(demo_root)
    try:
        proj = replay(log)
    finally:
        log.close()
    rows = {a["data-todo"] for a in parse(out.read_text(encoding="utf-8")).elements("tr", "data-todo")}
    assert rows == {proj.shown(t) for t in proj.todos}
    assert len(proj.todos) > 20


def test_report_has_a_bar_per_attempt(demo_root: Path, report: tuple[Path, dict[str, object]]) -> None:
    """The timeline in the report has one bar for every agent attempt the log records."""
    out, _ = report
    bars = parse(out.read_text(encoding="utf-8")).elements("rect", "data-todo", "data-attempt")
    bars = [b for b in bars if "bar" in b.get("class", "").split()]
    assert Counter((b["data-todo"], b["data-attempt"]) for b in bars) == attempts_of(demo_root)


def test_report_needs_no_network_and_no_server(report: tuple[Path, dict[str, object]]) -> None:
    """Nothing in the file is fetched: no outside host, no /static, no server route, no src or
    stylesheet link; its links only jump within the file."""
    out, _ = report
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    urls = [
        (tag, key, value)
        for tag, attrs in page.tags
        for key, value in attrs.items()
        if key in {"href", "src", "action", "data", "poster", "srcset", "xlink:href", "formaction"}
    ]
    assert all(key in {"href", "xlink:href"} and value.startswith("#") for _, key, value in urls), urls
    assert not page.elements("link") and not page.elements("iframe")
    without_namespaces = re.sub(r'xmlns(:\w+)?="[^"]*"', "", text)
    assert not re.search(r"https?://|/static/|/api/|url\((?!#)", without_namespaces)


def test_report_inlines_the_stylesheet(report: tuple[Path, dict[str, object]]) -> None:
    """The dashboard's stylesheet is inside the file, so the report looks the same offline."""
    out, _ = report
    text = out.read_text(encoding="utf-8")
    assert "<style>" in text and "header.top" in text


def test_report_escapes_a_hostile_title(demo_copy: Path, tmp_path: Path) -> None:
    """A todo titled with markup is shown as text: no element of it reaches the document."""
    add_hostile_todo(demo_copy)
    out = tmp_path / "r.html"
    write_report(demo_copy, out)
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not page.elements("img") and not any("onerror" in a for _, a in page.tags)
    assert not any("alert(" in script for script in page.scripts)


def test_report_refuses_a_folder(demo_root: Path, tmp_path: Path) -> None:
    """A folder given as the file is refused (usage error) and left as it was."""
    (tmp_path / "keep").write_text("x", encoding="utf-8")
    done = batchd(demo_root, "report", "--html", str(tmp_path))
    assert done.returncode == 2
    assert "is a folder" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_report_replaces_an_old_report_and_leaves_no_temporary_file(demo_root: Path, tmp_path: Path) -> None:
    """Writing over an earlier report replaces it whole; nothing else is left in its folder."""
    out = tmp_path / "r.html"
    out.write_text("old report", encoding="utf-8")
    write_report(demo_root, out)
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_report_refuses_a_missing_folder(demo_root: Path, tmp_path: Path) -> None:
    """A file in a folder that does not exist is a usage error naming that folder."""
    done = batchd(demo_root, "report", "--html", str(tmp_path / "nope" / "r.html"))
    assert done.returncode == 2
    assert f"no folder {tmp_path / 'nope'}" in done.stderr


def test_report_links_only_pages_it_contains() -> None:
    """The report's links stay in the file; a page it cannot hold (a todo's, a log) is an error when
    rendering, not a dead link."""
    assert static_url_for("timeline") == "#timeline"
    with pytest.raises(LookupError, match="agent_log"):
        static_url_for("agent_log", todo_id="007", attempt=1)
    with pytest.raises(LookupError, match="todo"):
        static_url_for("todo", todo_id="007")


def bars_of(text: str) -> Counter[tuple[str, str]]:
    bars = parse(text).elements("rect", "data-todo", "data-attempt")
    return Counter((b["data-todo"], b["data-attempt"]) for b in bars if "bar" in b.get("class", "").split())


def test_a_run_too_big_for_one_picture_has_one_per_phase(
    demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with more bars than the all-phases picture draws (it then only sums them up) still shows
    every attempt in its report: each phase has a picture of its own, every bar drawn once."""
    monkeypatch.setattr(timeline_view, "MAX_DRAWN", 3)
    text = build_report(demo_root).html
    assert 'class="tl-summary"' in text  # the all-phases picture summed the bars up
    assert bars_of(text) == attempts_of(demo_root)
    with open_log(demo_root) as log:
        phases = {p.number for p in replay(log).phases.values()}
    headings = {int(h["id"].rsplit("-", 1)[1]) for h in parse(text).elements("h3", "id")}
    assert headings == phases and len(phases) > 1


def test_a_report_with_a_picture_per_phase_repeats_no_id(
    demo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id in the report is unique (the running bars' stripe pattern is defined once), so a
    link or a ``url(#...)`` in it names one element."""
    monkeypatch.setattr(timeline_view, "MAX_DRAWN", 3)
    markup = re.sub(r"<script>.*?</script>", "", build_report(demo_root).html, flags=re.S)
    ids = re.findall(r'\bid="([^"]*)"', markup)
    assert ids and len(ids) == len(set(ids)), sorted(i for i in set(ids) if ids.count(i) > 1)
    assert ids.count("tl-stripes") == 1


def test_a_small_run_has_one_picture(report: tuple[Path, dict[str, object]]) -> None:
    """A run the all-phases picture draws whole has just that one (no picture per phase)."""
    out, _ = report
    text = out.read_text(encoding="utf-8")
    assert 'id="timeline-phase-' not in text
    assert text.count('class="timeline"') == 1
