"""``batchd workers``: the hosts that run agents for this repository's coordinator, from the log.

A worker's liveness here is judged by the wall clock against its last append (the coordinator judges
by its own monotonic clock; both allow a lease, or three heartbeats when those are further apart).
The same rows are ``status``'s ``workers`` (text and ``--json``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from daemon.cli.main import db_option, json_option, load_projection, repo_id_option, repo_option
from daemon.config import BatchdConfig, load_config
from daemon.exceptions import BatchdError
from statemachine import dispatch as dp
from statemachine.projection import Projection
from store.records import seconds_since

UP, SILENT, STOPPED = "up", "silent", "stopped"


def lease_of(root: Path) -> float:
    """``[batchd] lease_seconds`` of the repository (its default when the file cannot be read:
    the listing must still show what the log knows)."""
    try:
        return load_config(root).batchd.lease_seconds
    except BatchdError:
        return BatchdConfig().lease_seconds


def _since(recorded_at: str, now: datetime) -> float | None:
    return round(seconds_since(recorded_at, now), 1) if recorded_at else None


def workers_data(proj: Projection, *, lease: float, now: datetime | None = None) -> dict[str, Any]:
    """Every worker the log knows (name order), what each holds, and the attempts waiting for one."""
    now = now or datetime.now(UTC)
    d = proj.dispatch
    rows = []
    for w in sorted(d.workers.values(), key=lambda w: w.name):
        quiet = _since(w.last_seen_at, now)
        state = w.state
        if state == UP and (quiet is None or quiet > max(lease, 3 * w.every)):
            state = SILENT  # killed, host gone or cut off: its claims expire at the coordinator
        rows.append(
            {
                "name": w.name,
                "host": w.host,
                "state": state,
                "slots": w.slots,
                "pid": w.pid,
                "version": w.version,
                "clone": w.clone,
                "claims": [
                    {"id": proj.shown(c.todo_id), "attempt": c.attempt, "since": c.claimed_at}
                    for c in sorted(d.held_by(w.name), key=lambda c: c.claimed_at)
                ],
                "claims_total": w.claims,
                "reported": w.reported,
                "expired": w.expired,
                "registered_at": w.registered_at,
                "last_heartbeat": w.last_seen_at,
                "seconds_since_heartbeat": quiet,
                "trouble": w.trouble if state == UP else "",
            }
        )
    queued = sorted(
        (c for c in d.claims.values() if c.state == dp.QUEUED), key=lambda c: (c.queued_at, c.token)
    )
    return {
        "workers": rows,
        "queued": [
            {
                "id": proj.shown(c.todo_id),
                "attempt": c.attempt,
                "since": c.queued_at,
                "waited": _since(c.queued_at, now),
            }
            for c in queued
        ],
    }


def waiting_text(data: dict[str, Any]) -> str:
    """A line for a person when attempts wait for workers and none is up ("" otherwise)."""
    if not data["queued"] or any(w["state"] == UP for w in data["workers"]):
        return ""
    n = len(data["queued"])
    return f"{n} agent(s) queued for workers and no worker is up: start one with `batchd worker`"


def print_workers(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="workers")
    for column in ("name", "host", "state", "slots", "claims", "done", "expired", "last heartbeat"):
        table.add_column(column)
    colours = {UP: "green", SILENT: "red", STOPPED: "white"}
    for w in data["workers"]:
        held = ", ".join(f"#{c['id']}" for c in w["claims"])
        quiet = w["seconds_since_heartbeat"]
        table.add_row(
            escape(w["name"]),
            escape(w["host"]),
            f"[{colours[w['state']]}]{w['state']}[/]",
            f"{len(w['claims'])}/{w['slots']}",
            escape(held) or "-",
            str(w["reported"]),
            str(w["expired"]),
            "-" if quiet is None else f"{quiet:.0f}s ago",
        )
    console.print(table)
    for w in data["workers"]:
        if w["trouble"]:
            line = f"[yellow]{escape(w['name'])} takes no claims for now[/]: {escape(w['trouble'])}"
            console.print(line, soft_wrap=True)
    if data["queued"]:
        ids = ", ".join(f"#{q['id']}" for q in data["queued"])
        console.print(f"queued for a worker ({len(data['queued'])}): {escape(ids)}", soft_wrap=True)
    if line := waiting_text(data):
        console.print(f"[yellow]warning[/]: {escape(line)}")


@click.command()
@repo_option
@db_option
@repo_id_option
@json_option
def workers(repo: Path | None, db: str | None, repo_id: str | None, as_json: bool) -> None:
    """The workers of this repository's log: name, host, state (up, silent past its lease, stopped),
    slots, the attempts each holds, and its last heartbeat; then the attempts queued for one."""
    root, proj = load_projection(repo, db, repo_id=repo_id)
    data = workers_data(proj, lease=lease_of(root))
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif not data["workers"]:
        click.echo("no worker has registered in this log (start one with `batchd worker`)")
        if line := waiting_text(data):
            click.echo(f"warning: {line}")
    else:
        print_workers(data)


def register(cli: click.Group) -> None:
    cli.add_command(workers)
