"""``batchd serve`` as a person runs it: a real subprocess on the demo run's log."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from live_server import DEADLINE, SSEClient, serve_env, serve_process, wait_for

from daemon.exceptions import UsageError
from daemon.web.server import bind_socket
from statemachine import events as ev
from store import EventLog


def batchd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else serve_env(),
        timeout=60,
        check=False,
    )


def test_help_names_every_option() -> None:
    """`batchd serve --help` documents the address, the port, the token and its variable."""
    done = batchd("serve", "--help")
    assert done.returncode == 0
    for option in ("--host", "--port", "--token", "BATCHD_TOKEN", "-C", "--db", "--access-log", "--json"):
        assert option in done.stdout


def test_prints_its_address_and_the_log(demo_root: Path) -> None:
    """The first line says where to point the browser, which log it serves and how long it is."""
    with serve_process(["-C", str(demo_root), "--port", "0"]) as served:
        line = served.first_line
        assert line.startswith(f"batchd serve: http://127.0.0.1:{served.port}/ (log: ")
        assert "events)" in line
        assert served.stop(signal.SIGTERM) == 0


def test_json_prints_the_address_for_scripts(demo_root: Path) -> None:
    """`--json`: one JSON line a script reads the port from."""
    with serve_process(["-C", str(demo_root), "--port", "0", "--json"]) as served:
        data = json.loads(served.first_line)
        assert data["url"] == f"http://127.0.0.1:{data['port']}/"
        assert data["events"] > 0
        assert served.stop(signal.SIGTERM) == 0


def test_port_in_use_is_a_usage_error(demo_root: Path) -> None:
    """A port another program holds: exit 2 with what to do, not a traceback."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        done = batchd("serve", "-C", str(demo_root), "--port", str(port))
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert "--port 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_bind_socket_port_in_use_raises_usage_error() -> None:
    """The same rule in-process: UsageError (exit 2)."""
    with socket.create_server(("127.0.0.1", 0)) as holder, pytest.raises(UsageError) as caught:
        bind_socket("127.0.0.1", holder.getsockname()[1])
    assert caught.value.exit_code == 2


def test_unknown_host_is_a_usage_error(demo_root: Path) -> None:
    """A --host that is no address: exit 2, naming it."""
    done = batchd("serve", "-C", str(demo_root), "--host", "no-such-host.invalid", "--port", "0")
    assert done.returncode == 2
    assert "no-such-host.invalid" in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_a_stream_open(demo_root: Path, signum: int) -> None:
    """SIGTERM (systemd) or Ctrl-C with a browser's event stream connected: the stream ends, exit 0."""
    with serve_process(["-C", str(demo_root), "--port", "0"]) as served:
        client = SSEClient(served.port, "/api/stream")
        try:
            assert client.status == 200
            assert served.stop(signum) == 0
            client.wait_end()
        finally:
            client.close()
        err = served.stderr()
    assert client.ended_cleanly
    assert f"stopped ({signal.Signals(signum).name})" in err
    assert "Traceback" not in err


def test_long_log_shows_fold_progress(demo_copy: Path) -> None:
    """On a long log the fold reports its progress on stderr, and stdout stays one line for scripts."""
    with EventLog(demo_copy / ".batchd" / "events.db") as log:
        log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason=f"r{n}") for n in range(12_000)])
    with serve_process(["-C", str(demo_copy), "--port", "0"]) as served:
        assert served.stop(signal.SIGTERM) == 0
        out, err = served.rest_of_stdout(), served.stderr()
    assert "batchd serve: folding the log: 10,000 events" in err
    assert out == ""  # nothing after the address line
    assert "12," in served.first_line


def test_clients_hanging_up_mid_burst_do_not_flood_the_log(demo_copy: Path) -> None:
    """Pages that close while a burst of events streams to them cost no flood of errors on stderr
    (a journal), and the server still stops at once."""
    with serve_process(["-C", str(demo_copy), "--port", "0"]) as served:
        with EventLog(demo_copy / ".batchd" / "events.db") as log:
            start = log.last_seq()
            clients = [SSEClient(served.port, f"/api/stream?since={start}") for _ in range(10)]
            for _ in range(4):
                log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason="r" * 200) for _ in range(1500)])
        for client in clients:
            client.close()
        assert served.stop(signal.SIGTERM) == 0
        err = served.stderr()
    assert "socket.send() raised exception" not in err
    assert "Traceback" not in err


def test_sigterm_during_the_fold_exits_0(demo_copy: Path) -> None:
    """A stop asked for while a long log is still being folded (systemd stopping the unit) is a
    clean exit 0, whether it lands in the fold or just after."""
    with EventLog(demo_copy / ".batchd" / "events.db") as log:
        log.append(ev.CONTROL_STREAM, [ev.PauseRequested(reason=f"r{n}") for n in range(40_000)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "-C", str(demo_copy), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_env(),
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "folding the log" in first
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert "stopped" in rest
    assert "Traceback" not in rest


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET (a redirect is not followed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_access_log_logs_each_request_on_stderr_without_the_token(demo_root: Path) -> None:
    """`--access-log` writes one line per request on stderr (a journal), and a token given in the
    address (a browser's first visit) shows there as ***, never as itself; stdout stays one line."""
    token = "s3cret-token-" + "x" * 20
    env = serve_env(BATCHD_TOKEN=token)
    with serve_process(["-C", str(demo_root), "--port", "0", "--access-log"], env=env) as served:
        assert get(served.port, f"/?token={token}&state=blocked") == 303
        assert get(served.port, "/api/status", {"Authorization": f"Bearer {token}"}) == 200
        wait_for(lambda: "/api/status" in "".join(served.stderr_lines), "the access lines")
        assert served.stop(signal.SIGTERM) == 0
        out, err = served.rest_of_stdout(), served.stderr()
    assert '"GET /?token=***&state=blocked HTTP/1.1" 303' in err
    assert '"GET /api/status HTTP/1.1" 200' in err
    assert token not in err
    assert out == ""


def test_no_access_log_without_the_flag(demo_root: Path) -> None:
    """Without `--access-log`, requests are not logged (a quiet journal)."""
    with serve_process(["-C", str(demo_root), "--port", "0"]) as served:
        assert get(served.port, "/api/status") == 200
        assert served.stop(signal.SIGTERM) == 0
        err = served.stderr()
    assert "/api/status" not in err


def test_a_database_url_is_printed_without_its_password(demo_root: Path, pg_url: str) -> None:
    """The address line names the log's server and database but never the password, whether the URL
    holds it before the host (with an @ and a / in it) or in its query."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    in_query = url.update_query_dict({"password": "query-secret"}).render_as_string(hide_password=False)
    in_userinfo = url.set(password="p@ss/w:rd-secret").render_as_string(hide_password=False)
    for db in (in_query, in_userinfo):
        with serve_process(["-C", str(demo_root), "--port", "0", "--db", db, "--json"]) as served:
            shown = json.loads(served.first_line)["log"]
            assert served.stop(signal.SIGTERM) == 0
        assert "secret" not in served.first_line and "secret" not in shown
        assert shown.startswith(f"postgresql://{url.username}@") and shown.endswith(f"/{url.database}")
