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

from rich.console import Console
from rich.markup import escape

from daemon.cli.summary import print_summary, summarize
from daemon.cli.view import LiveView, log_opener
from daemon.config import load_config
from daemon.demo import scenario
from daemon.demo.project import DemoProject
from daemon.workspace import config_scope
from statemachine.projection import Projection


def run_demo(project: DemoProject, *, console: Console | None = None) -> int:
    console = console or Console()
    root = project.root
    console.print(f"[bold]batchd demo[/] in {escape(str(root))}")
    console.print(scenario.describe())
    console.print()
    state_dir = root / ".batchd"
    state_dir.mkdir(exist_ok=True)
    daemon_log = state_dir / "daemon.log"
    argv = [sys.executable, "-m", "daemon", "run", "--once", "-C", str(root), "--log-json"]
    started = time.monotonic()
    config = load_config(root)
    # The view starts before the daemon, so everything the daemon writes counts as new.
    view = LiveView(
        log_opener(config.db_url, scope=config_scope(config)), console, agent_timeout=config.agent.timeout
    )
    with daemon_log.open("wb") as log_out, view:
        proc = subprocess.Popen(
            argv,
            stdout=log_out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        proc.wait()
    wall = time.monotonic() - started
    return report(project, view.proj, proc.returncode, wall, daemon_log, console)


def report(
    project: DemoProject, proj: Projection, rc: int | None, wall: float, daemon_log: Path, console: Console
) -> int:
    summary = summarize(proj)
    console.print()
    console.print(f"[bold]Done in {wall:.0f}s[/] (daemon exit code {rc})")
    print_summary(console, summary, root=project.root)
    console.print(f"  status file: {escape(str(project.root / 'plans' / 'EXECUTION-STATUS.md'))}")
    console.print(f"  daemon log: {escape(str(daemon_log))}")
    console.print("\nLook further:")
    for command in (
        f"batchd status -C {project.root}",
        f"batchd events -C {project.root} --stream todo-282",
        f"batchd replay -C {project.root} --until 100",
        f"batchd audit verify -C {project.root}",
        f"git -C {project.root} log --stat -5",
    ):
        console.print(f"  {escape(command)}")
    as_meant = (
        set(summary.complete) == set(scenario.EXPECTED_COMPLETE)
        and {todo_id for todo_id, _ in summary.blocked} == set(scenario.EXPECTED_BLOCKED)
        and rc == 1  # the run ends "not complete": two todos are blocked on purpose
    )
    if as_meant:
        console.print("\n[green]The run ended as the demo means it to.[/]")
        return 0
    console.print("\n[red]The run did not end as the demo means it to[/] (see the daemon log above).")
    return 1
