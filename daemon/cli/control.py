"""``batchd status``, ``logs``, ``replay``, and the control requests ``retry``, ``cancel``, ``pause``,
``resume`` and ``push``.

Control commands only append a request to the log's ``control`` stream: a running daemon acts on
it within a second, and with no daemon running the next start acts on it. Nothing here needs the
daemon to be up.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from daemon.cli.main import db_option, json_option, parse_time_option, repo_option, resolve_root
from daemon.engine.statusfile import review_items, verdict_line
from daemon.exceptions import UsageError, headline
from daemon.workspace import Workspace, open_log
from statemachine import events as ev
from statemachine.projection import Projection, replay
from statemachine.tables import RunState, TodoState
from store.eventlog import parse_time
from store.exceptions import EXIT_FAILURES


def load_projection(repo: Path | None, db: str | None, **kwargs: Any) -> tuple[Path, Projection]:
    root = resolve_root(repo)
    log = open_log(root, db)
    try:
        return root, replay(log, **kwargs)
    finally:
        log.close()


def elapsed_since(recorded_at: str) -> float:
    if not recorded_at:
        return 0.0
    return max(0.0, (datetime.now(UTC) - parse_time(recorded_at)).total_seconds())


def status_data(proj: Projection) -> dict[str, Any]:
    run = proj.run
    todos = []
    for todo in sorted(proj.todos.values(), key=lambda t: (len(t.todo_id), t.todo_id)):
        item: dict[str, Any] = {
            "id": todo.todo_id,
            "state": str(todo.state),
            "title": todo.title,
            "priority": todo.priority,
            "attempt": todo.attempt,
            "batch": todo.batch,
            "phase": todo.phase,
            "path": todo.path,
        }
        if todo.state == TodoState.RUNNING:
            item["elapsed"] = round(elapsed_since(todo.agent_started_at), 1)
            item["pid"] = todo.pid
        if todo.reason:
            item["reason"] = todo.reason
        if todo.action:
            item["action"] = todo.action
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
            "verdict": verdict_data(proj),
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
                "todos": list(b.todo_ids),
                "accepted": list(b.accepted),
                "rejected": list(b.rejected),
                "conflicted": list(b.conflicted),
                "failed": list(b.failed),
                "verify_runs": b.runs,
            }
            for b in proj.batches.values()
        ],
        "todos": todos,
        "review": [{"id": t, "attempt": n, "what": what} for t, n, what in review_items(proj)],
        "last_seq": proj.last_seq,
    }


def run_detail(proj: Projection) -> str:
    """Why the run is paused or stopping, whole (the human status shows its headline)."""
    run = proj.run
    if run.state == RunState.PAUSED:
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
    _, proj = load_projection(repo, db)
    data = status_data(proj)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    run = data["run"]
    console.print(
        f"[bold]run[/] {run['id'] or '(not started)'} · {run['state']} · "
        f"branch {escape(run['branch'] or '?')}"
    )
    if run["detail"]:
        console.print(f"{run['state']}: {escape(headline(run['detail']))}", soft_wrap=True)
    if proj.run.verdict is not None:
        colour = "green" if proj.run.verdict.success else "red"
        console.print(f"verdict: [{colour}]{escape(verdict_line(proj.run.verdict))}[/]", soft_wrap=True)
    phases = Table(title="phases", show_lines=False)
    for column in ("phase", "title", "state", "batches", "commit", "push"):
        phases.add_column(column)
    for p in data["phases"]:
        failed = f"failed: {headline(p['push_failed'])}" if p["push_failed"] else ""
        push = p["pushed"][:10] if p["pushed"] else failed
        phases.add_row(
            str(p["number"]),
            escape(p["title"]),
            p["state"],
            ", ".join(p["batches"]),
            (p["commit"] or "")[:10],
            escape(push),
        )
    console.print(phases)
    todos = Table(title="todos")
    for column in ("id", "state", "attempt", "batch", "title", "why / elapsed"):
        todos.add_column(column)
    colours = {
        "complete": "green",
        "accepted": "green",
        "running": "cyan",
        "rejected": "red",
        "blocked": "red",
        "agent_failed": "red",
        "conflicted": "yellow",
        "invalid": "magenta",
    }
    for t in data["todos"]:
        why = f"{t['elapsed']:.0f}s (pid {t['pid']})" if "elapsed" in t else headline(t.get("reason", ""))
        colour = colours.get(t["state"], "white")
        todos.add_row(
            escape(t["id"]),
            f"[{colour}]{t['state']}[/]",
            str(t["attempt"]),
            escape(t["batch"] or ""),
            escape(t["title"]),
            escape(why),
        )
    console.print(todos)
    for item in data["review"]:
        console.print(
            f"[yellow]review[/] #{escape(item['id'])} (attempt {item['attempt']}): {escape(item['what'])}"
        )
    if run["sandbox"] and not run["sandbox"].startswith("bubblewrap"):
        console.print(f"[yellow]warning[/]: agents run without a sandbox ({escape(run['sandbox'])})")


@click.command()
@repo_option
@db_option
@click.argument("todo_id")
@click.option("--attempt", type=int, default=None, help="Which attempt (default: the latest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the agent writes.")
def logs(repo: Path | None, db: str | None, todo_id: str, attempt: int | None, follow: bool) -> None:
    """An agent's output (stdout and stderr), live with --follow while it runs."""
    root, proj = load_projection(repo, db)
    key = str(int(todo_id)) if todo_id.isdigit() else todo_id
    todo = proj.todos.get(key)
    if todo is None:
        raise UsageError(f"no todo #{todo_id} in the log", hint="`batchd status` lists the todos")
    number = attempt or todo.attempt
    path = Workspace(root).agent_log(key, number)
    if not path.exists() and not path.is_symlink():
        raise UsageError(
            f"no output for todo #{todo_id} attempt {number} ({path})",
            hint="its agent has not started yet; `batchd status` shows its state",
        )
    try:
        # The log is batchd's, but a link put in its place is not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(
            f"cannot read {path}: {e.strerror}", hint="batchd never follows a link put in place of a log"
        ) from e
    with os.fdopen(fd, "rb") as fh:
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


def append_control(repo: Path | None, db: str | None, event: object, what: str) -> None:
    root = resolve_root(repo)
    # A repository set up for batchd but never run yet may be paused (or resumed) ahead of time.
    log = open_log(root, db, must_exist=not (root / "batchd.toml").is_file())
    try:
        stored = log.append(ev.CONTROL_STREAM, [event])
    finally:
        log.close()
    click.echo(
        f"{what}: request recorded (event {stored[0].seq}); a running daemon acts on it within a second, "
        "otherwise the next `batchd run` does"
    )


def known_todo(repo: Path | None, db: str | None, todo_id: str) -> str:
    if not todo_id.isdigit():
        raise UsageError(f"{todo_id!r} is not a todo id", hint="give the number, e.g. `batchd retry 273`")
    key = str(int(todo_id))
    _, proj = load_projection(repo, db)
    if key not in proj.todos:
        raise UsageError(f"no todo #{todo_id} in the log", hint="`batchd status` lists the todos")
    return key


@click.command()
@repo_option
@db_option
@click.argument("todo_id")
def retry(repo: Path | None, db: str | None, todo_id: str) -> None:
    """Give a failed, blocked, cancelled or invalid todo another attempt (attempts start counting again)."""
    key = known_todo(repo, db, todo_id)
    append_control(repo, db, ev.RetryRequested(todo_id=key), f"retry #{key}")


@click.command()
@repo_option
@db_option
@click.argument("todo_id")
def cancel(repo: Path | None, db: str | None, todo_id: str) -> None:
    """Cancel a todo (its agent is stopped if running; nothing of it is committed)."""
    key = known_todo(repo, db, todo_id)
    append_control(repo, db, ev.CancelRequested(todo_id=key), f"cancel #{key}")


@click.command()
@repo_option
@db_option
@click.option("--reason", default="requested with batchd pause", help="Shown in batchd status.")
def pause(repo: Path | None, db: str | None, reason: str) -> None:
    """Start no new agent or batch until `batchd resume` (running agents finish)."""
    append_control(repo, db, ev.PauseRequested(reason=reason), "pause")


@click.command()
@repo_option
@db_option
def resume(repo: Path | None, db: str | None) -> None:
    """Resume a paused run (and re-check a batch paused by a red baseline)."""
    append_control(repo, db, ev.ResumeRequested(), "resume")


@click.command("push")
@repo_option
@db_option
def push_command(repo: Path | None, db: str | None) -> None:
    """Push the last phase commit again, after its push failed (the remote was down, or refused)."""
    append_control(repo, db, ev.PushRequested(), "push")


@click.command("replay")
@repo_option
@db_option
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
        _, full = load_projection(repo, db, use_snapshot=False)
        _, fast = load_projection(repo, db, use_snapshot=True)
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
    _, proj = load_projection(repo, db, until=until, at=at, use_snapshot=until is None and at is None)
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
    found: list[dict[str, Any]] = [item for item in data[key] if str(item[field]) == name]
    if not found:
        raise UsageError(f"no stream {stream!r} at that point", hint="`batchd events` lists the streams")
    return found[0]


def register(cli: click.Group) -> None:
    for command in (status, logs, retry, cancel, pause, resume, push_command, replay_command):
        cli.add_command(command)
