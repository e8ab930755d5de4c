"""``batchd serve``: the web dashboard of a repository's event log.

Order of work, each step before the next can cost anything: the bind rule (no token on a
non-loopback address refuses at once, exit 2), the token's shape, then the listening socket (a port
in use is a clear exit 2, before a long fold, not after), then the fold of the log (progress on
stderr), then one line on stdout with the address and uvicorn serving until SIGTERM or SIGINT.

Signals only set flags: :class:`daemon.web.server.DashboardServer`'s handler is installed before the
fold and sets uvicorn's own ``should_exit`` (the fold's progress callback and uvicorn's main loop
poll it); a stop asked for is a clean exit 0, as for a systemd unit, with open SSE streams ended
first so uvicorn does not wait for them.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from daemon.cli.main import db_option, json_option, repo_option, resolve_root
from daemon.exceptions import UsageError
from daemon.web.auth import ENV

if TYPE_CHECKING:
    from daemon.web.model import LiveModel

# Every `batchd` command imports this module to register `serve`: the web stack (uvicorn, Starlette,
# Jinja2, ~0.1 s) is imported only when `serve` runs; daemon.web.auth is light (stdlib, no app).

__all__ = ["register", "serve"]

MIN_TOKEN = 16  # characters: a short token over HTTP is guessed by trying
GRACEFUL_SHUTDOWN = 5  # seconds uvicorn waits for a page still being sent before it cancels it


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# A token in a query string (a browser's first visit, ?token=T): never written to a journal.
_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"]*", re.IGNORECASE)


class HideToken(logging.Filter):
    """Rewrites ``token=SECRET`` to ``token=***`` in a log record (uvicorn's access lines keep the
    request line in ``args``; a message may hold it too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, but access lines on stderr (stdout is the one line a script reads) and
    without tokens."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"hide_token": {"()": HideToken}}
    for handler in config["handlers"].values():
        handler["filters"] = ["hide_token"]
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


class _Stopped(Exception):
    """A signal arrived during the fold: stop before serving."""


@click.command()
@repo_option
@db_option
@json_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: a free one)."
)
@click.option(
    "--token",
    envvar=ENV,
    default=None,
    show_envvar=True,
    help="Every request must carry it (required on any address but loopback). Prefer the environment "
    "variable: a command line is visible to every user of the machine.",
)
@click.option(
    "--access-log", is_flag=True, help="Log each request on stderr (a token in a query shows as ***)."
)
def serve(
    repo: Path | None,
    db: str | None,
    as_json: bool,
    host: str,
    port: int,
    token: str | None,
    access_log: bool,
) -> None:
    """Serve the web dashboard of the event log: run, timeline, todos, events, metrics, control.

    \b
    It reads the log through the store (it works while the daemon runs, and on an old log), and
    updates open pages within a second of each event. The control buttons (pause, resume, retry,
    cancel) append the same requests as the CLI.
    On loopback (the default) no token is needed; on any other address it refuses to start without
    one. A browser passes it once as http://HOST:PORT/?token=TOKEN (a cookie keeps it), a script as
    the header 'Authorization: Bearer TOKEN'.
    """
    from daemon.web.auth import check_bind, token_problem
    from daemon.web.server import bind_socket

    token = token or None  # BATCHD_TOKEN= (empty) is no token
    check_bind(host, token)
    if token is not None:
        problem = token_problem(token, min_length=MIN_TOKEN)
        if problem is not None:
            raise UsageError(
                problem,
                hint="make a random one: `export BATCHD_TOKEN=$(python3 -c "
                "'import secrets; print(secrets.token_urlsafe(24))')`",
            )
    root = resolve_root(repo)
    sock = bind_socket(host, port)
    try:
        _serve(sock, root, db, as_json=as_json, host=host, token=token, access_log=access_log)
    finally:
        sock.close()


def _serve(
    sock: socket.socket,
    root: Path,
    db: str | None,
    *,
    as_json: bool,
    host: str,
    token: str | None,
    access_log: bool,
) -> None:
    import uvicorn

    from daemon.web.app import create_app
    from daemon.web.auth import is_loopback
    from daemon.web.model import LiveModel
    from daemon.web.server import DashboardServer

    def progress(n: int) -> None:
        if server.should_exit:
            raise _Stopped
        # On a terminal one line that counts up; in a journal one line per step.
        tty = sys.stderr.isatty()
        click.echo(
            f"{chr(13) if tty else ''}batchd serve: folding the log: {n:,} events…", err=True, nl=not tty
        )

    model = LiveModel(root, db, progress=progress)
    app = create_app(model, token=token, start_model=False, loopback=is_loopback(host))
    config = uvicorn.Config(
        app,
        log_config=_log_config(),
        log_level="warning",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        server_header=False,
    )
    if access_log:
        # log_level (warnings only, for uvicorn's own messages) set the access logger to WARNING
        # too, where it says nothing: each request is logged at INFO.
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = DashboardServer(config, model)
    # The server's handler (it only sets flags) from the very start: a SIGTERM during the fold, or
    # between the address printed and uvicorn's main loop, stops as cleanly as one while serving.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            model.start()
        except _Stopped:
            click.echo("\nbatchd serve: stopped before serving", err=True)
            return
        try:
            _announce(sock, model, host=host, as_json=as_json)
            if not server.should_exit:
                server.run(sockets=[sock])
        finally:
            model.stop()
        if server.stopped_by is not None and not as_json:
            click.echo(f"batchd serve: stopped ({signal.Signals(server.stopped_by).name})", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce(sock: socket.socket, model: LiveModel, *, host: str, as_json: bool) -> None:
    if model.last_seq >= 10_000 and sys.stderr.isatty():
        click.echo("", err=True)  # end the progress line
    port = sock.getsockname()[1]
    url = _url(host, port)
    location = model.location  # as the store names it: a path, or the server without its password
    if as_json:
        data = {"url": url, "host": host, "port": port, "log": location, "events": model.last_seq}
        click.echo(json.dumps(data))
    else:
        click.echo(f"batchd serve: {url} (log: {location}, {model.last_seq:,} events)")
    sys.stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(serve)
