"""``batchd status``, ``logs`` and ``replay`` (the control requests are in :mod:`daemon.cli.requests`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import click

from daemon.cli.main import (
    db_option,
    json_option,
    load_projection,
    parse_time_option,
    repo_id_option,
    repo_option,
)
from daemon.cli.statustext import print_status
from daemon.cli.todoids import known_todo
from daemon.cli.workers import lease_of, workers_data
from daemon.config import BatchdConfig, VerifyConfig, load_config
from daemon.engine.flaketext import flakes_json
from daemon.engine.statusfile import review_items
from daemon.exceptions import BatchdError, UsageError
from daemon.workspace import Workspace, open_log
from statemachine import events as ev
from statemachine.economy import RunEconomy, budget_text, run_economy, todo_json
from statemachine.ids import user_id
from statemachine.projection import Projection
from statemachine.tables import RunState, TodoState
from store.exceptions import EXIT_FAILURES
from store.records import seconds_since


def status_data(
    proj: Projection,
    *,
    economy: RunEconomy | None = None,
    verify: VerifyConfig | None = None,
    lease: float | None = None,
) -> dict[str, Any]:
    """Everything ``status`` shows; ``economy`` is the run's accounting (default: with the running
    agents' time by the clock); ``verify`` the configured checks, whose flake rates are shown (None:
    every command the log measured, blended with the default prior); ``lease`` the workers' lease
    (default: the default ``[batchd] lease_seconds``), after which a silent worker is shown so."""
    run = proj.run
    checks = verify or VerifyConfig()
    economy = economy or run_economy(proj, now=datetime.now(UTC))
    todos = []
    for todo in sorted(proj.todos.values(), key=lambda t: (len(t.todo_id), t.todo_id)):
        item: dict[str, Any] = {
            "id": proj.shown(todo.todo_id),  # as its file name writes it (leading zeros kept)
            "state": str(todo.state),
            "title": todo.title,
            "priority": todo.priority,
            "attempt": todo.attempt,
            "batch": todo.batch,
            "phase": todo.phase,
            "path": todo.path,
        }
        if todo.state == TodoState.RUNNING:
            item["elapsed"] = round(seconds_since(todo.agent_started_at), 1)
            item["pid"] = todo.pid
        if todo.reason:
            item["reason"] = todo.reason
        if todo.action:
            item["action"] = todo.action
        item["agent"] = todo_json(economy.todos[todo.todo_id])
        todos.append(item)
    return {
        "run": {
            "id": run.run_id,
            "state": str(run.state),
            "branch": run.branch,
            "pid": run.pid,
            "paused_reason": run.paused_reason,
            "detail": run_detail(proj),
            "sandbox": run.sandbox,
            "remote_url": run.remote_url,
            "request": {
                "state": run.request_state,
                "branch": run.request_branch,
                "url": run.request_url,
                "detail": run.request_detail,
            },
            "verdict": verdict_data(proj),
            "agent": economy.as_json(),
            # The run budget that stopped new agents (null: none did).
            "budget": (
                {
                    "name": run.budget,
                    "detail": run.budget_detail,
                    "text": budget_text(run.budget, run.budget_detail),
                }
                if run.budget
                else None
            ),
        },
        "phases": [
            {
                "number": p.number,
                "title": p.title,
                "state": str(p.state),
                "batches": list(p.batches),
                "commit": p.head_sha,
                "pushed": p.pushed_sha,
                "push_failed": p.push_failed_reason,
                "push_output": p.push_output,
            }
            for p in sorted(proj.phases.values(), key=lambda p: (p.final, p.number))
        ],
        "batches": [
            {
                "key": b.key,
                "state": str(b.state),
                "todos": [proj.shown(t) for t in b.todo_ids],
                "accepted": [proj.shown(t) for t in b.accepted],
                "rejected": [proj.shown(t) for t in b.rejected],
                "conflicted": [proj.shown(t) for t in b.conflicted],
                "failed": [proj.shown(t) for t in b.failed],
                "verify_runs": b.runs,
            }
            for b in proj.batches.values()
        ],
        "todos": todos,
        "review": [{"id": proj.shown(t), "attempt": n, "what": what} for t, n, what in review_items(proj)],
        "flakes": flakes_json(
            proj.flakes, proj.known_red, checks.commands if verify else None, checks.flake_rate
        ),
        **workers_data(proj, lease=lease if lease is not None else BatchdConfig().lease_seconds),
        "last_seq": proj.last_seq,
    }


def verify_config(root: Path) -> VerifyConfig | None:
    """The ``[verify]`` section, for the flake rates of the configured commands; None when the file
    cannot be read: status must still show what the log knows (``batchd run`` reports the error)."""
    try:
        return load_config(root).verify
    except BatchdError:
        return None


def run_detail(proj: Projection) -> str:
    """Why the run is paused or stopping, whole (the human status shows its headline)."""
    run = proj.run
    if run.paused:
        return run.paused_reason
    if run.state == RunState.STOPPING:
        return run.stop_reason
    return ""


def verdict_data(proj: Projection) -> dict[str, Any] | None:
    verdict = proj.run.verdict
    if verdict is None:
        return None
    data = verdict._asdict()
    data["not_complete"] = dict(verdict.not_complete)  # id -> blocked, rejected, invalid, ...
    return data


@click.command()
@repo_option
@db_option
@json_option
def status(repo: Path | None, db: str | None, as_json: bool) -> None:
    """The run, its phases and batches, every todo's state, running agents, and what is blocked and why."""
    root, proj = load_projection(repo, db)
    economy = run_economy(proj, now=datetime.now(UTC))
    data = status_data(proj, economy=economy, verify=verify_config(root), lease=lease_of(root))
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    print_status(proj, data, economy)


@click.command()
@repo_option
@db_option
@click.argument("todo_id")
@click.option("--attempt", type=int, default=None, help="Which attempt (default: the latest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the agent writes.")
@click.option("--verify", "verify_output", is_flag=True, help="The output of the check that rejected it.")
def logs(
    repo: Path | None, db: str | None, todo_id: str, attempt: int | None, follow: bool, verify_output: bool
) -> None:
    """An agent's output (stdout and stderr), live with --follow while it runs; with --verify the whole
    output of the check that rejected the todo (its latest rejection, or that of --attempt)."""
    root, proj = load_projection(repo, db)
    key = known_todo(proj, todo_id)
    todo = proj.todos[key]
    if verify_output:
        rejection_output(root, db, key, proj.shown(key), attempt)
        return
    number = attempt or todo.attempt
    path = Workspace(root).agent_log(key, number)
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"no output for todo #{todo_id} attempt {number} ({path})",
            hint="its agent has not started yet; `batchd status` shows its state",
        )
    with open_batchd_log(path) as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not follow:
                break
            _, now = load_projection(repo, db)
            current = now.todos.get(key)
            if current is None or current.state != TodoState.RUNNING or current.attempt != number:
                break
            time.sleep(0.3)


def open_batchd_log(path: Path) -> BinaryIO:
    try:
        # The log is batchd's, but a link put in its place is not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(
            f"cannot read {path}: {e.strerror}", hint="batchd never follows a link put in place of a log"
        ) from e
    return os.fdopen(fd, "rb")


def rejection_output(root: Path, db: str | None, key: str, shown: str, attempt: int | None) -> None:
    """Print the whole output of the check that rejected the todo's latest attempt (or ``attempt``)."""
    log = open_log(root, db)
    try:
        rejections = [
            e
            for e in log.read(stream=ev.todo_stream(key))
            if e.type == "todo.rejected" and attempt in (None, e.payload["attempt"])
        ]
    finally:
        log.close()
    if not rejections:
        which = f" at attempt {attempt}" if attempt else ""
        click.echo(f"todo #{shown} was never rejected by the checks{which}", err=True)
        raise SystemExit(EXIT_FAILURES)
    latest = rejections[-1].payload
    path = Workspace(root).verify_log(key, latest["attempt"])
    if path.exists() or path.is_symlink():
        with open_batchd_log(path) as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer)
        sys.stdout.flush()
        return
    # Rejected before batchd kept the whole output: the event's end of it is all there is.
    click.echo(f"$ {' '.join(latest['command'])}")
    click.echo(latest["output_tail"])
    click.echo(f"[batchd] only the end of the output was kept for attempt {latest['attempt']}", err=True)


@click.command("replay")
@repo_option
@db_option
@repo_id_option
@json_option
@click.option("--until", type=int, default=None, metavar="SEQ", help="State after this sequence number.")
@click.option("--at", "at_text", default=None, metavar="TIME", help="State at this time (ISO-8601).")
@click.option(
    "--stream", "-s", default=None, help="Only this stream's state (todo-273, batch-1.1, phase-1, run)."
)
@click.option(
    "--verify",
    "verify_snapshot",
    is_flag=True,
    help="Check that replay from zero equals the latest snapshot plus the tail.",
)
def replay_command(
    repo: Path | None,
    db: str | None,
    repo_id: str | None,
    as_json: bool,
    until: int | None,
    at_text: str | None,
    stream: str | None,
    verify_snapshot: bool,
) -> None:
    """The state of everything as it was at a point in the log, rebuilt from the log alone."""
    if until is not None and at_text is not None:
        raise UsageError("--until and --at both given", hint="use one of them")
    at = parse_time_option(at_text) if at_text else None
    if verify_snapshot:
        _, full = load_projection(repo, db, repo_id=repo_id, use_snapshot=False)
        _, fast = load_projection(repo, db, repo_id=repo_id, use_snapshot=True)
        same = full.to_json() == fast.to_json()
        if as_json:
            click.echo(json.dumps({"ok": same, "last_seq": full.last_seq}))
        else:
            click.echo(
                f"ok: replay from zero equals snapshot + tail at sequence {full.last_seq}"
                if same
                else "MISMATCH: replay from zero differs from snapshot + tail",
                err=not same,
            )
        if not same:
            raise SystemExit(EXIT_FAILURES)
        return
    _, proj = load_projection(
        repo, db, repo_id=repo_id, until=until, at=at, use_snapshot=until is None and at is None
    )
    data = status_data(proj)
    if stream:
        data = select_stream(data, stream)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(f"state after event {proj.last_seq}" + (f" (at {at.isoformat()})" if at else ""))
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def select_stream(data: dict[str, Any], stream: str) -> dict[str, Any]:
    kind, _, name = stream.partition("-")
    if stream == "run":
        return {"run": data["run"]}
    key = {"todo": "todos", "batch": "batches", "phase": "phases"}.get(kind)
    if key is None:
        raise UsageError(f"unknown stream {stream!r}", hint="use todo-<id>, batch-<key>, phase-<n> or run")
    field = {"todos": "id", "batches": "key", "phases": "number"}[key]
    wanted = user_id(name) if key == "todos" else None

    def same(value: object) -> bool:
        # A todo by any id form (todo-282 finds the todo its file calls 0282).
        return str(value) == name or (wanted is not None and wanted == user_id(str(value)))

    found: list[dict[str, Any]] = [item for item in data[key] if same(item[field])]
    if not found:
        raise UsageError(f"no stream {stream!r} at that point", hint="`batchd events` lists the streams")
    return found[0]


def register(cli: click.Group) -> None:
    for command in (status, logs, replay_command):
        cli.add_command(command)
