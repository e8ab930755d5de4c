"""``batchd plan show`` and ``batchd plan check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from daemon.cli.main import json_option, repo_option, resolve_root
from daemon.config import Config, load_config
from daemon.intake.lint import lint_folder
from daemon.intake.plan import Plan, check_plan, extend_plan, load_plan
from daemon.intake.scanner import ScanResult, scan_folder
from daemon.intake.todofile import TodoStatus, id_key
from daemon.workspace import Workspace, config_log
from statemachine.projection import replay
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
    log = config_log(config)
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
    """Lint the todo folder, and check the plan when batchd.toml names one; exit 1 on any problem.

    \b
    The folder: file names (todos/{id}-{pending|ready|complete}-{p1|p2|p3}-{slug}.md), names and
    contents that are not UTF-8, front matter (YAML, and agreeing with the name), dependencies on
    ids no file has, dependency cycles, two files with one id.
    The plan: unknown ids, ids in two batches, dependencies planned in the same or a later batch.

    \b
    Each problem is printed with its file and how to fix it (--json lists them). It reads only files,
    so it works in a pre-commit hook, e.g. in .pre-commit-config.yaml:
      - repo: local
        hooks:
          - {id: batchd-todos, name: batchd plan check, entry: batchd plan check,
             language: system, pass_filenames: false, files: ^todos/}
    """
    config, loaded, _ = load(repo)
    scan, folder = lint_folder(
        config.root, config.todos_path, config.batchd.ignore, known_ids=logged_states(config)
    )
    problems: list[dict[str, Any]] = []
    if loaded is not None:
        problems += [
            {"where": p.where, "message": p.message, "fix": "", "todo": p.todo_id}
            for p in check_plan(loaded, scan.todos)
        ]
    problems += [{"where": p.file, "message": p.message, "fix": p.fix, "todo": p.todo_id} for p in folder]
    if as_json:
        click.echo(json.dumps({"ok": not problems, "problems": problems}, indent=2, ensure_ascii=False))
    elif not problems:
        folder_text = f"{rel(config, config.todos_path)}/: {len(scan.todos)} todo files"
        if loaded is None:
            click.echo(f"ok: {folder_text}, no problems (batchd.toml names no plan: auto-planned)")
        else:
            phases = len(loaded.phases)
            batches = sum(len(p.batches) for p in loaded.phases)
            todos = sum(len(b.todo_ids) for p in loaded.phases for b in p.batches)
            click.echo(
                f"ok: {loaded.source}: {phases} phases, {batches} batches, {todos} todos; "
                f"{folder_text}; no problems"
            )
    else:
        for problem in problems:
            click.echo(f"{problem['where']}: {problem['message']}", err=True)
            if problem["fix"]:
                click.echo(f"  fix: {problem['fix']}", err=True)
        click.echo(f"{len(problems)} problem(s)", err=True)
    if problems:
        raise SystemExit(EXIT_FAILURES)


def rel(config: Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.root))
    except ValueError:
        return str(path)


def register(cli: click.Group) -> None:
    cli.add_command(plan)
