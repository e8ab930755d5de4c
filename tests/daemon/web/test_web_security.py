"""What the dashboard does against other web sites and odd input: no framing, no inline script,
no link with a script scheme, strict numbers in query strings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from daemon.web import pagedata
from daemon.web.auth import SECURITY_HEADERS
from daemon.web.query import query_int
from daemon.web.render import env
from daemon.workspace import open_log
from statemachine.projection import replay


@pytest.mark.parametrize("path", ["/", "/timeline", "/events", "/metrics", "/static/live.js", "/nowhere"])
def test_every_answer_forbids_framing_and_inline_script(client: TestClient, path: str) -> None:
    """A page of the dashboard inside another site's hidden frame would have its buttons pressed
    by a click there (running the dashboard's own script): every answer, a 404 too, forbids frames,
    and pages run only the dashboard's own script files."""
    answer = client.get(path)
    for name, value in SECURITY_HEADERS:
        assert answer.headers[name.decode()] == value.decode(), (path, name)
    policy = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy


def test_a_refused_request_carries_the_headers_too(client_for: Any, demo_copy: Path) -> None:
    """The 401 of a dashboard with a token is not frameable either."""
    guarded = client_for(demo_copy, token="a-long-enough-token-1234")
    answer = guarded.get("/")
    assert answer.status_code == 401
    assert answer.headers["x-frame-options"] == "DENY"


def _run_page_with_request_url(root: Path, url: str) -> str:
    log = open_log(root)
    try:
        proj = replay(log)
    finally:
        log.close()
    ctx = pagedata.run_context(proj, datetime.now(UTC))
    ctx["run"]["request_url"] = url
    return env.get_template("run.html").render(
        ctx, static=False, last_seq=proj.last_seq, url_for=lambda name, **kw: f"/{name}"
    )


def test_a_script_scheme_pull_request_url_is_shown_as_text(demo_root: Path) -> None:
    """The request command's output names the pull request's URL; one such as
    ``javascript://x/%0aalert(1)`` (an agent can write the command's output) is shown, never linked."""
    text = _run_page_with_request_url(demo_root, "javascript://x/%0aalert(document.domain)")
    assert "javascript://x/%0aalert(document.domain)" in text
    assert 'href="javascript:' not in text


def test_an_https_pull_request_url_is_a_link(demo_root: Path) -> None:
    """The usual case: the forge's https URL is a link."""
    text = _run_page_with_request_url(demo_root, "https://forge.example/r/1/pull/7")
    assert 'href="https://forge.example/r/1/pull/7"' in text


@pytest.mark.parametrize("text", ["²", "١٢", "1" * 5000, "-1", "1e3", " "])
def test_a_number_in_a_query_is_plain_ascii_digits(text: str) -> None:
    """ "²".isdigit() is true and int() refuses it; 5,000 digits pass isdigit and int() refuses
    them: neither is a number here."""
    assert query_int(text) is None


def test_odd_digits_in_the_query_are_a_clear_answer_not_a_server_error(client: TestClient) -> None:
    """/timeline?phase=² is a 400 naming the problem; /events?limit=² falls back to the default."""
    timeline = client.get("/timeline", params={"phase": "²"})
    assert timeline.status_code == 400 and "phase must be a phase number" in timeline.text
    assert client.get("/events", params={"limit": "²", "before": "9" * 5000}).status_code == 200
