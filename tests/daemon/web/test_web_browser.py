"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

The demo run is served by a real uvicorn server on a free loopback port (``live_server.served``: the
server ``batchd serve`` runs, in a thread of the test process), and Chromium loads its pages as a
person's browser would: the timeline's bars, a click through to a todo's page, a live update with no
reload, and the offline ``report --html`` file.

Playwright drives the system's ``/usr/bin/chromium`` (``executable_path``): it never downloads a
browser. Without Chromium the tests skip, except under ``BATCHD_REQUIRE_BROWSER=1`` (set by
``.ci/run``), where they fail: CI must not pass without having run them. Every wait has a deadline
(Playwright's timeouts, and pytest-timeout above them), so a hung browser fails a test rather than
hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_server import Served, served
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from procs import batchd

from daemon.workspace import open_log

CHROMIUM = "/usr/bin/chromium"
# As measured on these machines: without the networking flags Chromium keeps trying outside hosts
# (refused by the closed network) and stalls; no sandbox because CI runs as root. Playwright gives
# every launch a fresh, empty profile (its own --user-data-dir) and removes it at close.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000
STEP_TIMEOUT_MS = 10_000  # one navigation, click or wait; the live update is asked within 5 s
BAR = "rect.bar[data-todo][data-attempt]"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the browser ------------------------------------------------------------------------------


def chromium_or_skip() -> str:
    """The Chromium to drive; skips (or fails, where CI requires it) when there is none."""
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    why = f"no Chromium at {CHROMIUM} or on PATH (install Debian's `chromium` package; .ci/run does)"
    if os.environ.get("BATCHD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BATCHD_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for this module's tests, closed at the end."""
    executable = chromium_or_skip()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """A browser page of its own context, with the script errors it raised."""

    page: Page
    errors: list[str]
    outside: list[str]  # requests that left the origin under test (there must be none)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    """A fresh page (its own cookies and cache) that records script errors and outside requests."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    found = Tab(page=page, errors=[], outside=[])
    page.on("pageerror", lambda error: found.errors.append(str(error)))

    def only_local(route: Route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "file://", "data:")):
            route.continue_()
        else:
            found.outside.append(url)
            route.abort()

    context.route("**/*", only_local)
    try:
        yield found
    finally:
        context.close()


# -- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_demo(demo_root: Path) -> Iterator[Served]:
    """The finished demo run's dashboard, served as `batchd serve` serves it."""
    with served(demo_root) as server:
        yield server


# -- what the log says ------------------------------------------------------------------------


def attempts_of(root: Path) -> Counter[tuple[str, str]]:
    """(todo id key, attempt) of every agent start in the log."""
    log = open_log(root)
    try:
        return Counter(
            (e.payload["todo_id"], str(e.payload["attempt"]))
            for e in log.read(since=0)
            if e.type == "todo.agent_started"
        )
    finally:
        log.close()


def bars_on(page: Page) -> Counter[tuple[str, str]]:
    pairs = page.eval_on_selector_all(BAR, "els => els.map(e => [e.dataset.todo, e.dataset.attempt])")
    return Counter((todo, attempt) for todo, attempt in pairs)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes: an empty page?"


# -- the tests --------------------------------------------------------------------------------


def test_timeline_has_a_bar_for_every_attempt(served_demo: Served, demo_root: Path, tab: Tab) -> None:
    """The timeline, as a browser draws it, has one bar per agent attempt the log records."""
    tab.page.goto(f"{served_demo.url}/timeline")
    tab.page.locator(BAR).first.wait_for()
    assert bars_on(tab.page) == attempts_of(demo_root)
    assert tab.errors == [] and tab.outside == []


def test_clicking_a_bar_opens_its_todo_page(served_demo: Served, tab: Tab, tmp_path: Path) -> None:
    """Clicking an attempt's bar lands on that todo's page (its id in the heading); the screenshots
    of both pages are real images."""
    page = tab.page
    page.goto(f"{served_demo.url}/timeline")
    bar = page.locator(BAR).last
    todo_id = bar.get_attribute("data-todo")
    assert todo_id
    page.screenshot(path=str(tmp_path / "timeline.png"), full_page=True)
    bar.click()
    page.wait_for_url(f"**/todo/{todo_id}")
    expect(page.locator("h1")).to_contain_text(todo_id)
    shot = tmp_path / "todo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert_png(tmp_path / "timeline.png")
    assert_png(shot)
    assert tab.errors == [] and tab.outside == []


def test_events_page_shows_a_new_event_without_reload(demo_copy: Path, tab: Tab) -> None:
    """An event appended to the log (here `batchd pause`) appears on the open events page within
    seconds, with no reload of the page."""
    with served(demo_copy) as server:
        page = tab.page
        page.goto(f"{server.url}/events")
        page.evaluate("window.__notReloaded = true")
        shown = int(page.locator("body").get_attribute("data-last-seq") or "0")
        done = batchd(demo_copy, "pause", "--no-wait", "--json")
        assert done.returncode == 0, done.stderr
        seq = json.loads(done.stdout)["seq"]
        assert seq > shown
        page.wait_for_function(
            "seq => document.querySelector('main#live').innerText.includes('control.pause')"
            " && document.querySelector('main#live').innerText.includes(String(seq))",
            arg=seq,
            timeout=5_000,
        )
        assert page.evaluate("window.__notReloaded") is True
    assert tab.errors == [] and tab.outside == []


def test_report_file_shows_the_bars_offline(demo_root: Path, tab: Tab, tmp_path: Path) -> None:
    """The `report --html` file, opened from disk, draws a bar per attempt and asks for nothing
    from any server."""
    out = tmp_path / "report.html"
    done = batchd(demo_root, "report", "--html", str(out))
    assert done.returncode == 0, done.stderr
    tab.page.goto(out.as_uri())
    tab.page.locator(BAR).first.wait_for()
    assert bars_on(tab.page) == attempts_of(demo_root)
    shot = tmp_path / "report.png"
    tab.page.screenshot(path=str(shot), full_page=True)
    assert_png(shot)
    assert tab.errors == [] and tab.outside == []
