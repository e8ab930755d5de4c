"""Who may reach the dashboard: the bind rule, the token (header, cookie, ``?token=`` once), the
Host guard of loopback binds. Starlette's TestClient for the rules, a real ``batchd serve``
subprocess on every address (0.0.0.0) for the start-up refusal and the token over real HTTP."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import serve_env, serve_process
from starlette.testclient import TestClient

from daemon.exceptions import UsageError
from daemon.web.app import create_app
from daemon.web.auth import check_bind, cookie_name, is_loopback, is_loopback_host_header
from daemon.web.model import LiveModel

TOKEN = "s3cret-token-of-the-test-0123"  # 29 cookie-safe characters
ASSET = "/static/style.css"  # a page every app serves, whoever owns the other pages


@pytest.fixture
def guarded(demo_model: LiveModel) -> Iterator[TestClient]:
    """The dashboard with a token, as on a non-loopback bind (no Host guard)."""
    app = create_app(demo_model, token=TOKEN, start_model=False, loopback=False)
    with TestClient(app, base_url="http://192.0.2.10:8765", follow_redirects=False) as client:
        yield client


@pytest.fixture
def local(demo_model: LiveModel) -> Iterator[TestClient]:
    """The dashboard on a loopback bind with no token (the default)."""
    with TestClient(create_app(demo_model, start_model=False), base_url="http://127.0.0.1:8765") as client:
        yield client


# -- the bind rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "example.org", ""])
def test_non_loopback_bind_without_token_is_refused(host: str) -> None:
    """No token on an address others can reach: refused, saying how to give one (exit 2)."""
    with pytest.raises(UsageError) as caught:
        check_bind(host, None)
    assert caught.value.exit_code == 2
    assert "--token" in caught.value.render()
    assert "BATCHD_TOKEN" in caught.value.render()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "localhost", "LOCALHOST"])
def test_loopback_bind_needs_no_token(host: str) -> None:
    """On loopback the dashboard starts without a token."""
    assert is_loopback(host)
    check_bind(host, None)


def test_non_loopback_bind_with_token_is_allowed() -> None:
    """With a token any address may be served."""
    check_bind("0.0.0.0", TOKEN)


def test_empty_token_counts_as_none() -> None:
    """BATCHD_TOKEN= (set but empty) does not open a public bind."""
    with pytest.raises(UsageError):
        check_bind("0.0.0.0", "")


def test_token_a_cookie_cannot_carry_is_refused(demo_model: LiveModel) -> None:
    """A token with a space or a semicolon is refused at once, not at the first request."""
    with pytest.raises(ValueError, match="token"):
        create_app(demo_model, token="two words", start_model=False)


# -- the token --------------------------------------------------------------------------------------


def test_request_without_token_is_401(guarded: TestClient) -> None:
    """A request with no token is refused, and told how to pass it."""
    response = guarded.get(ASSET)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "?token=" in response.text
    assert "Authorization: Bearer" in response.text
    assert TOKEN not in response.text


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN]
)
def test_wrong_authorization_is_401(guarded: TestClient, value: str) -> None:
    """A wrong, shortened, empty or non-Bearer token is refused."""
    assert guarded.get(ASSET, headers={"Authorization": value}).status_code == 401


def test_bearer_token_is_let_through(guarded: TestClient) -> None:
    """A script's `Authorization: Bearer TOKEN` is enough."""
    assert guarded.get(ASSET, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_cookie_token_is_let_through(guarded: TestClient) -> None:
    """A browser's cookie is enough (EventSource sends cookies, never headers)."""
    assert guarded.get(ASSET, headers={"Cookie": f"other=1; {cookie_name(8765)}={TOKEN}"}).status_code == 200


def test_wrong_cookie_is_401(guarded: TestClient) -> None:
    """A cookie with another value is refused."""
    assert guarded.get(ASSET, headers={"Cookie": f"{cookie_name(8765)}=nope"}).status_code == 401


def test_query_token_redirects_without_it_and_sets_the_cookie(guarded: TestClient) -> None:
    """`?token=` once: a 303 to the same address without it, setting an HttpOnly SameSite=Strict cookie."""
    response = guarded.get(f"{ASSET}?a=1&token={TOKEN}&b=2")
    assert response.status_code == 303
    assert response.headers["location"] == f"{ASSET}?a=1&b=2"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(8765)}={TOKEN};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    followed = guarded.get(response.headers["location"])  # the client keeps the cookie, as a browser does
    assert followed.status_code == 200


def test_query_token_may_hold_a_plus_and_be_percent_encoded(demo_model: LiveModel) -> None:
    """A token with "+" works as typed in the address, and percent-encoded too."""
    token = "a+b-0123456789abcdef"
    app = create_app(demo_model, token=token, start_model=False, loopback=False)
    with TestClient(app, base_url="http://192.0.2.10:8765", follow_redirects=False) as client:
        for query, status in [("a+b", 303), ("a%2Bb", 303), ("a%20b", 401)]:
            client.cookies.clear()  # each one on its own, not let through by the last one's cookie
            assert client.get(f"{ASSET}?token={query}-0123456789abcdef").status_code == status, query


def test_wrong_query_token_is_401(guarded: TestClient) -> None:
    """A wrong `?token=` sets nothing."""
    response = guarded.get(f"{ASSET}?token=nope")
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("path", ["//evil.example/x", "/\\evil.example/x", "///evil.example"])
def test_query_token_redirect_never_leaves_the_server(guarded: TestClient, path: str) -> None:
    """`//evil.example/?token=` redirects to a path of this server, never to evil.example."""
    response = guarded.get(f"http://192.0.2.10:8765{path}?token={TOKEN}")
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/")
    assert location[1:2] not in ("/", "\\")


def test_query_token_is_not_accepted_on_post(guarded: TestClient) -> None:
    """A control POST must carry the token in a header or the cookie, never in its address."""
    response = guarded.post(f"/control/pause?token={TOKEN}", headers={"X-Batchd-Control": "1"})
    assert response.status_code == 401


def test_event_stream_is_guarded_too(guarded: TestClient) -> None:
    """The SSE stream needs the token like any page."""
    assert guarded.get("/api/stream").status_code == 401


# -- the Host guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8765", "localhost.evil.example", "127.0.0.1.nip.io"]
)
def test_loopback_bind_refuses_foreign_host_names(local: TestClient, host: str) -> None:
    """DNS rebinding: a page of another site that resolves its name to 127.0.0.1 gets nothing."""
    response = local.get(ASSET, headers={"Host": host})
    assert response.status_code == 400
    assert "loopback" in response.text


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "LocalHost", "[::1]:8765", "127.0.0.2"])
def test_loopback_bind_answers_loopback_names(local: TestClient, host: str) -> None:
    """The names a person types for this machine are answered."""
    assert local.get(ASSET, headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "value", [b"", b"[::1", b"[::1]x", b"localhost:port", b"127.0.0.1:80:80", b"\xff", b"[::2]", b"10.0.0.1"]
)
def test_malformed_or_foreign_host_headers_are_not_loopback(value: bytes) -> None:
    """A Host header the guard cannot read as a loopback name is refused."""
    assert not is_loopback_host_header(value)


def test_non_loopback_bind_has_no_host_guard(guarded: TestClient) -> None:
    """Served on a public address the dashboard answers its public name (the token guards it)."""
    response = guarded.get(ASSET, headers={"Host": "batchd.example:8765", "Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200


# -- a real `batchd serve` on every address ---------------------------------------------------------


def test_serve_on_every_address_without_token_refuses_to_start(demo_root: Path) -> None:
    """`batchd serve --host 0.0.0.0` with no token exits 2 before listening, saying how to give one."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "serve", "-C", str(demo_root), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=serve_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--token" in done.stderr
    assert "BATCHD_TOKEN" in done.stderr
    assert done.stdout == ""


def test_serve_refuses_a_short_token(demo_root: Path) -> None:
    """A token short enough to guess over HTTP is refused (exit 2)."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "serve", "-C", str(demo_root), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=serve_env(BATCHD_TOKEN="hunter2"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "hunter2" not in done.stderr + done.stdout


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_serve_on_every_address_with_token_guards_every_request(demo_root: Path) -> None:
    """Over real HTTP: no token or a wrong one 401, the right one 200, ?token= sets the cookie;
    the token is never printed."""
    with serve_process(
        ["-C", str(demo_root), "--host", "0.0.0.0", "--port", "0"], env=serve_env(BATCHD_TOKEN=TOKEN)
    ) as served:
        port = served.port
        assert get(port, ASSET).status == 401
        assert get(port, ASSET, {"Authorization": "Bearer wrong-token-wrong-token"}).status == 401
        assert get(port, ASSET, {"Authorization": f"Bearer {TOKEN}"}).status == 200
        redirect = get(port, f"{ASSET}?token={TOKEN}")
        assert redirect.status == 303
        cookie = redirect.getheader("set-cookie") or ""
        assert "HttpOnly" in cookie
        assert get(port, ASSET, {"Cookie": cookie.split(";")[0]}).status == 200
        assert served.stop(signal.SIGTERM) == 0
        out, err = served.rest_of_stdout(), served.stderr()
    assert TOKEN not in served.first_line + out + err
