"""``batchd demo``: run the sample project's plan with live progress, then a summary.

The daemon runs as a real subprocess (``batchd run --once``), exactly as a user would run it; this
process only reads the event log it writes and draws what it says. The demo ends well (exit 0)
when the run ended as the scenario means it to: its failures are part of the show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from daemon.cli.control import elapsed_since
from daemon.demo import scenario
from daemon.demo.project import DemoProject
from daemon.engine.state import batch_at_work
from statemachine.projection import Projection
from statemachine.tables import PhaseState, TodoState
from store import EventLog

STATE_STYLE = {
    "complete": "green",
    "accepted": "green",
    "running": "cyan",
    "agent_done": "cyan",
    "verifying": "yellow",
    "rejected": "red",
    "blocked": "bold red",
    "agent_failed": "red",
    "conflicted": "yellow",
    "invalid": "magenta",
    "planned": "white",
    "ready": "dim",
    "pending": "dim",
}
NOTABLE = {
    "todo.rejected": "rejected (its change broke the tests; reverted)",
    "todo.conflicted": "lost a conflict to a lower id; re-run on the new base",
    "todo.agent_failed": "agent failed",
    "todo.blocked": "blocked",
    "batch.verified": "verified",
    "phase.committed": "committed",
    "phase.pushed": "pushed",
    "phase.push_failed": "push failed",
    "run.completed": "run completed",
}


def elapsed(recorded_at: str) -> str:
    return f"{elapsed_since(recorded_at):4.1f}s" if recorded_at else ""


def describe_event(proj: Projection, event_type: str, payload: dict[str, object]) -> str | None:
    what = NOTABLE.get(event_type)
    if what is None:
        return None
    if event_type.startswith("todo."):
        todo_id = str(payload.get("todo_id"))
        title = proj.todos[todo_id].title if todo_id in proj.todos else ""
        detail = payload.get("reason") or payload.get("detail") or ""
        return f"#{todo_id} {title}: {what}" + (f" — {detail}" if detail else "")
    if event_type == "batch.verified":

        def names(key: str) -> str:
            value = payload.get(key)
            return ", ".join(map(str, value)) if isinstance(value, list | tuple) and value else "none"

        accepted = payload.get("accepted")
        count = len(accepted) if isinstance(accepted, list | tuple) else 0
        lists = ("accepted", "rejected", "conflicted", "failed")
        if not payload.get("runs") and not any(payload.get(k) for k in lists):
            return None  # a plan batch closed under the continuous policy: its groups said it all
        return (
            f"batch {payload['key']} {what}: accepted {count}, rejected {names('rejected')}, "
            f"conflicted {names('conflicted')}, agent failed {names('failed')}, "
            f"{payload['runs']} verify run(s)"
        )
    if event_type.startswith("phase."):
        sha = str(payload.get("head_sha") or payload.get("sha") or "")[:10]
        return f"phase {payload['number']} {what} {sha}".rstrip()
    return what


def render(proj: Projection, notes: list[str]) -> Group:
    phases = sorted(proj.phases.values(), key=lambda p: (p.final, p.number))
    current = next((p for p in phases if p.state != PhaseState.DONE), None)
    header = Text()
    if current is None:
        header.append("all phases done", style="bold green")
    else:
        header.append(f"Phase {phases.index(current) + 1}/{len(phases)}: {current.title}", style="bold")
        batch_key = batch_at_work(proj, current)
        header.append(f" · {current.state}")
        if batch_key:
            header.append(f" · batch {batch_key} ({proj.batches[batch_key].state})")
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("todo", "title", "state", "try", "elapsed"):
        table.add_column(column)
    shown = [
        t
        for t in proj.todos.values()
        if t.state in (TodoState.PLANNED, TodoState.RUNNING, TodoState.AGENT_DONE, TodoState.VERIFYING)
    ]
    for todo in sorted(shown, key=lambda t: int(t.todo_id) if t.todo_id.isdigit() else 0):
        state = str(todo.state)
        table.add_row(
            todo.todo_id,
            todo.title[:48],
            Text(state, style=STATE_STYLE.get(state, "")),
            str(todo.attempt),
            elapsed(todo.agent_started_at) if todo.state == TodoState.RUNNING else "",
        )
    counts: dict[str, int] = {}
    for todo in proj.todos.values():
        counts[str(todo.state)] = counts.get(str(todo.state), 0) + 1
    tally = Text("  ".join(f"{state} {n}" for state, n in sorted(counts.items())), style="dim")
    recent = Text("\n".join(notes[-6:]), style="dim")
    return Group(header, table, tally, recent)


def run_demo(project: DemoProject, *, console: Console | None = None) -> int:
    console = console or Console()
    root = project.root
    console.print(f"[bold]batchd demo[/] in {root}")
    console.print(scenario.describe())
    console.print()
    state_dir = root / ".batchd"
    state_dir.mkdir(exist_ok=True)
    daemon_log = state_dir / "daemon.log"
    argv = [sys.executable, "-m", "daemon", "run", "--once", "-C", str(root), "--log-json"]
    started = time.monotonic()
    with daemon_log.open("wb") as log_out:
        proc = subprocess.Popen(
            argv,
            stdout=log_out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        proj = follow(proc, root / ".batchd" / "events.db", console)
    wall = time.monotonic() - started
    return summarize(project, proj, proc.returncode, wall, daemon_log, console)


def follow(proc: subprocess.Popen[bytes], db: Path, console: Console) -> Projection:
    """Fold the daemon's events as they arrive; draw them live on a terminal, as lines otherwise."""
    proj = Projection()
    notes: list[str] = []
    log: EventLog | None = None
    live = (
        Live(render(proj, notes), console=console, refresh_per_second=8, transient=False)
        if console.is_terminal
        else None
    )
    if live is not None:
        live.start()
    try:
        while True:
            running = proc.poll() is None
            if log is None and db.exists():
                log = EventLog(db)
            if log is not None:
                for event in log.read(since=proj.last_seq):
                    proj.apply(event)
                    line = describe_event(proj, event.type, event.payload)
                    if line:
                        notes.append(line)
                        if live is None:
                            console.print(line)
            if live is not None:
                live.update(render(proj, notes))
            if not running:
                break
            time.sleep(0.15)
    finally:
        if live is not None:
            live.stop()
        if log is not None:
            log.close()
    return proj


def summarize(
    project: DemoProject, proj: Projection, rc: int | None, wall: float, daemon_log: Path, console: Console
) -> int:
    states = {t.todo_id: str(t.state) for t in proj.todos.values()}
    complete = sorted(t for t, s in states.items() if s == "complete")
    blocked = sorted(t for t, s in states.items() if s == "blocked")
    rejected_ever = sorted(
        {t.todo_id for t in proj.todos.values() for h in t.history if h.outcome == "rejected"}
    )
    runs = sum(b.runs for b in proj.batches.values())
    baselines = sum(b.baseline_runs for b in proj.batches.values())
    pushed = sum(1 for p in proj.phases.values() if p.pushed_sha)
    console.print()
    console.print(f"[bold]Done in {wall:.0f}s[/] (daemon exit code {rc})")
    console.print(
        f"  todos complete: {len(complete)}/{len(states)}; rejected at least once: "
        f"{', '.join(rejected_ever) or 'none'}; blocked: {', '.join(blocked) or 'none'}"
    )
    console.print(
        f"  verify runs: {runs} (+{baselines} baseline), where the seed's one-by-one way needs "
        f"{sum(len(b.todo_ids) for b in proj.batches.values())}"
    )
    console.print(f"  phase commits pushed: {pushed} to {project.remote}")
    console.print(f"  status file: {project.root / 'plans' / 'EXECUTION-STATUS.md'}")
    console.print(f"  daemon log: {daemon_log}")
    console.print("\nLook further:")
    for command in (
        f"batchd status -C {project.root}",
        f"batchd events -C {project.root} --stream todo-282",
        f"batchd replay -C {project.root} --until 100",
        f"batchd audit verify -C {project.root}",
        f"git -C {project.root} log --stat -5",
    ):
        console.print(f"  {command}")
    as_meant = (
        set(complete) == set(scenario.EXPECTED_COMPLETE)
        and set(blocked) == set(scenario.EXPECTED_BLOCKED)
        and rc == 1  # the run ends "not complete": two todos are blocked on purpose
    )
    if as_meant:
        console.print("\n[green]The run ended as the demo means it to.[/]")
        return 0
    console.print("\n[red]The run did not end as the demo means it to[/] (see the daemon log above).")
    return 1
