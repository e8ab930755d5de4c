"""The dashboard's control buttons: POST /control/{action} appends the CLI's own requests.

Each test takes a copy of the demo run (its log is appended to) and reads what was appended back
through the store. With no daemon running a request is queued; with a real ``batchd run`` attached
to the copy, the daemon's answer comes back in the response.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import DaemonProcess
from starlette.testclient import TestClient

from daemon.workspace import open_log
from statemachine import events as ev
from store import EventLog, StoredEvent

CONTROL = {"X-Batchd-Control": "1"}


def control_events(root: Path) -> list[StoredEvent]:
    log = EventLog(root / ".batchd" / "events.db")
    try:
        return list(log.read(stream=ev.CONTROL_STREAM))
    finally:
        log.close()


def last_seq(root: Path) -> int:
    log = open_log(root)
    try:
        return log.last_seq()
    finally:
        log.close()


@pytest.fixture
def copy_client(demo_copy: Path, client_for: Callable[..., TestClient]) -> TestClient:
    return client_for(demo_copy)


def test_control_without_the_header_is_refused(demo_copy: Path, copy_client: TestClient) -> None:
    """A POST without X-Batchd-Control (a form on another web site) is refused with 403; nothing is
    appended."""
    before = last_seq(demo_copy)
    for action in ("pause", "resume"):
        answer = copy_client.post(f"/control/{action}")
        assert answer.status_code == 403
        assert "X-Batchd-Control" in answer.json()["error"]
    answer = copy_client.post("/control/retry", data={"todo_id": "282"})
    assert answer.status_code == 403
    assert last_seq(demo_copy) == before


def test_control_with_a_wrong_header_value_is_refused(demo_copy: Path, copy_client: TestClient) -> None:
    """Only the exact value 1 counts (a header some proxy adds empty is not our script's)."""
    assert copy_client.post("/control/pause", headers={"X-Batchd-Control": ""}).status_code == 403
    assert copy_client.post("/control/pause", headers={"X-Batchd-Control": "yes"}).status_code == 403
    assert control_events(demo_copy) == []


def test_pause_appends_a_pause_request_and_is_queued(demo_copy: Path, copy_client: TestClient) -> None:
    """Pause with the header appends a PauseRequested to the control stream; with no daemon
    running the answer is `queued`, shaped like `batchd pause --json`'s."""
    answer = copy_client.post("/control/pause", headers=CONTROL)
    assert answer.status_code == 200
    body = answer.json()
    [event] = control_events(demo_copy)
    assert event.type == "control.pause"
    assert isinstance(event.decode(), ev.PauseRequested)
    assert body == {
        "request": "pause",
        "seq": event.seq,
        "outcome": "queued",
        "detail": "no daemon is running; the next `batchd run` acts on it",
    }


def test_resume_appends_a_resume_request(demo_copy: Path, copy_client: TestClient) -> None:
    """Resume appends a ResumeRequested."""
    assert copy_client.post("/control/resume", headers=CONTROL).json()["outcome"] == "queued"
    assert [e.type for e in control_events(demo_copy)] == ["control.resume"]


def test_retry_by_form_names_the_todo_by_its_key(demo_copy: Path, copy_client: TestClient) -> None:
    """Retry of `0282` (a form field, as the file writes the id) appends RetryRequested for todo 282."""
    answer = copy_client.post("/control/retry", data={"todo_id": "0282"}, headers=CONTROL)
    assert answer.status_code == 200
    assert answer.json()["request"] == "retry #282"
    [event] = control_events(demo_copy)
    assert event.decode() == ev.RetryRequested(todo_id="282")


def test_cancel_by_json_appends_a_cancel_request(demo_copy: Path, copy_client: TestClient) -> None:
    """Cancel with a JSON body appends CancelRequested for that todo."""
    answer = copy_client.post("/control/cancel", json={"todo_id": "282"}, headers=CONTROL)
    assert answer.status_code == 200
    [event] = control_events(demo_copy)
    assert event.decode() == ev.CancelRequested(todo_id="282")


def test_the_buttons_append_what_the_cli_appends(demo_copy: Path, copy_client: TestClient) -> None:
    """The dashboard's retry and `batchd retry` append the same event, and answer the same fields."""
    web = copy_client.post("/control/retry", data={"todo_id": "282"}, headers=CONTROL).json()
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "retry", "282", "--json", "-C", str(demo_copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cli = json.loads(done.stdout)
    first, second = control_events(demo_copy)
    assert (first.type, first.payload) == (second.type, second.payload)
    assert set(web) == set(cli) and (web["request"], web["outcome"]) == (cli["request"], cli["outcome"])


def test_retry_of_an_unknown_todo_is_404(demo_copy: Path, copy_client: TestClient) -> None:
    """Retry of a todo the log does not know answers 404 with the CLI's message; nothing is appended."""
    answer = copy_client.post("/control/retry", data={"todo_id": "99999"}, headers=CONTROL)
    assert answer.status_code == 404
    assert answer.json()["error"] == "no todo #99999 in the log"
    assert control_events(demo_copy) == []


def test_retry_without_a_todo_is_400(demo_copy: Path, copy_client: TestClient) -> None:
    """Retry with no todo_id (or a body that is not JSON) says what is missing; nothing is appended."""
    assert copy_client.post("/control/retry", headers=CONTROL).status_code == 400
    garbage = {**CONTROL, "Content-Type": "application/json"}
    assert copy_client.post("/control/retry", content=b"{not json", headers=garbage).status_code == 400
    assert control_events(demo_copy) == []


def test_unknown_action_is_404_and_get_is_405(demo_copy: Path, copy_client: TestClient) -> None:
    """Only pause, resume, retry and cancel exist, and only as POST."""
    assert copy_client.post("/control/drop-database", headers=CONTROL).status_code == 404
    assert copy_client.get("/control/pause").status_code == 405
    assert control_events(demo_copy) == []


def test_a_running_daemon_answers_the_button(
    demo_copy: Path, copy_client: TestClient, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """With `batchd run` attached to the log, pause waits for the daemon's answer and returns it."""
    daemon = start_daemon(demo_copy)
    daemon.wait_events("run.daemon_attached", count=2, timeout=60)
    answer = copy_client.post("/control/pause", headers=CONTROL).json()
    assert answer["outcome"] == "done", answer
    handled = [e for e in control_events(demo_copy) if e.type == "control.handled"]
    assert [e.payload["request_seq"] for e in handled] == [answer["seq"]]
