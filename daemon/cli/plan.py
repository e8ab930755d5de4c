"""``batchd plan show`` and ``batchd plan check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from daemon.cli.main import json_option, repo_option, resolve_root
from daemon.config import Config, load_config
from daemon.exceptions import UsageError
from daemon.intake.plan import Plan, check_plan, extend_plan, load_plan
from daemon.intake.scanner import ScanResult, scan_folder
from daemon.intake.todofile import TodoStatus, id_key
from daemon.workspace import Workspace
from statemachine.projection import replay
from store import EventLog
from store.exceptions import EXIT_FAILURES


def load(repo: Path | None) -> tuple[Config, Plan | None, ScanResult]:
    root = resolve_root(repo)
    config = load_config(root)
    plan = load_plan(config.plan_path) if config.plan_path is not None else None
    return config, plan, scan_folder(config.todos_path, config.batchd.ignore)


def logged_states(config: Config) -> dict[str, str]:
    """Each todo's state from the log when there is one (the daemon's view), else nothing."""
    location = Workspace(config.root).db_location(config.batchd.db)
    if "://" not in location and not Path(location).exists():
        return {}
    log = EventLog(location)
    try:
        proj = replay(log)
    finally:
        log.close()
    return {todo_id: str(view.state) for todo_id, view in proj.todos.items()}


@click.group()
def plan() -> None:
    """Show or check the plan (phases of batches of todo ids)."""


@plan.command("show")
@repo_option
@json_option
def plan_show(repo: Path | None, as_json: bool) -> None:
    """The plan as batchd runs it (ready todos it does not name are auto-planned), with each todo's state."""
    config, loaded, scan = load(repo)
    states = logged_states(config)
    ready = [t for t in scan.todos.values() if t.status == TodoStatus.READY]
    done = [t.key for t in scan.todos.values() if t.status == TodoStatus.COMPLETE]
    full = extend_plan(loaded, ready, done=done, max_parallel=config.batchd.max_parallel)

    def state_of(todo_id: str) -> str:
        key = id_key(todo_id) if todo_id.isdigit() else todo_id
        if key in states:
            return states[key]
        todo = scan.todos.get(key)
        return str(todo.status) if todo is not None else "no such todo file"

    data: dict[str, Any] = {
        "source": full.source,
        "phases": [
            {
                "number": phase.number,
                "title": phase.title,
                "commit_message": phase.commit_message,
                "batches": [
                    {"key": b.key, "todos": [{"id": t, "state": state_of(t)} for t in b.todo_ids]}
                    for b in phase.batches
                ],
            }
            for phase in full.phases
        ],
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"plan: {full.source}")
    for phase in data["phases"]:
        message = f"  ({phase['commit_message']})" if phase["commit_message"] else ""
        click.echo(f"Phase {phase['number']}: {phase['title']}{message}")
        if not phase["batches"]:
            click.echo("  final integration check (every verify command on the final tree)")
        for batch in phase["batches"]:
            todos = ", ".join(f"{t['id']} [{t['state']}]" for t in batch["todos"])
            click.echo(f"  Batch {batch['key']}: {todos}")


@plan.command("check")
@repo_option
@json_option
def plan_check(repo: Path | None, as_json: bool) -> None:
    """Check the plan against the todo files: unknown ids, ids in two batches, dependencies planned in
    the same or a later batch, cycles, and invalid todo files. Exit 1 when there is a problem."""
    config, loaded, scan = load(repo)
    if loaded is None:
        raise UsageError(
            "batchd.toml names no plan", hint='set [batchd] plan = "plans/PLAN.md" (or a .toml plan)'
        )
    problems = [
        {"where": p.where, "message": p.message, "todo": p.todo_id} for p in check_plan(loaded, scan.todos)
    ]
    problems += [
        {
            "where": str(bad.path.relative_to(config.root))
            if bad.path.is_relative_to(config.root)
            else str(bad.path),
            "message": f"{bad.reason} (fix: {bad.hint})",
            "todo": bad.todo_id,
        }
        for bad in scan.invalid
    ]
    if as_json:
        click.echo(json.dumps({"ok": not problems, "problems": problems}, indent=2))
    elif not problems:
        phases = len(loaded.phases)
        batches = sum(len(p.batches) for p in loaded.phases)
        todos = sum(len(b.todo_ids) for p in loaded.phases for b in p.batches)
        click.echo(f"ok: {loaded.source}: {phases} phases, {batches} batches, {todos} todos, no problems")
    else:
        for problem in problems:
            click.echo(f"{problem['where']}: {problem['message']}", err=True)
        click.echo(f"{len(problems)} problem(s)", err=True)
    if problems:
        raise SystemExit(EXIT_FAILURES)


def register(cli: click.Group) -> None:
    cli.add_command(plan)
