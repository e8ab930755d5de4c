"""``batchd run`` and ``batchd demo`` (``batchd init`` is :mod:`daemon.cli.init`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from daemon.cli.main import log_level_option, repo_option, resolve_root
from daemon.config import load_config
from daemon.service.logs import configure_logging


@click.command()
@repo_option
@click.option("--once", is_flag=True, help="Exit when nothing is left to do (exit 0 = every todo complete).")
@log_level_option
@click.option(
    "--log-json/--log-text",
    default=None,
    help="Log lines, JSON or readable, instead of the live view (default: view on a terminal, else JSON).",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors, then (with --once) the summary.")
def run(repo: Path | None, once: bool, log_level: str, log_json: bool | None, quiet: bool) -> None:
    """Run the daemon in the foreground on a repository with a batchd.toml.

    Without --once it keeps watching the todos folder after the plan is done and runs newly dropped
    todos. SIGTERM/SIGINT stop it gracefully (agents get stop_timeout seconds); SIGHUP reloads
    batchd.toml. Exit codes with --once: 0 all complete and green, 1 failed/blocked/invalid todos,
    2 configuration error, 3 cannot proceed (red baseline, lock held, corrupt log), 128+N signal N.

    On a terminal it shows a live view of the run (phase, agents, verification, last events) and,
    with --once, ends with a summary; elsewhere it writes JSON log lines (journald).
    """
    from daemon.cli.foreground import at_least, foreground

    configure_logging(level=at_least(log_level, "warning") if quiet else log_level, json=log_json)
    root = resolve_root(repo)
    config = load_config(root)
    raise SystemExit(foreground(config, once=once, log_level=log_level, log_json=log_json, quiet=quiet))


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--speed",
    default=0.2,
    show_default=True,
    type=float,
    help="Multiplies the scripted agents' delays (0 = no delays).",
)
@click.option(
    "--timeout",
    "agent_timeout",
    default=3.0,
    show_default=True,
    type=float,
    help="Agent timeout in seconds (one demo agent hangs until it).",
)
def demo(directory: Path | None, speed: float, agent_timeout: float) -> None:
    """Build a sample project (28 todos, the seed's 5-phase plan, a bare remote) and run it end to end.

    No agent CLI or network is needed: a scripted agent carries out instructions written in each
    todo, so the run shows every path: rejections found by bisection, a conflict re-run on the new
    base, a failing agent, a hung one killed at its timeout, commits per phase and pushes.
    """
    from daemon.demo.project import build_demo
    from daemon.demo.show import run_demo

    dest = directory or Path(tempfile.mkdtemp(prefix="batchd-demo-"))
    project = build_demo(dest, speed=speed, agent_timeout=agent_timeout)
    raise SystemExit(run_demo(project))


def register(cli: click.Group) -> None:
    for command in (run, demo):
        cli.add_command(command)
