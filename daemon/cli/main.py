"""The ``batchd`` command line. Errors are caught in exactly one place: :func:`main`."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from daemon.exceptions import UsageError
from daemon.service.logs import configure_logging
from daemon.workspace import find_root, open_log
from statemachine.events import todo_stream
from statemachine.ids import user_id
from statemachine.projection import Projection, replay
from store.eventlog import StoredEvent
from store.exceptions import EXIT_FAILURES, EXIT_OK, BatchdError

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def repo_option(fn: F) -> F:
    """``-C DIR`` on every command, as in git: run as if started in DIR."""
    return click.option(
        "-C",
        "--repo",
        "repo",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Repository to work on (default: the one containing the current folder).",
    )(fn)


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        default=None,
        metavar="PATH|URL",
        help="Event log (default: .batchd/events.db in the repository).",
    )(fn)


def repo_id_option(fn: F) -> F:
    """``--repo-id ID``: whose events to read in a log several repositories share."""
    return click.option(
        "--repo-id",
        "repo_id",
        default=None,
        metavar="ID",
        help="Read this repository's events in a shared database (default: [batchd] repo_id; when "
        "unset, on PostgreSQL the first 12 hex digits of the root commit, on SQLite the file's own). "
        '--repo-id "" reads the events written without a repository id.',
    )(fn)


def log_level_option(fn: F) -> F:
    return click.option(
        "--log-level",
        default="info",
        type=click.Choice(["debug", "info", "warning", "error"]),
        show_default=True,
        help="Least severe log lines shown.",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")(fn)


def resolve_root(repo: Path | None) -> Path:
    return find_root(repo if repo is not None else Path.cwd())


def load_projection(
    repo: Path | None, db: str | None, *, repo_id: str | None = None, **kwargs: Any
) -> tuple[Path, Projection]:
    """The state folded from the repository's log (``repo_id``: another scope of a shared one)."""
    root = resolve_root(repo)
    log = open_log(root, db, repo_id=repo_id)
    try:
        return root, replay(log, **kwargs)
    finally:
        log.close()


class Interrupted(Exception):
    """A follow loop was stopped by SIGTERM; exits 128+N like a shell."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="batchd")
def cli() -> None:
    """batchd turns a folder of todo files into tested, committed, pushed changes.

    It runs a coding agent on each ready todo in its own git worktree, several at a time, checks each
    batch with the repository's own tests, keeps out the change that broke them, commits after each
    phase and pushes. Every decision is an event in an append-only log (.batchd/events.db).

    \b
    Exit codes: 0 success; 1 the command ran and found failures; 2 usage or configuration error;
    3 cannot proceed (corrupt or newer database, lock held, red baseline under --once);
    128+N interrupted by signal N.
    """


def _summary(payload: dict[str, Any]) -> str:
    parts = []
    for key, value in payload.items():
        if value in ("", (), [], {}, None):
            continue
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        text = text.replace("\n", " ")
        parts.append(f"{key}={text[:60] + '…' if len(text) > 60 else text}")
    return " ".join(parts)


def format_event(event: StoredEvent) -> str:
    when = event.recorded_at[:23]
    return f"{event.seq:>6}  {when}  {event.stream:<14} {event.type:<24} {_summary(event.payload)}"


@cli.command()
@repo_option
@db_option
@repo_id_option
@json_option
@click.option(
    "--stream", "-s", default=None, help="Only this stream (todo-273, batch-1.1, phase-1, run, control)."
)
@click.option("--since", default=0, type=int, metavar="SEQ", help="Only events after this sequence number.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are appended.")
def events(
    repo: Path | None,
    db: str | None,
    repo_id: str | None,
    as_json: bool,
    stream: str | None,
    since: int,
    follow: bool,
) -> None:
    """Print the event log, oldest first (one JSON object per line with --json)."""
    log = open_log(resolve_root(repo), db, repo_id=repo_id)
    stop = _install_term_flag()
    # A todo's stream by any id form a person types: 282, 0282, todo-0282.
    key = user_id(stream) if stream is not None else None
    stream = todo_stream(key) if key is not None else stream

    def emit(event: StoredEvent) -> None:
        click.echo(json.dumps(event.to_dict(), ensure_ascii=False) if as_json else format_event(event))

    try:
        if follow:
            for event in log.follow(since=since, stream=stream, stop=lambda: stop[0] is not None):
                emit(event)
            if stop[0] is not None:
                raise Interrupted(stop[0])
        else:
            for event in log.read(since=since, stream=stream):
                emit(event)
    finally:
        log.close()


def _install_term_flag() -> list[int | None]:
    """SIGTERM only sets a flag that follow loops poll; the loop then exits 128+N."""
    flag: list[int | None] = [None]

    def handler(signum: int, _frame: object) -> None:
        flag[0] = signum

    signal.signal(signal.SIGTERM, handler)
    return flag


@cli.group()
def audit() -> None:
    """Prove the event log was not edited."""


@audit.command("verify")
@repo_option
@db_option
@repo_id_option
@json_option
@click.option(
    "--full",
    is_flag=True,
    help="Also rebuild the state from the first event and compare it with the latest snapshot.",
)
def audit_verify(repo: Path | None, db: str | None, repo_id: str | None, as_json: bool, full: bool) -> None:
    """Walk the whole hash chain and check the snapshot's hash; exit 1 naming the first bad sequence
    number if an event was changed or removed. (Start-up checks only the snapshot and what follows it.)"""
    from statemachine.projection import SNAPSHOT_NAME, snapshot_matches_replay

    log = open_log(resolve_root(repo), db, repo_id=repo_id)
    try:
        progress = None if as_json else _progress_printer("checked")
        report = log.verify_tail(SNAPSHOT_NAME, progress=progress, whole=True)
        if full and report.ok:
            report = snapshot_matches_replay(log, report)
    finally:
        log.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "checked": report.checked,
                    "last_seq": report.last_seq,
                    "first_bad_seq": report.first_bad_seq,
                    "problem": report.problem,
                }
            )
        )
    elif report.ok:
        click.echo(f"ok: {report.checked} events, hash chain intact up to sequence {report.last_seq}")
    else:
        click.echo(
            f"TAMPERED: first bad event is sequence {report.first_bad_seq}: {report.problem}", err=True
        )
    if not report.ok:
        raise SystemExit(EXIT_FAILURES)


def _progress_printer(label: str) -> Callable[[int], None]:
    def show(n: int) -> None:
        if sys.stderr.isatty():
            click.echo(f"\r{label} {n} events…", nl=False, err=True)

    return show


def parse_time_option(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not a time", hint="write it as ISO-8601, e.g. 2026-11-25T14:03:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment


def _register_subcommands() -> None:
    """Commands that live in their own modules (kept small, one job each)."""
    import importlib

    for module in (
        "daemon.cli.run",
        "daemon.cli.init",
        "daemon.cli.control",
        "daemon.cli.requests",
        "daemon.cli.plan",
        "daemon.cli.serve",
        "daemon.cli.report",
        "daemon.cli.worker",  # batchd worker (issue 15)
        "daemon.cli.workers",  # batchd workers
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(cli)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``batchd`` console script; the one place errors become exit codes."""
    _register_subcommands()
    # Every command's warnings (a snapshot ignored, say) go to stderr, never into what a script reads
    # from stdout (`status --json`); `run` and `demo` configure their own logging over this.
    configure_logging(level="warning")
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="batchd", standalone_mode=False)
    except BatchdError as e:
        if as_json:
            click.echo(json.dumps(e.to_dict(), ensure_ascii=False, default=str))
        click.secho(f"batchd: error: {e.render()}", err=True, fg="red")
        return e.exit_code
    except click.exceptions.Abort:
        return 128 + signal.SIGINT
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except Interrupted as e:
        return 128 + e.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # `batchd events | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else EXIT_FAILURES
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
