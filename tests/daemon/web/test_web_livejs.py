"""``static/live.js`` in a real browser (Debian's Chromium, driven by Playwright) against a real
uvicorn server: a page follows the log with no reload, and the control buttons send what the
server's CSRF rule needs.

The dashboard's own pages belong to another module; these tests serve a small page of their own
that extends ``base.html`` (as every page does) and a stand-in control endpoint that records what
it receives, so they test the script's side of the contract only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import served, wait_for
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from daemon.web.render import FRAGMENT_HEADER, env
from statemachine import events as ev
from store import EventLog

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (installed by .ci/run)"
)

PAGE = env.from_string(
    '{% extends "base.html" %}{% block main %}'
    '<p id="shown">{{ last_seq }}</p><div id="wide" style="height:80px;overflow:auto">'
    '<div style="height:2000px">tall</div></div>'
    '<button data-control="retry" data-todo="{{ todo }}">Retry</button>'
    "{% endblock %}"
)


def page_endpoint(request: Request) -> Response:
    model = request.app.state.model
    ctx = {
        "request": request,
        "url_for": request.url_for,
        "last_seq": model.last_seq,
        "static": False,
        "todo": "<b>7</b>",
    }
    if request.headers.get(FRAGMENT_HEADER) == "1":
        return HTMLResponse("".join(PAGE.blocks["main"](PAGE.new_context(ctx))))
    return HTMLResponse(PAGE.render(ctx))


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_page_follows_the_log_without_reload(demo_copy: Path, browser: Any, tmp_path: Path) -> None:
    """An event appended to the log shows on an open page (its main swapped in), with no reload."""
    received: list[tuple[str, str, str]] = []

    async def control(request: Request) -> Response:
        form = (await request.body()).decode()
        received.append((request.path_params["action"], request.headers.get("x-batchd-control", ""), form))
        return PlainTextResponse("retry #7: queued")

    with served(demo_copy) as app:
        routes = app.app.router.routes
        routes.insert(0, Route("/live-test", page_endpoint))
        routes.insert(0, Route("/control/{action}", control, methods=["POST"]))
        # The test's own probes (wait_for_function) are evaluated strings, which the dashboard's
        # policy forbids; the dashboard's scripts are held to it in test_web_browser.
        page = browser.new_page(bypass_csp=True)
        page.goto(f"{app.url}/live-test")
        start = app.model.last_seq
        page.evaluate("window.__same_document = true")
        page.locator("#wide").evaluate("el => { el.scrollTop = 500; }")
        page.wait_for_function("document.getElementById('live-state').textContent === 'live'")
        with EventLog(demo_copy / ".batchd" / "events.db") as log:
            (stored,) = log.append(
                ev.CONTROL_STREAM, [ev.PauseRequested(reason="<img src=x onerror=alert(1)>")]
            )
        page.wait_for_function(
            f"document.getElementById('shown').textContent === '{stored.seq}'", timeout=15_000
        )
        assert stored.seq > start
        assert page.evaluate("window.__same_document") is True  # swapped in place, not reloaded
        assert page.evaluate("document.body.dataset.lastSeq") == str(stored.seq)
        assert page.locator("#wide").evaluate("el => el.scrollTop") == 500
        page.screenshot(path=str(tmp_path / "live.png"))

        page.click("button[data-control]")
        page.wait_for_function(
            "document.getElementById('control-answer')?.textContent === 'retry #7: queued'"
        )
        wait_for(lambda: bool(received), "the control request")
    action, header, form = received[0]
    assert (action, header) == ("retry", "1")
    assert form == "todo_id=%3Cb%3E7%3C%2Fb%3E"


def test_page_too_far_behind_reloads(demo_copy: Path, browser: Any) -> None:
    """A page whose seq the stream no longer has reloads itself, and shows the current seq."""
    with served(demo_copy) as app:
        routes = app.app.router.routes
        routes.insert(0, Route("/live-test", page_endpoint))
        # The test's own probes (wait_for_function) are evaluated strings, which the dashboard's
        # policy forbids; the dashboard's scripts are held to it in test_web_browser.
        page = browser.new_page(bypass_csp=True)
        page.goto(f"{app.url}/live-test")
        page.wait_for_function("document.getElementById('live-state').textContent === 'live'")
        page.evaluate("window.__same_document = true")
        # The stream now reconnects from a seq older than anything kept: it must answer `reload`.
        page.evaluate("document.body.dataset.lastSeq = '0'")
        page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide'))")
        page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
        page.wait_for_function("window.__same_document === undefined", timeout=15_000)
        assert page.locator("#shown").text_content() == str(app.model.last_seq)


STREAM_PAGE = env.from_string(
    '{% extends "base.html" %}{% block main %}'
    '<p id="shown" data-stream="todo-282">{{ last_seq }}</p>'
    "{% endblock %}"
)


def stream_page_endpoint(request: Request) -> Response:
    ctx = {"request": request, "url_for": request.url_for, "last_seq": request.app.state.model.last_seq}
    if request.headers.get(FRAGMENT_HEADER) == "1":
        return HTMLResponse("".join(STREAM_PAGE.blocks["main"](STREAM_PAGE.new_context(ctx))))
    return HTMLResponse(STREAM_PAGE.render(ctx))


def test_a_page_of_one_stream_refreshes_only_on_its_events(demo_copy: Path, browser: Any) -> None:
    """A page whose main names a stream (a todo's page) is not fetched again for another stream's
    event, and is for its own."""
    with served(demo_copy) as app:
        app.app.router.routes.insert(0, Route("/stream-test", stream_page_endpoint))
        page = browser.new_page(bypass_csp=True)  # the test's probes are evaluated strings (above)
        page.goto(f"{app.url}/stream-test")
        start = app.model.last_seq
        page.wait_for_function("document.getElementById('live-state').textContent === 'live'")
        # Whether a refresh was scheduled, seen right after the handler that took the event ran.
        page.evaluate(
            "window.__pending = [];"
            "new MutationObserver(() => window.__pending.push(window.batchd.pending()))"
            ".observe(document.body, {attributes: true, attributeFilter: ['data-last-seq']})"
        )
        with EventLog(demo_copy / ".batchd" / "events.db") as log:
            (other,) = log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason="not this page's")])
        page.wait_for_function(f"document.body.dataset.lastSeq === '{other.seq}'", timeout=15_000)
        assert page.evaluate("window.__pending") == [False]
        assert page.locator("#shown").text_content() == str(start)
        page.evaluate("document.getElementById('shown').dataset.stream = 'control'")
        with EventLog(demo_copy / ".batchd" / "events.db") as log:
            (own,) = log.append(ev.CONTROL_STREAM, [ev.ResumeRequested()])
        page.wait_for_function(
            f"document.getElementById('shown').textContent === '{own.seq}'", timeout=15_000
        )
