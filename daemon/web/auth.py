"""Who may talk to ``batchd serve``: the bind rule, the token guard and the Host guard.

The dashboard can append control requests (pause, cancel, retry), so reaching it is power over the
run. Three rules, each a small pure-ASGI middleware or check (pure ASGI rather than Starlette's
``BaseHTTPMiddleware``, which buffers nothing but wraps streaming responses in a task of its own: a
pure one guards the SSE stream exactly like a page):

- **The bind rule** (:func:`check_bind`): on any address other than loopback the server refuses to
  start without a token. A dashboard on ``0.0.0.0`` with no token would let anyone on the network
  cancel the run.
- **The token** (:class:`TokenMiddleware`): every request carries it, as ``Authorization: Bearer T``
  (scripts), the ``batchd_token`` cookie (browsers; ``EventSource`` cannot set headers but sends
  cookies), or once as ``?token=T``: that answers a redirect to the same URL without it (so the token
  leaves the address bar, the history and any ``Referer``) and sets the cookie ``HttpOnly`` (no script
  reads it) and ``SameSite=Strict`` (no other site's page sends it). It is compared as bytes with
  :func:`hmac.compare_digest`, in time that does not depend on where the first difference is.
- **The Host guard** (:class:`LoopbackHostMiddleware`, loopback binds only): a page of another site
  can make its own name resolve to 127.0.0.1 (DNS rebinding) and then read a token-less local
  dashboard as if it were its own origin; the browser still sends that other name as ``Host``, so
  only loopback names are answered.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.exceptions import UsageError

__all__ = [
    "COOKIE",
    "ENV",
    "SECURITY_HEADERS",
    "TOKEN_CHARS",
    "LoopbackHostMiddleware",
    "SecurityHeadersMiddleware",
    "TokenMiddleware",
    "check_bind",
    "cookie_name",
    "is_loopback",
    "is_loopback_host_header",
    "token_problem",
]

COOKIE = "batchd_token"  # the prefix: the cookie is named per port (see cookie_name)
ENV = "BATCHD_TOKEN"

# What a cookie value may hold (RFC 6265 cookie-octet): printable ASCII but space " , ; and \\.
COOKIE_UNSAFE = ' ",;\\'
TOKEN_CHARS = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")

_UNAUTHORIZED = (
    b"batchd serve: this dashboard needs its token.\n"
    b"In a browser, open the address once with ?token=TOKEN (a cookie keeps it);\n"
    b"from a script, send the header 'Authorization: Bearer TOKEN'.\n"
    b"The token is the one given to `batchd serve --token` (or BATCHD_TOKEN).\n"
)
_BAD_HOST = (
    b"batchd serve: this dashboard listens on a loopback address and answers only loopback names\n"
    b"(127.0.0.1, localhost, [::1]) in the Host header, so that another web site cannot reach it\n"
    b"through its own DNS name. Open it as http://127.0.0.1:PORT/ or http://localhost:PORT/.\n"
)


def cookie_name(port: int | None) -> str:
    """The token cookie of the dashboard on ``port``: cookies ignore ports, so one plain name would
    be sent to every other service on this host name, and two dashboards on one host would overwrite
    each other's."""
    return f"{COOKIE}_{port}" if port else COOKIE


def _port(scope: Scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on this machine only (127.0.0.0/8, ::1, ``localhost``).

    Any other name counts as not loopback: a name could resolve to anything, and ``""`` or
    ``0.0.0.0`` is every interface."""
    name = host.strip().lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (UsageError, exit 2) to serve ``host`` when it is not loopback and there is no token."""
    if token or is_loopback(host):
        return
    raise UsageError(
        f"batchd serve refuses to listen on {host or 'every address'} without a token: anyone who can "
        "reach that address could pause, cancel or retry the run",
        hint=f"give a token with --token or the {ENV} environment variable (a long random one, e.g. "
        "`export BATCHD_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')`), "
        "or listen on loopback only (--host 127.0.0.1, the default)",
    )


def token_problem(token: str, *, min_length: int = 1) -> str | None:
    """Why ``token`` cannot be the dashboard's token, or None when it can."""
    if len(token) < min_length:
        return f"the token is {len(token)} characters long: it must have at least {min_length}"
    if not TOKEN_CHARS.fullmatch(token):
        return f"the token must be printable ASCII with none of {COOKIE_UNSAFE!r} (a cookie carries it)"
    return None


def is_loopback_host_header(value: bytes | None) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost`` or a loopback IP literal, any port.

    An IP literal cannot be the product of DNS rebinding (that needs a name the attacker's DNS
    answers), so every loopback literal is accepted, which also serves a bind to 127.0.0.2."""
    if not value:
        return False
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):
        name, sep, rest = text[1:].partition("]")
        if not sep or (rest and not _is_port(rest)):
            return False
        try:
            return ipaddress.IPv6Address(name).is_loopback
        except ValueError:
            return False
    name, sep, port = text.partition(":")
    if sep and not port.isdigit():
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(name).is_loopback
    except ValueError:
        return False


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()


async def _plain(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(
    scope: Scope, send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # policy violation
        return
    await _plain(send, status, body, headers)


# Every answer: no page of the dashboard may be framed (a click inside a hidden frame of another
# site would otherwise press its buttons, running the dashboard's own script in its own origin), and
# served pages run only the dashboard's own script files, never inline script (what an injected
# title would need even if escaping failed).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` to every HTTP answer (pages, files, errors, the SSE stream)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class LoopbackHostMiddleware:
    """Answer 400 to any request whose ``Host`` is not a loopback name (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v for k, v in _headers(scope) if k == b"host"), None)
            if not is_loopback_host_header(host):
                await _refuse(scope, send, 400, _BAD_HOST, [])
                return
        await self.app(scope, receive, send)


class TokenMiddleware:
    """Let through only requests that carry ``token`` (header, cookie, or ``?token=`` once)."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        problem = token_problem(token)
        if problem is not None:
            raise ValueError(problem)
        self.app = app
        self._token = token.encode("utf-8")

    def _matches(self, given: bytes | None) -> bool:
        # compare_digest on bytes of any length: its time depends on the lengths only, never on
        # the position of the first wrong byte.
        return given is not None and hmac.compare_digest(given, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._matches(_bearer(scope)) or self._matches(_cookie(scope)):
            await self.app(scope, receive, send)
            return
        # The query's parts kept raw (the redirect gives the others back as they came); the token's
        # value percent-decoded but with "+" kept as "+" (a token may hold one).
        parts = [p for p in bytes(scope.get("query_string", b"")).split(b"&") if p]
        given = [unquote_to_bytes(p[6:]) for p in parts if p.startswith(b"token=")]
        rest = [p for p in parts if not p.startswith(b"token=") and p != b"token"]
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and len(given) == 1
            and self._matches(given[0])
        ):
            await self._set_cookie(scope, send, rest)
            return
        await _refuse(scope, send, 401, _UNAUTHORIZED, [(b"www-authenticate", b'Bearer realm="batchd"')])

    async def _set_cookie(self, scope: Scope, send: Send, rest: list[bytes]) -> None:
        """303 to the same address without the token, setting the cookie that carries it from now on."""
        query = b"&".join(rest).decode("latin-1")
        location = _same_origin_path(scope) + (f"?{query}" if query else "")
        # The token's characters are all cookie-safe (checked in __init__): it is written as is.
        cookie = (
            cookie_name(_port(scope)).encode() + b"=" + self._token + b"; HttpOnly; SameSite=Strict; Path=/"
        )
        headers = [
            (b"location", location.encode("latin-1")),
            (b"set-cookie", cookie),
            (b"referrer-policy", b"no-referrer"),
        ]
        await _plain(send, 303, b"batchd serve: token accepted; a cookie keeps it.\n", headers)


def _headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    return headers


def _bearer(scope: Scope) -> bytes | None:
    for key, value in _headers(scope):
        if key == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
            return None
    return None


def _cookie(scope: Scope) -> bytes | None:
    for key, value in _headers(scope):
        if key == b"cookie":
            for part in value.split(b";"):
                name, sep, content = part.strip().partition(b"=")
                if sep and name == cookie_name(_port(scope)).encode():
                    return content
    return None


def _same_origin_path(scope: Scope) -> str:
    """The request's own path, made safe as a relative redirect target.

    ``//evil.example/`` or ``/\\evil.example/`` would be read by a browser as another host: leading
    slashes and backslashes collapse to one slash, so the redirect never leaves this server."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", "/"))
    return "/" + path.split("?", 1)[0].lstrip("/\\")
