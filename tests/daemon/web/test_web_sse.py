"""The live stream ``/api/stream`` on a real uvicorn server serving a copy of the demo run's log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from live_server import DEADLINE, SSEClient, serve_env, served, wait_for, write_unreadable_row

from statemachine import events as ev
from store import EventLog

# A row written behind the store's back, whose payload is not JSON.


def pause_with_cli(root: Path, reason: str) -> None:
    """``batchd pause`` as a person types it: the request the dashboard must show."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "pause", "--no-wait", "-C", str(root), "--reason", reason],
        capture_output=True,
        text=True,
        env=serve_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_appended_event_arrives_on_the_stream(demo_copy: Path) -> None:
    """A request appended by the CLI reaches a connected page as a `log` event with its seq."""
    with served(demo_copy) as app:
        start = app.model.last_seq
        client = SSEClient(app.port, f"/api/stream?since={start}")
        try:
            assert client.status == 200
            assert client.response_headers["content-type"].startswith("text/event-stream")
            pause_with_cli(demo_copy, "<script>alert(1)</script>")
            got = client.next("log")
        finally:
            client.close()
    data = got.json()
    assert got.id == str(data["seq"])
    assert data["seq"] > start
    assert data["stream"] == ev.CONTROL_STREAM
    assert data["type"] == "control.pause"
    assert set(data) == {"seq", "stream", "type", "recorded_at", "summary"}
    assert "<script>alert(1)</script>" in data["summary"]  # JSON text; the page never renders it as markup


def test_events_arrive_in_order_after_since(demo_copy: Path) -> None:
    """Every event after the page's seq arrives once, in order, each id its seq."""
    with served(demo_copy) as app:
        start = app.model.last_seq
        client = SSEClient(app.port, f"/api/stream?since={start}")
        try:
            with EventLog(demo_copy / ".batchd" / "events.db") as log:
                stored = log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason=f"r{n}") for n in range(5)])
            ids = [int(client.next("log").id or 0) for _ in stored]
        finally:
            client.close()
    assert ids == [s.seq for s in stored]


def test_last_event_id_resumes_where_the_client_was(demo_copy: Path) -> None:
    """A reconnecting EventSource (Last-Event-ID) gets what it missed, though its URL names an older seq."""
    with served(demo_copy) as app:
        start = app.model.last_seq
        with EventLog(demo_copy / ".batchd" / "events.db") as log:
            first, second = log.append(
                ev.CONTROL_STREAM, [ev.PauseRequested(reason="a"), ev.ResumeRequested()]
            )
        wait_for(lambda: app.model.last_seq == second.seq, "the model to follow")
        client = SSEClient(app.port, f"/api/stream?since={start}", headers={"Last-Event-ID": str(first.seq)})
        try:
            got = client.next("log")
        finally:
            client.close()
    assert got.id == str(second.seq)


def test_client_far_behind_is_told_to_reload(demo_copy: Path) -> None:
    """A page whose seq is older than the events kept gets `reload` (it reloads the whole page)."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, "/api/stream?since=0")
        try:
            got = client.next("reload")
            client.wait_end()
        finally:
            client.close()
    assert got.json() == {"since": 0}


def test_seq_from_another_log_is_told_to_reload(demo_copy: Path) -> None:
    """A page showing a seq this log never reached (another log, now replaced) reloads."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, f"/api/stream?since={app.model.last_seq + 1000}")
        try:
            client.next("reload")
        finally:
            client.close()


def test_since_that_is_not_a_number_is_400(demo_copy: Path) -> None:
    """A malformed ?since= is answered 400, not a stream."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, "/api/stream?since=abc")
        try:
            assert client.status == 400
        finally:
            client.close()


def test_disconnect_drops_the_subscriber(demo_copy: Path) -> None:
    """A browser tab that closes leaves no subscriber behind in the model."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, f"/api/stream?since={app.model.last_seq}")
        wait_for(lambda: app.model.subscriber_count == 1, "the stream to subscribe")
        client.close()
        wait_for(lambda: app.model.subscriber_count == 0, "the subscriber to be dropped")


def test_server_stop_ends_open_streams(demo_copy: Path) -> None:
    """Stopping the server with a page connected ends its stream cleanly (uvicorn does not hang)."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, f"/api/stream?since={app.model.last_seq}")
        wait_for(lambda: app.model.subscriber_count == 1, "the stream to subscribe")
        app.server.should_exit = True
        client.wait_end()
    assert client.ended_cleanly
    assert app.model.subscriber_count == 0


def test_a_log_edited_under_the_server_is_reported_stale(demo_copy: Path) -> None:
    """A row that is not JSON (the log edited by hand) stops the follower; pages are told why."""
    with served(demo_copy) as app:
        client = SSEClient(app.port, f"/api/stream?since={app.model.last_seq}")
        try:
            wait_for(lambda: app.model.subscriber_count == 1, "the stream to subscribe")
            write_unreadable_row(demo_copy, app.model.last_seq + 1)
            got = client.next("stale", timeout=DEADLINE)
        finally:
            client.close()
    assert "stopped following the log" in got.json()["error"]
