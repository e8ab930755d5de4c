"""The control requests ``retry``, ``cancel``, ``pause``, ``resume`` and ``push``.

Each appends a request to the log's ``control`` stream. When a daemon runs (it holds the
repository's lock) the command then waits a few seconds for its answer, the ``control.handled``
event naming the request's sequence number, and prints it: done, or refused and why (exit 1).
With no daemon running the request is queued: the next start acts on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from daemon.cli.main import db_option, json_option, load_projection, repo_option, resolve_root
from daemon.cli.todoids import known_todo
from daemon.exceptions import UsageError
from daemon.service.lock import holder
from daemon.workspace import Workspace, open_log
from statemachine import events as ev
from statemachine.projection import Projection
from statemachine.tables import TodoState
from store import EventLog
from store.exceptions import EXIT_FAILURES

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one control request: ``done`` or ``refused`` (the daemon's answer),
    ``queued`` (no daemon runs: the next start answers) or ``waiting`` (no answer in time)."""

    request: str
    seq: int
    outcome: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.request}: {self.outcome}" + (f": {self.detail}" if self.detail else "")


DEFAULT_WAIT = 5.0  # seconds: a running daemon answers within a tick (0.2 s) unless it is busy


def wait_option(fn: F) -> F:
    fn = click.option(
        "--no-wait", "no_wait", is_flag=True, help="Only record the request; do not wait for the answer."
    )(fn)
    return click.option(
        "--wait",
        "wait",
        type=click.FloatRange(min=0),
        default=DEFAULT_WAIT,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for the running daemon's answer.",
    )(fn)


Request = tuple[str, object]  # (what it is called in answers, e.g. "retry #0273"; its control event)

ACTIONS = ("retry", "cancel", "pause", "resume", "push")
TODO_ACTIONS = ("retry", "cancel")
PAUSE_REASON = "requested with batchd pause"


def build_request(
    action: str, proj: Projection | None = None, todo_key: str = "", *, reason: str = PAUSE_REASON
) -> Request:
    """The request of one control ``action``, named as its answer shows it; retry and cancel name
    the todo by its key and need the projection (for the id as its file writes it). The one place
    the CLI and the dashboard make requests."""
    if action in TODO_ACTIONS:
        if proj is None or not todo_key:
            raise UsageError(f"{action} needs a todo", hint=f"e.g. `batchd {action} 273`")
        shown = proj.shown(todo_key)
        if action == "retry":
            return (f"retry #{shown}", ev.RetryRequested(todo_id=todo_key))
        return (f"cancel #{shown}", ev.CancelRequested(todo_id=todo_key))
    if action == "pause":
        return ("pause", ev.PauseRequested(reason=reason))
    if action == "resume":
        return ("resume", ev.ResumeRequested())
    if action == "push":
        return ("push", ev.PushRequested())
    raise UsageError(f"unknown control request {action!r}", hint=f"use one of {', '.join(ACTIONS)}")


def record_requests(log: EventLog, root: Path, requests: Sequence[Request], *, wait: float) -> list[Answer]:
    """Append the requests to ``log``'s ``control`` stream, then the running daemon's answer to each
    (waiting up to ``wait`` seconds), or ``queued`` when no daemon runs to answer. Shared by the CLI
    and ``batchd serve``'s buttons, so both record exactly the same requests."""
    stored = log.append(ev.CONTROL_STREAM, [event for _, event in requests])
    names = {s.seq: what for s, (what, _) in zip(stored, requests, strict=True)}
    pid = holder(Workspace(root).lock_path)
    if pid is None:
        return [
            Answer(what, seq, "queued", "no daemon is running; the next `batchd run` acts on it")
            for seq, what in names.items()
        ]
    return await_answers(log, names, wait, pid)


def send_requests(
    repo: Path | None, db: str | None, requests: Sequence[Request], *, wait: float, as_json: bool
) -> None:
    """Append the requests (``(what, event)``) to the ``control`` stream, then print the running
    daemon's answer to each (waiting up to ``wait`` seconds), or that no daemon runs to answer.
    Exits 1 when the daemon refused any of them."""
    root = resolve_root(repo)
    # A repository set up for batchd but never run yet may be paused (or resumed) ahead of time.
    log = open_log(root, db, must_exist=not (root / "batchd.toml").is_file())
    try:
        answers = record_requests(log, root, requests, wait=wait)
    finally:
        log.close()
    for answer in answers:
        if as_json:
            click.echo(json.dumps(asdict(answer), ensure_ascii=False))
        else:
            click.echo(answer.line(), err=answer.outcome == "refused")
    if any(a.outcome == "refused" for a in answers):
        raise SystemExit(EXIT_FAILURES)


def await_answers(log: EventLog, names: dict[int, str], wait: float, pid: int) -> list[Answer]:
    """Follow the ``control`` stream for the ``control.handled`` naming each request's seq."""
    found: dict[int, Answer] = {}
    deadline = time.monotonic() + wait
    if wait > 0:
        for event in log.follow(
            since=min(names) - 1,
            stream=ev.CONTROL_STREAM,
            poll_interval=0.1,
            stop=lambda: len(found) == len(names) or time.monotonic() >= deadline,
        ):
            seq = event.payload.get("request_seq") if event.type == "control.handled" else None
            if seq in names:
                found[seq] = Answer(
                    names[seq], seq, event.payload["outcome"], event.payload.get("detail", "")
                )
    who = f"the daemon (pid {pid})" if pid > 0 else "the daemon"
    late = (
        f"recorded (event {{seq}}); {who} has not answered within {wait:g}s, it acts on it when it can "
        "(`batchd events -s control` shows its answer)"
        if wait > 0
        else f"recorded (event {{seq}}); {who} acts on it within a second"
    )
    return [
        found.get(seq) or Answer(what, seq, "waiting", late.format(seq=seq)) for seq, what in names.items()
    ]


@click.command()
@repo_option
@db_option
@json_option
@wait_option
@click.argument("todo_ids", nargs=-1)
@click.option("--blocked", is_flag=True, help="Retry every blocked todo.")
def retry(
    repo: Path | None,
    db: str | None,
    as_json: bool,
    wait: float,
    no_wait: bool,
    todo_ids: tuple[str, ...],
    blocked: bool,
) -> None:
    """Give a failed, blocked, cancelled or invalid todo another attempt (attempts start counting again)."""
    _, proj = load_projection(repo, db)
    if blocked == bool(todo_ids):
        raise UsageError(
            "name the todos to retry, or give --blocked",
            hint="e.g. `batchd retry 273` or `batchd retry --blocked`",
        )
    if blocked:
        keys = [t.todo_id for t in proj.todos_in(TodoState.BLOCKED)]
        if not keys:
            click.echo(
                json.dumps({"request": "retry", "outcome": "nothing"}) if as_json else "no todo is blocked"
            )
            return
    else:
        keys = list(dict.fromkeys(known_todo(proj, t) for t in todo_ids))
    requests = [build_request("retry", proj, k) for k in keys]
    send_requests(repo, db, requests, wait=0 if no_wait else wait, as_json=as_json)


@click.command()
@repo_option
@db_option
@json_option
@wait_option
@click.argument("todo_id")
def cancel(
    repo: Path | None, db: str | None, as_json: bool, wait: float, no_wait: bool, todo_id: str
) -> None:
    """Cancel a todo (its agent is stopped if running; nothing of it is committed)."""
    _, proj = load_projection(repo, db)
    key = known_todo(proj, todo_id)
    send_requests(
        repo, db, [build_request("cancel", proj, key)], wait=0 if no_wait else wait, as_json=as_json
    )


@click.command()
@repo_option
@db_option
@json_option
@wait_option
@click.option("--reason", default=PAUSE_REASON, help="Shown in batchd status.")
def pause(repo: Path | None, db: str | None, as_json: bool, wait: float, no_wait: bool, reason: str) -> None:
    """Start no new agent or batch until `batchd resume` (running agents finish)."""
    send_requests(
        repo,
        db,
        [build_request("pause", reason=reason)],
        wait=0 if no_wait else wait,
        as_json=as_json,
    )


@click.command()
@repo_option
@db_option
@json_option
@wait_option
def resume(repo: Path | None, db: str | None, as_json: bool, wait: float, no_wait: bool) -> None:
    """Resume a paused run (and re-check a batch paused by a red baseline)."""
    send_requests(repo, db, [build_request("resume")], wait=0 if no_wait else wait, as_json=as_json)


@click.command("push")
@repo_option
@db_option
@json_option
@wait_option
def push_command(repo: Path | None, db: str | None, as_json: bool, wait: float, no_wait: bool) -> None:
    """Push the last phase commit again, after its push failed (the remote was down, or refused)."""
    send_requests(repo, db, [build_request("push")], wait=0 if no_wait else wait, as_json=as_json)


def register(cli: click.Group) -> None:
    for command in (retry, cancel, pause, resume, push_command):
        cli.add_command(command)
